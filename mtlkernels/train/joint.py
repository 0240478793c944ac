"""Training n networks on n datasets of one task (Zhang et al. 2019, joint IRLS, sec. 5.1):
the base :class:`JointTrainer` and the baselines :class:`Isolated`, :class:`Shareall`
and :class:`PretrainFinetune`. The method itself, :class:`~mtlkernels.train.JointIRLSTrainer`,
and its L2Reg baseline are in :mod:`mtlkernels.train.joint_irls`.

Every joint trainer is a :class:`~mtlkernels.train.Trainer`: ``Trainer(model_factory,
config)`` (the factory returns one fresh network; the trainer builds one per dataset
after seeding, all from the same initial weights when ``config.same_init``), then
``fit(datasets, val=None, *, names=None)`` with one dataset per network
(:mod:`mtlkernels.train.joint_data`). ``config.epochs`` is the budget of *sweeps* (one
epoch of every network), the same for every method so that they are compared at equal
cost. Checkpoints, seeding, the NaN guard, mixed precision and the metrics JSON are the
base's. The joint trainers run in one process.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TrainConfig
from .data import check_labels, index_batches
from .joint_data import TASKS, TaskData, as_task_data, recon_error
from .trainer import Trainer, make_optimizer

__all__ = ["JointIRLSConfig", "JointTrainer", "Isolated", "Shareall", "PretrainFinetune"]


@dataclass
class JointIRLSConfig(TrainConfig):
    """Options of the joint trainers (:class:`~mtlkernels.train.JointIRLSTrainer` and the
    baselines). ``epochs`` is the budget of sweeps shared by every method.

    ``task``: "classification" or "autoencoder". ``lam``: the weight of the consistency
    term (eq. 4; JointIRLS and L2Reg; the paper uses 10 for networks of millions of
    parameters: the scale of the squared distances depends on the network, so tune it).
    Joint IRLS: ``init_epochs`` sweeps of the L2-coupled problem (eq. 5; ``None``: half
    the budget), then IRLS iterations of ``epochs_per_iter`` sweeps each (sec. 4.2.3: one
    epoch), at most ``max_irls_iters`` of them (the paper sees 4-8), until delta <=
    ``tol`` (sec. 4.2.2). PretrainFinetune: ``pretrain_epochs`` of Shareall (``None``: half
    the budget), the rest fine-tuning. ``graph_top_k``: the mutual-neighbour rule of Fig.
    2. ``same_init``: every network starts from the same weights (the paper starts all of
    them from one ImageNet-pretrained network, sec. 5.1; from independent random inits the
    consensus of eq. 9 averages unaligned hidden units and L2 coupling destroys them).
    """

    task: str = "classification"
    lam: float = 10.0
    init_epochs: int | None = None
    epochs_per_iter: int = 1
    max_irls_iters: int = 8
    tol: float = 1e-2
    pretrain_epochs: int | None = None
    graph_top_k: int = 3
    same_init: bool = True

    def validate(self) -> None:
        super().validate()
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if not (isinstance(self.lam, (int, float)) and self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"lam must be a finite non-negative number, got {self.lam!r}")
        for name in ("init_epochs", "pretrain_epochs"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {v}")
        if self.epochs_per_iter < 1 or self.max_irls_iters < 0:
            raise ValueError(f"epochs_per_iter must be >= 1 and max_irls_iters >= 0, got "
                             f"{self.epochs_per_iter}, {self.max_irls_iters}")
        if not (self.tol >= 0 and math.isfinite(self.tol)):
            raise ValueError(f"tol must be a finite non-negative number, got {self.tol}")
        if self.graph_top_k < 1:
            raise ValueError(f"graph_top_k must be >= 1, got {self.graph_top_k}")


class JointTrainer(Trainer):
    """n datasets, n (or one shared) networks, sweeps, evaluation per task.

    After ``fit``: ``models_`` (the network of each dataset), ``history_`` (per sweep:
    phase, data loss, validation metrics per task), :meth:`evaluate`.
    """

    config_class = JointIRLSConfig
    method = "joint"
    min_datasets = 1

    def __init__(self, model, config: JointIRLSConfig, *, name: str | None = None):
        if isinstance(model, nn.Module) or not callable(model):
            raise TypeError(f"{type(self).__name__}: model must be a factory (a callable returning a fresh nn.Module), "
                            "one network is built per dataset")
        super().__init__(model, config, name=name)
        self.data: list[TaskData] = []
        self.fit_seconds_ = 0.0

    # -- data

    def fit(self, train: Sequence, val=None, *, names: Sequence[str] | None = None) -> "JointTrainer":
        """Train (or resume) up to ``config.epochs`` sweeps. ``train``: one dataset per
        network; ``val``: ``"val"`` (the datasets' own validation splits) or one (X, y)
        per dataset, evaluated after every sweep; ``names``: the datasets' names (metrics,
        Fig. 2; default: an ImageSplits' own name, else "dataset<i>")."""
        if isinstance(train, Tensor) or not isinstance(train, Sequence) or len(train) < self.min_datasets:
            raise ValueError(f"{self.name}: needs a sequence of at least {self.min_datasets} datasets")
        self.data = [as_task_data(d, i, self.config.task) for i, d in enumerate(train)]
        if names is not None:
            if len(names) != len(self.data):
                raise ValueError(f"{self.name}: {len(names)} names for {len(self.data)} datasets")
            for d, nm in zip(self.data, names):
                d.name = str(nm)
        self._check_datasets(train)
        self.n = len(self.data)
        t0 = time.perf_counter()
        super().fit(train, val)
        self.fit_seconds_ += time.perf_counter() - t0
        return self

    def _check_datasets(self, raw) -> None:
        shape0 = tuple(self.data[0].X.shape[1:])
        for i, d in enumerate(self.data):
            if tuple(d.X.shape[1:]) != shape0:
                raise ValueError(f"{self.name}: mismatched datasets: dataset {i} ({d.name!r}) has inputs of shape "
                                 f"{tuple(d.X.shape[1:])}, dataset 0 ({self.data[0].name!r}) has {shape0}")
            if self.config.task == "autoencoder" and tuple(d.Y.shape[1:]) != tuple(self.data[0].Y.shape[1:]):
                raise ValueError(f"{self.name}: mismatched datasets: dataset {i} ({d.name!r}) has targets of shape "
                                 f"{tuple(d.Y.shape[1:])}, dataset 0 has {tuple(self.data[0].Y.shape[1:])}")
            for s, (Xs, _) in d.splits.items():
                if tuple(Xs.shape[1:]) != shape0:
                    raise ValueError(f"{self.name}: dataset {i} ({d.name!r}) {s} inputs have shape "
                                     f"{tuple(Xs.shape[1:])}, training inputs {shape0}")
        ncls = {getattr(d, "n_classes", None) for d in raw if hasattr(d, "X_train")}
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
            for i, dd in enumerate(self.data):
                check_labels(dd.Y, self.n_classes, f"{self.name}: dataset {i} ({dd.name!r}) train")
                for s, (_, Ys) in dd.splits.items():
                    check_labels(Ys, self.n_classes, f"{self.name}: dataset {i} ({dd.name!r}) {s}")
        elif tuple(out.shape[1:]) != tuple(d.Y.shape[1:]):
            raise ValueError(f"{self.name}: the auto-encoder outputs shape {tuple(out.shape[1:])} per sample but the "
                             f"targets have {tuple(d.Y.shape[1:])}")

    def make_loader(self, data, name: str, shuffle: bool, split: bool = True):
        # each network draws its own index batches (_epoch_on); the val sets come from check_data
        return None if name == "train" else self._val_sets

    # -- networks

    def _n_nets(self) -> int:
        return self.n

    def build_model(self) -> nn.ModuleList:
        nets = []
        for _ in range(self._n_nets()):
            net = self._model_arg()
            if not isinstance(net, nn.Module):
                raise TypeError(f"{self.name}: the model factory must return an nn.Module, got {type(net).__name__}")
            nets.append(net)
        shapes = [[tuple(p.shape) for p in net.parameters()] for net in nets]
        for k, sh in enumerate(shapes[1:], 1):
            if sh != shapes[0]:
                raise ValueError(f"{self.name}: the model factory returned networks of different architectures "
                                 f"(network {k} differs from network 0)")
        if self.config.same_init:
            for net in nets[1:]:
                net.load_state_dict(nets[0].state_dict())
        return nn.ModuleList(nets)

    @property
    def nets(self) -> nn.ModuleList:
        return self.model

    def _net_for(self, i: int) -> nn.Module:
        return self.nets[i]

    @property
    def models_(self) -> list[nn.Module]:
        """The network of each dataset (Shareall: the same module n times)."""
        return [self._net_for(i) for i in range(self.n)]

    def setup(self) -> None:
        if self.dist.enabled:
            raise NotImplementedError(f"{self.name}: the joint trainers run in one process, not under torchrun")
        self._dev_data = [(d.X.to(self.device), d.Y.to(self.device)) for d in self.data]

    def configure_optimizers(self) -> dict:
        return {f"net{k}": make_optimizer(net.parameters(), self.config) for k, net in enumerate(self.nets)}

    # -- one network's epoch

    def _loss(self, out: Tensor, Y: Tensor) -> Tensor:
        if self.config.task == "classification":
            return F.cross_entropy(out, Y)
        return recon_error(out, Y)

    def _epoch_on(self, k: int, X: Tensor, Y: Tensor, epoch: int, penalty, where: str) -> dict:
        """One epoch of network k on (X, Y) minimising loss + penalty() (penalty in float32)."""
        net, opt = self.nets[k], self.optimizers[f"net{k}"]
        net.train()
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

    # -- the loop

    def train_epoch(self, epoch: int) -> dict:
        return self._run_epoch(epoch)

    def _run_epoch(self, epoch: int) -> dict:
        raise NotImplementedError

    def validate(self) -> dict:
        return {"val": self._scores(self._val_sets)["per_task"]}

    def fingerprint_extra(self) -> dict:
        return {"datasets": [[d.name, list(d.X.shape)] for d in self.data]}

    def metrics(self) -> dict:
        """Everything worth keeping about a run, JSON-ready."""
        out = {**super().metrics(), "lam": self.config.lam, "datasets": [d.name for d in self.data],
               "layers": getattr(self, "layer_names", None), "fit_seconds": self.fit_seconds_}
        if all(d.splits for d in self.data) and self.model is not None:
            out["evaluation"] = {s: self.evaluate(s) for s in ("val", "test") if all(s in d.splits for d in self.data)}
        return out

    # -- evaluation

    def _eval_sets(self, data) -> list[tuple[Tensor, Tensor]]:
        if isinstance(data, str):
            missing = [d.name for d in self.data if data not in d.splits]
            if missing:
                raise ValueError(f"{self.name}: no {data!r} split for datasets {missing}; pass one (X, y) per dataset")
            return [d.splits[data] for d in self.data]
        if not isinstance(data, Sequence) or len(data) != self.n:
            raise ValueError(f"{self.name}: evaluation needs one dataset per network ({self.n})")
        out = []
        for i, d in enumerate(data):
            dd = as_task_data(d, i, self.config.task)
            if tuple(dd.X.shape[1:]) != tuple(self.data[i].X.shape[1:]):
                raise ValueError(f"{self.name}: evaluation dataset {i} has inputs of shape {tuple(dd.X.shape[1:])}, "
                                 f"the training data {tuple(self.data[i].X.shape[1:])}")
            if self.config.task == "classification" and hasattr(self, "n_classes"):
                check_labels(dd.Y, self.n_classes, f"{self.name}: evaluation dataset {i}")
            out.append((dd.X, dd.Y))
        return out

    @torch.no_grad()
    def predict(self, X: Tensor, task: int) -> Tensor:
        """Outputs of dataset ``task``'s network on X (scores, or reconstructions)."""
        self._check_fitted()
        net = self._net_for(task)
        was = net.training
        net.eval()
        outs = [net(X[a:a + 1024].to(self.device)) for a in range(0, len(X), 1024)]
        net.train(was)
        return torch.cat(outs).float().cpu()

    def _scores(self, sets) -> dict:
        per = []
        for i, (X, Y) in enumerate(sets):
            out = self.predict(X, i)
            if self.config.task == "classification":
                per.append(float((out.argmax(1) == Y.cpu()).double().mean()))
            else:
                per.append(float(recon_error(out.double(), Y.cpu().double())))
        return {"per_task": per, "mean": sum(per) / len(per)}

    def evaluate(self, data="test") -> dict:
        """Per-task metrics: accuracy (classification) or reconstruction error
        (1/|I|) sum ||I - G(I)||_F^2 (auto-encoders, lower is better)."""
        res = self._scores(self._eval_sets(data))
        return {"method": self.method, "metric": "accuracy" if self.config.task == "classification" else "recon_error",
                "tasks": [d.name for d in self.data], **res}


class Isolated(JointTrainer):
    """Baseline I of Zhang et al. 2019 sec. 5.1: each network trained on its own dataset alone."""

    method = "isolated"

    def _run_epoch(self, epoch: int) -> dict:
        recs = [self._epoch_on(i, *self._dev_data[i], epoch, None, f"network {i}") for i in range(self.n)]
        return {"phase": "isolated", "loss": sum(r["loss"] for r in recs) / self.n,
                "task_loss": [r["loss"] for r in recs]}


class Shareall(JointTrainer):
    """Baseline III of Zhang et al. 2019 sec. 5.1: one network shared by all datasets,
    trained on the union of the training sets (batches drawn from the union: with
    datasets of equal size the loss is (1/n) sum_i f_i, eq. 1 up to the factor 1/n)."""

    method = "shareall"

    def _n_nets(self) -> int:
        return 1

    def _net_for(self, i: int) -> nn.Module:
        return self.nets[0]

    def setup(self) -> None:
        super().setup()
        Xs, Ys = zip(*self._dev_data)
        self._union = (torch.cat(Xs), torch.cat(Ys))

    def _run_epoch(self, epoch: int) -> dict:
        r = self._epoch_on(0, *self._union, epoch, None, "shared network")
        return {"phase": "shareall", "loss": r["loss"]}


class PretrainFinetune(JointTrainer):
    """Baseline IV of Zhang et al. 2019 sec. 5.1: Shareall for ``pretrain_epochs`` sweeps,
    then each network starts from the shared weights and is fine-tuned on its own dataset
    alone (fresh optimisers) for the rest of the budget."""

    method = "pretrain_finetune"

    def _pretrain_epochs(self) -> int:
        p = self.config.pretrain_epochs
        return self.config.epochs // 2 if p is None else min(p, self.config.epochs)

    def fingerprint_extra(self) -> dict:
        return {**super().fingerprint_extra(), "pretrain_epochs": self._pretrain_epochs()}

    def setup(self) -> None:
        super().setup()
        self._union = (torch.cat([x for x, _ in self._dev_data]), torch.cat([y for _, y in self._dev_data]))
        self.phase_ = "pretrain"

    def configure_optimizers(self) -> dict:
        opts = super().configure_optimizers()
        if self._pretrain_epochs() == 0:
            self._switch(opts)
        return opts

    def _net_for(self, i: int) -> nn.Module:
        return self.nets[0] if self.phase_ == "pretrain" else self.nets[i]

    def _switch(self, opts: dict) -> None:
        sd = self.nets[0].state_dict()
        for net in self.nets[1:]:
            net.load_state_dict(sd)
        opts.update({f"net{k}": make_optimizer(net.parameters(), self.config) for k, net in enumerate(self.nets)})
        self.phase_ = "finetune"

    def extra_state(self) -> dict:
        return {"phase": self.phase_}

    def load_extra_state(self, state: dict) -> None:
        self.phase_ = state["phase"]

    def _run_epoch(self, epoch: int) -> dict:
        if self.phase_ == "pretrain":
            r = self._epoch_on(0, *self._union, epoch, None, "pretraining")
            if epoch + 1 >= self._pretrain_epochs():
                self._switch(self.optimizers)
            return {"phase": "pretrain", "loss": r["loss"]}
        recs = [self._epoch_on(i, *self._dev_data[i], epoch, None, f"fine-tuning network {i}") for i in range(self.n)]
        return {"phase": "finetune", "loss": sum(r["loss"] for r in recs) / self.n, "task_loss": [r["loss"] for r in recs]}
