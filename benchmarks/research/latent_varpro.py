"""Research script (not a benchmark): variable projection for the W = L S valley, a negative
result. The same family as ``latent_valley.py`` items 3 and 5 and ``latent_valley_more.py
--varpro`` / ``--face`` (Go-MTL only, without the valley moves); new here are AMTFL (squared
loss, A = 0, c eliminated) and the outer loop's exact valley moves after every Newton step.
Go-MTL and AMTFL on raw ``school_like`` at the issue's settings, with and without a finish
that replaces the projected Newton of ``linear/_polish.py`` (capped at 512 values: these
problems have 1670) after ``POLISH_AFTER`` outer steps:

* S at its optimum for every trial L, exactly: the tasks' lassos
  0.5 s^T B_t s - q_t^T s + mu ||s||_1 (B_t = c_t L^T G_t L) by feature-sign search (Lee,
  Battle, Raina and Ng 2007), batched over the tasks, restarted from zero where a warm start
  sits on a singular face; checked against scikit-learn's Lasso below (``--lasso``).
* Newton in L alone on Phi(L) = min_S F(L, S) (Golub and Pereyra 1973): the gradient by the
  envelope theorem, the Hessian the Schur complement H_LL - H_LE H_EE^-1 H_EL on S's support,
  task by task (``linear/_hessian.latent_hessian_blocks``), a Levenberg-Marquardt shift past
  its most negative eigenvalue, an Armijo search on Phi, then the outer loop's exact valley
  moves (best scales, shears, Givens rotations).

Measured 2026-11-28 (one thread; ``python benchmarks/research/latent_varpro.py`` from
python_tests/): the finish's gradient agrees with central differences of Phi to 7 digits,
yet it crawls like the alternation. The reduced Hessian keeps up to 58 (Go-MTL) and 45
(AMTFL) negative eigenvalues, 3 or more at nearly every step (the l1 of S along the valley's
rotations is concave between its kinks, so Phi's minima sit where entries of S reach zero),
and S's support changes by a few entries every step. Go-MTL: 200 Newton steps, 14.2 s,
residual 2.8e-6, F 4750.657 (the alternation alone: 2.1 s, 5.2e-5, F 4747.564: another basin);
AMTFL: 200 steps, 21.9 s, 3.7e-5, F 4758.757 (alone: 5.7 s, 2.7e-4, F 4758.859). Newton to grad Phi = 0 on a fixed face
(support and signs held) diverges (F from 4750 to 5e3..1e5): that face has no stationary point
nearby. The same exact lasso as the alternation's S-step (instead of ADMM): Go-MTL 4.3 s,
2.1e-4. (These two by variants not kept here.) None of it landed; the projected Newton's epsilon-active set did (``_polish``).

Lee, H., Battle, A., Raina, R. and Ng, A. Y. (2007). Efficient sparse coding algorithms. NIPS 19.
Golub, G. H. and Pereyra, V. (1973). The differentiation of pseudo-inverses and nonlinear
least squares problems whose variables separate. SIAM J. Numer. Anal. 10(2), 413-432.

Usage (from python_tests/, after `make install`; about a minute):
    ../.venv/bin/python ../benchmarks/research/latent_varpro.py [--lasso]
"""

from __future__ import annotations

import math
import sys
import time
import warnings

import numpy as np
import torch
from torch import Tensor

from mtlkernels.datasets import school_like
from mtlkernels.linear import AMTFL, GoMTL
from mtlkernels.linear import amtfl as amtfl_module
from mtlkernels.linear import latent as latent_module
from mtlkernels.linear._blocks import latent_l_quadratic
from mtlkernels.linear._hessian import latent_hessian_blocks
from mtlkernels.linear._polish import autograd_hessian

MAX_STEPS = 200


