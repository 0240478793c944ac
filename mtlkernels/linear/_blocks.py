"""Block solves of the alternating estimators (AMTL, Go-MTL, LatentTaskMTL, AMTFL): each
block is solved to its optimum by the engine that gets there (ADMM with exact solves for
quadratic blocks, FISTA otherwise), and each block's KKT residual is measured the same way
at the end of every outer iteration."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..optim import Quadratic, TaskGram
from ._solve import quadratic_step, run_admm, run_fista


def right_quadratic(M: Tensor, linear: Tensor, const: float = 0.0) -> Quadratic:
    """g(D) = 0.5 <D, D M> - <D, linear> + const for D (d, T), M (T, T) symmetric positive
    semi-definite, with its resolvent from the eigendecomposition of M (formed at the first
    resolvent: a caller that only needs gradients never pays for it)."""
    M = (M + M.T) / 2
    eig: list = []

    def hess(D):
        return D @ M

    def inverse(R, r):
        if not eig:
            lam, V = torch.linalg.eigh(M)
            eig.extend((lam.clamp_min(0), V))
        lam, V = eig
        return ((R @ V) / (lam + r)) @ V.T

    T = M.shape[0]
    return Quadratic(hess, linear, const, inverse, max(float(M.diagonal().sum()) / T, 0.0) if T else 1.0)


def factor_quadratic(Z: Tensor, linear: Tensor, const: float = 0.0) -> Quadratic:
    """g(D) = 0.5 ||Z D||^2 - <D, linear> + const for D (n, T) and Z (r, n): the Gram
    matrix Z^T Z applied through its factor (cheaper when r < n), with the resolvent from
    the thin SVD of Z: (Z^T Z + r I)^{-1} R = (R - V diag(s^2 / (s^2 + r)) V^T R) / r."""
    _, s, Vh = torch.linalg.svd(Z, full_matrices=False)
    s2, Vt = s * s, Vh
    V = Vh.T.contiguous()
    shrink: list = [None, None]  # (r, s^2 / (s^2 + r)) for the last r (ADMM changes r rarely)

    def hess(D):
        return Z.T @ (Z @ D)

    def inverse(R, r):
        if shrink[0] != r:
            shrink[:] = [r, (s2 / (s2 + r))[:, None]]
        return (R - V @ ((Vt @ R) * shrink[1])) / r

    return Quadratic(hess, linear, const, inverse, float(s2.sum()) / max(Z.shape[1], 1))


def left_quadratic(G: Tensor, linear: Tensor, const: float = 0.0) -> Quadratic:
    """g(D) = 0.5 <D, G D> - <D, linear> + const for D (n, T), G (n, n) symmetric positive
    semi-definite, with its resolvent (the eigendecomposition of G, formed at first use)."""
    tg = TaskGram((G + G.T) / 2, n_tasks=linear.shape[1])
    return Quadratic(tg, linear, const, tg.inverse, tg.mean_eigenvalue())


def prox_residual(x: Tensor, grad: Tensor, step: float | None, prox_step) -> float:
    """The norm of the gradient mapping (x - prox_{step h}(x - step grad)) / step: zero
    exactly at a minimiser of the block; for a small step it is the distance from 0 to the
    block's subdifferential (the KKT residual). ``step=None`` picks sqrt(eps) ||x|| / ||grad||:
    small enough to be that distance except on entries below sqrt(eps) ||x||, large enough
    that rounding (eps ||x|| / step = sqrt(eps) ||grad||) stays far below any tolerance."""
    if step is None:
        xn, gn = float(x.norm()), float(grad.norm())
        if gn == 0:  # not 0 at once: the penalty's subgradient at x may be nonzero (l1 at x != 0)
            step = torch.finfo(x.dtype).eps ** 0.5 * xn if xn > 0 else 1.0
        else:
            step = torch.finfo(x.dtype).eps ** 0.5 * max(xn, 1e-300) / gn
            if xn == 0:
                step = 1e-8 / gn
    return float((x - prox_step(x, grad, step)).norm()) / step


def keep_descent(res, start):
    """ADMM is not a descent method: an inexact solve may end above its start. Keep the
    start then, so that the alternating methods' objective never rises."""
    F0, F1 = res.history[0], res.history[-1]
    if F1 > F0 + 4 * torch.finfo(start[0].dtype).eps * (abs(F0) + abs(F1)):
        res.params, res.objective = [p.detach().clone() for p in start], F0
    return res


