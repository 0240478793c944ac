"""Pieces the estimators share on top of :mod:`mtlkernels.optim` (fista and admm)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor

from .. import ops
from ..optim import AdmmResult, FistaResult, Quadratic, TaskGram, admm, fista, gram_matrix

# per-task Gram matrices (T, d, d) are formed only below this many bytes, and a Gram matrix
# is eigendecomposed (for ADMM) only up to this many features; above either limit the
# Hessian is applied through the data and the estimators use fista
PER_TASK_GRAM_BYTES = 256 * 2**20
ADMM_MAX_FEATURES = 512


def plain_step(x: Tensor, g: Tensor, lr: float) -> Tensor:
    """A gradient step for an unpenalised block (intercepts, biases): prox of h = 0."""
    return ops.prox_grad_step(x, g, lr, 0.0)


def run_fista(est, smooth, prox, penalty, params, lr, desc: str, max_iter: int | None = None,
              scale: float | None = None, tol: float | None = None, stall=None) -> FistaResult:
    """fista() with the estimator's max_iter (or the given cap), tol and verbose progress bar."""
    max_iter = est.max_iter if max_iter is None else max_iter
    bar = est._progress(max_iter, desc)
    try:
        return fista(smooth, prox, penalty, params, lr=lr, max_iter=max_iter, tol=est.tol if tol is None else tol,
                     scale=scale, stall=stall, progress=bar)
    finally:
        if bar is not None:
            bar.close()


def run_admm(est, smooth, prox, penalty, params, desc: str, max_iter: int | None = None, scale: float | None = None,
             tol: float | None = None, rho: float | None = None, warm=None) -> AdmmResult:
    """admm() with the estimator's max_iter (or the given cap), tol and verbose progress bar."""
    max_iter = est.max_iter if max_iter is None else max_iter
    bar = est._progress(max_iter, desc)
    try:
        return admm(smooth, prox, penalty, params, rho=rho, max_iter=max_iter, tol=est.tol if tol is None else tol,
                    scale=scale, warm=warm, progress=bar)
    finally:
        if bar is not None:
            bar.close()


@dataclass
class SquaredLoss:
    """The squared loss sum_t c_t sum_i 0.5 (x_ti^T w_t + b_t - y_ti)^2 in Gram form.

    ``gram`` is the Hessian (a :class:`~mtlkernels.optim.TaskGram`: per-task or shared Gram
    matrices times the task weights c_t, eigendecomposed on demand for exact solves), or
    None when it is too large to form (``hess`` then applies it through the data);
    ``linear`` (d, T) is B, ``yy`` (T,) the per-task constants 0.5 c_t ||y_t||^2 and
    ``intercept`` maps W to the optimal intercepts (zeros without ``fit_intercept``).
    """

    gram: TaskGram | None
    hess: Callable[[Tensor], Tensor]
    linear: Tensor
    yy: Tensor
    intercept: Callable[[Tensor], Tensor]

    @property
    def exact(self) -> bool:
        """Whether exact solves (ADMM) are available."""
        return self.gram is not None and self.gram.G.shape[-1] <= ADMM_MAX_FEATURES

    def quadratic(self, factor: Tensor | None = None) -> Quadratic:
        """sum_t factor_t L_t(w_t) as a :class:`~mtlkernels.optim.Quadratic` (factor 1 by default)."""
        if factor is None:
            g = self.gram
            lin, const = self.linear, float(self.yy.sum())
        else:
            g = self.gram.scaled(self.gram.c * factor) if self.gram is not None else None
            lin, const = self.linear * factor, float((self.yy * factor).sum())
        if g is None:
            hess = self.hess if factor is None else (lambda D: self.hess(D * factor))
            return Quadratic(hess, lin, const)
        return Quadratic(g, lin, const, g.inverse if self.exact else None, g.mean_eigenvalue())


def squared_loss(data, fit_intercept: bool) -> SquaredLoss:
    """The squared loss of ``data`` (a :class:`~mtlkernels.linear._base.TaskData`) as a
    :class:`SquaredLoss` in W (d, T).

    With ``fit_intercept`` the features and targets are centred per task (weighted
    means), which removes the unpenalised intercept exactly: its optimum for a given W is
    b_t = ybar_t - xbar_t^T w_t. A shared design gives one Gram matrix X^T X; per-task
    designs a batch of them when small enough (:data:`PER_TASK_GRAM_BYTES`), else the
    Hessian is applied through the data.
    """
    X, Y, c = data.X, data.Y, data.task_weight
    if data.shared:
        Yn = Y.T  # (n, T)
        if fit_intercept:
            xm, ym = X.mean(0), Yn.mean(0)
            X, Yn = X - xm, Yn - ym
        lin = (Yn.mT @ X).mT * c  # (d, T)
        yy = 0.5 * c * (Yn.double() ** 2).sum(0).to(c.dtype)
        T, (n, d) = Y.shape[0], X.shape
        if d <= n or d <= ADMM_MAX_FEATURES:
            gram = TaskGram(gram_matrix(X), None if bool((c == 1).all()) else c, n_tasks=T)
            hess = gram
        else:
            gram = None

            def hess(D):
                return (X.T @ (X @ D)) * c
    else:
        mask = (data.weight > 0).to(X.dtype)
        n_t = mask.sum(1).clamp_min(1)
        if fit_intercept:
            xm = (mask[:, :, None] * X).sum(1) / n_t[:, None]  # (T, d) means
            ym = (mask * Y).sum(1) / n_t
            X = (X - xm[:, None, :]) * mask[:, :, None]
            Y = (Y - ym[:, None]) * mask
        T, n, d = X.shape
        lin = torch.einsum("tnd,tn->dt", X, Y) * c
        yy = 0.5 * c * (Y.double() ** 2).sum(1).to(c.dtype)
        if T * d * d * X.element_size() <= PER_TASK_GRAM_BYTES:
            G = X.transpose(1, 2) @ X  # (T, d, d)
            gram = TaskGram((G + G.mT) / 2, c)
            hess = gram
        else:
            gram = None

            def hess(D):
                Z = torch.bmm(X, D.T.unsqueeze(-1))  # (T, n, 1)
                return torch.bmm(X.transpose(1, 2), Z).squeeze(-1).T * c

    def intercept(W: Tensor) -> Tensor:
        if not fit_intercept:
            return torch.zeros(W.shape[1], dtype=W.dtype, device=W.device)
        return ym - (xm @ W if data.shared else (xm * W.T).sum(1))

    return SquaredLoss(gram, hess, lin, yy, intercept)


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


def svd_init(W0: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """L (d, k) and S (k, T) with L S the best rank-k approximation of W0, the
    singular values split evenly (L = U sqrt(s), S = sqrt(s) V^T): the initialisation
    from stacked single-task models of Abdulnabi et al. (2015), Algorithm 1, and Go-MTL."""
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
    ``est.init_alpha``, the estimator's loss and task weighting): the initialisation of
    Abdulnabi et al. (2015), Algorithm 1, used by every latent-basis estimator here."""
    from .stl import SingleTaskLinear

    stl = SingleTaskLinear(loss=est.loss, alpha=est.init_alpha, fit_intercept=est.fit_intercept,
                           task_weighting=getattr(est, "task_weighting", "mean"), max_iter=est.max_iter,
                           tol=max(est.tol, 1e-5), device=est.device, dtype=est.dtype)
    with warnings.catch_warnings():  # a start point: its own solver's tolerance is not the user's concern
        warnings.simplefilter("ignore", ConvergenceWarning)
        W0, b0 = stl._fit(data, None, None)
    L, S = svd_init(W0, k)
    return L, S, b0