def lasso_objective(B: Tensor, q: Tensor, mu: float, s: Tensor) -> Tensor:
    """The objectives (T,) at s (T, k) (or (T, m, k): m points a task, giving (T, m))."""
    Bs = torch.einsum("tij,t...j->t...i", B, s)
    return 0.5 * (s * Bs).sum(-1) - (q.unsqueeze(-2) * s if s.dim() == 3 else q * s).sum(-1) + mu * s.abs().sum(-1)


def lasso_residual(B: Tensor, q: Tensor, mu: float, s: Tensor) -> Tensor:
    """Each task's KKT residual ||s - prox(s - grad)|| (T,)."""
    v = s - (torch.einsum("tij,tj->ti", B, s) - q)
    return (s - torch.sign(v) * (v.abs() - mu).clamp_min(0)).norm(dim=-1)


def feature_sign(B: Tensor, q: Tensor, mu: float, s0: Tensor | None = None, tol: float = 0.0,
                 max_iter: int | None = None) -> tuple[Tensor, int, Tensor]:
    """:func:`feature_sign_from` from ``s0``, and for the tasks it leaves above ``tol`` again
    from zero (a start on a singular face, B_t of rank below k, can stall: there the
    coefficients enter one by one). Returns (s, steps, residual per task / scale)."""
    s, steps, r = feature_sign_from(B, q, mu, s0, tol, max_iter)
    redo = r > tol
    if s0 is None or not bool(redo.any()):
        return s, steps, r
    s2, steps2, r2 = feature_sign_from(B[redo], q[redo], mu, None, tol, max_iter)
    better = r2 < r[redo]
    s[redo] = torch.where(better[:, None], s2, s[redo])
    r[redo] = torch.minimum(r2, r[redo])
    return s, steps + steps2, r


