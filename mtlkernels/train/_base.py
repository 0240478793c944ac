"""What every trainer gives its user: a config dataclass, seeding, device selection,
a tqdm/logging loop with a NaN guard, metrics as JSON, and checkpoints with exact
resume.

Exact resume: a checkpoint is written at the end of an epoch with the models, the
optimisers, the epoch counter, the history and the global RNG states; the data order
of epoch e comes from a generator seeded with (seed, e), so a run killed at any point
and resumed from its last checkpoint replays the lost epoch exactly and ends with the
same weights as an uninterrupted run. Checkpoints are loaded with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger("mtlkernels.train")


@dataclass
class TrainConfig:
    """Options shared by every trainer (method-specific configs extend it)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # "adam" or "sgd"
    momentum: float = 0.9  # sgd only
    seed: int = 0
    device: str = "cpu"
    checkpoint_path: str | None = None  # write a checkpoint here after every epoch
    progress: bool = False  # tqdm progress bars

    def validate(self) -> None:
        if self.epochs < 0 or self.batch_size <= 0:
            raise ValueError(f"epochs must be >= 0 and batch_size > 0, got {self.epochs}, {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        torch.device(self.device)  # raises on a bad device string
        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def batches(n: int, batch_size: int, seed: int, epoch: int, device="cpu") -> Iterator[Tensor]:
    """Shuffled index batches of epoch `epoch`, reproducible from (seed, epoch) alone."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=g)
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size].to(device)


def check_finite(loss: Tensor, where: str) -> None:
    """Stop with a message on a NaN or infinite loss (never continue on NaN)."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(f"non-finite loss ({float(loss.detach().float().sum())}) at {where}; stopping. "
                                 "Lower the learning rate or check the inputs.")


def check_labels(y: Tensor, n_classes: int, name: str) -> None:
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{name}: labels must be integer class indices, got {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"{name}: labels must be in [0, {n_classes}), found range [{int(y.min())}, {int(y.max())}]")


def check_images(X: Tensor, name: str) -> None:
    if not torch.is_floating_point(X):
        raise ValueError(f"{name}: inputs must be floating point, got {X.dtype}")
    if X.shape[0] == 0:
        raise ValueError(f"{name}: no samples")
    if not torch.isfinite(X).all():
        raise ValueError(f"{name}: inputs contain NaN or inf")


def progress(iterable, enabled: bool, desc: str, total=None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


class Checkpointer:
    """Save/restore a trainer's full state: modules, optimisers, counters, RNG states."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None

    @staticmethod
    def rng_state() -> dict:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def set_rng_state(state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # atomic: a kill never leaves a half-written checkpoint

    def load(self) -> dict | None:
        if self.path is None or not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)


def write_json(path: str | os.PathLike, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=_jsonable))


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, Tensor)):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    return str(o)
