"""The exact Hessian of a latent model's data term, from weighted per-task Gram matrices
(and AMTL's whole objective, from each task's loss to second order: :func:`amtl_hessian`).

For the factorised models (Go-MTL, Lee, Yang and Hwang 2018, eq. 3) the predictions are
z_ti = x_ti^T L s_t + b_t and the data term is f = sum_t sum_i w_ti l(z_ti). With
r_ti = w_ti l'(z_ti), D_ti = w_ti l''(z_ti) and, per task, G_t = X_t^T D_t X_t,
m_t = X_t^T D_t 1, c_t = sum_i D_ti, u_t = X_t^T r_t:

    d2f / dL_ai dL_bj   = sum_t G_t[a, b] s_ti s_tj
    d2f / dL_ai ds_tj   = (G_t L)[a, j] s_ti + u_t[a] [i = j]
    d2f / ds_t ds_t     = L^T G_t L          (no coupling between tasks)
    d2f / dL_ai db_t    = m_t[a] s_ti,   d2f / ds_t db_t = L^T m_t,   d2f / db_t^2 = c_t

For the squared loss in its Gram form (the intercepts eliminated) G_t is c_t times the
centred Gram matrix and the same formulas hold without b. One pass over the data (the T
weighted Gram matrices), or none, instead of one Hessian-vector product through the data
per unknown: what lets ``_polish`` finish problems of a few
hundred unknowns on thousands of samples (29 tasks of 445-690 samples, 9 columns, five
latent bases: 0.56 s a Hessian by batched autograd, a few ms from the Gram matrices).
The squared hinge's l'' is its generalised second derivative (2 where 1 - y z > 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import TaskData, elementwise_loss


def loss_derivatives(kind: str, Z: Tensor, data: TaskData) -> tuple[Tensor, Tensor]:
    """w * l'(z) and w * l''(z), each (T, n), at the predictions Z (T, n)."""
    with torch.enable_grad():
        z = Z.detach().requires_grad_(True)
        (r,) = torch.autograd.grad((data.weight * elementwise_loss(kind, z, data.Y)).sum(), z, create_graph=True)
        (D,) = torch.autograd.grad(r.sum(), z)  # l is elementwise: d r_ti / d z_ti alone
    return r.detach(), D.detach()


def latent_data_hessian(kind: str, data: TaskData, L: Tensor, S: Tensor, b: Tensor | None) -> Tensor:
    """The Hessian of sum_t L_t(X_t L s_t + b_t) in (vec L, vec S[, b]), row-major
    vectorisation; ``b=None``: no intercepts (none among the unknowns, none in z)."""
    g, H = task_loss_models(kind, data, L @ S, b)  # in (w_t[, b_t]): G_t, m_t, c_t and u_t are its blocks
    d = L.shape[0]
    if b is None:
        return latent_hessian(H, g, L, S, None)
    return latent_hessian(H[:, :d, :d], g[:, :d], L, S, (H[:, :d, d], H[:, d, d]))


def task_loss_models(kind: str, data: TaskData, W: Tensor, b: Tensor | None) -> tuple[Tensor, Tensor]:
    """Each task's loss L_t to second order at (w_t, b_t): its gradient (T, d + 1) and
    Hessian (T, d + 1, d + 1) in (w_t, b_t), from X_t^T r_t and X_t^T D_t X_t with a column
    of ones; in w_t alone (d) with ``b=None`` (no intercepts)."""
    r, D = loss_derivatives(kind, data.predict(W, b), data)
    X = data.X
    if b is not None:
        X = torch.cat([X, torch.ones_like(X[..., :1])], -1)  # padded rows carry zero weights
    if data.shared:
        return r @ X, torch.einsum("tn,nd,ne->tde", D, X, X)
    return torch.einsum("tn,tnd->td", r, X), torch.einsum("tn,tnd,tne->tde", D, X, X)


