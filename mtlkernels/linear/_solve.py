"""Pieces the estimators share on top of :func:`mtlkernels.optim.fista`."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .. import ops
from ..optim import FistaResult, Quadratic, fista

# per-task Gram matrices (T, d, d) are formed only below this many bytes; above it the
# Hessian is applied through the data, X_t^T (w_t * (X_t D_t))
PER_TASK_GRAM_BYTES = 256 * 2**20


def plain_step(x: Tensor, g: Tensor, lr: float) -> Tensor:
    """A gradient step for an unpenalised block (intercepts, biases): prox of h = 0."""
    return ops.prox_grad_step(x, g, lr, 0.0)


def run_fista(est, smooth, prox, penalty, params, lr, desc: str, max_iter: int | None = None) -> FistaResult:
    """fista() with the estimator's max_iter (or the given cap), tol and verbose progress bar."""
    max_iter = est.max_iter if max_iter is None else max_iter
    bar = est._progress(max_iter, desc)
    try:
        return fista(smooth, prox, penalty, params, lr=lr, max_iter=max_iter, tol=est.tol, progress=bar)
    finally:
        if bar is not None:
            bar.close()


def svd_init(W0: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """L (d, k) and S (k, T) with L S the best rank-k approximation of W0, the
    singular values split evenly (L = U sqrt(s), S = sqrt(s) V^T): the initialisation
    from stacked single-task models of seed 003 (Algorithm 1) and Go-MTL."""
    U, s, Vh = torch.linalg.svd(W0, full_matrices=False)
    k_eff = min(k, s.numel())
    r = s[:k_eff].sqrt()
    L = torch.zeros(W0.shape[0], k, dtype=W0.dtype, device=W0.device)
    S = torch.zeros(k, W0.shape[1], dtype=W0.dtype, device=W0.device)
    L[:, :k_eff] = U[:, :k_eff] * r
    S[:k_eff] = r[:, None] * Vh[:k_eff]
    return L, S


def latent_init(est, data, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """L (d, k), S (k, T) and intercepts from the SVD of single-task solutions (ridge with
    ``est.init_alpha``, the estimator's loss): the initialisation of seed 003's Algorithm 1,
    used by every latent-basis estimator here."""
    from .stl import SingleTaskLinear

    stl = SingleTaskLinear(loss=est.loss, alpha=est.init_alpha, fit_intercept=est.fit_intercept,
                           max_iter=est.max_iter, tol=max(est.tol, 1e-5), device=est.device, dtype=est.dtype)
    W0, b0 = stl._fit(data, None, None)
    L, S = svd_init(W0, k)
    return L, S, b0


def squared_loss_quadratic(data, fit_intercept: bool) -> tuple[Quadratic, Callable[[Tensor], Tensor]]:
    """The squared loss sum_t mean_i 0.5 (x_ti^T w_t + b_t - y_ti)^2 as a
    :class:`~mtlkernels.optim.Quadratic` in W (d, T), and the map W -> intercepts.

    With ``fit_intercept`` the features and targets are centred per task (weighted
    means), which removes the unpenalised intercept exactly: its optimum for a given W is
    b_t = ybar_t - xbar_t^T w_t, the returned map. A shared design gives one Gram matrix
    X^T X / n when d <= n; per-task designs a batch of them when small enough
    (:data:`PER_TASK_GRAM_BYTES`), else the Hessian is applied through the data.
    """
    X, Y, w = data.X, data.Y, data.weight  # Y, w: (T, n)
    if data.shared:
        Yn = Y.T  # (n, T)
        if fit_intercept:
            xm, ym = X.mean(0), Yn.mean(0)
            X, Yn = X - xm, Yn - ym
        quad = Quadratic.least_squares(X, Yn)
    else:
        mask = (w > 0).to(X.dtype)
        if fit_intercept:
            xm = (w[:, :, None] * X).sum(1)  # (T, d) weighted means
            ym = (w * Y).sum(1)
            X = (X - xm[:, None, :]) * mask[:, :, None]
            Y = (Y - ym[:, None]) * mask
        T, n, d = X.shape
        Xw = X * w[:, :, None]
        lin = torch.einsum("tnd,tn->dt", Xw, Y)
        const = 0.5 * float((w * Y.double() ** 2).sum())
        if d <= n and T * d * d * X.element_size() <= PER_TASK_GRAM_BYTES:
            H = Xw.transpose(1, 2) @ X  # (T, d, d)

            def hess(D):
                return torch.bmm(H, D.T.unsqueeze(-1)).squeeze(-1).T
        else:
            def hess(D):
                Z = torch.bmm(X, D.T.unsqueeze(-1))  # (T, n, 1)
                return torch.bmm(Xw.transpose(1, 2), Z).squeeze(-1).T
        quad = Quadratic(hess, lin, const)

    def intercept(W: Tensor) -> Tensor:
        if not fit_intercept:
            return torch.zeros(W.shape[1], dtype=W.dtype, device=W.device)
        return ym - (xm @ W if data.shared else (xm * W.T).sum(1))

    return quad, intercept


def quadratic_step(quad: Quadratic, like: Tensor, iters: int = 30) -> float:
    """1 / lambda_max of the quadratic's Hessian, by power iteration from a fixed
    random direction shaped like W: a first step for the line search to refine."""
    g = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(like.shape, generator=g, dtype=torch.float64).to(like.device, like.dtype)
    lam = 0.0
    for _ in range(iters):
        hv = quad.hess(v)
        lam = float(hv.norm())
        if lam == 0 or not math.isfinite(lam):
            return 1.0
        v = hv / lam
    return 1.0 / lam
