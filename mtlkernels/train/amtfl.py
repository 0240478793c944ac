"""Trainer of Deep-AMTFL and its deep baselines (Lee et al. 2018, Deep-AMTFL, eq. 7 and
sec. 4.2): CNN, MT-CNN, Deep-AMTL and Deep-AMTFL, one task per class.

The loop is the :class:`~mtlkernels.train.Trainer`'s: the model's ``loss`` is the data
term, its ``penalty()`` the smooth regularisers and its ``proximal_step(lr)`` the l1
terms (see :mod:`mtlkernels.nn.amtfl`). This module adds the label checks, the task
sizes N_t (from the whole training set, on every rank), the warm-up of alpha and gamma,
per-class metrics and the transfer matrix.

Example::

    from mtlkernels.datasets import digits_images
    from mtlkernels.nn import deep_amtfl_model
    from mtlkernels.train import DeepAMTFLConfig, DeepAMTFLTrainer

    d = digits_images(seed=0, imbalanced=True)
    make = lambda: deep_amtfl_model("deep_amtfl", alpha=0.1, gamma=1e-3, mu=1e-3, lam=1e-3, delta=0.1)
    cfg = DeepAMTFLConfig(epochs=60, optimizer="sgd", lr=0.05, batch_size=32, warmup_epochs=10)
    tr = DeepAMTFLTrainer(make, cfg).fit((d.X_train, d.y_train), (d.X_val, d.y_val))
    print(tr.evaluate(d.X_test, d.y_test)["per_class_accuracy"])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..nn.amtfl import DeepAMTFL, DeepAMTL, OneVsAllCNN, one_vs_all_losses
from ..nn.amtfl_models import METHODS
from .config import TrainConfig
from .data import check_images, check_labels
from .supervised import SupervisedTrainer, accuracy

__all__ = ["DeepAMTFLConfig", "DeepAMTFLTrainer", "per_class_accuracy", "METHODS"]


@dataclass
class DeepAMTFLConfig(TrainConfig):
    """:class:`TrainConfig` for the Deep-AMTFL models, plus ``warmup_epochs``: ramp alpha
    and gamma from 0 over this many epochs (the paper does so on CUB for stability; the
    reconstruction term can otherwise pull the features to 0 before the tasks have shaped
    them). The models' own hyper-parameters are set where the model is built
    (:func:`mtlkernels.nn.deep_amtfl_model`).

    ``weight_decay`` (the optimiser's, on every parameter) must stay 0: lam and mu are
    the method's regularisers. Use ``optimizer="sgd"`` for the multi-task models: the l1
    terms are proximal steps with thresholds lr * mu and lr * alpha * L_t in parameter
    units, which match an SGD step (proximal SGD) but not Adam's normalised steps.
    """

    warmup_epochs: float = 0.0

    def validate(self) -> None:
        super().validate()
        v = self.warmup_epochs
        if not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
            raise ValueError(f"warmup_epochs must be a finite non-negative number, got {v!r}")
        if self.weight_decay != 0:
            raise ValueError("weight_decay must be 0 for the Deep-AMTFL models: set lam (lower layers) and mu "
                             "(task layer) on the model")


def per_class_accuracy(pred: Tensor, y: Tensor, n_classes: int) -> Tensor:
    """Accuracy on the examples of each class (recall), (n_classes,); NaN for a class with
    no example. The paper's Fig. 6a plots its improvement over the CNN."""
    correct = torch.bincount(y[pred == y], minlength=n_classes).double()
    total = torch.bincount(y, minlength=n_classes).double()
    return torch.where(total > 0, correct / total.clamp(min=1), torch.full_like(total, float("nan")))


class DeepAMTFLTrainer(SupervisedTrainer):
    """Train one of the models of Lee et al. 2018 sec. 4.2 (:data:`METHODS`) on (X, y).

    ``model``: a :class:`~mtlkernels.nn.OneVsAllCNN` (or subclass), or a factory of one
    (:func:`~mtlkernels.nn.deep_amtfl_model`). ``fit`` checks the labels (integers in
    [0, T), every class present in training) and sets N_t from the training labels;
    ``evaluate`` returns the accuracy, per-class accuracy, per-task losses and the
    transfer matrix.
    """

    config_class = DeepAMTFLConfig
    method = "deep_amtfl"

    def __init__(self, model, config: DeepAMTFLConfig, *, name: str | None = None):
        super().__init__(model, config, metric=accuracy, name=name)
        self._counts: Tensor | None = None

    def build_model(self) -> OneVsAllCNN:
        model = super().build_model()
        if not isinstance(model, OneVsAllCNN):
            raise TypeError(f"{self.name}: model must be one of the mtlkernels.nn.amtfl models (OneVsAllCNN and its "
                            f"subclasses), got {type(model).__name__}")
        self.loss_fn = model.loss
        if self.name == self.method:
            self.name = METHODS.get(_method_of(model), self.name)
        # with gamma = 0 the feedback A (or B) gets no gradient: tell DDP
        self.find_unused_parameters = isinstance(model, (DeepAMTFL, DeepAMTL)) and model.gamma == 0
        return model

    def check_data(self, data, name: str) -> None:
        T = self.model.n_tasks
        if isinstance(data, DataLoader):
            y = torch.cat([b[1] for b in data]) if name == "train" else None
        else:
            if not (isinstance(data, (tuple, list)) and len(data) == 2):
                raise TypeError(f"{self.name}: {name} must be a DataLoader or a tuple (X, y) of tensors")
            X, y = data
            check_images(X, f"{self.name}: {name} X")
            if not isinstance(y, Tensor) or y.dim() != 1 or len(X) != len(y):
                raise ValueError(f"{self.name}: {name} X has {len(X)} samples but y has shape "
                                 f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
            if name == "train":
                self._train_shape = tuple(X.shape[1:])
            elif getattr(self, "_train_shape", None) not in (None, tuple(X.shape[1:])):
                raise ValueError(f"{self.name}: {name} inputs have shape {tuple(X.shape[1:])} per sample but the "
                                 f"training inputs have {self._train_shape}")
        if y is not None:
            check_labels(y, T, f"{self.name}: {name} y")
        if name == "train":
            counts = torch.bincount(y.long().cpu(), minlength=T)
            if (counts == 0).any():
                missing = torch.nonzero(counts == 0).flatten().tolist()
                raise ValueError(f"{self.name}: classes {missing} have no training example; every task needs positives")
            self._counts = counts

    def make_loader(self, data, name: str, shuffle: bool, split: bool = True):
        if isinstance(data, (tuple, list)):
            data = (data[0], data[1].long())
        return super().make_loader(data, name, shuffle, split)

    def setup(self) -> None:
        self.model.set_task_sizes(self._counts)
        if self.config.warmup_epochs > 0:
            self.model.warmup_steps = int(round(self.config.warmup_epochs * len(self.train_loader)))

    def metrics(self) -> dict:
        out = {**super().metrics(), "model": METHODS.get(_method_of(self.model)),
               "task_sizes": self._counts.tolist() if self._counts is not None else None}
        if self.val_loader is not None:
            out["val"] = self.evaluate(self.val_loader)
        return out

    @torch.no_grad()
    def evaluate(self, X, y: Tensor | None = None) -> dict:
        """accuracy, per_class_accuracy (list of T), mean_per_class_accuracy, per-task
        one-vs-all losses, the loss weights, the transfer matrix (T x T or None)."""
        self._check_fitted()
        y = self.targets(X, y).long()
        if not isinstance(X, DataLoader):
            Xt = self._first(X)
            check_images(Xt, f"{self.name}: eval X")
            if len(Xt) != len(y):
                raise ValueError(f"{self.name}: eval X has {len(Xt)} samples but y has {len(y)}")
        check_labels(y, self.model.n_tasks, f"{self.name}: eval y")
        out = self.predict(X)
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


def _method_of(model: OneVsAllCNN) -> str:
    from ..nn.amtfl import MTCNN
    from ..nn.amtfl_shallow import MTNN, OneHiddenLayer

    if isinstance(model, MTNN):
        return "mt_nn"
    if isinstance(model.backbone, OneHiddenLayer):
        return "nn"
    if isinstance(model, DeepAMTFL):
        return "deep_amtfl"
    if isinstance(model, DeepAMTL):
        return "deep_amtl"
    if isinstance(model, MTCNN):
        return "mt_cnn"
    return "cnn"
