"""The feedback block of shallow AMTFL (Lee, Yang and Hwang, 2018, eq. 6): (A, c) with L and
S fixed, by Gauss-Newton on the ReLU's pattern with exact (ADMM) solves.

The block:  min_{A,c} w ||Z - relu(Z S A + 1 c^T)||_F^2 + sum_t theta_t ||a_t^o||_1,
theta_t = alpha L_t (the losses, constants here). Per feature j the smooth part depends on
(a_j, c_j) only through P~ x_j, P~ = [Z S, 1] = Z~ S~ with Z~ = [Z, 1] (N, k+1) and
S~ = blockdiag(S, 1) (k+1, T+1): on a fixed pattern M (where Z S A + c > 0) it is the
quadratic w ||m_j o (z_j - P~ x_j)||^2, whose Hessian 2 w S~^T C_j S~, C_j = Z~^T diag(m_j)
Z~, has rank <= k + 1 whatever T: its resolvent costs a batched thin SVD once per pattern.
The columns Z S are the task outputs, nearly collinear when the tasks are alike (every
task predicts a similar exam score), so a gradient method on this block is very slow; the
exact solve is not. Thirty FISTA steps come first (enough when the outputs are well
conditioned and the pattern moves a lot, as on the synthetic data); then each Gauss-Newton
step solves the pattern's problem plus a proximal
(Levenberg-Marquardt) term by :func:`mtlkernels.optim.admm` (prox ``ops.soft_threshold`` with
one threshold per row, none on c); the term grows until the true objective decreases and
shrinks after each success, so steps stay where the pattern is a good model. The block
separates over the features j, so each feature has its own term and accepts its own step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import ops
from ..optim import Quadratic
from ._blocks import prox_residual
from ._solve import run_admm, run_fista


def recon_loss(Z: Tensor, S: Tensor, A: Tensor, c: Tensor) -> Tensor:
    """||Z - relu(Z S A + c)||_F^2 by ``ops.amtfl_reconstruction_loss``; with more tasks than
    features the op gets (Z, S A, I) (an N x k product inside, not N x T)."""
    k, T = S.shape
    if T > k:
        return ops.amtfl_reconstruction_loss(Z, S @ A, torch.eye(k, dtype=Z.dtype, device=Z.device), c)
    return ops.amtfl_reconstruction_loss(Z, S, A, c)


KINK_RTOL = 1e-9  # a pre-activation within this fraction of its feature's scale is on the ReLU's kink
MAX_KINKS = 256


def feedback_residual(Z: Tensor, S: Tensor, X: Tensor, w: float, thr: Tensor, scale: float, tol: float = 0.0) -> float:
    """The (A, c) block's KKT residual at X = [A; c^T], relative to ``scale``.

    The block is piecewise quadratic: where a pre-activation u = [Z S, 1] x_j is exactly 0
    (a sample on the ReLU's kink, where a minimiser often sits: the pieces meet in a
    corner), the gradient is not defined and any slope relu'(u) in [0, 1] is a Clarke
    subgradient. The residual is then the smallest gradient mapping over those slopes (a
    small convex problem in one slope per kink, by accelerated projected gradient, stopped
    once the residual is at most ``tol``); elsewhere the plain gradient mapping."""
    T = S.shape[1]

    def prox_step(x, g, lr):
        return ops.prox_grad_step(x, g, lr, thr)

    with torch.enable_grad():
        Xg = X.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(w * recon_loss(Z, S, Xg[:T], Xg[T]), Xg)
    A, c = X[:T], X[T]
    U = Z @ (S @ A) + c  # the pre-activations (N, k), without forming [Z S, 1] (N x (T+1))
    size = Z.abs() @ (S.abs() @ A.abs()) + c.abs()  # the magnitude of their terms
    kink = U.abs() <= KINK_RTOL * torch.maximum(size.amax(0), Z.abs().amax(0))  # per feature's scale
    n_kinks = int(kink.sum())
    plain = prox_residual(X, g, None, prox_step) / scale
    if n_kinks == 0 or n_kinks > MAX_KINKS or plain <= tol:
        return plain
    rows, cols = kink.nonzero(as_tuple=True)
    P = torch.cat([Z[rows] @ S, torch.ones(len(rows), 1, dtype=Z.dtype, device=Z.device)], 1)  # rows of [Z S, 1]
    D = -2 * w * (Z[rows, cols] - torch.relu(U[rows, cols]))[:, None] * P  # (K, T+1): slope 1 minus slope 0
    theta0 = (U[rows, cols] > 0).to(X.dtype)  # the slopes autograd took
    nonzero = X != 0

    def grad_at(theta):
        return g.index_put((torch.arange(T + 1, device=X.device)[None, :].expand(len(rows), -1),
                            cols[:, None].expand(-1, T + 1)), (theta - theta0)[:, None] * D, accumulate=True)

    def dist(v):  # the distance from 0 to v + thr d|X| (entrywise), and its derivative in v
        r = torch.where(nonzero, v + thr * X.sign(), v.sign() * (v.abs() - thr).clamp_min(0))
        return r, torch.where(nonzero | (v.abs() > thr), r, torch.zeros_like(r))

    dd = float((D * D).sum())
    if not dd >= torch.finfo(X.dtype).tiny:  # the kinks' samples have z = relu(u) = 0: no slope matters
        return plain  # (and 1 / dd would overflow the dtype: a float32 fit got nan here)
    theta = prev = theta0.clone()
    step = 1.0 / (2 * dd)
    best = plain
    for it in range(1, 301):  # accelerated projected gradient on the convex ||dist(g(theta))||^2 over [0, 1]^K
        y = theta + (it - 1) / (it + 2) * (theta - prev)
        _, dr = dist(grad_at(y))
        prev, theta = theta, (y - step * 2 * (dr[:, cols].T * D).sum(1)).clamp(0, 1)
        if it % 10 == 0:
            best = min(best, prox_residual(X, grad_at(theta), None, prox_step) / scale)
            if best <= tol or float((theta - prev).abs().max()) <= 1e-12:
                break
    return min(best, prox_residual(X, grad_at(theta), None, prox_step) / scale)


def _pattern_model(Zt: Tensor, St: Tensor, Z: Tensor, M: Tensor, w: float):
    """The pattern M's quadratic in X = [A; c^T] ((T+1) x k), column j for feature j, with a
    Levenberg-Marquardt term per column: returns ``build(damp, center)`` (the Quadratic
    quad(X) + sum_j damp_j / 2 ||x_j - center_j||^2, its resolvent from one batched SVD
    per pattern) and the quadratic's typical curvature."""
    Mf = M.to(Zt.dtype)
    C = torch.einsum("ni,nj,nl->lij", Zt, Zt, Mf)  # (k, k+1, k+1)
    C = (C + C.mT) / 2
    lin = 2 * w * (St.T @ (Zt.T @ (Mf * Z)))  # (T+1, k)
    lam, U = torch.linalg.eigh(C)
    F = (U * lam.clamp_min(0).sqrt().unsqueeze(1)).mT @ St  # (k, k+1, T+1): F_j^T F_j = S~^T C_j S~
    _, sig, Vt = torch.linalg.svd(F, full_matrices=False)  # Vt (k, k+1, T+1)
    s2 = 2 * w * sig * sig  # (k, k+1)
    curvature = float(s2.sum()) / (St.shape[1] * s2.shape[0])

    def build(damp: Tensor, center: Tensor) -> Quadratic:
        shrink: list = [None, None, None]  # (r, s2 / (s2 + r + damp), r + damp) for the last r

        # per feature j (the batch): C_j (S~ D)_j and Vt_j (R)_j as batched matrix-vector
        # products (einsum's Python overhead was a third of the feedback block's time)
        def hess(D):
            E = St @ D  # (k+1, k)
            return 2 * w * (St.T @ torch.bmm(C, E.T.unsqueeze(-1)).squeeze(-1).T) + D * damp

        def inverse(R, r):
            if shrink[0] != r:
                rr = r + damp
                shrink[:] = [r, s2 / (s2 + rr[:, None]), rr]
            q = torch.bmm(Vt, R.T.unsqueeze(-1)).squeeze(-1) * shrink[1]  # (k, k+1)
            return (R - torch.bmm(q.unsqueeze(1), Vt).squeeze(1).T) / shrink[2]

        return Quadratic(hess, lin + damp * center, 0.0, inverse, curvature + float(damp.mean()))

    return build, curvature


