"""Small pieces the solvers share: iterates, dot products without host syncs, checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

Params = list[Tensor]


@dataclass
class _Point:
    """An iterate with its smooth value and (when known) gradient; ``aux`` is the
    smooth part's own bookkeeping (the gradient in W for a :class:`Quadratic`). ``f``
    may be a 0-dim tensor until the engine reads it (one host transfer per step)."""

    params: Params
    f: float | Tensor
    grad: Params | None = None
    aux: Tensor | None = None


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """sum_k <a_k, b_k> as a 0-dim tensor (no host sync)."""
    out = torch.dot(a[0].reshape(-1), b[0].reshape(-1))
    for x, y in zip(a[1:], b[1:]):
        out = out + torch.dot(x.reshape(-1), y.reshape(-1))
    return out


def _floats(*ts) -> list[float]:
    """Several 0-dim tensors (or floats) as floats, in one host transfer."""
    tensors = [t for t in ts if isinstance(t, Tensor)]
    if not tensors:
        return [float(t) for t in ts]
    vals = iter(torch.stack([t.reshape(()).to(torch.float64) for t in tensors]).tolist())
    return [next(vals) if isinstance(t, Tensor) else float(t) for t in ts]


def _finite(v: float, where: str, solver: str = "fista") -> float:
    if not math.isfinite(v):
        raise FloatingPointError(f"{solver}: the smooth objective is {v} {where}; check the inputs and the step size")
    return v
