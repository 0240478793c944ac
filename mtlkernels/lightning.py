"""The penalties and proximal steps of mtlkernels modules inside any Lightning training
(the optional extra ``lightning``: ``pip install mtlkernels[lightning]``).

With :class:`PenaltyCallback` a user's own ``LightningModule`` can hold an
:class:`~mtlkernels.nn.AdaptiveSharingLinear` layer, a Deep-AMTFL model
(:func:`~mtlkernels.nn.deep_amtfl_model`) or any module with ``penalty()`` /
``proximal_step(lr)`` hooks, and train it with Lightning's ``Trainer`` unchanged::

    import lightning as L
    from mtlkernels.lightning import PenaltyCallback

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = deep_amtfl_model("deep_amtfl")

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.model.loss(self.model(x), y)     # the data term only

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    L.Trainer(max_epochs=10, callbacks=[PenaltyCallback()]).fit(Net(), loader)

What the callback does, exactly as :class:`mtlkernels.train.Trainer` does:

- before every backward it adds :func:`mtlkernels.nn.total_penalty` of the
  LightningModule (in float32, outside autocast) to the loss Lightning back-propagates,
  scaled as Lightning scales that loss (the GradScaler of "16-mixed", the division by
  ``accumulate_grad_batches``). The addition is in place, so the loss Lightning logs
  includes the penalty. Penalties that need the features of the training forward pass
  (Deep-AMTFL's reconstruction term) find them, since the backward follows it;
- after every ``optimizer.step()`` that was taken it applies the module's proximal
  steps with the step size of the optimiser's first parameter group
  (:func:`mtlkernels.nn.add_proximal_hook`).
"""

from __future__ import annotations

import torch

from .nn.hooks import add_proximal_hook, total_penalty

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("mtlkernels.lightning needs Lightning: pip install 'mtlkernels[lightning]' "
                      "(or pip install lightning)") from exc

__all__ = ["PenaltyCallback"]


class PenaltyCallback(Callback):
    """Adds the module's penalties to the loss and applies its proximal steps after each
    optimiser step (see the module docstring)."""

    def __init__(self, penalties: bool = True, proximal: bool = True):
        super().__init__()
        self.penalties, self.proximal = penalties, proximal
        self._handles: list = []

    def on_train_start(self, trainer, pl_module) -> None:
        self._remove()
        if self.proximal:
            self._handles = [add_proximal_hook(opt, pl_module) for opt in trainer.optimizers]

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if not self.penalties:
            return
        with torch.autocast(loss.device.type, enabled=False):
            pen = total_penalty(pl_module)
        if not isinstance(pen, torch.Tensor):
            return  # no penalty in this module
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            pen = scaler.scale(pen)
        loss.add_(pen.to(loss.dtype) / trainer.accumulate_grad_batches)

    def on_train_end(self, trainer, pl_module) -> None:
        self._remove()

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
