"""Trainer of the multi-task attribute CNN (Abdulnabi et al. 2015, attribute MTL): the
squared hinge loss of eq. 2 on an :class:`~mtlkernels.nn.attribute_mtl.AttributeCNN`
(proximal steps for the group lasso on S and the l1 + Frobenius penalty on L after
every optimiser step, from the model's hooks), with accuracy per attribute, per group
and overall.

Example::

    from mtlkernels.nn import AttributeCNN
    from mtlkernels.train import AttributeMTLConfig, AttributeMTLTrainer

    groups = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    make = lambda: AttributeCNN(9, "MG", groups, mu=0.3)     # built after seeding
    tr = AttributeMTLTrainer(make, AttributeMTLConfig(epochs=40)).fit((X, Y), (X_val, Y_val))
    tr.evaluate(X_test, Y_test)     # {"accuracy", "loss", "per_attribute", "per_group"}

Y is (N, M) in {0, 1}; -1 marks a missing annotation (attribute m is trained on the
images annotated for it, the N_m of eq. 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..nn.attribute_mtl import attribute_accuracy, squared_hinge_loss
from .config import TrainConfig
from .data import check_images
from .supervised import SupervisedTrainer

__all__ = ["AttributeMTLConfig", "AttributeMTLTrainer", "check_attributes"]


@dataclass
class AttributeMTLConfig(TrainConfig):
    """:class:`TrainConfig` with the attribute MTL defaults, plus names for the metrics
    (``attribute_names``: one per attribute, default a0, a1, ...; ``group_names``: one
    per group label, default g0, g1, ...). The model's hyper-parameters (variant,
    mu, gamma, lambda, K) are the :class:`~mtlkernels.nn.AttributeCNN`'s."""

    lr: float = 3e-3
    epochs: int = 30
    batch_size: int = 32
    attribute_names: tuple | None = None
    group_names: tuple | None = None


def check_attributes(Y: Tensor, n_attributes: int, name: str, allow_missing: bool = True) -> None:
    """Y must be an (N, M) matrix of binary attributes in {0, 1} (-1: not annotated)."""
    if not isinstance(Y, Tensor):
        raise TypeError(f"{name}: attributes must be a tensor, got {type(Y).__name__}")
    if Y.dim() != 2 or Y.shape[1] != n_attributes:
        raise ValueError(f"{name}: attributes must be an (N, {n_attributes}) matrix, got shape {tuple(Y.shape)}")
    ok = (Y == 0) | (Y == 1) | ((Y == -1) if allow_missing else torch.zeros_like(Y, dtype=torch.bool))
    if Y.numel() and not ok.all():
        bad = torch.unique(Y[~ok])[:5].tolist()
        allowed = "0, 1 or -1 (missing)" if allow_missing else "0 or 1"
        raise ValueError(f"{name}: attributes must be {allowed}, found values {bad}")


class AttributeMTLTrainer(SupervisedTrainer):
    """Train an attribute CNN (any of the variants S, M, MG) on (X, Y).

    After ``fit``: ``model``, ``history_`` (train loss, validation accuracy per epoch),
    ``metrics_`` (:meth:`evaluate` on the validation data when given).
    """

    config_class = AttributeMTLConfig
    method = "attribute_mtl"

    def __init__(self, model, config: AttributeMTLConfig, *, name: str | None = None):
        super().__init__(model, config, loss_fn=squared_hinge_loss, metric=attribute_accuracy, name=name)
        self.metrics_: dict = {}

    @property
    def n_attributes(self) -> int:
        self._check_fitted()
        return int(self.model.n_attributes)

    @property
    def groups(self) -> list[int] | None:
        labels = getattr(self.model, "attribute_groups", None)  # AttributeCNN keeps them for every variant
        return None if labels is None else [int(g) for g in labels]

    def check_data(self, data, name: str) -> None:
        if isinstance(data, DataLoader):
            return
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise TypeError(f"{self.name}: {name} must be a DataLoader or a tuple (X, Y) of tensors")
        X, Y = data
        check_images(X, f"{self.name}: {name} X")
        check_attributes(Y, self.n_attributes, f"{self.name}: {name} Y")
        if len(X) != len(Y):
            raise ValueError(f"{self.name}: {name} X has {len(X)} samples but Y has {len(Y)}")

    def make_loader(self, data, name: str, shuffle: bool, split: bool = True):
        if isinstance(data, (tuple, list)):
            data = (data[0], data[1].to(torch.float32))  # the loss takes float targets (-1: missing)
        return super().make_loader(data, name, shuffle, split)

    def on_fit_end(self) -> None:
        self.metrics_ = self.evaluate(self.val_loader) if self.val_loader is not None else {}

    def metrics(self) -> dict:
        return {**super().metrics(), "metrics": self.metrics_}

    def decision_function(self, X) -> Tensor:
        """(N, M) decision values f (attribute present when f > 0)."""
        return super().predict(X)

    def predict(self, X) -> Tensor:
        """(N, M) predicted attributes in {0, 1} (int64)."""
        return (self.decision_function(X) > 0).long()

    def score(self, X, y: Tensor | None = None) -> float:
        return self.metric(self.decision_function(X), self.targets(X, y))

    def evaluate(self, X, Y: Tensor | None = None) -> dict:
        """Accuracy per attribute (over its annotated images), per group (mean of its
        attributes, the paper's Table III columns) and overall (mean over attributes),
        and the mean squared hinge loss."""
        self._check_fitted()
        Y = self.targets(X, Y)
        check_attributes(Y.round().long() if Y.is_floating_point() else Y, self.n_attributes,
                         f"{self.name}.evaluate: Y")
        scores = self.decision_function(X)
        if len(scores) != len(Y):
            raise ValueError(f"{self.name}.evaluate: X has {len(scores)} samples but Y has {len(Y)}")
        M = self.n_attributes
        names = list(self.config.attribute_names or [f"a{m}" for m in range(M)])
        if len(names) != M:
            raise ValueError(f"attribute_names must have {M} names, got {len(names)}")
        known = (Y >= 0).double()
        correct = (((scores > 0) == (Y > 0)).double() * known).sum(0) / known.sum(0).clamp_min(1)
        out = {"accuracy": float(correct.mean()), "loss": float(squared_hinge_loss(scores, Y.to(scores.dtype))),
               "per_attribute": {n: float(c) for n, c in zip(names, correct)}}
        if self.groups is not None:
            g = torch.tensor(self.groups)
            G = int(g.max()) + 1
            gnames = list(self.config.group_names or [f"g{k}" for k in range(G)])
            if len(gnames) != G:
                raise ValueError(f"group_names must have {G} names, got {len(gnames)}")
            out["per_group"] = {gnames[k]: float(correct[g == k].mean()) for k in range(G)}
        return out
