"""The scaling valley of a factorisation W = L S: (L diag(c), diag(c)^-1 S) has the same W
for every c > 0, and only the penalties tell the scales apart. Alternating block steps
move along that valley by a factor of about (1 + penalty / data curvature) per outer step
(millions of steps on raw features with scales of 10^3); the best scales are known in
closed form, so the estimators take them exactly (Go-MTL, LatentTaskMTL, AMTFL).

Per latent component i the penalties are a_i c^2 + b_i c + e_i / c: a_i the Frobenius
(ridge) terms of column i of L (and AMTFL's reconstruction), b_i its l1 terms (and AMTFL's
transfer weights), e_i the penalty of row i of S (l1 or group lasso, degree one)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

NEWTON_STEPS = 60
SHEAR_MAX_LATENT = 16  # a sweep is k (k - 1) host steps: at most 240 a sweep
SHEAR_PAIRS_PER_STEP = 24


def valley_hint(k: int) -> str:
    """The tail of a latent-factor model's ConvergenceWarning: why its residual can fall
    slowly (``benchmarks/research/latent_valley.py``) and what helps."""
    if k <= 1:
        return ""
    return (f"; the residual falls slowly while S is still gaining exact zeros along the basis changes "
            f"(L M^-1, M S) of W = L S, {k * k} directions on which only the penalties act: warm_start=True "
            f"continues from this point, and a smaller n_latent has fewer such directions")


def balance_scales(a: Tensor, b: Tensor, e: Tensor) -> Tensor:
    """argmin_{c > 0} a c^2 + b c + e / c per component (a, e >= 0; b of either sign, a > 0
    where b < 0): the positive root of p(c) = 2 a c^3 + b c^2 - e, by Newton's method from
    above (p is increasing and convex from its root on, so the iterates fall monotonically
    to it). Components with e = 0 (an empty row of S) or a = b = 0 (an empty column of L)
    keep c = 1. Computed in float64 (c^3 overflows float32 for a scale of 1e13) and kept
    within max^(1/4) of the dtype either way (the objective is unimodal in c, so a scale
    between 1 and the optimum still lowers it)."""
    dtype = a.dtype
    a, b, e = (v.double() for v in (a, b, e))
    live = (e > 0) & ((a > 0) | (b > 0))
    a, b, e = (torch.where(live, v, torch.ones_like(v)) for v in (a, b, e))
    big = torch.full_like(a, float("inf"))
    pos_a = a > 0
    c = torch.minimum(torch.where(pos_a, (e / (2 * a).clamp_min(1e-300)) ** (1 / 3), big),
                      torch.where(b > 0, (e / b.clamp_min(1e-300)).sqrt(), big))
    c = torch.where(b < 0, torch.maximum((e / (2 * a).clamp_min(1e-300)) ** (1 / 3), -b / a.clamp_min(1e-300)), c)
    for _ in range(200):  # b < 0: double up to a point right of the root
        low = (2 * a * c**3 + b * c**2 - e) < 0
        if not bool(low.any()):
            break
        c = torch.where(low, 2 * c, c)
    for _ in range(NEWTON_STEPS):
        g = 2 * a * c**3 + b * c**2 - e
        step = g / (6 * a * c**2 + 2 * b * c)
        c = c - step
        if bool((step.abs() <= 1e-15 * c).all()):
            break
    c = torch.where(live & torch.isfinite(c) & (c > 0), c, torch.ones_like(c))
    lim = torch.finfo(dtype).max ** 0.25
    return c.clamp(1 / lim, lim).to(dtype)


def shear_period(k: int) -> int:
    """Outer steps between shear sweeps: one sweep is k (k - 1) host steps, so about
    SHEAR_PAIRS_PER_STEP of them per outer step on average (every step for k <= 5)."""
    return max(1, -(-k * (k - 1) // SHEAR_PAIRS_PER_STEP))


def rebalance(L: Tensor, S: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """(L diag(c), diag(c)^-1 S): the same product L S (a move with M = diag(c)^-1)."""
    return L * c, S / c[:, None]


def _min_piecewise(A: float, B: float, tau: np.ndarray, c: np.ndarray) -> float:
    """argmin_t A t^2 - 2 B t + sum_m c_m |t - tau_m| (A > 0, c >= 0), a convex piecewise
    quadratic: with the breakpoints sorted, raw_k, the stationary point of the quadratic
    on interval k (between tau_(k-1) and tau_(k)), falls with k; the first interval with
    raw_k <= tau_(k) holds the minimiser, raw_k itself or the breakpoint tau_(k-1) when
    raw_k lies left of it (a kink)."""
    if tau.size == 0:
        return B / A
    order = np.argsort(tau)
    tau, c = tau[order], c[order]
    csum = np.concatenate([[0.0], np.cumsum(c)])
    raw = (2 * B - (2 * csum - csum[-1])) / (2 * A)
    below = np.flatnonzero(raw[:-1] <= tau)
    k = int(below[0]) if below.size else tau.size
    return float(raw[k]) if k == 0 else float(max(raw[k], tau[k - 1]))


def _min_convex(A: float, B: float, tau: np.ndarray, c: np.ndarray, mu: float, uu, uv, vv) -> float:
    """argmin_t A t^2 - 2 B t + sum_m c_m |t - tau_m| + mu sum_g ||u_g + t v_g|| (the group
    norms given by uu = ||u_g||^2, uv = <u_g, v_g>, vv = ||v_g||^2), a convex function: the
    slopes at the kinks tau_m (one vectorised evaluation) give the kink that is the minimiser
    or the interval that holds it, where the function is smooth; there Newton's method on
    the slope, safeguarded by bisection."""
    K = float(c.sum()) + mu * float(np.sqrt(vv).sum())
    lo, hi = (2 * B - K) / (2 * A), (2 * B + K) / (2 * A)  # |2 A t - 2 B| <= K at the minimiser

    def slope(t):  # t (n,): the slope (with sign(0) = 0 at a kink) and the curvature of the smooth part
        t = np.asarray(t, dtype=float)[:, None]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a group norm near 0: h is inf;
            q = uu + 2 * t * uv + t * t * vv  # a kink or bound far out (a tiny A): t * t overflows
            n = np.sqrt(np.maximum(q, 0.0))
            on = n > 0
            nz = np.where(on, n, 1.0)
            num = uv + t * vv
            g = (2 * A * t[:, 0] - 2 * B + np.sign(t - tau[None, :]) @ c
                 + mu * np.where(on, num / nz, 0.0).sum(1))
            h = 2 * A + mu * np.where(on, (vv * q - num * num) / nz / nz / nz, 0.0).sum(1)
        return g, h

    if tau.size:
        order = np.argsort(tau)
        tau_s, c_s = tau[order], c[order]
        g_mid, _ = slope(tau_s)
        left, right = g_mid - c_s, g_mid + c_s
        at = np.flatnonzero((left <= 0) & (right >= 0))
        if at.size:
            return float(tau_s[at[0]])
        up = np.flatnonzero(left > 0)  # the minimiser is left of the first kink with a positive slope
        if up.size:
            hi = min(hi, float(tau_s[up[0]]))
            if up[0] > 0:
                lo = max(lo, float(tau_s[up[0] - 1]))
        else:
            lo = max(lo, float(tau_s[-1]))
    t = min(max(0.0, lo), hi)  # near a fixed point of the outer loop the best shear is ~0
    for _ in range(200):
        g, h = (float(v[0]) for v in slope([t]))
        if abs(g) <= 1e-13 * (2 * A * abs(t) + 2 * abs(B) + K) or hi - lo <= 1e-14 * max(abs(lo), abs(hi)):
            return t
        if g > 0:
            hi = t
        elif g < 0:
            lo = t
        else:
            return t
        tn = t - g / h if 0 < h < np.inf else 0.5 * (lo + hi)
        if not lo < tn < hi:
            tn = 0.5 * (lo + hi)
        t = tn
    return t


def shear_sweep(L: Tensor, S: Tensor, lam: float, l1_L: float, mu: float, recon=None,
                groups: np.ndarray | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One sweep of exact steps along the shears of the valley: for each ordered pair (i, j),
    row i of S += t row j and column j of L -= t column i (the same L S), t minimising
    lam ||L||^2 + l1_L ||L||_1 + mu ||S||_1 (+ w ||X L - T0||^2) along it: a convex piecewise
    quadratic in t, minimised exactly (so steps stop on the kinks where an entry of S is
    zero, the points that pin the valley). ``recon = (Z, T0, w)``, Z = X L: AMTFL's
    reconstruction with a fixed target T0. ``groups`` (one integer label per column of S):
    the group lasso mu sum_g ||S_i^g|| of LatentTaskMTL instead of the l1 on S (then a
    convex function minimised by safeguarded Newton steps). On the host in numpy: k (k - 1)
    tiny steps. Returns (L M^-1, M S, M)."""
    Ln, Sn = L.detach().cpu().numpy().copy(), S.detach().cpu().numpy().copy()
    Mn = np.eye(Ln.shape[1])
    if recon is not None:
        Z, T0, w = recon
        Z, R = Z.detach().cpu().numpy().copy(), Z.detach().cpu().numpy() - T0.detach().cpu().numpy()
    k = Ln.shape[1]
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            li, lj, si, sj = Ln[:, i], Ln[:, j], Sn[i], Sn[j]
            A, B = lam * float(li @ li), lam * float(li @ lj)
            if recon is not None:  # w ||z_j - t z_i - T0_j||^2
                A, B = A + w * float(Z[:, i] @ Z[:, i]), B + w * float(Z[:, i] @ R[:, j])
            if not A > 0:
                continue
            ml = li != 0
            tau, cw = (lj[ml] / li[ml], l1_L * np.abs(li[ml])) if l1_L > 0 else (np.zeros(0), np.zeros(0))
            if groups is None:
                ms = sj != 0
                t = _min_piecewise(A, B, np.concatenate([tau, -si[ms] / sj[ms]]),
                                   np.concatenate([cw, mu * np.abs(sj[ms])]))
            else:
                G = int(groups.max()) + 1
                uu, uv, vv = (np.bincount(groups, weights=x, minlength=G) for x in (si * si, si * sj, sj * sj))
                t = _min_convex(A, B, tau, cw, mu, uu, uv, vv)
            if t != 0.0 and np.isfinite(t):
                Sn[i] = si + t * sj
                Mn[i] += t * Mn[j]
                Ln[:, j] = lj - t * li
                if recon is not None:
                    R[:, j] -= t * Z[:, i]
                    Z[:, j] -= t * Z[:, i]
    return (torch.as_tensor(Ln, device=L.device), torch.as_tensor(Sn, device=S.device),
            torch.as_tensor(Mn, device=S.device))


