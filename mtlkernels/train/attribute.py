"""Trainer for the multi-task attribute CNN (seed 003): builds an
:class:`~mtlkernels.nn.attribute.AttributeCNN` from a config, validates the attribute
matrix, trains with the squared hinge loss of eq. 2 through
:class:`~mtlkernels.train.supervised.SupervisedTrainer` (proximal steps for the group
lasso on S and the l1 + Frobenius penalty on L after every optimiser step; checkpoints
with exact resume), and reports accuracy per attribute, per group and overall.

Example::

    from mtlkernels.train import AttributeConfig, AttributeTrainer

    cfg = AttributeConfig(variant="MG", trunk="per_attribute", epochs=40, mu=0.3)
    tr = AttributeTrainer(cfg, n_attributes=Y.shape[1], groups=[0, 0, 0, 1, 1, 1, 2, 2, 2])
    tr.fit(X, Y, X_val, Y_val)            # Y: (N, M) in {0, 1}, -1 for a missing annotation
    tr.evaluate(X_test, Y_test)           # {"accuracy", "loss", "per_attribute", "per_group"}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ..nn.attribute import TRUNKS, VARIANTS, AttributeCNN, attribute_accuracy, squared_hinge_loss
from ._base import TrainConfig, check_images, log, seed_everything, write_json
from .supervised import SupervisedTrainer

__all__ = ["AttributeConfig", "AttributeTrainer"]


@dataclass
class AttributeConfig(TrainConfig):
    """Options of :class:`AttributeTrainer` (TrainConfig plus the model of seed 003).

    ``variant``: "single", "M" or "MG"; ``trunk``: "per_attribute" or "shared";
    ``n_latent``: K; ``width``, ``hidden``: trunk size; ``mu``, ``gamma``, ``lam``: eq. 2
    (the paper fixes lambda = 0.4 on its un-normalised sum; our loss is a batch mean);
    ``metrics_path``: write the history and the last evaluation there as JSON.
    """

    lr: float = 3e-3
    epochs: int = 30
    batch_size: int = 32
    variant: str = "MG"
    trunk: str = "per_attribute"
    n_latent: int = 8
    width: int = 8
    hidden: int = 32
    mu: float = 1e-3
    gamma: float = 1e-4
    lam: float = 1e-3
    metrics_path: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.trunk not in TRUNKS:
            raise ValueError(f"trunk must be one of {TRUNKS}, got {self.trunk!r}")
        for name in ("n_latent", "width", "hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("mu", "gamma", "lam"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0 and v == v and v != float("inf")):
                raise ValueError(f"{name} must be finite and non-negative, got {v!r}")


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


class AttributeTrainer:
    """Train one variant of the multi-task attribute CNN (seed 003).

    Args:
        config: :class:`AttributeConfig`.
        n_attributes: M.
        groups: one integer group label per attribute (used by "MG"; reported per group
            for every variant).
        attribute_names, group_names: for the metrics (defaults a0.., g0..).
    After ``fit``: ``model_`` (the :class:`AttributeCNN`), ``history_`` (per epoch: train
    loss, validation accuracy), ``metrics_`` (the evaluation on the validation data when
    given). ``evaluate(X, Y)`` returns the per-attribute, per-group and mean accuracy.
    """

    def __init__(self, config: AttributeConfig, n_attributes: int, groups=None, attribute_names=None,
                 group_names=None):
        config.validate()
        if isinstance(n_attributes, bool) or not isinstance(n_attributes, int) or n_attributes <= 0:
            raise ValueError(f"n_attributes must be a positive integer, got {n_attributes!r}")
        if groups is not None and len(groups) != n_attributes:
            raise ValueError(f"groups must give one label per attribute ({n_attributes}), got {len(groups)}")
        if config.variant == "MG" and groups is None:
            raise ValueError("variant 'MG' needs groups (one label per attribute)")
        self.config = config
        self.n_attributes = n_attributes
        self.groups = None if groups is None else [int(g) for g in groups]
        self.attribute_names = list(attribute_names) if attribute_names is not None else \
            [f"a{m}" for m in range(n_attributes)]
        if len(self.attribute_names) != n_attributes:
            raise ValueError(f"attribute_names must have {n_attributes} names, got {len(self.attribute_names)}")
        G = 0 if self.groups is None else max(self.groups) + 1
        self.group_names = list(group_names) if group_names is not None else [f"g{g}" for g in range(G)]
        self.model_: AttributeCNN | None = None
        self.history_: list[dict] = []
        self.metrics_: dict = {}

    def build_model(self) -> AttributeCNN:
        """The model of ``config``, initialised from ``config.seed``."""
        cfg = self.config
        seed_everything(cfg.seed)
        return AttributeCNN(self.n_attributes, cfg.variant, self.groups, cfg.trunk, cfg.n_latent, cfg.width,
                            cfg.hidden, cfg.mu, cfg.gamma, cfg.lam)

    def fit(self, X: Tensor, Y: Tensor, X_val: Tensor | None = None, Y_val: Tensor | None = None,
            init_from: AttributeCNN | None = None) -> "AttributeTrainer":
        """Train on images X (N, 1, 8, 8) and attributes Y (N, M) in {0, 1} (-1 marks a
        missing annotation: attribute m is trained on the images annotated for it, the
        N_m of eq. 2).

        ``init_from``: a trained single-task model with the same trunk; the "M"/"MG"
        model then starts from its trunks and the SVD of its stacked classifiers (seed 003
        sec. IV-C). With ``config.checkpoint_path`` set, a second ``fit`` with the same
        config resumes from the last completed epoch (exact resume).
        """
        cfg = self.config
        check_images(X, "AttributeTrainer: X")
        check_attributes(Y, self.n_attributes, "AttributeTrainer: Y")
        if len(X) != len(Y):
            raise ValueError(f"AttributeTrainer: X has {len(X)} samples but Y has {len(Y)}")
        if (X_val is None) != (Y_val is None):
            raise ValueError("AttributeTrainer: give both X_val and Y_val, or neither")
        if X_val is not None:
            check_images(X_val, "AttributeTrainer: X_val")
            check_attributes(Y_val, self.n_attributes, "AttributeTrainer: Y_val")
            if len(X_val) != len(Y_val):
                raise ValueError(f"AttributeTrainer: X_val has {len(X_val)} samples but Y_val has {len(Y_val)}")
            if X_val.shape[1:] != X.shape[1:]:
                raise ValueError(f"AttributeTrainer: X_val images {tuple(X_val.shape[1:])} differ from X's "
                                 f"{tuple(X.shape[1:])}")
        model = self.build_model()
        if init_from is not None:
            model.init_from_single_task(init_from)
        Yf = Y.to(torch.float32)
        Yv = None if Y_val is None else Y_val.to(torch.float32)
        inner = SupervisedTrainer(model, cfg, loss_fn=squared_hinge_loss, metric=attribute_accuracy,
                                  name=f"attribute-{cfg.variant}")
        inner.fit(X, Yf, X_val, Yv)
        self._inner = inner
        self.model_ = inner.model
        self.history_ = inner.history_
        if X_val is not None:
            self.metrics_ = self.evaluate(X_val, Y_val)
            log.info("attribute-%s: validation accuracy %.4f", cfg.variant, self.metrics_["accuracy"])
        if cfg.metrics_path:
            write_json(cfg.metrics_path, {"config": asdict(cfg), "history": self.history_, "metrics": self.metrics_})
        return self

    def _check_fitted(self):
        if self.model_ is None:
            raise RuntimeError("AttributeTrainer: call fit() first")

    def decision_function(self, X: Tensor) -> Tensor:
        """(N, M) decision values f (attribute present when f > 0)."""
        self._check_fitted()
        check_images(X, "AttributeTrainer: X")
        return self._inner.predict(X)

    def predict(self, X: Tensor) -> Tensor:
        """(N, M) predicted attributes in {0, 1} (int64)."""
        return (self.decision_function(X) > 0).long()

    def evaluate(self, X: Tensor, Y: Tensor) -> dict:
        """Accuracy per attribute (over its annotated images), per group (mean of its
        attributes, the paper's Table III columns) and overall (mean over attributes),
        plus the mean squared hinge loss."""
        check_attributes(Y, self.n_attributes, "AttributeTrainer.evaluate: Y")
        scores = self.decision_function(X)
        if len(scores) != len(Y):
            raise ValueError(f"AttributeTrainer.evaluate: X has {len(scores)} samples but Y has {len(Y)}")
        known = (Y >= 0).double()
        correct = (((scores > 0) == (Y > 0)).double() * known).sum(0) / known.sum(0).clamp_min(1)
        out = {"accuracy": float(correct.mean()),
               "loss": float(squared_hinge_loss(scores, Y.to(scores.dtype))),
               "per_attribute": {n: float(c) for n, c in zip(self.attribute_names, correct)}}
        if self.groups is not None:
            g = torch.tensor(self.groups)
            out["per_group"] = {self.group_names[k]: float(correct[g == k].mean()) for k in range(int(g.max()) + 1)}
        return out