def solve_block(est, smooth, prox_admm, prox_step, penalty, params, desc: str, scale: float, tol: float,
                warm: dict | None = None, max_iter: int | None = None, stall=None):
    """One block to its optimum: ADMM when every smooth part is a :class:`Quadratic` with a
    resolvent, FISTA otherwise (``smooth`` a callable or a Quadratic without one).
    ``prox_admm(V, t)`` and ``prox_step(P, G, lr)`` act on the list of the block's tensors.
    ``warm``: a dict keeping each block's ADMM state (duals, rho) between outer steps.
    ``max_iter``: a cap below the estimator's ``max_iter`` (default: that one); ``stall``:
    FISTA's (window, rtol) stop on no progress."""
    quads = smooth if isinstance(smooth, (list, tuple)) else [smooth]
    if all(isinstance(q, Quadratic) and q.inverse is not None for q in quads):
        res = run_admm(est, quads, prox_admm, penalty, params, desc, max_iter=max_iter, scale=scale, tol=tol,
                       warm=None if warm is None else warm.get(desc))
        if warm is not None:
            warm[desc] = res.state
        return keep_descent(res, params)
    if isinstance(smooth, (list, tuple)):
        raise ValueError("several smooth parts need resolvents (ADMM)")
    lr = quadratic_step(smooth, params[0]) if isinstance(smooth, Quadratic) else est._block_lr(params)
    return run_fista(est, smooth, prox_step, penalty, params, lr, desc, max_iter=max_iter, scale=scale, tol=tol,
                     stall=stall)


def grad_at(fn, params) -> list[Tensor]:
    """Gradients of a scalar function at ``params`` (a list), by autograd."""
    with torch.enable_grad():
        p = [x.detach().requires_grad_(True) for x in params]
        return list(torch.autograd.grad(fn(p), p, allow_unused=True))


def block_scale(grad_at_zero: Tensor) -> float:
    """A block's residual scale: the norm of its smooth part's gradient at zero (at least 1)."""
    v = float(grad_at_zero.norm())
    return max(1.0, v) if math.isfinite(v) else 1.0


def _cholesky_inverse(K: Tensor, shape):
    """(K + r I)^{-1} on tensors of ``shape`` (vectorised row-major), the Cholesky factor
    formed once per r (ADMM changes r rarely)."""
    cache = {}
    eye = torch.eye(K.shape[0], dtype=K.dtype, device=K.device)

    def inverse(R, r):
        if cache.get("r") != r:
            cache["r"], cache["f"] = r, torch.linalg.cholesky(K + r * eye)
        return torch.cholesky_solve(R.reshape(-1, 1), cache["f"]).reshape(shape)

    return inverse


def _weights(loss, factor):
    """The task weights, linear term and constant of sum_t factor_t L_t (factor None: 1)."""
    g = loss.gram
    if factor is None:
        return (None if g._unit else g.c), g.c, loss.linear, float(loss.yy.sum())
    c = g.c * factor
    return c, c, loss.linear * factor, float((loss.yy * factor).sum())


def latent_s_quadratic(loss, L: Tensor, factor: Tensor | None = None) -> Quadratic:
    """sum_t factor_t L_t(L s_t) (squared loss) as a quadratic in S (k, T), L fixed: per-task
    Gram matrices L^T G_t L (k x k) with the task weights, resolvent by eigendecomposition."""
    weights, _, lin, const = _weights(loss, factor)
    G = L.T @ loss.gram.G @ L  # (k, k), or (T, k, k) by broadcasting
    tg = TaskGram((G + G.mT) / 2, weights, n_tasks=loss.gram.c.numel())
    return Quadratic(tg, L.T @ lin, const, tg.inverse, tg.mean_eigenvalue())


