"""Training n networks on n datasets of one task (Zhang et al. 2019, joint IRLS, sec. 5.1):
the base :class:`JointTrainer` (its config :class:`~mtlkernels.train.JointIRLSConfig` is in
:mod:`mtlkernels.train.joint_config`, its evaluation in :mod:`mtlkernels.train.joint_eval`). The method,
:class:`~mtlkernels.train.JointIRLSTrainer`, and its L2Reg baseline are in
:mod:`mtlkernels.train.joint_irls`; the baselines Isolated, Shareall and PretrainFinetune in
:mod:`mtlkernels.train.joint_baselines`.

Every joint trainer is a :class:`~mtlkernels.train.Trainer`: ``Trainer(model_factory,
config)`` (the factory returns one fresh network; the trainer builds one per dataset
after seeding, all from the same initial weights when ``config.same_init``), then
``fit(datasets, val=None, *, names=None)`` with one dataset per network
(:mod:`mtlkernels.train.joint_data`). ``config.epochs`` is the budget of *sweeps* (one
epoch of every network), the same for every method so that they are compared at equal
cost. Checkpoints, seeding, the NaN guard, mixed precision and the metrics JSON are the
base's.

Under ``torchrun --nproc_per_node=N`` (n >= N datasets) each rank builds, trains,
evaluates and checkpoints only its own networks (:func:`~mtlkernels.train.joint_dist.placement`)
and reads only their datasets: ``datasets[k]`` is indexed for those k alone, so a lazy
sequence (``__len__`` and ``__getitem__`` loading dataset k) never loads the others.
Network k's initial weights, batches and random draws depend on (seed, k) only, so they
are the same on whichever rank it is trained. Histories and metrics hold every network's
values on every rank; checkpoints are written per rank
(``<checkpoint>.rank<r>-of-<N>.pt``, with the previous epoch kept beside it as
``.prev``; each rank reads only its own, so several machines need no shared file system)
and a resume loads the newest epoch that every rank holds, with the same N. A rank that dies or
hangs stops the others with a :class:`~mtlkernels.train.joint_dist.RankFailureError`
naming it within ``config.dist_timeout_s``.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor, nn

from . import checkpoint as ckpt
from .config import make_optimizer
from .data import check_labels, index_batches
from .joint_config import JointIRLSConfig, network_seed
from .joint_data import TaskData, as_task_data, recon_error
from .joint_dist import JointComm, placement
from .joint_eval import JointEvaluation
from .trainer import Trainer, log

__all__ = ["JointTrainer"]

class JointTrainer(JointEvaluation, Trainer):
    """n datasets, n (or one shared) networks, sweeps, evaluation per task.

    After ``fit``: ``models_`` (the networks of this rank's datasets, ``local_tasks_``
    their indices: all of them in one process), ``history_`` (per sweep: phase, data loss
    per task, validation metrics per task), ``sweep_bytes_`` (bytes this rank sent in each
    sweep), :meth:`evaluate`.
    """

    config_class = JointIRLSConfig
    method = "joint"
    min_datasets = 1
    data_parallel = False  # the ranks hold different networks: no DDP, no per-step collective
    #: the networks are coupled (config.schedule applies)
    coupled = False

    def __init__(self, model, config: JointIRLSConfig, *, name: str | None = None):
        if isinstance(model, nn.Module) or not callable(model):
            raise TypeError(f"{type(self).__name__}: model must be a factory (a callable returning a fresh nn.Module), "
                            "one network is built per dataset")
        super().__init__(model, config, name=name)
        self.data: list[TaskData] = []
        self.comm: JointComm | None = None
        self.fit_seconds_ = 0.0
        self.sweep_bytes_: list[int] = []
        self.evaluation_: dict | None = None

    # -- data

    def fit(self, train: Sequence, val=None, *, names: Sequence[str] | None = None) -> "JointTrainer":
        """Train (or resume) up to ``config.epochs`` sweeps. ``train``: one dataset per
        network; ``val``: ``"val"`` (the datasets' own validation splits) or one (X, y)
        per dataset, evaluated after every sweep; ``names``: the datasets' names (metrics,
        Fig. 2; default: an ImageSplits' own name, else "dataset<i>")."""
        if (isinstance(train, (Tensor, str, dict)) or not hasattr(train, "__len__") or not hasattr(train, "__getitem__")
                or len(train) < self.min_datasets):
            raise ValueError(f"{self.name}: needs a sequence of at least {self.min_datasets} datasets")
        if names is not None and len(names) != len(train):
            raise ValueError(f"{self.name}: {len(names)} names for {len(train)} datasets")
        self.n, self._names = len(train), names
        self.fit_warnings: list[str] = []
        t0 = time.perf_counter()
        super().fit(train, val)
        self.fit_seconds_ += time.perf_counter() - t0
        if self.dist.rank == 0:
            for msg in self.fit_warnings:  # loops that stopped early (finish), on rank 0 only
                warnings.warn(msg, ConvergenceWarning, stacklevel=2)
        return self

    def on_fit_start(self, train, val) -> None:
        d, cfg = self.dist, self.config
        rank, world = (d.rank, d.world_size) if d.enabled else (0, 1)
        if world > 1 and self.coupled and cfg.schedule != "jacobi":
            raise ValueError(f"{self.name}: schedule={cfg.schedule!r} trains each network against the newest "
                             f"parameters of the networks trained before it in the sweep, which live on other ranks; "
                             f"under torchrun ({world} processes) pass schedule='jacobi'")
        self.placement = placement(self.n, world)
        self.local_ = self.placement[rank]
        self.comm = JointComm(rank, world, self.device, cfg.dist_timeout_s)
        with self.comm.guard("reading the datasets"):
            raws = [(k, train[k]) for k in self.local_]
            self.data = [as_task_data(raw, k, cfg.task) for k, raw in raws]
            for (k, _), dd in zip(raws, self.data):
                if self._names is not None:
                    dd.name = str(self._names[k])
            mine = [{"name": dd.name, "x": list(dd.X.shape[1:]), "y": list(dd.Y.shape[1:]), "n_train": len(dd.X),
                     "n_classes": getattr(raw, "n_classes", None), "splits": {s: list(Xs.shape[1:])
                                                                            for s, (Xs, _) in dd.splits.items()}}
                    for (_, raw), dd in zip(raws, self.data)]
            self.meta = [m for part in self.comm.all_gather_object(mine) for m in part]
        self._check_datasets()

    def _check_datasets(self) -> None:
        m0 = self.meta[0]
        for i, m in enumerate(self.meta):
            if m["x"] != m0["x"]:
                raise ValueError(f"{self.name}: mismatched datasets: dataset {i} ({m['name']!r}) has inputs of shape "
                                 f"{tuple(m['x'])}, dataset 0 ({m0['name']!r}) has {tuple(m0['x'])}")
            if self.config.task == "autoencoder" and m["y"] != m0["y"]:
                raise ValueError(f"{self.name}: mismatched datasets: dataset {i} ({m['name']!r}) has targets of shape "
                                 f"{tuple(m['y'])}, dataset 0 has {tuple(m0['y'])}")
            for s, shape in m["splits"].items():
                if shape != m0["x"]:
                    raise ValueError(f"{self.name}: dataset {i} ({m['name']!r}) {s} inputs have shape {tuple(shape)}, "
                                     f"training inputs {tuple(m0['x'])}")
        ncls = {m["n_classes"] for m in self.meta if m["n_classes"] is not None}
        if self.config.task == "classification" and len(ncls) > 1:
            raise ValueError(f"{self.name}: mismatched datasets: different numbers of classes {sorted(ncls)}")

    def check_data(self, data, name: str) -> None:
        if name != "train":
            self._val_sets = self._eval_sets(data)
            return
        net, d = self.nets[0], self.data[0]
        was = net.training
        net.eval()
        with torch.no_grad():
            out = net(d.X[:2].to(self.device))
        net.train(was)
        if self.config.task == "classification":
            if out.dim() != 2:
                raise ValueError(f"{self.name}: a classifier must output (N, n_classes) scores, got shape "
                                 f"{tuple(out.shape)}")
            self.n_classes = int(out.shape[1])
            for k, dd in zip(self.local_, self.data):
                check_labels(dd.Y, self.n_classes, f"{self.name}: dataset {k} ({dd.name!r}) train")
                for s, (_, Ys) in dd.splits.items():
                    check_labels(Ys, self.n_classes, f"{self.name}: dataset {k} ({dd.name!r}) {s}")
        elif tuple(out.shape[1:]) != tuple(d.Y.shape[1:]):
            raise ValueError(f"{self.name}: the auto-encoder outputs shape {tuple(out.shape[1:])} per sample but the "
                             f"targets have {tuple(d.Y.shape[1:])}")

    def make_loader(self, data, name: str, shuffle: bool, split: bool = True):
        # each network draws its own index batches (_epoch_on); the val sets come from check_data
        return None if name == "train" else self._val_sets

    # -- networks

    def _net_keys(self) -> list[int]:
        """The (global) indices of the networks this rank builds and trains."""
        return list(self.local_)

    def _build_net(self, k: int) -> nn.Module:
        torch.manual_seed(network_seed(self.config.seed, k))
        net = self._model_arg()
        if not isinstance(net, nn.Module):
            raise TypeError(f"{self.name}: the model factory must return an nn.Module, got {type(net).__name__}")
        return net

    def build_model(self) -> nn.ModuleList:
        keys = self._net_keys()
        nets = [self._build_net(k) for k in keys]
        ref, ref_k = (nets[0], keys[0]) if keys[0] == 0 or not self.config.same_init else (self._build_net(0), 0)
        shape0 = [tuple(p.shape) for p in ref.parameters()]
        for k, net in zip(keys, nets):
            if [tuple(p.shape) for p in net.parameters()] != shape0:
                raise ValueError(f"{self.name}: the model factory returned networks of different architectures "
                                 f"(network {k} differs from network {ref_k})")
        if self.config.same_init:
            for net in nets:
                if net is not ref:
                    net.load_state_dict(ref.state_dict())
        return nn.ModuleList(nets)

    @property
    def nets(self) -> nn.ModuleList:
        return self.model

    def _net_for(self, p: int) -> nn.Module:
        """The network of this rank's p-th dataset."""
        return self.nets[p]

    @property
    def local_tasks_(self) -> list[int]:
        return list(self.local_)

    @property
    def models_(self) -> list[nn.Module]:
        """The network of each of this rank's datasets (Shareall: the same module each time)."""
        return [self._net_for(p) for p in range(len(self.local_))]

    def setup(self) -> None:
        self._dev_data = [(d.X.to(self.device), d.Y.to(self.device)) for d in self.data]

    def configure_optimizers(self) -> dict:
        return {f"net{k}": make_optimizer(net.parameters(), self.config) for k, net in zip(self._net_keys(), self.nets)}

    # -- one network's epoch

    def _loss(self, out: Tensor, Y: Tensor, reduction: str = "mean") -> Tensor:
        """The data term over a batch: its mean, or (``reduction="sum"``) its sum over samples."""
        if self.config.task == "classification":
            return F.cross_entropy(out, Y, reduction=reduction)
        return recon_error(out, Y, reduction)

    def _epoch_on(self, p: int, X: Tensor, Y: Tensor, epoch: int, penalty, where: str) -> dict:
        """One epoch of this rank's p-th network on (X, Y) minimising loss + penalty()
        (penalty in float32); its batches and random draws follow (seed, network, epoch)."""
        k = self._net_keys()[p]
        net, opt = self.nets[p], self.optimizers[f"net{k}"]
        net.train()
        torch.manual_seed(network_seed(self.config.seed, k, epoch))
        tot = pen_tot = 0.0
        count = 0
        for step, idx in enumerate(index_batches(len(X), self.config.batch_size, int(self.config.seed) * 1009 + k,
                                                 epoch, device=self.device)):
            parts: dict = {}

            def closure():
                parts["data"] = self._loss(net(X[idx]), Y[idx]).float()
                if penalty is None:
                    return parts["data"]
                with self.precision.full():
                    parts["pen"] = penalty()
                return parts["data"] + parts["pen"]

            self.optimize(closure, opt, f"{where} epoch {epoch} step {step}", prox_module=net)
            tot += float(parts["data"].detach()) * len(idx)
            pen_tot += float(parts["pen"].detach()) * len(idx) if "pen" in parts else 0.0
            count += len(idx)
        return {"loss": tot / max(count, 1), "penalty": pen_tot / max(count, 1)}

    def _per_network(self, values: dict[str, list[float]]) -> dict[str, list[float]]:
        """Per-network values of this rank's networks -> lists over all n networks, on every rank."""
        keys = sorted(values)
        t = torch.zeros(len(keys), self.n, dtype=torch.float64)
        for a, key in enumerate(keys):
            t[a, self.local_.start:self.local_.stop] = torch.tensor(values[key], dtype=torch.float64)
        t = self.comm.all_reduce_sum(t)
        return {key: t[a].tolist() for a, key in enumerate(keys)}

    # -- the loop

    def train_epoch(self, epoch: int) -> dict:
        self.comm.mark(f"sweep {epoch + 1}")
        sent = self.comm.bytes_sent
        rec = self._run_epoch(epoch)
        self.sweep_bytes_.append(self.comm.bytes_sent - sent)
        return rec

    def _run_epoch(self, epoch: int) -> dict:
        raise NotImplementedError

    def _loop(self, start: int) -> None:
        self.sweep_bytes_ = []
        with self.comm.guard("training"):
            super()._loop(start)

    def validate(self) -> dict:
        return {"val": self._scores(self._val_sets)["per_task"]}

    def on_fit_end(self) -> None:
        with self.comm.guard("the end of training"):
            self.finish()
            splits = [set(m["splits"]) for m in self.meta]
            if self.config.metrics_path:
                self.evaluation_ = {s: self.evaluate(s) for s in ("val", "test") if all(s in sp for sp in splits)}

    def finish(self) -> None:
        """After the last sweep, on every rank (collectives allowed); messages appended to
        ``self.fit_warnings`` are issued as ``ConvergenceWarning`` when ``fit`` returns."""

    def teardown(self, error: BaseException | None) -> None:
        if self.comm is not None:
            self.comm.close(error)

    def fingerprint_extra(self) -> dict:
        out = {"datasets": [[m["name"], [m["n_train"], *m["x"]]] for m in self.meta]}
        if self.comm.enabled:
            out["placement"] = {"world_size": self.comm.world_size, "networks": self._net_keys()}
        return out

    def metrics(self) -> dict:
        """Everything worth keeping about a run, JSON-ready."""
        out = {**super().metrics(), "lam": self.config.lam, "datasets": [m["name"] for m in self.meta],
               "layers": getattr(self, "layer_names", None), "fit_seconds": self.fit_seconds_,
               "world_size": self.comm.world_size, "sweep_bytes_rank0": self.sweep_bytes_}
        if self.evaluation_:
            out["evaluation"] = self.evaluation_
        return out

    # -- checkpoints: per rank under torchrun

    def _shards(self) -> tuple[Path, Path]:
        path = Path(self.config.checkpoint_path)
        stem = f"{path.stem}.rank{self.comm.rank}-of-{self.comm.world_size}"
        return path.with_name(stem + path.suffix), path.with_name(stem + ".prev" + path.suffix)

    def _save(self, epoch: int) -> None:
        if not self.comm.enabled:
            return super()._save(epoch)
        if self.config.checkpoint_path is None:
            return
        latest, prev = self._shards()
        state = self._checkpoint_state(epoch)
        if latest.exists():  # keep one older epoch: a rank killed while saving leaves one that all ranks hold
            os.replace(latest, prev)
        ckpt.save_atomic(state, latest)

    def _refuse_another_world_size(self) -> None:
        """A checkpoint of this run written by another number of processes is not silently ignored."""
        path, N = Path(self.config.checkpoint_path), self.comm.world_size
        if any(f.exists() for f in (self._shards() if self.comm.enabled else (path,))):
            return
        others = {int(f.name[len(path.stem) + 1:].split("-of-")[1].split(".")[0])
                  for f in path.parent.glob(f"{path.stem}.rank*-of-*{path.suffix}")} - {N}
        if N > 1 and path.exists():
            others.add(1)
        if others:
            raise ckpt.CheckpointError(f"{self.name}: checkpoint {path} holds a run of {min(others)} process(es), this "
                                       f"run has {N}: the networks are placed by the number of processes, so resume "
                                       f"with torchrun --nproc_per_node={min(others)}, or pass resume=False to start "
                                       "over")

    def _resume(self) -> int:
        cfg = self.config
        if cfg.checkpoint_path is None or not cfg.resume:
            return 0
        self._refuse_another_world_size()
        if not self.comm.enabled:
            return super()._resume()
        with self.comm.guard("resuming"):
            held = {}
            for f in self._shards():
                if f.exists():
                    state = ckpt.load(f)
                    held[int(state["epoch"])] = (state, f)
            epochs = self.comm.all_gather_object(sorted(held))
        if not any(epochs):
            return 0
        common = set(epochs[0]).intersection(*epochs[1:])
        if not common:
            if not all(epochs):
                if self.dist.is_main:
                    log.warning("%s: ranks %s hold no checkpoint at %s: starting over", self.name,
                                [r for r, e in enumerate(epochs) if not e], cfg.checkpoint_path)
                return 0
            raise ckpt.CheckpointError(f"{self.name}: no epoch is held by every rank's checkpoint ("
                                       + ", ".join(f"rank {r}: {e}" for r, e in enumerate(epochs))
                                       + f"); delete {Path(cfg.checkpoint_path).stem}.rank* or pass resume=False")
        state, f = held[max(common)]
        return self._restore(state, f)
