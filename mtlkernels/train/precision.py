"""Mixed precision for the trainers: ``config.precision`` in {"32", "bf16-mixed", "16-mixed"}.

The forward pass and the data loss run under :func:`torch.autocast` (bfloat16 or
float16) on CPU and CUDA; the parameters, the optimiser state, the penalties (outside
autocast, on float32 parameters and float32 copies of any cached activations) and the
proximal steps stay in float32. "16-mixed" scales the loss with a
:class:`torch.amp.GradScaler`: a step whose gradients overflow is skipped, and so are
its proximal steps.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["Precision"]


class Precision:
    def __init__(self, precision: str, device: torch.device):
        self.precision = precision
        self.device_type = device.type
        self.dtype = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[precision]
        self.scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None

    def autocast(self):
        """The context for the forward pass and the data loss."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def full(self):
        """A float32 region inside :meth:`autocast` (penalties)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, enabled=False)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """``optimizer.step()`` (through the scaler); False when the step was skipped."""
        if self.scaler is None:
            optimizer.step()
            return True
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= before

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients to their true scale (before adding gradients by hand)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
