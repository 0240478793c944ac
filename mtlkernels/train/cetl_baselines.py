"""The baselines CETL is compared with (Chen, Zhang and Dong 2018, CETL, Tables 2-5).

- :func:`train_source`: pre-train the source network S on the source data (eq. 1).
- :class:`TargetOnlyTrainer`: T2 trained alone on the labelled data with cross entropy
  (the paper's "Baseline" and, trained on the source domain, "Source").
- :class:`FineTuneTrainer`: a copy of S whose last layer is replaced, fine-tuned on the
  target data (the paper's FT-VGG).
- :class:`SoftTargetTrainer`: Hinton et al.'s soft targets (the paper's ref. [17]), the
  classic distillation comparator.

Each is a :class:`~mtlkernels.train.SupervisedTrainer` with the ``(model, config)``
shape; ``fit(train, val)`` takes (X, y) tensors or a DataLoader.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TrainConfig
from .supervised import SupervisedTrainer

__all__ = ["train_source", "TargetOnlyTrainer", "FineTuneConfig", "FineTuneTrainer", "SoftTargetConfig",
           "SoftTargetTrainer"]


def train_source(model, config: TrainConfig, train, val=None) -> nn.Module:
    """Pre-train the source network S (a module or a factory) with cross entropy (eq. 1);
    returns the trained module."""
    return SupervisedTrainer(model, config, name="source").fit(train, val).model


class TargetOnlyTrainer(SupervisedTrainer):
    """T2 trained alone on the labelled data with cross entropy (Tables 2-3 "Baseline")."""

    method = "target_only"


@dataclass
class FineTuneConfig(TrainConfig):
    """``n_classes``: outputs of the new last layer (required); ``mode``: "all" updates
    every layer, "head" only the new last layer."""

    n_classes: int = 0
    mode: str = "all"

    def validate(self) -> None:
        super().validate()
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, int) or self.n_classes <= 0:
            raise ValueError(f"n_classes must be a positive integer (the target task's classes), got {self.n_classes!r}")
        if self.mode not in ("all", "head"):
            raise ValueError(f"mode must be 'all' or 'head', got {self.mode!r}")


class FineTuneTrainer(SupervisedTrainer):
    """Fine-tuning (Table 3, FT-VGG): ``model`` is the source network S (with a linear
    ``head``); the trainer trains a copy of it whose ``head`` is a fresh
    ``nn.Linear(.., config.n_classes)`` (initialised from ``config.seed``). S itself is
    not modified."""

    config_class = FineTuneConfig
    method = "fine_tune"

    def build_model(self) -> nn.Module:
        source = super().build_model()
        head = getattr(source, "head", None)
        if not isinstance(head, nn.Linear):
            raise TypeError(f"{self.name}: needs a source network with a linear .head (a DigitsCNN)")
        model = copy.deepcopy(source)
        g = torch.Generator().manual_seed(self.config.seed + 17)
        new = nn.Linear(head.in_features, self.config.n_classes).to(head.weight.device)
        with torch.no_grad():
            bound = 1.0 / head.in_features ** 0.5
            new.weight.copy_(torch.empty_like(new.weight).uniform_(-bound, bound, generator=g))
            new.bias.copy_(torch.empty_like(new.bias).uniform_(-bound, bound, generator=g))
        model.head = new
        for p in model.parameters():
            p.requires_grad_(self.config.mode == "all")
        for p in model.head.parameters():
            p.requires_grad_(True)
        return model


@dataclass
class SoftTargetConfig(TrainConfig):
    """``alpha``: weight of the soft-target term; ``temperature``: T."""

    alpha: float = 0.7
    temperature: float = 4.0

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.alpha <= 1 or not self.temperature > 0:
            raise ValueError(f"alpha must be in [0, 1] and temperature > 0, got {self.alpha}, {self.temperature}")


class SoftTargetTrainer(SupervisedTrainer):
    """Distillation by soft targets: ``(1 - alpha) CE(s, y) + alpha T^2 KL(softmax(t / T) ||
    softmax(s / T))`` with the frozen teacher's scores t. ``model`` is the student;
    ``teacher`` a trained network with as many outputs."""

    config_class = SoftTargetConfig
    method = "soft_targets"

    def __init__(self, model, config: SoftTargetConfig, *, teacher: nn.Module, name: str | None = None):
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
        super().__init__(model, config, name=name)
        self.teacher = teacher

    def setup(self) -> None:
        self.teacher.to(self.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def training_step(self, batch) -> Tensor:
        x, y = batch
        with torch.no_grad():
            t = self.teacher(x)
        out = self.model(x)
        if t.shape != out.shape:
            raise ValueError(f"{self.name}: the teacher has {t.shape[1]} outputs, the student {out.shape[1]}")
        T, a = self.config.temperature, self.config.alpha
        kl = F.kl_div(F.log_softmax(out / T, 1), F.log_softmax(t / T, 1), log_target=True, reduction="batchmean")
        return (1 - a) * F.cross_entropy(out, y) + a * T * T * kl
