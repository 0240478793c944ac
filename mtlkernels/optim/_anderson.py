"""Safeguarded Anderson acceleration of a fixed-point iteration s <- g(s): what lets ADMM
converge in tens of iterations where its plain form needs thousands (raw features whose
scales span 10^3 and more, a penalty parameter no single value of which suits every
direction).

Type-II Anderson acceleration (Walker and Ni, 2011): with f_k = g(s_k) - s_k and the last
``memory`` differences dF, dG of the f's and g's, the next point is g(s_k) - dG gamma,
gamma the least-squares solution of dF gamma = f_k. Safeguard (after Zhang, O'Donoghue and
Boyd, 2020): an accelerated point is kept only while the fixed-point residual ||f|| it
leads to is no larger than the last one a plain step gave; otherwise the iteration goes
back to that plain step and the memory is cleared. The map changes with ADMM's penalty
parameter, so the caller clears the memory then (:meth:`reset`).
"""

from __future__ import annotations

import math
REG = 1e-12
MAX_STEP = 1e6  # the longest extrapolation, in units of the residual ||g(s) - s||

import torch
from torch import Tensor


def flatten(blocks) -> Tensor:
    """A list of tensors (or of lists of tensors) as one vector."""
    flat = [t.reshape(-1) for b in blocks for t in (b if isinstance(b, (list, tuple)) else [b])]
    return torch.cat(flat)


def unflatten(vec: Tensor, like) -> list:
    """The inverse of :func:`flatten` for the shapes of ``like``."""
    out, off = [], 0
    for b in like:
        group = b if isinstance(b, (list, tuple)) else [b]
        parts = []
        for t in group:
            parts.append(vec[off:off + t.numel()].view_as(t))
            off += t.numel()
        out.append(parts if isinstance(b, (list, tuple)) else parts[0])
    return out


class Anderson:
    """``step(s, g_s)``: given the point s the map was applied to and its image g(s),
    the point to apply it to next. ``memory=0`` returns g(s) (no acceleration). The
    differences are kept in ring buffers with their Gram matrix, so a step costs three
    products with the (memory x n) buffers and no copies of them."""

    def __init__(self, memory: int):
        self.memory = int(memory)
        self.dF = self.dG = self.gram = None  # (memory, n), (memory, n), (memory, memory)
        self.reset()

    def reset(self) -> None:
        self.count = self.pos = 0
        self.f_prev = self.g_prev = None
        self.plain = None  # g at the last point reached by a plain step, and its ||f||
        self.plain_norm = math.inf
        self.accelerated = False  # whether the point just mapped was an accelerated one

    def settle(self, s: Tensor, g: Tensor) -> Tensor:
        """The point to go on from when the map is about to change (``s`` mapped to ``g``):
        g if s passes the safeguard, else the plain point it replaced; the memory is cleared."""
        back = self.plain if (self.memory > 0 and self.accelerated and not float((g - s).norm()) <= self.plain_norm) \
            else g
        self.reset()
        return back

    def _push(self, df: Tensor, dg: Tensor) -> None:
        if self.dF is None or self.dF.shape[1] != df.numel():
            self.dF = df.new_empty(self.memory, df.numel())
            self.dG = df.new_empty(self.memory, df.numel())
            self.gram = df.new_zeros(self.memory, self.memory)
        j = self.pos
        self.dF[j] = df
        self.dG[j] = dg
        self.count = min(self.count + 1, self.memory)
        col = self.dF[: self.count] @ df
        self.gram[j, : self.count] = col
        self.gram[: self.count, j] = col
        self.pos = (j + 1) % self.memory

    def step(self, s: Tensor, g: Tensor) -> Tensor:
        if self.memory <= 0:
            return g
        f = g - s
        fn = float(f.norm())
        if self.accelerated and not fn <= self.plain_norm:  # the accelerated point did worse: back off
            back = self.plain
            self.reset()
            return back
        self.plain_norm = min(fn, self.plain_norm) if self.accelerated else fn
        if self.f_prev is not None:
            self._push(f - self.f_prev, g - self.g_prev)
        self.f_prev, self.g_prev = f, g
        self.accelerated = False
        k = self.count
        if k == 0 or not math.isfinite(fn):
            return g
        A = self.gram[:k, :k]
        # Tikhonov regularisation: the differences are often nearly dependent
        reg = max(REG, 10 * torch.finfo(A.dtype).eps) * float(A.diagonal().sum()) + torch.finfo(A.dtype).tiny
        gamma, info = torch.linalg.solve_ex(A + reg * torch.eye(k, dtype=A.dtype, device=A.device), self.dF[:k] @ f)
        step = gamma @ self.dG[:k]
        step_norm = float(step.norm())
        # a nearly singular system can extrapolate absurdly far along a direction the residual
        # does not see (a null direction of the problem): such a step is not taken
        if int(info) != 0 or not math.isfinite(step_norm) or step_norm > MAX_STEP * max(fn, 1e-300):
            return g
        self.plain = g
        self.accelerated = True
        return g - step
