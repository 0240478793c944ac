"""The (L, S, b) blocks of shallow AMTFL (Lee, Yang and Hwang, 2018, eq. 6) with the linear
hidden layer and a classification loss (logistic, squared hinge), by proximal Newton.

As in Go-MTL (``latent.py``): the S-block (with the intercepts) is a linear model on the
features X_t L, the L-block one linear model in vec(L) (the features x_ti kron s_t), each
solved by :func:`_newton.prox_newton` with the losses weighted by 1 + alpha ||a_t^o||_1 (A
fixed). The reconstruction w ||Z - relu(Z S A + c)||^2, Z = X L, enters each block as
``prox_newton``'s smooth extra term: its gradient through autograd, and in every step's
model its Gauss-Newton Hessian on the ReLU's current pattern M = [Z S A + c > 0]: for the
L-block all of it (``_recon_gram_L``), for the S-block all of it too while S is small
(``_recon_gram_S``; else a Kronecker bound on it, with a resolvent of its own). Raw,
correlated features (columns of 1e-2 to 1e3) do not slow these blocks down as they do FISTA
on (L, S, b) together (``AMTFL._ls_block``).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .. import ops
from ..optim import Quadratic
from ._amtfl_blocks import recon_loss
from ._base import TaskData
from ._blocks import block_scale, grad_at
from ._newton import l_block_data, l_block_gram, prox_newton, s_block_data


DENSE_S_MAX = 2048  # up to this many entries of S the S-block's model holds all of the reconstruction's Hessian


def _recon_gram_S(Z, S, A, c, rw):
    """The reconstruction's Gauss-Newton Hessian in S, 2 w sum_j (a_j a_j^T) kron Z^T diag(M_j) Z
    (a_j column j of A): all of it ((k T, k T), S row-major) up to ``DENSE_S_MAX`` entries of
    S; beyond, the bound 2 w (Z^T Z) D (A A^T) (every M_j = 1) as a Quadratic whose resolvent
    comes from the eigendecompositions of Z^T Z and A A^T."""
    k, T = S.shape
    if k * T <= DENSE_S_MAX:
        M = (Z @ (S @ A) + c > 0).to(Z.dtype)  # (N, k)
        C = torch.einsum("nj,na,nb->jab", M, Z, Z)
        return 2 * rw * torch.einsum("tj,sj,jil->itls", A, A, C).reshape(k * T, k * T)
    G, P = 2 * rw * (Z.T @ Z), A @ A.T
    (g, U), (p, V) = torch.linalg.eigh(G), torch.linalg.eigh(P)
    den = g.clamp_min(0)[:, None] * p.clamp_min(0)[None, :]

    def hess(D):
        return G @ D @ P

    def inverse(R, r):
        return U @ ((U.T @ R @ V) / (den + r)) @ V.T

    return Quadratic(hess, torch.zeros_like(S), 0.0, inverse, float(den.mean()))


def _recon_gram_L(X, L, S, A, c, rw):
    """The reconstruction's Gauss-Newton Hessian in vec(L) (row-major, (1, d k, d k)): sample n
    and feature j contribute x_n x_n^T kron v v^T with v = e_j - M_nj q_j, q_j = (S A)_j, so
    H = 2 w (X^T X kron I - sum_j X^T diag(M_j) X kron (e_j q_j^T + q_j e_j^T - q_j q_j^T))."""
    k = L.shape[1]
    Q = S @ A  # (k, k), column j is q_j
    Z = X @ L
    M = (Z @ Q + c > 0).to(X.dtype)
    eye = torch.eye(k, dtype=X.dtype, device=X.device)
    E = torch.einsum("ij,lj->jil", eye, Q) + torch.einsum("ij,lj->jli", eye, Q) - torch.einsum("ij,lj->jil", Q, Q)
    C = torch.einsum("nj,na,nb->jab", M, X, X)  # (k, d, d)
    H = torch.kron(X.T @ X, eye) - torch.einsum("jab,jil->aibl", C, E).reshape(X.shape[1] * k, -1)
    return (2 * rw * H)[None]


def newton_ls_blocks(est, data: TaskData, samples, L, S, A, c, b, f, rw: float, tol: float, scales: dict,
                     smooth_total):
    """One S-step then one L-step (A, c fixed), each to the relative KKT residual ``tol``.
    ``scales`` receives the blocks' residual scales at the first call (the gradients at S = 0
    and L = 0, ``smooth_total(L, S, A, c, b, f)`` the smooth part of the objective).
    Returns (L, S, b)."""
    mu, lam, l1_L = float(est.mu), float(est.lam), float(est.l1_L)
    fit_b, shape = est.fit_intercept, L.shape
    weighted = replace(data, weight=data.weight * f[:, None])
    if "S" not in scales:
        scales["S"] = block_scale(grad_at(lambda p: smooth_total(L, p[0], A, c, b, f), [torch.zeros_like(S)])[0])
        scales["L"] = block_scale(grad_at(lambda p: smooth_total(p[0], S, A, c, b, f), [torch.zeros_like(L)])[0])
    Z = samples @ L
    if bool(A.any()):  # with A = 0 the reconstruction is free of S
        extra, extra_gram = (lambda s: rw * recon_loss(Z, s, A, c)), (lambda s: _recon_gram_S(Z, s, A, c, rw))
    else:
        extra = extra_gram = None
    res = prox_newton(est, s_block_data(weighted, L), lambda v, t: [ops.soft_threshold(v[0], t * mu)],
                      lambda p, g, lr: [ops.prox_grad_step(p[0], g[0], lr, mu)], lambda p: float(mu * p[0].abs().sum()),
                      [S], b, "AMTFL S-step", fit_b, tol=tol, scale=scales["S"], extra=extra, extra_gram=extra_gram)
    S, b = res.params[0], res.b
    res = prox_newton(
        est, l_block_data(weighted, S, b if fit_b else None),
        lambda v, t: [ops.elastic_net_prox(v[0].reshape(shape), t * l1_L, t * 2 * lam).reshape(-1, 1)],
        lambda p, g, lr: [ops.prox_grad_step(p[0].reshape(shape), g[0].reshape(shape), lr, l1_L,
                                             2 * lam).reshape(-1, 1)],
        lambda p: float(lam * (p[0] ** 2).sum() + l1_L * p[0].abs().sum()), [L.reshape(-1, 1)], b.new_zeros(1),
        "AMTFL L-step", False, tol=tol, scale=scales["L"],
        extra=lambda v: rw * recon_loss(samples @ v.reshape(shape), S, A, c),
        extra_gram=lambda v: _recon_gram_L(samples, v.reshape(shape), S, A, c, rw), gram=l_block_gram(weighted, S))
    return res.params[0].reshape(shape), S, b
