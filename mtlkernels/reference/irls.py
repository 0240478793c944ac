"""Pure-torch reference of the joint-IRLS family (Zhang et al. 2019; the oracle of tests and benchmarks).

Written for clarity, with the composites a PyTorch user would write. The layer-pair
convention (pair l = layers l and l + 1, the last layer alone for l = L - 1) is the
one documented in :mod:`mtlkernels.ops.irls`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


def _layers(params: Tensor, offsets: Sequence[int]):
    offsets = [int(o) for o in offsets]
    return [params[:, a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def pairwise_sq_dists(params: Tensor, offsets: Sequence[int]) -> Tensor:
    """(L, n, n) per-layer squared distances, difference form (x_i - x_j)^2 summed."""
    return torch.stack([((x[:, None, :] - x[None, :, :]) ** 2).sum(-1) for x in _layers(params, offsets)])


def gram_sq_dists(params: Tensor, offsets: Sequence[int]) -> Tensor:
    """The Gram-GEMM composite ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j per layer (a benchmark peer).

    Cancels catastrophically when networks are close: the test suite shows it.
    """
    out = []
    for x in _layers(params, offsets):
        g = x @ x.T
        sq = g.diagonal()
        out.append((sq[:, None] + sq[None, :] - 2 * g).clamp_min(0))
    return torch.stack(out)


def cdist_sq_dists(params: Tensor, offsets: Sequence[int]) -> Tensor:
    """torch.cdist per layer, squared (a benchmark peer; uses the Gram form above 25 rows)."""
    return torch.stack([torch.cdist(x, x) ** 2 for x in _layers(params, offsets)])


def layer_pair_sq_dists(sq_dists: Tensor) -> Tensor:
    """d2[l] = D[l] + D[l + 1] (l < L - 1), d2[L - 1] = D[L - 1]."""
    nxt = torch.cat([sq_dists[1:], torch.zeros_like(sq_dists[:1])])
    return sq_dists + nxt


def layer_weights(pair_weights: Tensor) -> Tensor:
    """c[l] = w[l] + w[l - 1] (c[0] = w[0]): the adjoint of layer_pair_sq_dists."""
    prev = torch.cat([torch.zeros_like(pair_weights[:1]), pair_weights[:-1]])
    return pair_weights + prev


def _sigma_col(sigma, L: int, like: Tensor) -> Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float64, device=like.device).reshape(-1).expand(L)
    return s.reshape(L, 1, 1)


def irls_weights(sq_dists: Tensor, sigma) -> tuple[Tensor, Tensor]:
    """w = sigma^2 / (sigma^2 + d2) (eq. 7), rho = w * d2 (eq. 3) on layer-pair distances.

    sigma = 0: w = rho = 0; sigma = inf: w = 1, rho = d2; d2 = 0: w = 1.
    """
    d2 = layer_pair_sq_dists(sq_dists.to(torch.float64))
    s2 = _sigma_col(sigma, sq_dists.shape[0], sq_dists) ** 2
    finite = torch.isfinite(s2) & (s2 > 0)
    s2f = torch.where(finite, s2, torch.ones_like(s2))
    w = torch.where(finite, s2f / (s2f + d2), torch.where(s2 > 0, torch.ones_like(d2), torch.zeros_like(d2)))
    rho = torch.where(finite, s2f * d2 / (s2f + d2), torch.where(s2 > 0, d2, torch.zeros_like(d2)))
    return w.to(sq_dists.dtype), rho.to(sq_dists.dtype)


def sigma_init(sq_dists: Tensor) -> Tensor:
    """sigma^l = mean_i min_{j != i} d_l(i, j) on layer-pair distances (sec. 4.2.1)."""
    d = layer_pair_sq_dists(sq_dists.to(torch.float64)).sqrt()
    L, n, _ = d.shape
    out = torch.empty(L, dtype=torch.float64)
    for l in range(L):
        out[l] = sum(min(float(d[l, i, j]) for j in range(n) if j != i) for i in range(n)) / n
    return out.to(sq_dists.dtype)


def robust_consistency(params: Tensor, offsets: Sequence[int], sigma=None, weights: Tensor | None = None) -> Tensor:
    """f_cons of eq. 3 (sum_{i<j} rho over layer pairs), or 1/2 sum_{i != j} w d2 (eq. 8)."""
    D = pairwise_sq_dists(params, offsets)
    if weights is not None:
        return 0.5 * (weights.to(D.dtype) * layer_pair_sq_dists(D)).sum()
    L, n, _ = D.shape
    d2 = layer_pair_sq_dists(D)
    iu = torch.triu_indices(n, n, 1)
    total = D.new_zeros(())
    for l in range(L):
        s = float(torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(L)[l])
        x2 = d2[l, iu[0], iu[1]]
        if s == 0:
            continue
        total = total + (x2.sum() if math.isinf(s) else (s * s * x2 / (s * s + x2)).sum())
    return total


def irls_consensus(weights: Tensor, params: Tensor, offsets: Sequence[int]) -> Tensor:
    """target_i^l = sum_{j != i} c_ijl theta_j^l / sum_{j != i} c_ijl (eq. 9); theta_i if the sum is 0."""
    outs = []
    n = params.shape[0]
    off_diag = 1 - torch.eye(n, dtype=params.dtype, device=params.device)
    for l, x in enumerate(_layers(params, offsets)):
        c = weights[l].to(params.dtype) * off_diag
        s = c.sum(1, keepdim=True)
        target = (c @ x) / torch.where(s > 0, s, torch.ones_like(s))
        outs.append(torch.where(s > 0, target, x))
    return torch.cat(outs, dim=1)


def pairwise_mix(params: Tensor, offsets: Sequence[int], coeffs: Tensor, transpose: bool = False) -> Tensor:
    """out_i^l = coeffs_lii theta_i^l + sum_{j != i} coeffs_lij (theta_j^l - theta_i^l), or its adjoint."""
    outs = []
    n = params.shape[0]
    eye = torch.eye(n, dtype=params.dtype, device=params.device)
    for l, x in enumerate(_layers(params, offsets)):
        m = coeffs[l].to(params.dtype)
        off = m * (1 - eye)
        a = off + torch.diag(m.diagonal() - off.sum(1))
        outs.append((a.T if transpose else a) @ x)
    return torch.cat(outs, dim=1)
