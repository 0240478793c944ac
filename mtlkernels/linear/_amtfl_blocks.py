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
shrinks after each success, so steps stay where the pattern is a good model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import ops
from ..optim import Quadratic
from ._blocks import keep_descent, prox_residual, shifted
from ._solve import run_admm, run_fista


def recon_loss(Z: Tensor, S: Tensor, A: Tensor, c: Tensor) -> Tensor:
    """||Z - relu(Z S A + c)||_F^2 by ``ops.amtfl_reconstruction_loss``; with more tasks than
    features the op gets (Z, S A, I) (an N x k product inside, not N x T)."""
    k, T = S.shape
    if T > k:
        return ops.amtfl_reconstruction_loss(Z, S @ A, torch.eye(k, dtype=Z.dtype, device=Z.device), c)
    return ops.amtfl_reconstruction_loss(Z, S, A, c)


def _pattern_quadratic(Zt: Tensor, St: Tensor, Z: Tensor, M: Tensor, w: float) -> Quadratic:
    """The pattern M's quadratic in X = [A; c^T] ((T+1) x k), column j for feature j."""
    Mf = M.to(Zt.dtype)
    C = torch.einsum("ni,nj,nl->lij", Zt, Zt, Mf)  # (k, k+1, k+1)
    C = (C + C.mT) / 2
    lin = 2 * w * (St.T @ (Zt.T @ (Mf * Z)))  # (T+1, k)
    const = w * float((Mf * Z * Z).sum())
    lam, U = torch.linalg.eigh(C)
    F = (U * lam.clamp_min(0).sqrt().unsqueeze(1)).mT @ St  # (k, k+1, T+1): F_j^T F_j = S~^T C_j S~
    _, sig, Vt = torch.linalg.svd(F, full_matrices=False)  # Vt (k, k+1, T+1)
    s2 = 2 * w * sig * sig  # (k, k+1)

    shrink: list = [None, None]  # (r, s2 / (s2 + r)) for the last r (ADMM changes r rarely)

    # per feature j (the batch): C_j (S~ D)_j and Vt_j (R)_j as batched matrix-vector
    # products (einsum's Python overhead was a third of the feedback block's time)
    def hess(D):
        E = St @ D  # (k+1, k)
        return 2 * w * (St.T @ torch.bmm(C, E.T.unsqueeze(-1)).squeeze(-1).T)

    def inverse(R, r):
        if shrink[0] != r:
            shrink[:] = [r, s2 / (s2 + r)]
        q = torch.bmm(Vt, R.T.unsqueeze(-1)).squeeze(-1) * shrink[1]  # (k, k+1)
        return (R - torch.bmm(q.unsqueeze(1), Vt).squeeze(1).T) / r

    return Quadratic(hess, lin, const, inverse, float(s2.sum()) / (St.shape[1] * s2.shape[0]))


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

    def objective(X):
        return float(true_smooth(X)) + float((thr * X.abs()).sum())

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
        with torch.enable_grad():
            Xg = X.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(true_smooth(Xg), Xg)
        return prox_residual(X, g, None, prox_step) / scale

    # first a few proximal-gradient steps on the true objective (enough when the task
    # outputs are well conditioned and the pattern moves a lot, as on the synthetic data)
    lr0 = 1.0 / max(2 * w * float((Zt @ St).norm()) ** 2, 1e-300)
    X = fista_steps(torch.cat([A, c[None, :]], 0), fista_iter)
    F = objective(X)
    residual = kkt(X)
    damping = warm.get("feedback lm")
    for _ in range(max_gn):
        if residual <= tol:
            break
        M = (Zt @ (St @ X)) > 0
        quad = _pattern_quadratic(Zt, St, Z, M, w)
        if damping is None:
            damping = 1e-3 * (quad.curvature or 1.0)
        Fn = F
        for _ in range(8):  # Levenberg-Marquardt: a proximal term keeps the step where the pattern holds
            res = run_admm(est, shifted(quad, damping, X), lambda v, t: [ops.soft_threshold(v[0], t * thr)],
                           lambda p: float((thr * p[0].abs()).sum()), [X], "AMTFL feedback", scale=scale,
                           tol=max(0.1 * residual, 0.1 * tol), warm=warm.get("feedback"), max_iter=200)
            warm["feedback"] = res.state
            res = keep_descent(res, [X])
            Fn = objective(res.params[0])
            if Fn < F:
                damping = max(damping / 3, 1e-12 * (quad.curvature or 1.0))
                break
            damping *= 4
            if damping > 1e12 * max(quad.curvature or 1.0, 1.0):
                break
        if not Fn < F:  # the pattern's model gives no decrease: proximal-gradient steps finish
            damping = None
            X = fista_steps(X, 4 * fista_iter)
            residual = kkt(X)
            break
        X, F = res.params[0], Fn
        residual = kkt(X)
    warm["feedback lm"] = damping
    return X[:T].contiguous(), X[T].contiguous(), residual
