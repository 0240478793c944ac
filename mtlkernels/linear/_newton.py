"""Proximal Newton for the convex estimators with a non-quadratic loss (logistic, squared
hinge): the engine that reaches their optimum on raw features of any scale.

FISTA's iteration count grows with the square root of the condition number of the loss's
Hessian, which raw features make huge (on small generated problems with columns spanning
10^3-10^6, a quarter of the logistic fits ran out of iterations). Here each step minimises
the loss's second-order model plus the penalty exactly, by :func:`mtlkernels.optim.admm`
with per-task resolvents (Lee, Sun and Saunders, 2014, proximal Newton; glmnet's
IRLS-with-penalty for the lasso): with per-sample curvatures h_i = l''(z_i) (the
generalised second derivative for the squared hinge) and gradients g_i = l'(z_i), task t's
model in (w_t, b_t) is

    sum_i g_i (x_i^T dw + db) + 1/2 h_i (x_i^T dw + db)^2 + tau/2 (||dw||^2 + db^2),

the intercept step db eliminated in closed form (a Schur complement), tau a
Levenberg-Marquardt damping (grown when the line search cuts the step, shrunk after a
full step). A backtracking line search on the true objective (Armijo on the model's
decrease, which includes the penalty) keeps every step a descent. Near the optimum the
steps are full and the convergence fast whatever the scales; the ADMM inside does not
care about them either. Stops when the KKT residual of the true problem (the gradient
mapping, with the intercepts' gradient) is at most ``tol``, relative to the gradient's
norm at zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..optim import Quadratic, TaskGram
from ..optim._anderson import flatten, unflatten
from ._base import TaskData, task_losses
from ._blocks import _cholesky_inverse, _value_grad, prox_residual
from ._solve import ADMM_MAX_FEATURES, PER_TASK_GRAM_BYTES, run_admm

INNER_MAX_ITER = 1000  # ADMM iterations a Newton step at most
NEWTON_MAX_WORK = 4e9  # beyond this a step's Gram matrices cost more than FISTA's iterations save


def newton_applies(est, data: TaskData) -> bool:
    """Whether proximal Newton suits: a non-quadratic loss, per-task Gram matrices small
    enough to store and to form each step (T n d^2 multiply-adds at most ``NEWTON_MAX_WORK``)."""
    d, T, n = data.n_features, data.n_tasks, data.Y.shape[1]
    return (est.loss != "squared" and getattr(est, "solver", "auto") in ("auto", "admm") and d <= ADMM_MAX_FEATURES
            and T * d * d * data.X.element_size() <= PER_TASK_GRAM_BYTES and T * n * d * d <= NEWTON_MAX_WORK)


def _derivatives(kind: str, Z: Tensor, Y: Tensor) -> tuple[Tensor, Tensor]:
    """l'(z) and l''(z) of the elementwise loss (``_base.elementwise_loss``), labels in {-1, +1}."""
    if kind == "logistic":
        p = torch.sigmoid(-Y * Z)
        return -Y * p, p * (1 - p)
    if kind == "squared_hinge":
        m = (1 - Y * Z).clamp_min(0)
        return -2 * Y * m, 2.0 * (m > 0).to(Z.dtype)
    raise ValueError(f"no proximal Newton for loss {kind!r}")


@dataclass
class NewtonResult:
    params: list
    b: Tensor
    n_iter: int
    converged: bool
    residual: float
    history: list = field(default_factory=list)


# Newton steps without halving the residual before a block gives up (tol out of the reach of
# its inexact inner solves: AMTL's W-step on breast cancer's raw columns at tol 2e-8 ran its
# 2000 steps of up to INNER_MAX_ITER ADMM iterations each, minutes for one outer step)
NEWTON_PATIENCE = 20


