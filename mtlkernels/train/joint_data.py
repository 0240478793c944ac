"""The datasets of the n-network trainers (:mod:`mtlkernels.train.joint`): one dataset
per network, each an ``ImageSplits`` (train / val / test), a tuple (X, y), or for
auto-encoders an image tensor X (the target is X) or a pair (X_in, X_out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .data import check_images

__all__ = ["TASKS", "TaskData", "as_task_data", "recon_error"]

#: ``config.task`` values: cross entropy and accuracy, or the auto-encoder's reconstruction error.
TASKS = ("classification", "autoencoder")


@dataclass
class TaskData:
    name: str
    X: Tensor
    Y: Tensor
    splits: dict  # "val" / "test" -> (X, Y), when the dataset carried them


def _pair(X, Y, task: str, where: str):
    if not isinstance(X, Tensor):
        raise TypeError(f"{where}: inputs must be a torch.Tensor, got {type(X).__name__}")
    if Y is None:
        if task == "classification":
            raise ValueError(f"{where}: classification needs labels: pass (X, y)")
        Y = X
    if not isinstance(Y, Tensor):
        raise TypeError(f"{where}: targets must be a torch.Tensor, got {type(Y).__name__}")
    check_images(X, f"{where}: X")
    if len(X) != len(Y):
        raise ValueError(f"{where}: X has {len(X)} samples but the targets have {len(Y)}")
    if task == "autoencoder":
        if not torch.is_floating_point(Y):
            raise ValueError(f"{where}: auto-encoder targets must be floating point images, got {Y.dtype}")
        if not torch.isfinite(Y).all():
            raise ValueError(f"{where}: targets contain NaN or inf")
    elif Y.dim() != 1:
        raise ValueError(f"{where}: labels must be a 1-D tensor of class indices, got shape {tuple(Y.shape)}")
    return X, Y


def as_task_data(d, i: int, task: str) -> TaskData:
    """One dataset: an ImageSplits (train / val / test), a tuple (X, y), or, for
    auto-encoders, X alone."""
    where = f"dataset {i}"
    if hasattr(d, "X_train"):
        name = str(getattr(d, "name", f"dataset{i}"))
        where = f"dataset {i} ({name!r})"
        ae = task == "autoencoder"
        X, Y = _pair(d.X_train, None if ae else d.y_train, task, where + " train")
        splits = {}
        for s in ("val", "test"):
            Xs = getattr(d, f"X_{s}", None)
            if Xs is not None and len(Xs):
                splits[s] = _pair(Xs, None if ae else getattr(d, f"y_{s}"), task, f"{where} {s}")
        return TaskData(name, X, Y, splits)
    if isinstance(d, Tensor):
        return TaskData(f"dataset{i}", *_pair(d, None, task, where), {})
    if isinstance(d, (tuple, list)) and len(d) in (1, 2):
        return TaskData(f"dataset{i}", *_pair(d[0], d[1] if len(d) == 2 else None, task, where), {})
    raise TypeError(f"{where}: expected an ImageSplits, a tuple (X, y) or a tensor, got {type(d).__name__}")


def recon_error(out: Tensor, Y: Tensor, reduction: str = "mean") -> Tensor:
    """(1/|I|) sum_I ||I - G(I)||_F^2 (Zhang et al. 2019, joint IRLS, sec. 3, auto-encoder loss);
    ``reduction="sum"``: sum_I ||I - G(I)||_F^2 (0 for no images)."""
    per_image = (out - Y).square().flatten(1).sum(1)
    return per_image.mean() if reduction == "mean" else per_image.sum()