def latent_l_quadratic(loss, S: Tensor, factor: Tensor | None = None, extra: Tensor | None = None) -> Quadratic:
    """sum_t factor_t L_t(L s_t) (squared loss) as a quadratic in L (d, k), S fixed: the
    Hessian K = sum_t c_t (s_t s_t^T) kron G_t. A shared design has K = (S C S^T) kron G,
    applied as G D (S C S^T) with the resolvent from the two eigendecompositions; per-task
    designs (or ``extra``, a (d, d) matrix E adding E kron I_k to K) form K (dk x dk) and
    solve with its Cholesky factor."""
    g = loss.gram
    _, c, lin, const = _weights(loss, factor)
    d, k = g.G.shape[-1], S.shape[0]
    lin = lin @ S.T
    if extra is not None:
        if g.shared:
            M = (S * c) @ S.T
            K = torch.kron(g.G, (M + M.T) / 2)
        else:
            K = torch.einsum("it,jt,tab->aibj", S * c, S, g.G).reshape(d * k, d * k)
        K = K + torch.kron(extra, torch.eye(k, dtype=K.dtype, device=K.device))
        K = (K + K.T) / 2

        def hess_k(D):
            return (K @ D.reshape(-1)).reshape(d, k)

        return Quadratic(hess_k, lin, const, _cholesky_inverse(K, (d, k)), float(K.diagonal().mean()))
    if g.shared:
        M = (S * c) @ S.T
        M = (M + M.T) / 2
        lam_g, Qg = g.eig()
        lam_m, Qm = torch.linalg.eigh(M)
        den = lam_g[:, None] * lam_m.clamp_min(0)[None, :]

        def hess(D):
            return g.G @ D @ M

        def inverse(R, r):
            return Qg @ ((Qg.T @ R @ Qm) / (den + r)) @ Qm.T

        return Quadratic(hess, lin, const, inverse, float(den.mean()))
    K = torch.einsum("it,jt,tab->aibj", S * c, S, g.G).reshape(d * k, d * k)
    K = (K + K.T) / 2

    def hess(D):
        return (K @ D.reshape(-1)).reshape(d, k)

    return Quadratic(hess, lin, const, _cholesky_inverse(K, (d, k)), float(K.diagonal().mean()))


# Each block's solve stops at this fraction of the last outer residual: on the School-shaped
# problem (benchmarks/solvers_school.py) 0.3 took AMTL 27% fewer ADMM iterations than 0.1 in
# the same 26 outer steps, and Go-MTL the same objective after 200 outer steps; 1.0 let
# Go-MTL's objective lag (note of issue 11).
INNER_FRACTION = 0.3
# Outer steps in a row with neither the objective falling above rounding nor the residual below
# its best before the loop stops short (a fixed point of the inexact blocks: AMTL on
# a task whose targets are all 0 let B's entries grow to 1e11 through the finish, and 95 more
# outer steps of ADMM left the objective where it was, 35 s; alternating_fuzz.py, problem 27)
STALL_STEPS = 10
_EPS = 2.0**-52  # float64 rounding, relative