def prox_newton(est, data: TaskData, prox_admm, prox_step, penalty, params: list, b: Tensor, desc: str,
                fit_intercept: bool, max_iter: int | None = None, tol: float | None = None,
                extra=None, scale: float | None = None, extra_gram=None, gram=None) -> NewtonResult:
    """min over ``params`` (blocks summed into W, (d, T) each) and b of sum_t L_t(W, b) + q(W) + h.

    ``prox_admm(V, t)`` and ``prox_step(P, G, lr)`` act on the list of blocks (as for
    :func:`mtlkernels.optim.admm` and the KKT residual), ``penalty(P)`` is h's value;
    ``tol`` (default ``est.tol``) the relative KKT residual to stop at. ``extra``: an
    optional smooth term q in W, either a :class:`~mtlkernels.optim.Quadratic` with a
    resolvent (AMTL's gamma ||W - W B||^2), a part of every step's model as it is (ADMM then
    splits the model into the two quadratics), or a function of W (a scalar tensor, through
    autograd: AMTFL's reconstruction), in the model by its gradient and ``extra_gram(W)``, a
    Gauss-Newton Hessian of it (or a bound on one): per-task blocks (T, d, d), all of it (d T,
    d T; W vectorised row-major; the model then one dense quadratic), or a
    :class:`~mtlkernels.optim.Quadratic` with a resolvent (a second part of the model for
    ADMM); the line search on the true objective keeps every step a descent. ``scale``:
    the residual's scale (default: the gradient's norm at W = 0, b = 0), for a caller that
    measures the block's residual on its own scale. ``gram(h)``: the per-task curvature
    matrices (T, d, d) from the weighted per-sample curvatures h (T, n) where the design has
    a structure that forms them faster (``l_block_gram``)."""
    max_iter = est.max_iter if max_iter is None else max_iter
    tol = float(est.tol) if tol is None else float(tol)
    X, Y, weight = data.X, data.Y, data.weight
    d, T = data.n_features, data.n_tasks
    eye = torch.eye(d, dtype=X.dtype, device=X.device)
    # einsum subscripts of the design: one (n, d) for every task, or (T, n, d)
    xs = "nd" if data.shared else "tnd"
    xe = "ne" if data.shared else "tne"

    exact = extra if isinstance(extra, Quadratic) else None
    smooth = extra if extra is not None and exact is None else None
    if smooth is not None and extra_gram is None:
        raise ValueError("a non-quadratic extra term needs its Gauss-Newton Hessian (extra_gram)")

    def objective(P, bb) -> float:
        W = sum(P[1:], P[0])
        q = float(exact([W])) if exact is not None else (float(smooth(W)) if smooth is not None else 0.0)
        return float(task_losses(est.loss, data.predict(W, bb if fit_intercept else None), data).sum()) + q + penalty(P)

    def grads(W, bb):
        """Per-sample curvatures (weighted) and the gradients in W (q's included) and b."""
        g, h = _derivatives(est.loss, data.predict(W, bb if fit_intercept else None), Y)
        g, h = g * weight, h * weight
        gW = torch.einsum(f"{xs},tn->dt", X, g)
        if exact is not None:
            gW = gW + exact.grad(W)
        if smooth is not None:
            gW = gW + _value_grad(smooth, W)[1]
        gb = g.sum(1) if fit_intercept else torch.zeros_like(bb)
        return h, gW, gb

    def kkt(P, gW, gb) -> float:
        """The blocks' gradient mapping (``_blocks.prox_residual``) with the intercepts' gradient."""
        r = prox_residual(flatten(P), flatten([gW] * len(P)), None,
                          lambda x, gg, lr: flatten(prox_step(unflatten(x, P), unflatten(gg, P), lr)))
        return math.sqrt(r * r + float(gb.norm()) ** 2)

    P = [p.detach().clone() for p in params]
    b = b.detach().clone()
    W = sum(P[1:], P[0])
    _, gW, gb = grads(torch.zeros_like(W), torch.zeros_like(b))
    scale = max(1.0, float(torch.cat([gW.reshape(-1), gb]).norm())) if scale is None else float(scale)
    h, gW, gb = grads(W, b)
    F = objective(P, b)
    history = [F]
    residual = kkt(P, gW, gb) / scale
    curv = float((h * X.pow(2).sum(-1)).sum()) / max(d * T, 1)  # the model's mean diagonal entry
    eps = torch.finfo(X.dtype).eps
    tau_floor = 1e-3 * eps**0.5 * max(curv, 1e-12)
    tau, flat = max(1e-8 * max(curv, 1e-12), tau_floor), 0
    warm = None
    it = 0
    converged = residual <= tol
    best, since = residual, 0
    while it < max_iter and not converged and since < NEWTON_PATIENCE:
        it += 1
        G = gram(h) if gram is not None else torch.einsum(f"{xs},tn,{xe}->tde", X, h, X)  # (T, d, d)
        Gx = extra_gram(W) if extra_gram is not None else None
        if isinstance(Gx, Tensor) and Gx.dim() == 3:
            G, Gx = G + Gx, None
        if fit_intercept:
            v = torch.einsum(f"{xs},tn->td", X, h)
            s = h.sum(1) + tau
            G = G - v[:, :, None] * v[:, None, :] / s[:, None, None]
            r = gW - (v * (gb / s)[:, None]).T
        else:
            r = gW
        G = (G + G.mT) / 2 + tau * eye
        tg = TaskGram(G)
        if exact is not None:  # q is in the model as it is: the loss part takes the rest of the gradient
            r = r - exact.grad(W)
        if Gx is None or isinstance(Gx, Quadratic):
            linear = tg(W) - r  # the model in W' = W + dW: 1/2 W'^T A W' - W'^T (A W - r)
            quad = Quadratic(tg, linear, 0.0, tg.inverse, tg.mean_eigenvalue())
            if Gx is not None:  # its part of the model: 1/2 W'^T H W' - W'^T H W
                quad = [quad, Quadratic(Gx.hess, Gx.hess(W), 0.0, Gx.inverse, Gx.curvature)]
        else:  # one dense model: the extra term's Hessian plus the per-task blocks
            K = Gx + torch.einsum("tab,ts->atbs", G, torch.eye(T, dtype=G.dtype, device=G.device)).reshape(d * T, -1)
            K = (K + K.T) / 2

            def dense(D, K=K):
                return (K @ D.reshape(-1)).reshape(d, T)

            quad = Quadratic(dense, dense(W) - r, 0.0, _cholesky_inverse(K, (d, T)), float(K.diagonal().mean()))
        quad = quad if exact is None else (quad if isinstance(quad, list) else [quad]) + [exact]
        # the model to a tenth of the outer residual (an inexact Newton step), not below what
        # the dtype can resolve; a solve that did not converge passes on no duals
        tol_in = max(0.1 * max(tol, min(1e-2, 0.1 * residual)), 100 * eps)
        res = run_admm(est, quad, prox_admm, penalty, P, desc, scale=scale, tol=tol_in, warm=warm,
                       max_iter=min(est.max_iter, INNER_MAX_ITER))
        warm = res.state if res.converged else None
        D = [pn - p for pn, p in zip(res.params, P)]
        dW = sum(D[1:], D[0])
        db = -((v * dW.T).sum(1) + gb) / s if fit_intercept else torch.zeros_like(b)
        decrease = float((gW * dW).sum() + (gb * db).sum()) + penalty(res.params) - penalty(P)
        t, F_new = 1.0, math.inf
        for _ in range(40):  # Armijo on the model's decrease (the penalty's change included)
            P_new = [p + t * dp for p, dp in zip(P, D)] if t < 1 else res.params
            b_new = b + t * db
            F_new = objective(P_new, b_new)
            if F_new <= F + 1e-4 * t * min(decrease, 0.0):
                break
            t *= 0.5
        if not F_new <= F + 1e-12 * abs(F):  # no descent: damp the model more and try again
            tau *= 100
            if tau > 1e12 * max(curv, 1.0):
                break
            continue
        tau = max(tau / 4 if t == 1.0 else tau * 4, tau_floor)
        # at the dtype's resolution the objective stops moving: then so do we (tol was out of reach)
        flat = flat + 1 if F - F_new <= 10 * eps * abs(F) else 0
        P, b, F = P_new, b_new, F_new
        W = sum(P[1:], P[0])
        h, gW, gb = grads(W, b)
        history.append(F)
        residual = kkt(P, gW, gb) / scale
        converged = residual <= tol
        best, since = (residual, 0) if residual <= 0.5 * best else (best, since + 1)
        if flat >= 3 and not converged:
            break
    return NewtonResult(P, b, it, converged, residual, history)


