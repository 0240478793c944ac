"""Data-parallel training on ``torch.distributed``, as launched by ``torchrun``.

No communication layer of our own: :class:`Distributed` reads the environment that
``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` ...),
initialises the default process group (gloo on CPU, NCCL on CUDA) when it is not yet
initialised, and offers the few collectives a trainer needs. Gradients are averaged by
:class:`torch.nn.parallel.DistributedDataParallel`; the data is split by
:class:`torch.utils.data.DistributedSampler` (see :mod:`mtlkernels.train.data`).

Launch any script that calls ``trainer.fit`` with::

    torchrun --nproc_per_node=2 my_script.py

Rank 0 writes checkpoints, metrics and logs; every rank reads the same checkpoint on
resume (a shared file system is assumed for more than one machine).
"""

from __future__ import annotations

import inspect
import os
from datetime import timedelta
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Distributed", "LossStep", "env_world_size", "wrap_ddp"]


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 outside ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Distributed:
    """The process group of a run: rank, world size, device, and collectives that are
    no-ops in a single process."""

    def __init__(self, device: str = "cpu", timeout_s: float = 600.0):
        self.created_group = False
        want = env_world_size() > 1 or (dist.is_available() and dist.is_initialized())
        if want and not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        dev = torch.device(device)
        if want and not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
            self.created_group = True
        self.enabled = want
        self.rank = dist.get_rank() if want else 0
        self.world_size = dist.get_world_size() if want else 1
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self.device = dev
        if want and dist.get_backend() == "nccl" and dev.type != "cuda":
            raise ValueError(f"device {device!r}: the process group uses NCCL, which needs device='cuda'")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sums of plain numbers over the ranks (float64 on the run's device)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on at least one."""
        if not self.enabled:
            return bool(flag)
        return self.all_reduce_sum([1.0 if flag else 0.0])[0] > 0

    @torch.no_grad()
    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average the floating-point buffers of ``module`` over the ranks in place.

        Buffers updated from the local batch (the running task losses of the Deep-AMTFL
        models, batch-norm statistics) then hold what one process would hold after the
        same global batch (for equal local batches), so that proximal steps that read
        them are identical on every rank.
        """
        if not self.enabled:
            return
        for b in module.buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b.div_(self.world_size)

    def broadcast_object(self, obj):
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        """Destroy the process group when this object created it."""
        if self.created_group and dist.is_initialized():
            dist.destroy_process_group()
            self.created_group = False


class LossStep(nn.Module):
    """The module DistributedDataParallel wraps: its forward computes a whole loss
    (data term and penalties), so that every parameter with a gradient is in the graph
    of its output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, closure: Callable[[], Tensor]) -> Tensor:
        return closure()


def wrap_ddp(step: nn.Module, device: torch.device, find_unused_parameters: bool = False, group=None) -> nn.Module:
    """``step`` in DistributedDataParallel over ``group`` (default: every rank). Buffers are
    not broadcast from rank 0 at each forward (the trainer averages them after each step)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
               else {"broadcast_buffers": False})
    return DDP(step, device_ids=ids, find_unused_parameters=find_unused_parameters, process_group=group, **no_sync)