def _best_angle(a: np.ndarray, b: np.ndarray, w: np.ndarray, p0: float, q0: float) -> tuple[float, float, int]:
    """The global minimiser over theta of g(theta) = p0 cos + q0 sin + sum_m w_m |a_m cos + b_m sin|
    (w >= 0). Between two consecutive zeros of the terms (the breakpoints) g is one sinusoid
    P cos + Q sin, so its minimum is at a breakpoint or at that sinusoid's trough
    atan2(-Q, -P) when the trough lies inside; the coefficients of the arcs follow by a
    cumulative sum of the sign flips. Returns (theta, g(theta) - g(0), m), m the term that is
    zero at theta (or -1)."""
    live = np.flatnonzero((w > 0) & ((a != 0) | (b != 0)))
    a, b, w = a[live], b[live], w[live]
    g0 = p0 + float(w @ np.abs(a))
    if a.size == 0:
        return float(np.arctan2(-q0, -p0)), -float(np.hypot(p0, q0)) - g0, -1
    phi = np.arctan2(b, a)  # term m is |r_m cos(theta - phi_m)|: + to - at phi + pi/2, - to + at phi - pi/2
    bp = np.remainder(np.concatenate([phi + np.pi / 2, phi - np.pi / 2]) + np.pi, 2 * np.pi) - np.pi
    da, db = np.concatenate([-2 * w * a, 2 * w * a]), np.concatenate([-2 * w * b, 2 * w * b])
    order = np.argsort(bp, kind="stable")
    bp, da, db, term = bp[order], da[order], db[order], np.tile(np.arange(a.size), 2)[order]
    start = 0.5 * (bp[-1] + bp[0] + 2 * np.pi)  # the arc from the last breakpoint round to the first
    sign = np.sign(a * np.cos(start) + b * np.sin(start))
    P = p0 + float((w * sign) @ a) + np.cumsum(da)  # the arc from bp[i] to bp[i + 1]
    Q = q0 + float((w * sign) @ b) + np.cumsum(db)
    at_bp = P * np.cos(bp) + Q * np.sin(bp)
    i = int(np.argmin(at_bp))
    best, theta, zero = float(at_bp[i]), float(bp[i]), int(live[term[i]])
    trough = np.arctan2(-Q, -P)
    trough = np.where(trough < bp, trough + 2 * np.pi, trough)
    inside = trough < np.concatenate([bp[1:], bp[:1] + 2 * np.pi])
    if inside.any():
        depth = np.where(inside, -np.hypot(P, Q), np.inf)
        i = int(np.argmin(depth))
        if depth[i] < best:
            best, theta, zero = float(depth[i]), float(trough[i]), -1
    return theta, best - g0, zero