def latent_newton_applies(loss: str, data: TaskData, k: int) -> bool:
    """Whether the blocks of W = L S (a non-quadratic loss) suit proximal Newton: the
    L-block's design (every sample, d k features) small enough (``newton_applies``'s bounds)."""
    N, dk = int((data.weight > 0).sum()), data.n_features * k
    return (loss != "squared" and dk <= ADMM_MAX_FEATURES and dk * dk * data.X.element_size() <= PER_TASK_GRAM_BYTES
            and N * dk * dk <= NEWTON_MAX_WORK)


def s_block_data(data: TaskData, L: Tensor) -> TaskData:
    """The S-block of W = L S as a linear model: task t's design X_t L (k features)."""
    return TaskData(data.X @ L, data.Y, data.weight, data.shared, data.task_weight, data.n_samples)


def l_block_data(data: TaskData, S: Tensor, b: Tensor | None) -> TaskData:
    """The L-block of W = L S as one linear model in vec(L) (row-major, d k features): the
    sample x_ti of task t has the features x_ti kron s_t and the fixed offset b_t."""
    X = data.X.unsqueeze(0).expand(data.n_tasks, -1, -1) if data.shared else data.X
    T, n, d = X.shape
    K = torch.einsum("tnd,kt->tndk", X, S).reshape(1, T * n, -1)
    offset = None if b is None else b[:, None].expand(T, n).reshape(1, -1)
    return TaskData(K, data.Y.reshape(1, -1), data.weight.reshape(1, -1), False, None,
                    data.n_samples.sum().reshape(1) if data.n_samples is not None else None, offset)


def l_block_gram(data: TaskData, S: Tensor):
    """``prox_newton``'s ``gram`` for :func:`l_block_data`: sum_t (X_t^T diag(h_t) X_t) kron
    (s_t s_t^T) from the per-task d x d Gram matrices (T n d^2 + T d^2 k^2 multiply-adds,
    not the N (d k)^2 of the expanded design: 50x fewer on school_like, k = 10)."""
    X = data.X.unsqueeze(0).expand(data.n_tasks, -1, -1) if data.shared else data.X
    (T, n, d), k = X.shape, S.shape[0]

    def gram(h):
        G = torch.einsum("tna,tn,tnb->tab", X, h.reshape(T, n), X)
        return torch.einsum("tab,it,jt->aibj", G, S, S).reshape(1, d * k, d * k)

    return gram