def feature_sign_from(B: Tensor, q: Tensor, mu: float, s0: Tensor | None = None, tol: float = 0.0,
                      max_iter: int | None = None) -> tuple[Tensor, int, Tensor]:
    """The lassos' solutions s (T, k) from s0 (zeros by default); B (T, k, k) symmetric PSD,
    q (T, k), mu >= 0. Stops when every task's KKT residual is at most ``tol`` times its
    scale (||q||, at least 1) or no task moves; ``max_iter`` defaults to 10 k + 10.
    Returns (s, steps, residual per task / scale)."""
    T, k = q.shape
    s = torch.zeros_like(q) if s0 is None else s0.clone()
    scale = q.norm(dim=-1).clamp_min(1.0)
    eye = torch.eye(k, dtype=q.dtype, device=q.device)
    ridge = 1e-14 * B.diagonal(dim1=1, dim2=2).abs().amax(1).clamp_min(1e-300)[:, None, None] * eye
    steps, tol_t = 0, torch.full_like(scale, tol)
    for steps in range(1, (10 * k + 10 if max_iter is None else max_iter) + 1):
        g = torch.einsum("tij,tj->ti", B, s) - q
        r = lasso_residual(B, q, mu, s) / scale
        todo = r > tol_t
        if not bool(todo.any()):
            return s, steps - 1, r
        # the face: the current signs, and the zero whose gradient exceeds mu the most enters with -sign(g)
        excess = torch.where(s == 0, g.abs() - mu, torch.zeros_like(s))
        worst = excess.argmax(1, keepdim=True)
        enter = torch.zeros_like(s, dtype=torch.bool).scatter_(1, worst, excess.gather(1, worst) > 0)
        theta = torch.where(s != 0, torch.sign(s), torch.where(enter, -torch.sign(g), torch.zeros_like(s)))
        on = theta != 0
        both = on[:, :, None] & on[:, None, :]
        face = torch.where(both, B + ridge, eye.expand_as(B))
        rhs = torch.where(on, q - mu * theta, torch.zeros_like(q))
        target = torch.linalg.solve(face, rhs)
        target = target + torch.linalg.solve(face, rhs - torch.einsum("tij,tj->ti", face, target))  # refined
        # the segment s -> target: its end and every point where a coefficient crosses zero
        delta = target - s
        with torch.no_grad():
            cross = (s != 0) & (torch.sign(target) != torch.sign(s))
            tau = torch.where(cross, s / (s - target).where(cross, torch.ones_like(s)), torch.ones_like(s))
        taus = torch.cat([tau, torch.ones(T, 1, dtype=s.dtype, device=s.device)], 1)  # (T, k + 1)
        points = s[:, None, :] + taus[:, :, None] * delta[:, None, :]
        hit = (taus[:, :, None] == tau[:, None, :]) & cross[:, None, :]  # the coefficient that crosses there
        points = torch.where(hit, torch.zeros_like(points), points)
        points[:, k] = target  # the end exactly (s + (target - s) is not, after rounding)
        # and the end projected on the face's orthant (an entering coefficient may overshoot)
        end = torch.where(torch.sign(target) == theta, target, torch.zeros_like(target))
        points = torch.cat([points, end[:, None, :], s[:, None, :]], 1)  # and s, evaluated alike
        F = lasso_objective(B, q, mu, points)
        F, F0 = F[:, :-1], F[:, -1]
        F = torch.where(torch.cat([cross, torch.ones_like(cross[:, :2])], 1), F, torch.full_like(F, float("inf")))
        best = F.argmin(1)
        new = points[torch.arange(T, device=s.device), best]
        # already at its face's optimum (no step lowers F), with no zero entering: the optimum,
        # its residual the rounding of the solve
        no_gain = F.gather(1, best[:, None])[:, 0] >= F0
        exact = no_gain & (best >= k) & ~cross.any(1) & ~enter.any(1) & (end == target).all(1)
        tol_t = torch.where(exact, torch.full_like(scale, float("inf")), tol_t)
        stuck = todo & no_gain & ~exact
        if bool(stuck.any()):  # an exact coordinate step on the worst violator, which always descends
            i = torch.where(s != 0, (g + mu * torch.sign(s)).abs(), (g.abs() - mu).clamp_min(0)).argmax(1, keepdim=True)
            bii = B.diagonal(dim1=1, dim2=2).gather(1, i).clamp_min(1e-300)
            v = s.gather(1, i) - g.gather(1, i) / bii
            coord = s.scatter(1, i, torch.sign(v) * (v.abs() - mu / bii).clamp_min(0))
            better = stuck & (lasso_objective(B, q, mu, coord) < F0)
            new = torch.where(better[:, None], coord, new)
            stuck = stuck & ~better
        keep = ~todo | stuck | exact
        s = torch.where(keep[:, None], s, new)
        if bool((keep | exact).all()):
            return s, steps, lasso_residual(B, q, mu, s) / scale
    return s, steps, lasso_residual(B, q, mu, s) / scale


def schur(L, S, hessian):
    """The reduced Hessian on S's support and Y = H_EE^-1 H_EL (T, k, dk)."""
    H_ll, H_ls, H_ss = hessian(L, S)
    on = (S != 0).T  # (T, k)
    eye = torch.eye(S.shape[0], dtype=S.dtype, device=S.device)
    B = torch.where(on[:, :, None] & on[:, None, :], H_ss, eye * (~on[:, :, None]))
    C = (H_ls * on.T[None]).permute(2, 1, 0)  # (T, k, dk)
    Y = torch.linalg.solve(B + 1e-13 * B.diagonal(dim1=1, dim2=2).amax(1)[:, None, None] * eye, C)
    return H_ll - torch.einsum("tka,tkb->ab", C, Y), Y