class OuterLoop:
    """The outer loop's bookkeeping for an alternating estimator: the block tolerances
    (inexact early: each block to 0.3 times the last outer residual, from 1e-2 down to
    ``tol``, which makes the early outer steps cheap), the blocks' ADMM states carried
    between outer steps, the stop rule (every block's KKT residual at most ``tol``, and
    an objective that has stopped falling: :meth:`update`) and,
    at the end, ``n_iter_``, ``residual_``, ``block_residuals_``, ``converged_`` and the
    ``ConvergenceWarning`` naming ``max_outer``."""

    def __init__(self, est, blocks):
        self.est = est
        if not (isinstance(est.max_outer, int) and est.max_outer > 0):
            raise ValueError(f"max_outer must be a positive integer, got {est.max_outer!r}")
        self.inner_tol = max(float(est.tol), 1e-2)
        self.warm: dict = {}
        self.residuals = {b: math.inf for b in blocks}
        self.n_outer = 0
        self.converged = False
        self.still_falling = 0.0
        self._prev = None
        self._beta = 1.0
        self.n_extrapolated = 0
        self.flat_steps = 0  # outer steps in a row with neither the objective nor the residual falling
        self._best_r = math.inf
        self.detail = None  # what stopped a fit short, where the caller found it (else the residuals say)
        self._value = None  # the objective at the point extrapolate() returned or kept

    def extrapolate(self, current: list, objective, project=None):
        """Extrapolate along the outer trajectory: try x + beta (x - x_prev) (beta adapted:
        x 1.25 after a success up to 4, back to 1 after a failure; Bro, 1998, for alternating
        least squares) and return it when the objective decreases, else None. Alternating steps on
        coupled blocks move in nearly the same direction for many outer steps; this follows
        that direction in one move."""
        prev, self._prev = self._prev, [x.clone() for x in current]
        if prev is None:
            return None
        cand = [x + self._beta * (x - p) for x, p in zip(current, prev)]
        if project is not None:
            cand = project(cand)
        F0, F1 = objective(current), objective(cand)
        if F1 < F0:
            self._beta = min(1.25 * self._beta, 4.0)
            self._prev = [x.clone() for x in cand]
            self.n_extrapolated += 1
            self._value = F1
            return cand
        self._beta = 1.0
        self._value = F0
        return None

    def objective_here(self, compute) -> float:
        """The objective at the current point: the value the last :meth:`extrapolate`
        computed there (for the point it returned, or the one it kept), else ``compute()``."""
        value, self._value = self._value, None
        return compute() if value is None else value

    def update(self, outer: int, residuals: dict, history: list | None = None, joint: bool = False) -> bool:
        """Record the block residuals after outer step ``outer``; True when all are at most
        tol and the objective (``history``, one value or more per outer step) has stopped
        falling: the decrease still to come, extrapolated from the last two outer steps
        (:func:`remaining_decrease`), at most tol relative to the objective. On badly scaled
        raw columns a block's KKT residual can sit below tol while the alternation still
        lowers the objective by 1e-5 a step (AMTL, logistic, Landmine-shaped data: 1 %
        more to go after its residual first met tol). ``joint``: the point comes from a
        finish that moves every block at once (``_reduced_newton``), whose residual is
        the whole problem's: no extrapolation from its drop."""
        self.n_outer = outer + 1
        self.residuals = dict(residuals)
        r = max(residuals.values())
        history = history or []
        self.still_falling = 0.0 if joint else remaining_decrease(history)
        tol = float(self.est.tol)
        if r <= tol and self.still_falling <= tol:
            self.converged = True
            return True
        # no progress: an objective that did not fall above rounding (near an optimum it moves
        # by the square of the step, below rounding) and a residual above its best so far
        flat = len(history) >= 2 and not history[-1] < history[-2] - 64 * _EPS * abs(history[-2]) \
            and not r < self._best_r
        self._best_r = min(self._best_r, r)
        self.flat_steps = self.flat_steps + 1 if flat else 0
        if r <= tol:  # the blocks at their optimum to tol, the objective not: solve them tighter
            self.inner_tol = 0.1 * tol
        else:
            self.inner_tol = max(tol, min(self.inner_tol, INNER_FRACTION * r))
            if self.flat_steps >= STALL_STEPS:
                self.detail = (f"a KKT residual of {r:.3g} > tol={tol:g}, and an objective that has not fallen in "
                               f"{self.flat_steps} outer steps, nor its residual (the alternation "
                               f"goes no further from here: a degenerate problem, or one with no minimiser)")
                return True
        return False

    def finish(self) -> None:
        self.est.block_residuals_ = dict(self.residuals)
        r = max(self.residuals.values())
        detail = self.detail
        if detail is None and not self.converged and r <= self.est.tol:
            detail = (f"a KKT residual of {r:.3g} <= tol={self.est.tol:g} but an objective still falling (about "
                      f"{self.still_falling:.2g} of it, relative, still to come at the rate of its last steps)")
        self.est._converged(self.converged, self.n_outer, r, "max_outer", detail)


