"""A finish for Go-MTL and shallow AMTFL (A = 0, School's case) with the squared loss and no
l1 on L, on problems too large for ``_polish``: proximal Newton on S alone, L eliminated
exactly, from the alternation's ``REDUCED_AFTER``-th outer step (in float64 only).

With the squared loss and a ridge on L the objective is quadratic in L for a fixed S, so
L(S) is one Cholesky solve of its d k normal equations, and

    psi(S) = min_L  0.5 sum_t (L s_t)^T G_t (L s_t) - b_t^T L s_t + 0.5 <L, E L> - <L, E_l> + lam ||L||^2

is smooth (variable projection, Golub and Pereyra 1973; E, E_l: AMTFL's reconstruction
w ||X L - 1 relu(c)^T||^2 with A = 0): its gradient is L(S)^T R (the envelope theorem), its
Hessian the Schur complement H_SS - H_SL H_LL^-1 H_LS. What is left, min_S psi(S) + mu ||S||_1,
is smooth plus l1, for proximal Newton (Lee, Sun and Saunders 2014): each step minimises the
l1 plus a quadratic model of psi (ADMM in the model's eigenbasis), so it can zero many
entries of S at once, where the alternation and every active-set method tried moved one
face of S's signs at a time (``benchmarks/research/latent_valley.py``). psi is invariant
under rotations S -> Q S, and its Hessian has k (k - 1) / 2 negative eigenvalues at every
point seen on ``school_like``: the model takes them by their absolute value times
``NEG_SCALE`` (saddle-free steps, Dauphin et al. 2014, lengthened: on a face the l1 along a
rotation's tangent is linear and psi concave, so the step should run on to the model's next
kink), with a backtracking search on the plain saddle-free step as the fallback. Where the
face of S's signs holds (every zero's gradient within mu, the Hessian on the nonzeros
positive definite) a plain Newton step on it comes first: the modified model alone
converges only linearly at the end; after a face whose Hessian is not positive definite the
next tries wait 1, 2, 4, ... steps. A model's eigendecomposition serves ``MODEL_AGE`` steps,
the dense Hessian is formed only for a new model or a face step, and each ADMM starts from
the last accepted step's multiplier and penalty.
On ``school_like`` at the settings of issue 11 both reach their optimum this way, from the
alternation's 50th outer step, in about 100-150 steps of 0.2-0.3 s (one thread; the
alternation alone stops at a residual of 5.2e-5 (Go-MTL, 200 outer steps) and 2.7e-4 (AMTFL,
100)); ``benchmarks/research/latent_reduced_newton.py`` has the measurements and what else
was tried. The path is chaotic: other step rules reach other local optima, 1e-5 apart.

Golub, G. H. and Pereyra, V. (1973). The differentiation of pseudo-inverses and nonlinear
least squares problems whose variables separate. SIAM J. Numer. Anal. 10(2), 413-432.
Lee, J. D., Sun, Y. and Saunders, M. A. (2014). Proximal Newton-type methods for minimizing
composite functions. SIAM J. Optim. 24(3), 1420-1443.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import ops

REDUCED_MAX_S = 2048  # entries of S: one eigh of that size every few steps
REDUCED_MAX_L = 1024  # entries of L: one Cholesky of that size a step
REDUCED_AFTER = 50  # outer steps of the alternation before this finish (``_polish``'s comes after 5)
REDUCED_STEPS = 300
C_ROUNDS = 5  # AMTFL: rounds of the finish and its reconstruction bias c
STALL_STEPS = 40  # steps in which the objective must fall by tol / 10 (relative) or the residual reach a new low
NEG_SCALE = 0.01  # the model's curvature along the negative eigenvalues, times their absolute value
ADMM_ITER = 100
BACKTRACK = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01)
MODEL_AGE = 6  # steps a model eigendecomposition serves (recomputed early when its step fails)


@dataclass
class LatentQuadratic:
    """The latent model's objective in (L, S) with the squared loss and the intercepts
    eliminated: G (T, d, d) the tasks' Gram matrices times their weights, B (d, T) the linear
    term, ``const``, E (d, d) or None a curvature on every column of L (or (k, d, d), one a
    column: AMTFL's reconstruction with A = 0), El (d, k) or None its linear term, then
    lam ||L||^2 + mu ||S||_1."""

    G: Tensor
    B: Tensor
    const: float
    E: Tensor | None
    El: Tensor | None
    lam: float
    mu: float

    def value(self, L: Tensor, S: Tensor) -> float:
        W = L @ S
        GW = torch.einsum("tab,bt->at", self.G, W)
        out = 0.5 * (W * GW).sum() - (self.B * W).sum() + self.lam * (L * L).sum() + self.mu * S.abs().sum()
        if self.E is not None:
            EL = self.E @ L if self.E.dim() == 2 else torch.einsum("iab,bi->ai", self.E, L)
            out = out + 0.5 * (L * EL).sum() - (self.El * L).sum()
        return float(out) + self.const

    def l_system(self, S: Tensor) -> Tensor | None:
        """The Cholesky factor of the normal equations of L for this S (None if not PD)."""
        d, k = self.G.shape[-1], S.shape[0]
        H = torch.einsum("it,jt,tab->aibj", S, S, self.G).reshape(d * k, d * k)
        if self.E is not None:
            eye = torch.eye(k, dtype=H.dtype, device=H.device)
            H = H + (torch.kron(self.E, eye) if self.E.dim() == 2
                     else torch.einsum("iab,ij->aibj", self.E, eye).reshape(d * k, d * k))
        H = (H + H.T) / 2 + 2 * self.lam * torch.eye(d * k, dtype=H.dtype, device=H.device)
        factor, info = torch.linalg.cholesky_ex(H)
        return None if int(info) != 0 else factor

    def l_of(self, S: Tensor, factor: Tensor) -> Tensor:
        rhs = self.B @ S.T + (self.El if self.El is not None else 0)
        return torch.cholesky_solve(rhs.reshape(-1, 1), factor).reshape(rhs.shape)

    def gradient(self, L: Tensor, S: Tensor) -> Tensor:
        """psi's gradient (T k,) at S (L = L(S)), entries ordered task by task: L^T r_t."""
        R = torch.einsum("tab,bt->ta", self.G, L @ S) - self.B.T  # (T, d): G_t w_t - b_t
        return (R @ L).reshape(-1)

    def hessian(self, L: Tensor, S: Tensor, factor: Tensor) -> Tensor:
        """psi's Hessian (T k, T k) at S, H_SS - H_SL H_LL^-1 H_LS (``factor``: H_LL's)."""
        T, k, d = S.shape[1], S.shape[0], L.shape[0]
        R = torch.einsum("tab,bt->ta", self.G, L @ S) - self.B.T
        GL = torch.einsum("tab,bk->tak", self.G, L)
        eye = torch.eye(k, dtype=L.dtype, device=L.device)
        # d2 / dL[a, i] ds_t[j] = (G_t L)[a, j] s_t[i] + r_t[a] delta_ij
        cross = torch.einsum("taj,it->aitj", GL, S) + torch.einsum("ta,ij->aitj", R, eye)
        cross = cross.reshape(d * k, T * k)
        H = -cross.T @ torch.cholesky_solve(cross, factor)
        idx = torch.arange(T * k, device=S.device).reshape(T, k)
        H[idx[:, :, None], idx[:, None, :]] += L.T @ GL  # the blocks L^T G_t L
        return (H + H.T) / 2


def _model_step(s: Tensor, g: Tensor, ev: Tensor, V: Tensor, mu: float, dual: Tensor, tol: float,
                rho: float | None = None):
    """argmin_x g^T (x - s) + 0.5 (x - s)^T V diag(ev) V^T (x - s) + mu ||x||_1 by ADMM
    (x = z, the x-update in the eigenbasis, the z-update ``ops.soft_threshold``, rho balanced
    every 25 steps; ``optim.admm``, with its residual certificates and Anderson steps, took
    AMTFL on school_like 111 s against 33 s, both while another job ran); ``dual`` (the
    multiplier of the last step, unscaled) and ``rho`` (its penalty) warm-start it.
    Returns (z, multiplier, rho)."""
    rho = float(ev.median().clamp_min(1e-300)) if rho is None else rho
    Vs = V.T @ s
    z, y = s.clone(), dual.clone()
    base = ev * Vs - V.T @ g
    for it in range(ADMM_ITER):
        x = V @ ((base + V.T @ (rho * z - y)) / (ev + rho))
        z_old = z
        z = ops.soft_threshold(x + y / rho, mu / rho)
        y = y + rho * (x - z)
        primal, dual_r = float((x - z).norm()), rho * float((z - z_old).norm())
        if primal <= tol * max(1.0, float(z.norm())) and dual_r <= tol * max(1.0, float(y.norm())):
            break
        if it % 25 == 24:
            if primal > 10 * dual_r:
                rho *= 2
            elif dual_r > 10 * primal:
                rho /= 2
    return z, y, rho


def _face_step(s: Tensor, g: Tensor, hessian, mu: float) -> Tensor | None:
    """Newton on the face of S's sign pattern, where it holds: every zero's gradient within
    mu and the Hessian on the nonzeros positive definite; the step stops where an entry
    first reaches zero (that entry set to zero). None where the face does not hold."""
    free = s != 0
    if not bool(free.any()) or bool((g[~free].abs() > mu).any()):
        return None
    idx = free.nonzero().squeeze(1)
    factor, info = torch.linalg.cholesky_ex(hessian()[idx][:, idx])
    if int(info) != 0:
        return None
    sign = torch.sign(s[idx])
    d = -torch.cholesky_solve((g[idx] + mu * sign)[:, None], factor).squeeze(1)
    new = s[idx] + d
    cross = torch.sign(new) != sign
    t = 1.0
    if bool(cross.any()):
        t = float((s[idx][cross] / (s[idx][cross] - new[cross])).min())
    out = s.clone()
    out[idx] = s[idx] + t * d
    out[idx] = torch.where(torch.sign(out[idx]) != sign, torch.zeros_like(d), out[idx])
    return out


def reduced_newton(q: LatentQuadratic, L: Tensor, S: Tensor, residual, tol: float, max_steps: int = REDUCED_STEPS,
                   log=None):
    """Proximal Newton on psi(S) + mu ||S||_1 from S, each step kept only if it lowers the
    objective; stops once ``residual(L, S)`` is at most ``tol`` or no step lowers it.
    Returns (L, S, residual, steps), or None when the problem is too large or not float64."""
    k, T = S.shape
    if S.numel() > REDUCED_MAX_S or L.numel() > REDUCED_MAX_L or S.numel() == 0 or S.dtype != torch.float64:
        return None  # (in float32 its descent tests drown in rounding: AMTFL 1.7 -> 8.7 s for nothing)
    factor = q.l_system(S)
    if factor is None:
        return None
    L = q.l_of(S, factor)
    F, r = q.value(L, S), residual(L, S)
    s = S.T.reshape(-1).clone()  # task by task
    dual = torch.zeros_like(s)
    model, age, steps, history, residuals = None, 0, 0, [F], [r]
    face_after, face_wait, rho, long_steps = 0, 1, None, True
    for steps in range(1, max_steps + 1):
        if r <= tol:
            return L, S, r, steps - 1
        if len(history) > STALL_STEPS and history[-STALL_STEPS - 1] - F <= 0.1 * tol * abs(F) and \
                min(residuals[-STALL_STEPS:]) >= min(residuals[:-STALL_STEPS]):
            return L, S, r, steps - 1  # neither the objective nor the residual falls: a crawl
        g, H = q.gradient(L, S), []

        def hessian():  # formed only for a face step or a new model
            if not H:
                H.append(q.hessian(L, S, factor))
            return H[0]

        accepted = None
        if steps >= face_after:  # after a face that was no minimum, wait (1, 2, 4, ... steps)
            face = _face_step(s, g, hessian, q.mu)
            accepted = None if face is None else _try(q, face, T, k, F)
            if face is not None and accepted is None or face is None and H:
                face_wait = min(2 * face_wait, 32)
                face_after = steps + face_wait
            elif accepted is not None:
                face_wait = 1
        fresh = False
        for attempt in range(2):  # the last model first (if young enough), then this point's
            if accepted is not None or (attempt == 1 and fresh):
                break
            if model is None or age >= MODEL_AGE or attempt == 1:
                model, age, fresh = torch.linalg.eigh(hessian()), 0, True
            ev, V = model
            age += 1 if attempt == 0 else 0
            top = float(ev.abs().max().clamp_min(1e-300))
            for scale in (NEG_SCALE, 1.0) if long_steps else (1.0,):
                em = torch.where(ev < 0, -ev * scale, ev).clamp_min(1e-10 * top)
                x, y, rho_new = _model_step(s, g, em, V, q.mu, dual, 1e-8, rho)
                # the full step, and for the plain saddle-free model a backtracking search
                # along it (a descent direction of the objective: Lee, Sun and Saunders 2014)
                for t in (1.0,) if scale != 1.0 else BACKTRACK:
                    accepted = _try(q, s + t * (x - s), T, k, F)
                    if accepted is not None:
                        break
                if accepted is not None:
                    dual, rho = y, rho_new
                    long_steps = scale != 1.0 or t == 1.0  # a step the model cut short: no long one next
                    break
        if accepted is None:
            return L, S, r, steps - 1
        s, F, L, S, factor = accepted
        r = residual(L, S)
        history.append(F)
        residuals.append(r)
        if log is not None:
            log(steps, F, r, S)
    return L, S, r, steps


def _try(q: LatentQuadratic, x: Tensor, T: int, k: int, F: float):
    """(x, F, L, S, factor) at the trial point x when it lowers the objective, else None."""
    Sx = x.reshape(T, k).T.contiguous()
    factor = q.l_system(Sx)
    if factor is None:
        return None
    Lx = q.l_of(Sx, factor)
    Fx = q.value(Lx, Sx)
    if not (math.isfinite(Fx) and Fx < F):
        return None
    return x, Fx, Lx, Sx, factor




def reduced_finish(loss, L: Tensor, S: Tensor, lam: float, mu: float, residual, tol: float,
                   extra: Tensor | None = None):
    """:func:`reduced_newton` on sum_t L_t(L s_t) (``loss`` a ``_solve.SquaredLoss`` with exact
    Gram matrices) + 0.5 sum_j l_j^T extra_j l_j + lam ||L||^2 + mu ||S||_1 (``extra`` (d, d)
    or (k, d, d), or None). Returns (L, S, residual, steps), or None (too large)."""
    g = loss.gram
    if g is None or lam <= 0:
        return None
    G = (g.G.expand(S.shape[1], -1, -1) if g.shared else g.G) * g.c[:, None, None]
    q = LatentQuadratic(G, loss.linear, float(loss.yy.sum()), extra, None if extra is None else torch.zeros_like(L),
                        float(lam), float(mu))
    return reduced_newton(q, L, S, residual, tol)


def amtfl_reduced_finish(est, sq, samples: Tensor, rw: float, point, residuals, objective):
    """The finish for shallow AMTFL with the squared loss, the linear layer, no l1 on L and
    A = 0 (as on School: the (L, S) problem is then Go-MTL's plus the reconstruction
    rw ||X L - 1 relu(c)^T||^2), with c eliminated too: at its optimum relu(c_j) is the mean of
    column j of X L where that is positive (the column's term rw ||X l_j||^2 centred), else 0
    (uncentred); the finish holds these signs, and runs again where they change (at most
    ``C_ROUNDS`` times). ``residuals`` and ``objective`` take (L, S, A, c, b). Returns
    ((L, S, A, c, b), residuals) when the finish's point is kept (``_polish.keep_polished``),
    else None."""
    from ._polish import keep_polished

    L, S, A, c, b = point
    if est.l1_L != 0 or bool(A.any()):
        return None
    start = residuals(*point)
    X, N = samples, samples.shape[0]
    gram, centred = X.T @ X, X.T @ X - torch.outer(X.sum(0), X.sum(0)) / N
    on = (X @ L).mean(0) > 0
    out = None
    for _ in range(C_ROUNDS):
        E = 2 * rw * torch.where(on[:, None, None], centred, gram)

        def bias(Lx):
            m = (X @ Lx).mean(0)
            return torch.where(on, m, torch.clamp(c, max=0))

        def ls_residual(Lx, Sx):
            res = residuals(Lx, Sx, A, bias(Lx), sq.intercept(Lx @ Sx))
            return max(v for key, v in res.items() if key != "A")

        out = reduced_finish(sq, L, S, est.lam, est.mu, ls_residual, float(est.tol), extra=E)
        if out is None:
            return None
        L, S = out[0], out[1]
        now = (X @ L).mean(0) > 0
        if torch.equal(now, on):
            break
        on = now
    c = bias(L)
    new = (L, S, A, c, sq.intercept(L @ S))
    res = residuals(*new)
    if not keep_polished(max(start.values()), max(res.values()), objective(*point), objective(*new), est.tol):
        return None
    return new, res