def rotation_sweep(L: Tensor, S: Tensor, mu: float, l1_L: float = 0.0, recon=None) -> tuple[Tensor, Tensor, Tensor]:
    """One sweep of exact Givens rotations along the valley: for each pair i < j, rows (i, j)
    of S turned by the angle theta and columns (i, j) of L by the same rotation (Q S and
    L Q^T, the same L S), theta the global minimiser of the penalties along the circle
    (``_best_angle``: the Frobenius terms are unchanged, each l1 entry is |a cos + b sin|,
    AMTFL's reconstruction w ||X L - T0||^2 with a fixed target T0 a sinusoid). A rotation
    moves two shears at once, which coordinate shear steps cannot (a saddle of the
    penalties), and it jumps across kinks to the best one, where an entry of S (or L) is
    exactly zero. ``recon = (Z, T0, w)``, Z = X L. Returns (L M^-1, M S, M), M orthogonal."""
    Ln, Sn = L.detach().cpu().numpy().copy(), S.detach().cpu().numpy().copy()
    k, T = Sn.shape
    d = Ln.shape[0]
    Mn = np.eye(k)
    Z = T0 = None
    if recon is not None:
        Z, T0, w_rec = recon
        Z, T0 = Z.detach().cpu().numpy().copy(), T0.detach().cpu().numpy()
    weights = np.concatenate([np.full(2 * T, mu), np.full(2 * d, l1_L)])
    floor = 1e-13 * (mu * np.abs(Sn).sum() + l1_L * np.abs(Ln).sum())
    for i in range(k):
        for j in range(i + 1, k):
            si, sj, li, lj = Sn[i], Sn[j], Ln[:, i], Ln[:, j]
            p0 = q0 = 0.0
            if Z is not None:  # -2 w <Z Q^T, T0> over the columns (i, j)
                p0 = -2 * w_rec * float(Z[:, i] @ T0[:, i] + Z[:, j] @ T0[:, j])
                q0 = -2 * w_rec * float(Z[:, j] @ T0[:, i] - Z[:, i] @ T0[:, j])
            theta, gain, zero = _best_angle(np.concatenate([si, sj, li, lj]), np.concatenate([sj, -si, lj, -li]),
                                            weights, p0, q0)
            if not (gain < -floor and np.isfinite(theta)):
                continue
            R = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
            Sn[[i, j]] = R @ Sn[[i, j]]
            Mn[[i, j]] = R @ Mn[[i, j]]
            Ln[:, [i, j]] = Ln[:, [i, j]] @ R.T
            if Z is not None:
                Z[:, [i, j]] = Z[:, [i, j]] @ R.T
            if 0 <= zero < 2 * T:  # the entry that the angle zeroes, exactly (it is ~1e-17)
                Sn[(i, j)[zero // T], zero % T] = 0.0
            elif zero >= 2 * T:
                Ln[(zero - 2 * T) % d, (i, j)[(zero - 2 * T) // d]] = 0.0
    return (torch.as_tensor(Ln, device=L.device), torch.as_tensor(Sn, device=S.device),
            torch.as_tensor(Mn, device=S.device))


def map_duals(warm: dict, key: str | None, fn) -> None:
    """Apply ``fn`` to every dual of the ADMM state ``warm[key]`` (if any), keeping its rho."""
    state = warm.get(key) if key is not None else None
    if state is not None:
        warm[key] = ([[fn(y) for y in part] for part in state[0]], state[1])


def move_duals(warm: dict, M: Tensor, s_key: str | None, l_key: str | None) -> None:
    """After a move (L M^-1, M S) along the valley, the blocks' ADMM duals (stored in
    ``warm``) follow it: they approximate minus the gradients of the smooth parts, which
    transform as M^-T G for S and G M^T for L at the same L S. Where M is singular to the
    dtype's precision (shears between components with an empty row of S and a column of L
    near 0: entries of 1e7 in float32) the duals are dropped instead (the blocks start cold)."""
    Minv, info = torch.linalg.inv_ex(M.double())
    if int(info) != 0 or not bool(torch.isfinite(Minv).all()) or \
            float(torch.linalg.matrix_norm(M.double(), 1) * torch.linalg.matrix_norm(Minv, 1)) * \
            torch.finfo(M.dtype).eps > 1e-2:
        for key in (s_key, l_key):
            warm.pop(key, None)
        return
    MinvT = Minv.T.to(M.dtype)
    map_duals(warm, s_key, lambda y: MinvT @ y)
    map_duals(warm, l_key, lambda y: y @ M.T)
