"""Pieces the estimators share on top of :func:`mtlkernels.optim.fista`."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import ops
from ..optim import FistaResult, fista


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