def amtl_hessian(g: Tensor, H: Tensor, W: Tensor, B: Tensor, off: Tensor, alpha: float, gamma: float):
    """AMTL's objective sum_t (1 + alpha ||b_t||_1) L_t(w_t, b_t) + gamma ||W - W B||^2
    (Lee, Yang and Hwang 2016, eq. 4; the l1 of W adds nothing) to second order, from each
    task's loss model (:func:`task_loss_models`: g (T, p), H (T, p, p), p = d + 1 with
    intercepts, d without). Unknowns: vec W (row-major), B's entries at ``off`` (indices
    into vec B), the intercepts. Returns (Hv, C): the Hessian in those values, and
    C[i, j] = d2 / d value_i d |B|_j (the weights' cross term alpha grad L_t, nonzero where
    j is an entry of row t of B), with C's columns indexed like the values."""
    d, T = W.shape
    p, nW, nB = g.shape[1], d * T, off.numel()
    n = nW + nB + (T if p > d else 0)
    ids = torch.arange(d, device=W.device)[None, :] * T + torch.arange(T, device=W.device)[:, None]  # (T, d): w_t
    if p > d:
        ids = torch.cat([ids, nW + nB + torch.arange(T, device=W.device)[:, None]], 1)
    Hv, C = W.new_zeros(n, n), W.new_zeros(n, n)
    f = 1 + alpha * B.abs().sum(1)
    Hv.index_put_((ids[:, :, None].expand(T, p, p), ids[:, None, :].expand(T, p, p)), f[:, None, None] * H,
                  accumulate=True)
    IB = torch.eye(T, dtype=W.dtype, device=W.device) - B
    E = W @ IB  # gamma ||E||^2: its Hessian in (W, B) in closed form
    eye_d, eye_T = torch.eye(d, dtype=W.dtype, device=W.device), torch.eye(T, dtype=W.dtype, device=W.device)
    Hv[:nW, :nW] += 2 * gamma * torch.kron(eye_d, IB @ IB.T)
    sB = slice(nW, nW + nB)
    Hv[sB, sB] += 2 * gamma * torch.kron(W.T @ W, eye_T)[off][:, off]
    WB = -2 * gamma * (torch.einsum("st,au->atsu", eye_T, E) + torch.einsum("as,tu->atsu", W, IB))
    WB = WB.reshape(nW, T * T)[:, off]
    Hv[:nW, sB] += WB
    Hv[sB, :nW] += WB.T
    rows = torch.div(off, T, rounding_mode="floor")  # the task of each entry of B
    C.index_put_((ids[rows], (nW + torch.arange(nB, device=W.device))[:, None].expand(nB, p)), alpha * g[rows])
    return Hv, C


def latent_quadratic_hessian(loss, L: Tensor, S: Tensor) -> Tensor:
    """The same for the squared loss in its Gram form (``_solve.SquaredLoss``: the intercepts
    eliminated, sum_t c_t (w_t^T G_t w_t / 2) - <lin, W> + const), in (vec L, vec S)."""
    g, T = loss.gram, S.shape[1]
    G = g.G.expand(T, *g.G.shape[-2:]) * g.c.reshape(-1, 1, 1)  # c_t G_t (T, d, d)
    u = torch.einsum("tab,bt->ta", G, L @ S) - loss.linear.T  # the gradient in w_t
    return latent_hessian(G, u, L, S, None)


def latent_hessian_blocks(G: Tensor, u: Tensor, L: Tensor, S: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The blocks of the Hessian of sum_t f_t(L s_t) (no intercepts): H_LL (dk, dk) in vec L,
    H_LS (dk, k, T) with H_LS[:, :, t] the cross block of L and s_t, and H_SS (T, k, k), the
    blocks of the tasks' s_t (no coupling between tasks)."""
    k = L.shape[1]
    GL = G @ L  # (T, d, k)
    H_ll = torch.einsum("tab,it,jt->aibj", G, S, S).reshape(L.numel(), L.numel())
    H_ls = torch.einsum("taj,it->aijt", GL, S) + torch.einsum("ta,ij->aijt", u, torch.eye(k, dtype=L.dtype,
                                                                                           device=L.device))
    return H_ll, H_ls.reshape(L.numel(), k, -1), L.T @ GL


def latent_hessian(G: Tensor, u: Tensor, L: Tensor, S: Tensor, intercept: tuple | None) -> Tensor:
    """The Hessian in (vec L, vec S[, b]) of a data term sum_t f_t(L s_t[, b_t]) from each
    task's curvature G_t (T, d, d) and gradient u_t (T, d) in w_t, and with intercepts
    ``intercept`` = (m (T, d), c (T,)): the curvature's cross terms with b_t and in b_t."""
    (d, k), T = L.shape, S.shape[1]
    n_l, n_s = d * k, k * T
    n = n_l + n_s + (T if intercept is not None else 0)
    H = L.new_zeros(n, n)
    H_ll, H_ls, H_tt = latent_hessian_blocks(G, u, L, S)
    H[:n_l, :n_l] = H_ll
    H[:n_l, n_l:n_l + n_s] = H_ls.reshape(n_l, n_s)
    t_idx = torch.arange(T, device=L.device)
    H_ss = L.new_zeros(k, T, k, T)
    H_ss[:, t_idx, :, t_idx] = H_tt  # advanced indices first: (T, k, k)
    H[n_l:n_l + n_s, n_l:n_l + n_s] = H_ss.reshape(n_s, n_s)
    if intercept is not None:
        m, c = intercept
        H[:n_l, n_l + n_s:] = torch.einsum("ta,it->ait", m, S).reshape(n_l, T)
        H_sb = L.new_zeros(k, T, T)
        H_sb[:, t_idx, t_idx] = (m @ L).T  # (k, T): L^T m_t in column t
        H[n_l:n_l + n_s, n_l + n_s:] = H_sb.reshape(n_s, T)
        H[n_l + n_s:, n_l + n_s:] = torch.diag(c)
    upper = torch.triu(H, 1)
    return H.diagonal().diag_embed() + upper + upper.T
