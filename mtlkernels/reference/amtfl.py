"""Pure-torch reference of the AMTFL family (the oracle of tests and benchmarks).

The feature-reconstruction term of (Deep-)AMTFL, Lee et al. 2018 (Deep-AMTFL) eqs. 6 and 7, written as
the eager composite a PyTorch user would write (autograd provides the gradients).
"""

from __future__ import annotations

import torch
from torch import Tensor


def amtfl_reconstruction_loss(Z: Tensor, W: Tensor, A: Tensor, bias: Tensor | None = None) -> Tensor:
    """||relu(Z W A + bias) - Z||_F^2: the features Z (N, k) reconstructed from the
    task outputs Z W (N, T) through the feedback weights A (T, k)."""
    P = (Z @ W) @ A
    if bias is not None:
        P = P + bias
    return (torch.relu(P) - Z).pow(2).sum()
