"""Pure-torch reference of the nuclear-norm family (the oracle of tests and benchmarks).

Written for clarity with ``torch.linalg.svd``, the composite a PyTorch user would
write. Shen et al. 2015 (Adaptive Sharing): svt is the prox of eq. 9, the smoothed nuclear
norm is Omega_eps of eq. 11, its gradient the corrected eq. 12 (see
:func:`mtlkernels.ops.smoothed_nuclear_norm`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _per_matrix(tau: Tensor | float, x: Tensor) -> Tensor | float:
    """tau laid out to broadcast against the singular values (..., k) of x."""
    if isinstance(tau, Tensor):
        return tau.to(x.dtype).unsqueeze(-1)
    return float(tau)


def svt(x: Tensor, tau: Tensor | float) -> Tensor:
    """U diag(max(s - tau, 0)) V^T for each matrix of x (..., m, n); tau a number or one per matrix."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    return (u * torch.clamp(s - _per_matrix(tau, x), min=0).unsqueeze(-2)) @ vh


def nuclear_norm(x: Tensor) -> Tensor:
    """Sum of the singular values of each matrix of x (..., m, n)."""
    return torch.linalg.svdvals(x).sum(-1)


def huber(s: Tensor, lam: float, eps: float) -> Tensor:
    """Omega_eps on one singular value: s^2 / (2 eps) if s <= eps lam, lam (s - eps lam / 2) above."""
    t = eps * lam
    return torch.where(s <= t, s * s / (2 * eps), lam * (s - t / 2))


def smoothed_nuclear_norm(x: Tensor, lam: float, eps: float) -> Tensor:
    """Omega_eps(x) = min_Q 1/(2 eps) ||Q - x||_F^2 + lam ||Q||_* (Shen et al. 2015, eq. 11), per matrix.

    The minimiser is Q* = svt(x, eps lam); the objective at Q* is the sum of the Huber
    function :func:`huber` over the singular values, evaluated here (the objective written
    out, ||Q* - x||^2 / (2 eps) + lam ||Q*||_*, cancels catastrophically when eps lam << s;
    the tests check that both forms agree on moderate inputs).
    """
    return huber(torch.linalg.svdvals(x), lam, eps).sum(-1)


def smoothed_nuclear_norm_grad(x: Tensor, lam: float, eps: float) -> Tensor:
    """The gradient of Omega_eps: (x - Q*) / eps with Q* = svt(x, eps lam).

    Evaluated as U diag(min(s, eps lam)) V^T / eps, the same matrix without the
    cancellation of x - Q* (the tests check both forms agree).
    """
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    return (u * torch.clamp(s, max=eps * lam).unsqueeze(-2)) @ vh / eps