def feedback_step(est, Z: Tensor, S: Tensor, A: Tensor, c: Tensor, w: float, theta: Tensor, scale: float,
                  tol: float, warm: dict, max_gn: int = 5, fista_iter: int = 30) -> tuple[Tensor, Tensor, float]:
    """Solve the (A, c) block to a KKT residual <= tol (relative to ``scale``); returns (A, c, residual)."""
    T, k = A.shape
    Zt = torch.cat([Z, torch.ones(Z.shape[0], 1, dtype=Z.dtype, device=Z.device)], 1)
    St = torch.zeros(k + 1, T + 1, dtype=S.dtype, device=S.device)
    St[:k, :T] = S
    St[k, T] = 1.0
    thr = torch.cat([theta.reshape(-1), theta.new_zeros(1)])[:, None]  # no threshold on c

    def true_smooth(X):
        return w * recon_loss(Z, S, X[:T], X[T])

    def pre(X):  # [Z S, 1] X without forming [Z S, 1] (N x (T+1))
        return Z @ (S @ X[:T]) + X[T]

    def column_objectives(X):  # the block separates over the features j (the columns of X)
        return w * ((Z - torch.relu(pre(X))) ** 2).sum(0) + (thr * X.abs()).sum(0)

    def prox_step(x, g, lr):
        return ops.prox_grad_step(x, g, lr, thr)

    X = torch.cat([A, c[None, :]], 0)
    def fista_steps(X, n):
        res = run_fista(est, lambda p: true_smooth(p[0]), lambda p, gg, step: [prox_step(p[0], gg[0], step)],
                        lambda p: float((thr * p[0].abs()).sum()), [X], warm.get("feedback lr") or lr0,
                        "AMTFL feedback", max_iter=n, scale=scale, tol=0.1 * tol)
        warm["feedback lr"] = res.lr
        return res.params[0]

    def kkt(X):
        return feedback_residual(Z, S, X, w, thr, scale, tol)

    # first a few proximal-gradient steps on the true objective (enough when the task
    # outputs are well conditioned and the pattern moves a lot, as on the synthetic data)
    lr0 = 1.0 / max(2 * w * float(((Zt.T @ Zt) * (St @ St.T)).sum()), 1e-300)  # 2 w ||[Z S, 1]||_F^2
    residual = kkt(X)
    if residual <= tol:  # already at its optimum (A = 0 held by the thresholds, as on School)
        return A, c, residual
    X = fista_steps(X, fista_iter)
    residual = kkt(X)
    damping = warm.get("feedback lm")
    for _ in range(max_gn):
        if residual <= tol:
            break
        build, curvature = _pattern_model(Zt, St, Z, pre(X) > 0, w)
        floor, ceiling = 1e-12 * (curvature or 1.0), 1e12 * max(curvature or 1.0, 1.0)
        if damping is None:
            damping = torch.full((k,), 1e-3 * (curvature or 1.0), dtype=X.dtype, device=X.device)
        F_cols = column_objectives(X)
        pending = torch.ones(k, dtype=torch.bool, device=X.device)
        improved = False
        for _ in range(8):  # Levenberg-Marquardt per feature: a proximal term keeps each step where the pattern holds
            res = run_admm(est, build(damping, X), lambda v, t: [ops.soft_threshold(v[0], t * thr)],
                           lambda p: float((thr * p[0].abs()).sum()), [X], "AMTFL feedback", scale=scale,
                           tol=max(0.1 * residual, 0.1 * tol), warm=warm.get("feedback"), max_iter=200)
            warm["feedback"] = res.state
            Fn = column_objectives(res.params[0])
            ok = pending & (Fn < F_cols)
            if bool(ok.any()):
                X = torch.where(ok[None, :], res.params[0], X)
                F_cols = torch.where(ok, Fn, F_cols)
                improved = True
            damping = torch.where(ok, (damping / 3).clamp_min(floor), torch.where(pending, damping * 4, damping))
            pending = pending & ~ok & (damping <= ceiling)  # a feature whose model gives no decrease rests
            if not bool(pending.any()):
                break
        damping = damping.clamp_max(ceiling)
        if not improved:  # the pattern's model gives no decrease: proximal-gradient steps finish
            damping = None
            X = fista_steps(X, 4 * fista_iter)
            residual = kkt(X)
            break
        residual = kkt(X)
    warm["feedback lm"] = damping
    return X[:T].contiguous(), X[T].contiguous(), residual
