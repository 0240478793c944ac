"""Training data for the trainers: a ``torch.utils.data.DataLoader`` or in-memory tensors.

:func:`make_loader` turns what ``fit(train, val)`` receives into a loader:

- ``(X, y)`` tensors (or ``(X, y, ...)``, or a ``TensorDataset``) become a loader of
  index batches over a :class:`~torch.utils.data.DistributedSampler` seeded with
  ``config.seed``: the order of epoch e depends on (seed, e) only, in one process or
  split across the ranks of ``torchrun`` (the sampler's ``set_epoch``), so a resumed
  run replays the same batches;
- a ``DataLoader`` is used as it is in one process. Under ``torchrun`` it is rebuilt
  with a ``DistributedSampler`` over its dataset (shuffled when its sampler was a
  ``RandomSampler``; same batch size, collate function and workers), so that each rank
  reads its own share.

Plus the input checks the trainers share (clear errors that name the argument).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler, TensorDataset

__all__ = ["make_loader", "index_batches", "set_epoch", "as_tensors", "check_images", "check_labels", "check_finite"]


def _tensor_dataset(data, name: str) -> TensorDataset:
    if isinstance(data, TensorDataset):
        return data
    if isinstance(data, Tensor):
        return TensorDataset(data)
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        n = {len(t) for t in data}
        if len(n) != 1:
            raise ValueError(f"{name}: the tensors have different numbers of samples "
                             f"{[len(t) for t in data]}")
        return TensorDataset(*data)
    raise TypeError(f"{name} must be a torch.utils.data.DataLoader or a tuple of tensors (X, y), got "
                    f"{type(data).__name__}" + (f" of {[type(t).__name__ for t in data]}"
                                                if isinstance(data, (tuple, list)) else ""))


def make_loader(data, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                name: str = "train") -> DataLoader:
    """A loader for ``data`` (a DataLoader, a TensorDataset, or a tuple of tensors)."""
    if isinstance(data, DataLoader):
        if world_size == 1:
            return data
        return _distributed_copy(data, shuffle, seed, rank, world_size, name)
    ds = _tensor_dataset(data, name)
    if len(ds) == 0:
        raise ValueError(f"{name}: no samples")
    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
    # one __getitem__ per batch: TensorDataset indexes every tensor with the list of indices
    return DataLoader(ds, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)


def index_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                  device=None):
    """Shuffled index batches of one pass over n samples: the permutation of
    ``DistributedSampler(seed).set_epoch(epoch)``, this rank's share, in batches (for
    methods that address in-memory samples by index)."""
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    idx = torch.tensor(list(sampler), dtype=torch.long)
    for i in range(0, len(idx), batch_size):
        yield idx[i:i + batch_size].to(device) if device is not None else idx[i:i + batch_size]


def _distributed_copy(loader: DataLoader, shuffle: bool, seed: int, rank: int, world_size: int, name: str):
    if loader.batch_size is None:
        raise ValueError(f"{name}: a DataLoader with a custom batch_sampler cannot be split across {world_size} "
                         "processes; give it a batch_size and a sampler (or pass tensors)")
    if not isinstance(loader.dataset, Dataset) or not hasattr(loader.dataset, "__len__"):
        raise ValueError(f"{name}: under torchrun the DataLoader needs a map-style dataset (with __len__)")
    shuffle = isinstance(loader.sampler, RandomSampler) if shuffle else False
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                 drop_last=loader.drop_last)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      worker_init_fn=loader.worker_init_fn, persistent_workers=loader.persistent_workers)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's (possibly nested) sampler which epoch starts."""
    for s in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        for obj in (s, getattr(s, "sampler", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
                return


def as_tensors(data, name: str) -> tuple[Tensor, ...]:
    """All of ``data`` in memory: the tensors themselves, or a DataLoader read once and
    concatenated (for methods that address samples by index, like CETL's stages)."""
    if isinstance(data, DataLoader):
        parts = None
        for batch in data:
            batch = batch if isinstance(batch, (tuple, list)) else (batch,)
            if parts is None:
                parts = [[] for _ in batch]
            for p, t in zip(parts, batch):
                p.append(t)
        if parts is None:
            raise ValueError(f"{name}: the DataLoader yielded no batch")
        return tuple(torch.cat(p) for p in parts)
    return tuple(_tensor_dataset(data, name).tensors)


def check_finite(loss: Tensor, where: str) -> None:
    """Stop with a message on a NaN or infinite loss (never continue on NaN)."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(f"non-finite loss ({float(loss.detach().float().sum())}) at {where}; stopping. "
                                 "Lower the learning rate or check the inputs.")


def check_labels(y: Tensor, n_classes: int, name: str) -> None:
    if not isinstance(y, Tensor):
        raise TypeError(f"{name}: labels must be a tensor, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{name}: labels must be integer class indices, got {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"{name}: labels must be in [0, {n_classes}), found range [{int(y.min())}, {int(y.max())}]")


def check_images(X: Tensor, name: str) -> None:
    if not isinstance(X, Tensor):
        raise TypeError(f"{name}: inputs must be a tensor, got {type(X).__name__}")
    if not torch.is_floating_point(X):
        raise ValueError(f"{name}: inputs must be floating point, got {X.dtype}")
    if X.shape[0] == 0:
        raise ValueError(f"{name}: no samples")
    if not torch.isfinite(X).all():
        raise ValueError(f"{name}: inputs contain NaN or inf")
