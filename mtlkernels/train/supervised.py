"""A supervised trainer for one network with penalties and proximal hooks.

It is the loop under the single-network methods and their baselines: the Adaptive
Sharing layer (Shen et al. 2015, sec. 3.2), the attribute CNN (Abdulnabi et al. 2015),
Deep-AMTFL and its baselines (Lee et al. 2018, eq. 7) and the CETL baselines. The model's
conventions (see :mod:`mtlkernels.nn.hooks`):

- ``model.penalty()``, or the sum of its submodules' ``penalty()``: a differentiable
  scalar added to the loss (smoothed nuclear norm, reconstruction terms, ...);
- any submodule's ``proximal_step(lr)`` is called after every optimiser step (the
  non-smooth regularisers: l1 on S, group lasso, ... through the fused ops).

Example::

    from mtlkernels.nn import AdaptiveSharingLinear, DigitsCNN
    from mtlkernels.train import SupervisedTrainer, TrainConfig

    def make_model():                       # built after seeding: reproducible
        net = DigitsCNN()
        net.head = AdaptiveSharingLinear(net.hidden, 10, lambda_c=1e-3, lambda_s=5e-4)
        return net

    tr = SupervisedTrainer(make_model, TrainConfig(epochs=30)).fit((X, y), (X_val, y_val))
    tr.score(X_test, y_test)
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .config import TrainConfig
from .data import check_images, check_labels
from .trainer import Trainer

__all__ = ["SupervisedTrainer", "accuracy", "n_outputs"]


def accuracy(out: Tensor, y: Tensor) -> float:
    return float((out.argmax(1) == y).double().mean())


def n_outputs(model: nn.Module, X: Tensor) -> int:
    """The width of ``model``'s output on one sample (an eval-mode forward, no grad)."""
    import torch

    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    was = model.training
    model.eval()
    with torch.no_grad():
        n = model(X[:1].to(device)).shape[1]
    model.train(was)
    return int(n)


class SupervisedTrainer(Trainer):
    """Train ``model`` minimising ``loss_fn(model(x), y) + penalty`` over (x, y) batches.

    Args:
        model, config: see :class:`~mtlkernels.train.Trainer`.
        loss_fn: default ``F.cross_entropy`` (the labels are then checked against the
            model's number of outputs).
        metric: ``metric(outputs, y) -> float`` for ``score`` and the validation
            record (default: accuracy).
    """

    method = "supervised"

    def __init__(self, model, config: TrainConfig, *, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                 metric: Callable[[Tensor, Tensor], float] | None = None, name: str | None = None):
        super().__init__(model, config, name=name)
        self.loss_fn = loss_fn or F.cross_entropy
        self.metric = metric or accuracy

    def check_data(self, data, name: str) -> None:
        if isinstance(data, DataLoader):
            return
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise TypeError(f"{self.name}: {name} must be a DataLoader or a tuple (X, y) of tensors, got "
                            f"{type(data).__name__}")
        X, y = data
        check_images(X, f"{self.name}: {name} X")
        if not isinstance(y, Tensor) or len(X) != len(y):
            raise ValueError(f"{self.name}: {name} X has {len(X)} samples but y has "
                             f"{len(y) if isinstance(y, Tensor) else type(y).__name__}")
        if self.loss_fn is F.cross_entropy:
            n = getattr(self.model, "n_classes", None) or n_outputs(self.model, X)
            check_labels(y, n, f"{self.name}: {name} y")

    def training_step(self, batch) -> Tensor:
        x, y = batch
        return self.loss_fn(self.model(x), y)

    def validate(self) -> dict:
        return {"val_metric": self.score(self.val_loader)}

    def score(self, X, y: Tensor | None = None) -> float:
        """``metric`` of the predictions on X against y (or on (X, y), or a DataLoader)."""
        return self.metric(self.predict(X), self.targets(X, y))
