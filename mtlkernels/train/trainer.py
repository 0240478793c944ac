"""The one training loop of the deep methods: :class:`Trainer`.

Every method's trainer is a small subclass constructed as ``Trainer(model, config)``
and trained with ``fit(train, val=None)``. The base is the only place for:

- seeding (``config.seed``) before the model is built: pass a *model factory* (any
  callable returning an ``nn.Module``) and two runs with the same seed are identical;
- device placement, and data: ``train``/``val`` are a ``DataLoader`` or ``(X, y)``
  tensors (wrapped in a seeded loader, :mod:`mtlkernels.train.data`);
- the optimiser (``config.optimizer``: a name, or a ``torch.optim`` class or partial);
- penalties and proximal steps: the loss is the subclass's data term plus
  ``penalty()`` (by default :func:`mtlkernels.nn.total_penalty` of the model, in
  float32), and after every ``optimizer.step()`` each submodule's
  ``proximal_step(lr)`` is applied (:func:`mtlkernels.nn.apply_proximal_steps`);
- the NaN guard, tqdm and logging, the metrics JSON (``config.metrics_path``);
- checkpoints after every epoch with a config and model fingerprint, and resume
  (:mod:`mtlkernels.train.checkpoint`);
- mixed precision (``config.precision``, :mod:`mtlkernels.train.precision`);
- data parallelism under ``torchrun`` (:mod:`mtlkernels.train.distributed`):
  ``DistributedDataParallel`` over a module that computes the whole loss, penalties
  included, so every parameter's gradient is averaged; floating-point buffers are
  averaged after each step so that proximal steps are identical on every rank
  (``data_parallel = True``; a trainer that places different networks on different
  ranks, like the joint trainers, sets it to False and does its own communication).

A subclass overrides some of: :meth:`on_fit_start`, :meth:`build_model`, :meth:`check_data`,
:meth:`setup`, :meth:`configure_optimizers`, :meth:`training_step`, :meth:`penalty`,
:meth:`train_epoch` (a different loop, calling :meth:`optimize` for each step),
:meth:`validate`, :meth:`extra_state` / :meth:`load_extra_state` (more to checkpoint),
:meth:`metrics`, :meth:`teardown`.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..nn.hooks import apply_proximal_steps, total_penalty
from . import checkpoint as ckpt
from .config import TrainConfig, config_dict, make_optimizer
from .data import check_finite, make_loader, set_epoch
from .distributed import Distributed, LossStep, wrap_ddp
from .precision import Precision

__all__ = ["Trainer", "seed_everything", "write_json", "log"]

log = logging.getLogger("mtlkernels.train")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def write_json(path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=_jsonable))


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (np.ndarray, Tensor)):
        return o.tolist()
    return str(o)


class Trainer:
    """Base of every trainer. ``Trainer(model, config)``, then ``fit(train, val=None)``.

    Args:
        model: an ``nn.Module``, or a callable returning one (built after seeding, so
            that its initialisation follows ``config.seed``).
        config: a :class:`TrainConfig` (or the subclass's config class).
        name: for logs (default: the trainer's ``method``).

    After ``fit``: ``model`` (the trained module), ``history_`` (one record per epoch),
    ``resumed_epoch_`` (the checkpoint's epoch training resumed from, 0 when from scratch),
    ``optimizers`` (by name).
    """

    #: the config class this trainer takes
    config_class = TrainConfig
    #: stored in checkpoints and metrics; a checkpoint of another method is refused
    method = "trainer"
    #: passed to DistributedDataParallel (True when a step may leave parameters unused)
    find_unused_parameters = False
    #: under torchrun: wrap the model in DistributedDataParallel, agree on the NaN guard and
    #: average buffers at every step. False for trainers whose ranks hold different models.
    data_parallel = True

    def __init__(self, model: nn.Module | Callable[[], nn.Module], config: TrainConfig, *, name: str | None = None):
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__}: config must be a {self.config_class.__name__}, got "
                            f"{type(config).__name__}")
        config.validate()
        if not (isinstance(model, nn.Module) or callable(model)):
            raise TypeError(f"{type(self).__name__}: model must be an nn.Module or a callable returning one, got "
                            f"{type(model).__name__}")
        self.config = config
        self.name = name or self.method
        self._model_arg = model
        self.model: nn.Module | None = model if isinstance(model, nn.Module) else None
        self.history_: list[dict] = []
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.dist: Distributed | None = None
        self.device = torch.device(config.device)

    # ---- hooks for subclasses ------------------------------------------------------------------

    def on_fit_start(self, train, val) -> None:
        """First thing in ``fit``, once the process group exists (``self.dist``) and
        before seeding and the model: read and check what depends on the rank."""

    def teardown(self, error: BaseException | None) -> None:
        """Last thing in ``fit`` (also when it fails, with the exception), before the
        process group the trainer created is destroyed."""

    def build_model(self) -> nn.Module:
        """The model to train (called after seeding): the factory's result or the module given."""
        model = self._model_arg() if not isinstance(self._model_arg, nn.Module) else self._model_arg
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name}: the model factory must return an nn.Module, got {type(model).__name__}")
        return model

    def check_data(self, data, name: str) -> None:
        """Validate ``fit``'s ``train`` / ``val`` argument (the model is built, the
        loaders not yet); a DataLoader is usually passed through unchecked."""

    def setup(self) -> None:
        """After the model and loaders exist, before the optimisers are built."""

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt": make_optimizer(self.model.parameters(), self.config)}

    def training_step(self, batch) -> Tensor:
        """The data term of one batch (under autocast); penalties are added by the base."""
        raise NotImplementedError

    def penalty(self) -> Tensor | float:
        """The differentiable regularisers, computed in float32 after the forward pass."""
        return total_penalty(self.model)

    def proximal_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called after every optimiser step that was taken: the model's proximal hooks."""
        apply_proximal_steps(self.model, optimizer.param_groups[0]["lr"])

    def train_epoch(self, epoch: int) -> dict:
        """One pass over ``self.train_loader``; returns the epoch's record."""
        opt = self.optimizers["opt"]
        total = count = 0.0
        for step, batch in enumerate(self.train_loader):
            batch = self.to_device(batch)
            loss = self.optimize(lambda: self._default_loss(batch), opt, f"epoch {epoch + 1} step {step}")
            n = len(batch[0]) if isinstance(batch, (tuple, list)) else len(batch)
            total += float(loss) * n
            count += n
        total, count = self.dist.all_reduce_sum([total, count])
        return {"train_loss": total / max(count, 1)}

    def validate(self) -> dict:
        """Metrics on ``self.val_loader`` after each epoch (every rank computes them)."""
        return {}

    def should_stop(self) -> bool:
        """Checked after each epoch: True ends training early."""
        return False

    def extra_state(self) -> dict:
        """More state to checkpoint (tensors and plain containers only)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def fingerprint_extra(self) -> dict:
        """More values that must match for a resume (besides config and model)."""
        return {}

    def metrics(self) -> dict:
        """What ``config.metrics_path`` receives (JSON-ready)."""
        return {"method": self.method, "name": self.name, "config": config_dict(self.config), "history": self.history_}

    # ---- fit -----------------------------------------------------------------------------------

    def fit(self, train, val=None) -> "Trainer":
        """Train for ``config.epochs`` epochs (or resume from ``config.checkpoint_path``).

        ``train``, ``val``: a ``torch.utils.data.DataLoader`` or a tuple of tensors
        ``(X, y)``; tensors are wrapped in a loader seeded by ``config.seed``.
        """
        cfg = self.config
        self.dist = Distributed(cfg.device, timeout_s=cfg.dist_timeout_s)
        error = None
        try:
            self.device = self.dist.device
            self.on_fit_start(train, val)
            seed_everything(cfg.seed)
            self.model = self.build_model().to(self.device)
            self.check_data(train, "train")
            if val is not None:
                self.check_data(val, "val")
            self.train_loader = self.make_loader(train, "train", shuffle=True)
            self.val_loader = None if val is None else self.make_loader(val, "val", shuffle=False, split=False)
            self.history_ = []
            self.setup()
            self.precision = Precision(cfg.precision, self.device)
            self.optimizers = self.configure_optimizers()
            start = self.resumed_epoch_ = self._resume()
            self._step_module = self._wrap(LossStep(self.model))
            self._loop(start)
            self.on_fit_end()
            if cfg.metrics_path and self.dist.is_main:
                write_json(cfg.metrics_path, self.metrics())
                log.info("%s: metrics written to %s", self.name, cfg.metrics_path)
        except BaseException as e:
            error = e
            raise
        finally:
            try:
                self.teardown(error)
            finally:
                self.dist.close()
        return self

    def on_fit_end(self) -> None:
        """After the last epoch (also when a resumed run had nothing left to train)."""

    def make_loader(self, data, name: str, shuffle: bool, split: bool = True):
        d = self.dist
        return make_loader(data, self.config.batch_size, shuffle=shuffle, seed=self.config.seed,
                           rank=d.rank if split else 0, world_size=d.world_size if split else 1, name=name)

    def to_device(self, batch):
        if isinstance(batch, Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.to_device(b) for b in batch)
        return batch

    def _wrap(self, step: nn.Module) -> nn.Module:
        if not self.dist.enabled or not self.data_parallel:
            return step
        return wrap_ddp(step, self.device, self.find_unused_parameters)

    def _loop(self, start: int) -> None:
        cfg = self.config
        epochs = range(start, cfg.epochs)
        if cfg.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc=self.name, total=len(epochs), leave=False)
        for epoch in epochs:
            set_epoch(self.train_loader, epoch)
            self.model.train()
            record = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            if self.val_loader is not None:
                record.update(self.validate())
            self.history_.append(record)
            if self.dist.is_main:
                log.info("%s: %s", self.name, record)
            self._save(epoch + 1)
            if self.should_stop():
                break

    # ---- one optimisation step -----------------------------------------------------------------

    def _default_loss(self, batch) -> Tensor:
        data = self.training_step(batch)
        with self.precision.full():
            pen = self.penalty()
        return data.float() + pen

    def optimize(self, closure: Callable[[], Tensor], optimizer: torch.optim.Optimizer, where: str, *,
                 after_backward: Callable[[], None] | None = None, prox_module: nn.Module | None = None) -> Tensor:
        """One step: loss = ``closure()`` (under autocast, through DDP), NaN guard,
        backward, ``after_backward()`` (on unscaled gradients), ``optimizer.step()``,
        buffer averaging across ranks, then the proximal steps (of ``prox_module``'s
        submodules, default :meth:`proximal_step` on the whole model). Returns the loss."""
        with self.precision.autocast():
            loss = self._step_module(closure)
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self.dist.any(bad) if self.data_parallel else bad:  # data parallel: every rank stops together
            at = f"{self.name} {where}" + (f" (rank {self.dist.rank})" if self.dist.enabled else "")
            check_finite(loss, at)
            raise FloatingPointError(f"non-finite loss on another rank at {at}; stopping")
        self.model.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        if after_backward is not None:
            self.precision.unscale(optimizer)
            after_backward()
        stepped = self.precision.step(optimizer)
        if self.data_parallel:
            self.dist.average_buffers(self.model)
        if stepped:
            if prox_module is None:
                self.proximal_step(optimizer)
            else:
                apply_proximal_steps(prox_module, optimizer.param_groups[0]["lr"])
        return loss.detach()

    # ---- checkpoints ---------------------------------------------------------------------------

    def _fingerprints(self) -> tuple[dict, dict]:
        cfg_fp = self.config.fingerprint()
        extra = self.fingerprint_extra()
        if extra:
            cfg_fp["trainer"] = extra
        return cfg_fp, ckpt.model_fingerprint(self.model)

    def _save(self, epoch: int) -> None:
        path = self.config.checkpoint_path
        if path is None:
            return
        if self.dist.is_main:
            ckpt.save_atomic(self._checkpoint_state(epoch), path)
        self.dist.barrier()

    def _resume(self) -> int:
        cfg = self.config
        path = cfg.checkpoint_path
        if path is None or not cfg.resume or not Path(path).exists():
            return 0
        return self._restore(ckpt.load(path), path)

    def _checkpoint_state(self, epoch: int) -> dict:
        """Everything a resume needs, with the fingerprints that guard it."""
        cfg_fp, model_fp = self._fingerprints()
        return {"format": ckpt.FORMAT, "trainer": self.method, "config_fingerprint": cfg_fp,
                "model_fingerprint": model_fp, "epoch": epoch, "model": self.model.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "scaler": self.precision.state_dict(), "history": self.history_, "rng": ckpt.rng_state(),
                "extra": self.extra_state()}

    def _restore(self, state: dict, path) -> int:
        """Load a checkpoint's state (checked against this run) and return its epoch."""
        cfg = self.config
        ckpt.check_compatible(state, self.method, *self._fingerprints(), path)
        epoch = int(state["epoch"])
        if epoch > cfg.epochs:
            raise ckpt.CheckpointError(f"checkpoint {path} holds epoch {epoch}, more than epochs={cfg.epochs}; "
                                       f"raise epochs, or delete {path} or pass resume=False to start over")
        self.model.load_state_dict(state["model"])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        self.precision.load_state_dict(state["scaler"])
        self.history_ = list(state["history"])
        ckpt.set_rng_state(state["rng"])
        self.load_extra_state(state["extra"])
        if self.dist.is_main:
            if epoch >= cfg.epochs:
                log.warning("%s: %s already holds epoch %d of %d: nothing left to train, returning the trained "
                            "model (raise epochs to continue, or pass resume=False to start over)", self.name, path,
                            epoch, cfg.epochs)
            else:
                log.warning("%s: resumed at epoch %d of %d from %s", self.name, epoch, cfg.epochs, path)
        return epoch

    # ---- prediction ----------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if self.model is None:
            raise RuntimeError(f"{self.name}: call fit() first (or pass a module, not a factory)")

    @torch.no_grad()
    def predict(self, X) -> Tensor:
        """The model's outputs on X (a tensor, a tuple whose first element is X, or a
        DataLoader), in eval mode and batches of 1024, on the CPU."""
        self._check_fitted()
        was = self.model.training
        self.model.eval()
        device = next((p.device for p in self.model.parameters()), self.device)
        try:
            if isinstance(X, torch.utils.data.DataLoader):
                outs = [self.model(self._first(b).to(device)) for b in X]
            else:
                X = self._first(X)
                outs = [self.model(X[i:i + 1024].to(device)) for i in range(0, len(X), 1024)]
        finally:
            self.model.train(was)
        return torch.cat(outs).float().cpu()

    @staticmethod
    def _first(batch):
        return batch[0] if isinstance(batch, (tuple, list)) else batch

    @staticmethod
    def targets(data, y=None) -> Tensor:
        """The targets of ``score``'s arguments: ``y``, ``data[1]`` or the loader's second field."""
        if y is not None:
            return y.cpu()
        if isinstance(data, torch.utils.data.DataLoader):
            return torch.cat([b[1] for b in data]).cpu()
        if isinstance(data, (tuple, list)) and len(data) >= 2:
            return data[1].cpu()
        raise ValueError("score: give (X, y), a DataLoader of (x, y) batches, or X and y")