def reduced_newton(L, S, s_solve, value, grad_l, hessian, residual, tol, move=None, log=None):
    """min over L of min over S of F(L, S) by Levenberg-Marquardt Newton steps in L."""
    F, r, lm = value(L, S), residual(L, S), 1e-10
    for step in range(MAX_STEPS):
        if r <= tol:
            return L, S, r, step
        g = grad_l(L, S).reshape(-1)
        H, Y = schur(L, S, hessian)
        scale = H.diagonal().abs()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale)).rsqrt()
        ev, V = torch.linalg.eigh((H + H.T) / 2 * scale[:, None] * scale[None, :])
        gt = V.T @ (g * scale)
        floor, top = max(0.0, -float(ev[0])), float(ev[-1].abs().clamp_min(1e-300))
        moved = False
        for _ in range(30):
            d = -(V @ (gt / (ev + floor + lm * top))) * scale
            slope = float(g @ d)
            for t in (1.0, 0.5, 0.25):
                Ln = L + t * d.reshape(L.shape)
                Sn = s_solve(Ln, S - t * (Y @ d).T)
                Fn = value(Ln, Sn)
                if math.isfinite(Fn) and Fn <= F + 1e-4 * t * slope:
                    moved = True
                    break
            if moved:
                break
            lm *= 10
        if not moved:
            return L, S, r, step
        lm = max(lm / 10, 1e-14) if t == 1.0 else lm
        L, S, F = Ln, Sn, Fn
        if move is not None:
            Lm, Sm = move(L, S)
            Sm = s_solve(Lm, Sm)
            Fm = value(Lm, Sm)
            if Fm <= F:
                L, S, F = Lm, Sm, Fm
        r = residual(L, S)
        if log is not None:
            log.append((float(ev[0]), int((ev < 0).sum()), int((S != 0).sum())))
    return L, S, r, MAX_STEPS


def lasso_finish(loss, L, S, mu, penalty_l, value, residual, tol, move=None, log=None):
    """F(L, S) = sum_t L_t(L s_t) + mu ||S||_1 + penalty_l(L), the squared loss in Gram form."""
    c, lin = loss.gram.c, loss.linear

    def s_solve(Lx, S0):
        k, T = S0.shape
        B = (Lx.T @ loss.gram.G @ Lx).expand(T, k, k) * c.reshape(-1, 1, 1)
        return feature_sign((B + B.mT) / 2, (Lx.T @ lin).T, mu, S0.T.contiguous(), tol=0.01 * tol)[0].T

    def grad_l(Lx, Sx):
        with torch.enable_grad():
            x = Lx.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(penalty_l(x) + 0 * x.sum(), x)
        return latent_l_quadratic(loss, Sx).grad(Lx) + g

    def hessian(Lx, Sx):
        g, T = loss.gram, Sx.shape[1]
        G = g.G.expand(T, *g.G.shape[-2:]) * c.reshape(-1, 1, 1)
        u = torch.einsum("tab,bt->ta", G, Lx @ Sx) - lin.T
        H_ll, H_ls, H_ss = latent_hessian_blocks(G, u, Lx, Sx)
        flat = lambda v: penalty_l(v.reshape(Lx.shape)) + 0 * v.sum()  # noqa: E731
        return H_ll + autograd_hessian(flat, Lx.reshape(-1)), H_ls, H_ss

    return reduced_newton(L, s_solve(L, S), s_solve, value, grad_l, hessian, residual, tol, move=move, log=log)


LOG = []


def gomtl_finish(self, data, L, S, b, loss, losses, start):
    """Stands in for ``_LatentFactorMTL._polish`` (Go-MTL, squared loss, no l1 on L)."""
    point = lambda Lx, Sx: (Lx, Sx, loss.intercept(Lx @ Sx))  # noqa: E731
    zero = torch.zeros((), dtype=S.dtype)

    def move(Lx, Sx):
        Lx, Sx = latent_module.rebalance(Lx, Sx, latent_module.balance_scales(*self._scale_terms(Lx, Sx)))
        return self._shear(Lx, Sx)[:2]

    Ln, Sn, r, _ = lasso_finish(loss, L, S, float(self.mu), lambda Lx: self._smooth_penalty({"L": Lx}, {"S": zero}),
                                lambda Lx, Sx: self.objective(*point(Lx, Sx), data),
                                lambda Lx, Sx: max(self._residuals(data, *point(Lx, Sx), loss, losses).values()),
                                float(self.tol), move=move, log=LOG)
    return (point(Ln, Sn), self._residuals(data, *point(Ln, Sn), loss, losses)) if r <= start else None


