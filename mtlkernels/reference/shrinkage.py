"""Pure-torch reference of the shrinkage family (the oracle of tests and benchmarks).

Written for clarity, with the plain eager composite a PyTorch user would write.
"""

from __future__ import annotations

import torch
from torch import Tensor


def soft_threshold(x: Tensor, tau: Tensor | float) -> Tensor:
    """sign(x) * max(|x| - tau, 0), the prox of tau * ||x||_1."""
    return torch.sign(x) * torch.clamp(x.abs() - tau, min=0)


def elastic_net_prox(x: Tensor, l1: Tensor | float, l2: float) -> Tensor:
    """prox of l1 * ||x||_1 + (l2 / 2) * ||x||_2^2: soft_threshold(x, l1) / (1 + l2)."""
    return soft_threshold(x, l1) / (1 + l2)


def prox_grad_step(x: Tensor, grad: Tensor, lr: float, l1: Tensor | float, l2: float = 0.0) -> Tensor:
    """One proximal-gradient step prox_{lr h}(x - lr * grad), h = l1 ||.||_1 + l2/2 ||.||^2."""
    return elastic_net_prox(x - lr * grad, lr * l1, lr * l2)


def group_sum(v: Tensor, dim: int, groups: Tensor | None = None, num_groups: int | None = None) -> Tensor:
    """Sum of v over each group, broadcast back to v's shape.

    Groups of a matrix: whole rows/columns along ``dim``, or, when ``groups`` labels
    the entries along ``dim``, the entries of each row (dim=1) or column (dim=0)
    that share a label.
    """
    dim = dim % 2
    if groups is None:
        return v.sum(dim=dim, keepdim=True).expand_as(v)
    groups = groups.long()
    g = int(num_groups if num_groups is not None else (int(groups.max()) + 1 if groups.numel() else 0))
    shape = list(v.shape)
    shape[dim] = g
    sums = torch.zeros(shape, dtype=v.dtype, device=v.device).index_add_(dim, groups, v)
    return sums.index_select(dim, groups)


def group_threshold(tau: Tensor | float, x: Tensor, dim: int, groups: Tensor | None) -> Tensor | float:
    """The per-group threshold laid out to broadcast against x."""
    if not isinstance(tau, Tensor):
        return float(tau)
    tau = tau.to(x.dtype)
    if tau.numel() == 1:
        return tau.reshape(())
    dim = dim % 2
    if groups is not None:
        tau = tau[groups.long()]
        return tau.view(-1, 1) if dim == 0 else tau.view(1, -1)
    return tau.view(-1, 1) if dim == 1 else tau.view(1, -1)


def group_soft_threshold(
    x: Tensor,
    tau: Tensor | float,
    dim: int,
    groups: Tensor | None = None,
    l1: float = 0.0,
    num_groups: int | None = None,
) -> Tensor:
    """Block soft-thresholding, the prox of tau * sum_g ||x_g||_2 (+ l1 ||x||_1).

    z = soft_threshold(x, l1); out_g = z_g * max(0, 1 - tau_g / ||z_g||_2).
    ``num_groups`` (labels only) saves reading the labels to count the groups.
    """
    z = soft_threshold(x, l1) if l1 > 0 else x
    if isinstance(tau, Tensor) and tau.numel() > 1:
        num_groups = tau.numel()
    norm = group_sum(z * z, dim, groups, num_groups).sqrt()
    t = group_threshold(tau, x, dim, groups)
    factor = torch.clamp(1 - t / norm, min=0)
    factor = torch.where(norm == 0, torch.zeros_like(factor), factor)  # NaN norms propagate
    return z * factor


def group_prox_grad_step(
    x: Tensor,
    grad: Tensor,
    lr: float,
    tau: Tensor | float,
    dim: int,
    groups: Tensor | None = None,
    l1: float = 0.0,
) -> Tensor:
    """prox_{lr h}(x - lr * grad) for h = tau * sum_g ||x_g||_2 + l1 ||x||_1."""
    return group_soft_threshold(x - lr * grad, lr * tau, dim, groups, lr * l1)
