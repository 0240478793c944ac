"""The options every trainer shares (:class:`TrainConfig`) and the config fingerprint
that guards a resume.

Method trainers extend :class:`TrainConfig` with their own fields (a dataclass
subclass); everything in a config is a plain value so that it can be written to the
metrics JSON and compared with the one stored in a checkpoint.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Any

import torch

__all__ = ["TrainConfig", "PRECISIONS", "OPTIMIZERS", "NOT_FINGERPRINTED", "fingerprint", "optimizer_spec",
           "make_optimizer"]

#: ``config.precision`` values: float32, bfloat16 autocast, float16 autocast with a GradScaler.
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
#: Optimiser names ``config.optimizer`` takes (besides a ``torch.optim`` class or a partial of one).
OPTIMIZERS = ("adam", "adamw", "sgd")
#: Config fields left out of the fingerprint: the epoch budget, progress display, paths and
#: the communication timeout. Changing one of them never blocks a resume (a larger
#: ``epochs`` continues training).
NOT_FINGERPRINTED = frozenset({"epochs", "progress", "checkpoint_path", "metrics_path", "resume", "dist_timeout_s"})


@dataclass
class TrainConfig:
    """Options shared by every trainer (method-specific configs extend it).

    Attributes:
        epochs: passes over the training data (the budget; a larger value resumes and
            continues a finished run).
        batch_size: samples per optimiser step *per process* (under ``torchrun`` with N
            processes a step sees N * batch_size samples).
        lr, weight_decay: of the optimiser.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (with ``momentum``), or a
            ``torch.optim.Optimizer`` class, or a ``functools.partial`` of one with its
            own keyword arguments (``lr`` and ``weight_decay`` are always passed).
        momentum: for ``"sgd"``.
        seed: seeds Python, NumPy and torch before the model is built (when the trainer
            is given a model factory) and orders the data of every epoch.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; under ``torchrun`` a bare
            ``"cuda"`` means the process's local GPU.
        precision: ``"32"``, ``"bf16-mixed"`` (bfloat16 autocast) or ``"16-mixed"``
            (float16 autocast with a GradScaler), on CPU and CUDA. Penalties and
            proximal steps always run in float32.
        checkpoint_path: write a checkpoint here after every epoch (rank 0 only).
        resume: continue from ``checkpoint_path`` when it exists (False: start over and
            overwrite it).
        metrics_path: write the history and final metrics here as JSON after ``fit``.
        progress: tqdm progress bars.
        dist_timeout_s: under ``torchrun``, how long a collective waits for the other ranks
            before it fails (the process group's timeout); a rank that dies or hangs stops
            the others within about this time, never later.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Any = "adam"
    momentum: float = 0.9
    seed: int = 0
    device: str = "cpu"
    precision: str = "32"
    checkpoint_path: str | None = None
    resume: bool = True
    metrics_path: str | None = None
    progress: bool = False
    dist_timeout_s: float = 600.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite positive number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        optimizer_spec(self.optimizer)  # raises on a bad optimiser
        if not (isinstance(self.dist_timeout_s, (int, float)) and not isinstance(self.dist_timeout_s, bool)
                and 0 < self.dist_timeout_s < math.inf):
            raise ValueError(f"dist_timeout_s must be a finite positive number of seconds, got {self.dist_timeout_s!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        try:
            dev = torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device {self.device!r} is not a device string: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} was asked for but CUDA is not available; use device='cpu'")

    def fingerprint(self) -> dict:
        """Every field except :data:`NOT_FINGERPRINTED`, as JSON-ready values."""
        return fingerprint(self)


def optimizer_spec(opt) -> str:
    """A stable description of ``config.optimizer`` (its name, class path or partial)."""
    if isinstance(opt, str):
        if opt not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, a torch.optim.Optimizer class or a partial of "
                             f"one, got {opt!r}")
        return opt
    func, kwargs = (opt.func, opt.keywords) if isinstance(opt, functools.partial) else (opt, {})
    if not (isinstance(func, type) and issubclass(func, torch.optim.Optimizer)):
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, a torch.optim.Optimizer class or a partial of one, "
                         f"got {opt!r}")
    name = f"{func.__module__}.{func.__qualname__}"
    if kwargs:
        name += "(" + ", ".join(f"{k}={kwargs[k]!r}" for k in sorted(kwargs)) + ")"
    return name


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` names, over the parameters that require grad."""
    params = [p for p in params if p.requires_grad]
    opt = cfg.optimizer
    optimizer_spec(opt)
    if opt == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return opt(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def fingerprint(config) -> dict:
    """The fields of a config dataclass that define a run (see :data:`NOT_FINGERPRINTED`)."""
    out = {}
    for f in fields(config):
        if f.name in NOT_FINGERPRINTED:
            continue
        value = getattr(config, f.name)
        out[f.name] = optimizer_spec(value) if f.name == "optimizer" else _plain(value)
    return out


def config_dict(config) -> dict:
    """All fields of a config as JSON-ready values (for the metrics file)."""
    return {f.name: optimizer_spec(getattr(config, f.name)) if f.name == "optimizer" else _plain(getattr(config, f.name))
            for f in fields(config)}
