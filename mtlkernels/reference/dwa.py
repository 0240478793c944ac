"""Pure-torch reference of the CETL DWA penalty (Chen et al. 2018, eq. 11).

The plain Python loop over parameters a PyTorch user would write; autograd gives
the gradient of :func:`dwa_penalty`, and :func:`dwa_grad` writes it out.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def dwa_penalty(params: Sequence[Tensor], anchors: Sequence[Tensor], importance: Sequence[Tensor], lam: float) -> Tensor:
    """sum_i lam/2 * GFI_i * (theta_i - theta*_i)^2 over every element of every tensor."""
    total = None
    for p, a, f in zip(params, anchors, importance):
        term = (f * (p - a).pow(2)).sum()
        total = term if total is None else total + term
    return total * (lam / 2)


def dwa_grad(params: Sequence[Tensor], anchors: Sequence[Tensor], importance: Sequence[Tensor], lam: float) -> list[Tensor]:
    """The gradient of :func:`dwa_penalty` with respect to each parameter: lam * GFI * (theta - theta*)."""
    return [lam * f * (p - a) for p, a, f in zip(params, anchors, importance)]
