"""Trainer for Deep-AMTFL and its baselines (seed 004 eq. 7 and sec. 4.2): CNN, MT-CNN,
Deep-AMTL, Deep-AMTFL on a :class:`mtlkernels.nn.cnn.DigitsCNN` backbone (or any
backbone with ``features`` and an ``nn.Linear`` ``head``), one task per class.

The loop is :class:`mtlkernels.train.supervised.SupervisedTrainer` (seeded minibatches,
tqdm and logging, NaN guard, checkpoints after every epoch with exact resume): the
model's ``loss`` is the data term, ``penalty()`` the smooth regularisers and
``proximal_step(lr)`` the l1 terms (see :mod:`mtlkernels.nn.amtfl`). This module adds
the config dataclass, label and dataset checks, the task sizes N_t, per-class metrics
and the metrics JSON.

Example::

    from mtlkernels.datasets import digits_images
    from mtlkernels.train.amtfl import DeepAMTFLConfig, DeepAMTFLTrainer

    d = digits_images(seed=0, imbalanced=True)
    cfg = DeepAMTFLConfig(method="deep_amtfl", epochs=60, optimizer="sgd", lr=0.05, batch_size=32,
                          alpha=0.1, gamma=1e-3, mu=1e-3, lam=1e-3, delta=0.1, warmup_epochs=10)
    tr = DeepAMTFLTrainer(cfg).fit(d.X_train, d.y_train, d.X_val, d.y_val)
    print(tr.evaluate(d.X_test, d.y_test)["per_class_accuracy"])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..nn.amtfl import MTCNN, DeepAMTFL, DeepAMTL, OneVsAllCNN, one_vs_all_losses
from ..nn.cnn import DigitsCNN
from ._base import TrainConfig, check_images, check_labels, log, seed_everything, write_json
from .supervised import SupervisedTrainer, accuracy

__all__ = ["METHODS", "DeepAMTFLConfig", "DeepAMTFLTrainer", "build_model", "per_class_accuracy"]

#: The models of seed 004 sec. 4.2, by the names the trainer and CLI take.
METHODS = {"cnn": "CNN", "mt_cnn": "MT-CNN", "deep_amtl": "Deep-AMTL", "deep_amtfl": "Deep-AMTFL"}


@dataclass
class DeepAMTFLConfig(TrainConfig):
    """Options of :class:`DeepAMTFLTrainer` (seed 004 eq. 7 and sec. 4.2).

    method: "cnn" | "mt_cnn" | "deep_amtl" | "deep_amtfl".
    lam: weight decay on the lower layers (on every layer for "cnn"); the paper uses
        the base network's weight decay and sets mu = lam.
    mu: l1 on the task layer W^(L) (all but "cnn").
    alpha, gamma: the loss-weighted l1 on the rows of A (or B) and the weight of the
        reconstruction term (of the inter-task term for "deep_amtl"); the paper
        searches both in {1, 0.1, 1e-2, 1e-3, 1e-4}.
    delta: the imbalance term delta / sqrt(N_t) of each task's loss.
    loss_ema: decay of the moving average of the per-task losses used in the prox.
    warmup_epochs: ramp alpha and gamma from 0 over this many epochs (the paper does so
        on CUB for stability; the reconstruction term can otherwise pull the features to
        0 before the tasks have shaped them).
    nonneg: B >= 0 for "deep_amtl" (AMTL's constraint).
    width, hidden: the DigitsCNN backbone built when no model is given.
    metrics_path: write the history and the validation metrics here as JSON after fit.

    ``weight_decay`` (the optimiser's, on every parameter) must stay 0: lam and mu are
    the method's regularisers.

    Optimiser: use ``optimizer="sgd"`` for the multi-task models. The l1 terms are
    proximal steps with thresholds lr * mu and lr * alpha * L_t in parameter units,
    which match an SGD step (proximal SGD) but not Adam's normalised steps, next to
    which they are orders of magnitude too weak (alpha and mu then barely act).
    """

    method: str = "deep_amtfl"
    lam: float = 1e-3
    mu: float = 1e-3
    alpha: float = 0.1
    gamma: float = 1e-2
    delta: float = 0.0
    loss_ema: float = 0.9
    warmup_epochs: float = 0.0
    nonneg: bool = True
    width: int = 16
    hidden: int = 64
    metrics_path: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        for name in ("lam", "mu", "alpha", "gamma", "delta", "warmup_epochs"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0 and v == v and v != float("inf")):
                raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
        if self.weight_decay != 0:
            raise ValueError("weight_decay must be 0 for the Deep-AMTFL models: use lam (lower layers) and mu (task layer)")
        if self.width <= 0 or self.hidden <= 0:
            raise ValueError(f"width and hidden must be positive, got {self.width}, {self.hidden}")


def build_model(cfg: DeepAMTFLConfig, n_tasks: int = 10, in_channels: int = 1, backbone: nn.Module | None = None) -> OneVsAllCNN:
    """The model ``cfg.method`` names on ``backbone`` (default: a fresh DigitsCNN with one
    output per task). Seed the global RNG first for a reproducible initialisation."""
    backbone = backbone if backbone is not None else DigitsCNN(n_out=n_tasks, width=cfg.width, hidden=cfg.hidden,
                                                                in_channels=in_channels)
    common = {"delta": cfg.delta, "loss_ema": cfg.loss_ema}
    if cfg.method == "cnn":
        return OneVsAllCNN(backbone, lam=cfg.lam, **common)
    if cfg.method == "mt_cnn":
        return MTCNN(backbone, mu=cfg.mu, lam=cfg.lam, **common)
    if cfg.method == "deep_amtl":
        return DeepAMTL(backbone, alpha=cfg.alpha, mu=cfg.mu, gamma=cfg.gamma, lam=cfg.lam, nonneg=cfg.nonneg, **common)
    if cfg.method == "deep_amtfl":
        return DeepAMTFL(backbone, alpha=cfg.alpha, mu=cfg.mu, gamma=cfg.gamma, lam=cfg.lam, **common)
    raise ValueError(f"unknown method {cfg.method!r}")


def per_class_accuracy(pred: Tensor, y: Tensor, n_classes: int) -> Tensor:
    """Accuracy on the examples of each class (recall), (n_classes,); NaN for a class with
    no example. The paper's Fig. 6a plots its improvement over the CNN."""
    correct = torch.bincount(y[pred == y], minlength=n_classes).double()
    total = torch.bincount(y, minlength=n_classes).double()
    return torch.where(total > 0, correct / total.clamp(min=1), torch.full_like(total, float("nan")))


class DeepAMTFLTrainer(SupervisedTrainer):
    """Train one of the models of seed 004 sec. 4.2 (:data:`METHODS`) on (X, y).

    ``model`` defaults to :func:`build_model` (initialised from ``config.seed``). ``fit``
    checks the labels (integers in [0, T), every class present in training), the
    shapes of the validation set, and sets N_t from the training labels; then trains
    with checkpoints and exact resume (``config.checkpoint_path``) and stops with a
    ``FloatingPointError`` on a non-finite loss. ``evaluate`` returns the accuracy,
    per-class accuracy, per-task losses and the transfer matrix.
    """

    def __init__(self, config: DeepAMTFLConfig, model: OneVsAllCNN | None = None, n_tasks: int = 10, in_channels: int = 1):
        if not isinstance(config, DeepAMTFLConfig):
            raise TypeError(f"config must be a DeepAMTFLConfig, got {type(config).__name__}")
        config.validate()
        if model is None:
            seed_everything(config.seed)
            model = build_model(config, n_tasks, in_channels)
        if not isinstance(model, OneVsAllCNN):
            raise TypeError("model must be one of the mtlkernels.nn.amtfl models (OneVsAllCNN and its subclasses)")
        super().__init__(model, config, loss_fn=model.loss, metric=accuracy, name=METHODS[config.method])

    def _check_split(self, X: Tensor, y: Tensor, name: str, like: Tensor | None = None) -> None:
        check_images(X, f"{self.name}: {name} X")
        if y.dim() != 1 or len(X) != len(y):
            raise ValueError(f"{self.name}: {name} X has {len(X)} samples but y has shape {tuple(y.shape)}")
        check_labels(y, self.model.n_tasks, f"{self.name}: {name} y")
        if like is not None and X.shape[1:] != like.shape[1:]:
            raise ValueError(f"{self.name}: {name} inputs have shape {tuple(X.shape[1:])} per sample but the training "
                             f"inputs have {tuple(like.shape[1:])}")

    def fit(self, X: Tensor, y: Tensor, X_val: Tensor | None = None, y_val: Tensor | None = None):
        T = self.model.n_tasks
        self._check_split(X, y, "train")
        if (X_val is None) != (y_val is None):
            raise ValueError(f"{self.name}: give both X_val and y_val, or neither")
        if X_val is not None:
            self._check_split(X_val, y_val, "val", like=X)
        counts = torch.bincount(y.long().cpu(), minlength=T)
        if (counts == 0).any():
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(f"{self.name}: classes {missing} have no training example; every task needs positives")
        self.model.set_task_sizes(counts)
        if self.config.warmup_epochs > 0:
            steps_per_epoch = -(-len(X) // self.config.batch_size)
            self.model.warmup_steps = int(round(self.config.warmup_epochs * steps_per_epoch))
        super().fit(X, y.long(), X_val, None if y_val is None else y_val.long())
        if self.config.metrics_path:
            out = {"method": METHODS[self.config.method], "config": asdict(self.config), "history": self.history_,
                   "task_sizes": counts.tolist()}
            if X_val is not None:
                out["val"] = self.evaluate(X_val, y_val)
            write_json(self.config.metrics_path, out)
            log.info("%s: metrics written to %s", self.name, self.config.metrics_path)
        return self

    @torch.no_grad()
    def evaluate(self, X: Tensor, y: Tensor) -> dict:
        """accuracy, per_class_accuracy (list of T), mean_per_class_accuracy, per-task
        one-vs-all losses, the loss weights, the transfer matrix (T x T or None)."""
        self._check_split(X, y, "eval")
        out = self.predict(X)
        y = y.long().cpu()
        pca = per_class_accuracy(out.argmax(1), y, self.model.n_tasks)
        tm = self.model.transfer_matrix()
        return {
            "accuracy": float((out.argmax(1) == y).double().mean()),
            "per_class_accuracy": pca.tolist(),
            "mean_per_class_accuracy": float(pca[~pca.isnan()].mean()),
            "task_losses": one_vs_all_losses(out, y).tolist(),
            "loss_weights": self.model.loss_weights().cpu().tolist(),
            "transfer_matrix": None if tm is None else tm.cpu().tolist(),
        }