def remaining_decrease(history: list) -> float:
    """The objective's decrease still to come, relative to its last value, if its last
    decrease d_k shrinks geometrically at the rate rho = d_k / d_(k-1) of the last two
    (d_k / (1 - rho), rho at most 0.999). A last step that did not lower it (the blocks
    stopped by their inexact tolerance) gives the step before's decrease, 0 after two."""
    if len(history) < 2:
        return 0.0
    d1 = history[-2] - history[-1]
    d0 = history[-3] - history[-2] if len(history) >= 3 else 0.0
    if not d1 > 0:
        return max(d0, 0.0) / max(abs(history[-1]), 1e-300)
    rho = min(d1 / d0, 0.999) if d0 > 0 else 0.0
    return d1 / (1 - rho) / max(abs(history[-1]), 1e-300)


def shifted(quad: Quadratic, c: float, center: Tensor, grad_shift: Tensor | None = None) -> Quadratic:
    """quad(x) + (c / 2) ||x - center||^2 (+ <grad_shift, x>): a proximal term on a
    quadratic, its resolvent the quadratic's with the parameter shifted by c."""
    lin = quad.linear + c * center if grad_shift is None else quad.linear - grad_shift + c * center
    return Quadratic(lambda D: quad.hess(D) + c * D, lin, 0.0, lambda R, r: quad.inverse(R, r + c),
                     (quad.curvature or 0.0) + c)


def _value_grad(fn, x: Tensor) -> tuple[float, Tensor]:
    with torch.enable_grad():
        p = x.detach().requires_grad_(True)
        v = fn(p)
        (g,) = torch.autograd.grad(v, p)
    return float(v.detach()), g


def solve_block_mm(est, quad: Quadratic, extra, prox_admm, prox_step, penalty, x: Tensor, desc: str, scale: float,
                   tol: float, warm: dict, max_mm: int = 200):
    """min_x quad(x) + extra(x) + h(x) for a block whose smooth part is a quadratic (the
    loss, solved exactly) plus a smooth non-quadratic term (AMTFL's reconstruction):
    majorisation-minimisation (Lange, 2016), each step minimising quad(x) + extra(x_k) +
    <grad extra(x_k), x - x_k> + (c / 2) ||x - x_k||^2 + h(x) by ADMM (the resolvent of
    quad shifted by c), with c doubled until the surrogate majorises ``extra`` at the new
    point. The loss's conditioning never enters; the steps only have to follow the
    curvature of ``extra``. Stops when the block's KKT residual (the gradient mapping of
    the true block problem, a tiny step) is at most ``tol``.

    Returns (x, residual, steps)."""
    state = warm.setdefault(desc + " mm", {"c": None})
    e0, g0 = _value_grad(extra, x)
    c = state["c"] or max(1e-6 * (quad.curvature or 1.0), 1e-12)
    slack = 1e-12
    residual = math.inf
    for step in range(1, max_mm + 1):
        while True:
            xk, ck, gk = x, c, g0
            surrogate = shifted(quad, ck, xk, gk)
            res = run_admm(est, surrogate, prox_admm, penalty, [xk], desc, scale=scale, tol=tol, warm=warm.get(desc))
            warm[desc] = res.state
            res = keep_descent(res, [xk])
            xn = res.params[0]
            if torch.equal(xn, xk):  # the surrogate's solve made no progress: stop here
                state["c"] = c
                return x, residual, step
            en, gn = _value_grad(extra, xn)
            dx = xn - xk
            bound = e0 + float((gk * dx).sum()) + 0.5 * ck * float((dx * dx).sum())
            if en <= bound + slack * (abs(e0) + abs(en)) or c > 1e30:
                break
            c *= 2.0
        x, e0, g0 = xn, en, gn
        residual = prox_residual(x, quad.grad(x) + g0, None, prox_step) / scale
        if residual <= tol:
            break
        c *= 0.7  # let the curvature estimate come down again
    state["c"] = c
    return x, residual, step
