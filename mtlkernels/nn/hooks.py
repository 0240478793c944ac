"""Penalties and proximal hooks of a network's submodules, for any training loop.

Conventions: a module's ``penalty()`` returns a differentiable scalar added to the loss
(smooth regularisers); its ``proximal_step(lr)`` applies the proximal map of a
non-smooth regulariser after an optimiser step (through the fused ops).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def total_penalty(model: nn.Module) -> Tensor | float:
    """The sum of the penalties of ``model``: ``model.penalty()`` when it has one,
    otherwise the sum over its children, recursively (a module that defines ``penalty``
    is trusted to include its own children's, so nothing is counted twice)."""
    pen = getattr(model, "penalty", None)
    if callable(pen):
        return pen()
    total: Tensor | float = 0.0
    for child in model.children():
        total = total + total_penalty(child)
    return total


class WithPenalty(nn.Module):
    """Wrap a network whose penalised layers are submodules (for example a
    :class:`~mtlkernels.nn.digits.DigitsCNN` whose ``head`` is an
    :class:`AdaptiveSharingLinear`) so that a trainer calling ``model.penalty()`` gets
    them: ``penalty()`` is :func:`total_penalty` of the wrapped network. ``forward``
    and ``proximal_step`` hooks are the wrapped network's (``self.net``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)

    def penalty(self) -> Tensor | float:
        return total_penalty(self.net)


def apply_proximal_steps(model: nn.Module, lr: float) -> None:
    """Call ``proximal_step(lr)`` on every submodule of ``model`` that has one."""
    for m in model.modules():
        step = getattr(m, "proximal_step", None)
        if callable(step):
            step(lr)


def add_proximal_hook(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Make ``optimizer.step()`` apply ``model``'s proximal steps right after the update.

    Works with any torch optimiser (``register_step_post_hook``); the step size passed
    to ``proximal_step`` is the learning rate of the first parameter group (read at
    every step, so schedulers are followed). Returns the hook handle (``.remove()``).
    Do not use it together with :class:`SupervisedTrainer`, which calls the hooks itself.
    """
    def hook(opt, args, kwargs):
        apply_proximal_steps(model, opt.param_groups[0]["lr"])

    return optimizer.register_step_post_hook(hook)