def amtfl_finish(self, data, point0, task_L, residuals, sq, start):
    """Stands in for ``AMTFL._polish`` (squared loss, linear layer, A = 0: c = X^T 1 / N L)."""
    L, S, A, c, b = point0
    samples = data.features()
    rw, lam, XtX, mean = self._recon_weight(data), float(self.lam), samples.T @ samples, samples.mean(0)
    penalty_l = lambda Lx: lam * (Lx**2).sum() + rw * ((Lx * (XtX @ Lx)).sum()  # noqa: E731
                                                       - samples.shape[0] * (torch.relu(mean @ Lx) ** 2).sum())
    point = lambda Lx, Sx: (Lx, Sx, A, mean @ Lx, sq.intercept(Lx @ Sx))  # noqa: E731
    Ln, Sn, r, _ = lasso_finish(sq, L, S, float(self.mu), penalty_l, lambda Lx, Sx: self.objective(
        *point(Lx, Sx), data), lambda Lx, Sx: max(residuals(*point(Lx, Sx)).values()), float(self.tol), log=LOG)
    return (point(Ln, Sn), residuals(*point(Ln, Sn))) if r <= start else None


def fit(est, Xs, ys):
    LOG.clear()
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(Xs, ys)
    t = time.perf_counter() - t
    neg = f" negative eigenvalues {min(n for _, n, _ in LOG)}-{max(n for _, n, _ in LOG)}" if LOG else ""
    print(f"{type(est).__name__:6s} {t:6.2f} s {est.n_iter_:4d} outer  residual {est.residual_:.1e}  "
          f"F {est.objective_history_[-1]:.10g}  finish steps {len(LOG)}{neg}", flush=True)


def check_lasso():
    """feature_sign against scikit-learn's Lasso on 50 ill-conditioned tasks."""
    from sklearn.linear_model import Lasso
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 30, 10)) * np.logspace(-2, 2, 10)
    y = rng.standard_normal((50, 30)) * 10
    B, q = torch.tensor(np.einsum("tni,tnj->tij", X, X)), torch.tensor(np.einsum("tni,tn->ti", X, y))
    for mu in (1.0, 30.0, 300.0):
        s, steps, r = feature_sign(B, q, mu, tol=1e-12)
        ref = np.stack([Lasso(alpha=mu / 30, fit_intercept=False, tol=1e-14, max_iter=10**6).fit(x, v).coef_
                        for x, v in zip(X, y)])
        gap = float((lasso_objective(B, q, mu, s) - lasso_objective(B, q, mu, torch.tensor(ref))).max())
        print(f"mu {mu:5g}: {steps} steps, residual {float(r.max()):.1e}, objective - sklearn's <= {gap:.1e}")


def main():
    torch.set_num_threads(1)
    if "--lasso" in sys.argv:
        return check_lasso()
    Xs, ys = school_like(0).split("train")
    make = [lambda: GoMTL(n_latent=10, mu=1e-3, lam=1e-3),
            lambda: AMTFL(n_latent=10, alpha=0.1, mu=1e-2, gamma=1e-2, lam=1e-2)]
    print("the alternation (and the library's finish, which declines these sizes):")
    for m in make:
        fit(m(), Xs, ys)
    print("with the variable-projection finish:")
    latent_module._LatentFactorMTL._polish = gomtl_finish
    amtfl_module.AMTFL._polish = amtfl_finish
    for m in make:
        fit(m(), Xs, ys)


if __name__ == "__main__":
    main()
