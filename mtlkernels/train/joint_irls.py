"""Joint learning of n networks via iterative reweighted least squares, and its baselines.

Seed 001 (Zhang, Huang, Huang, Zhang, Li, "Joint learning of neural networks via
iterative reweighted least squares"). n datasets of one task, one copy of one
architecture per dataset; the networks are coupled layer by layer through a robust
norm on concatenated adjacent layers,

    min_{theta_1..theta_n} sum_i f_i(theta_i)
        + lam sum_{i<j} sum_l rho(||(theta_i^l, theta_i^{l+1}) - (theta_j^l, theta_j^{l+1})||, sigma^l)   (eqs. 1, 3, 4)

with rho(x, sigma) = sigma^2 x^2 / (sigma^2 + x^2), solved by IRLS (sec. 4.2):

1. L2-coupled initialisation (eq. 5, a case of eq. 6): every pair weight w = 1;
2. sigma^l = mean_i min_{j != i} d_l(i, j) at the initialised parameters (sec. 4.2.1);
3. IRLS: weights w_ijl = sigma_l^2 / (sigma_l^2 + d_l(i, j)^2) at the current
   parameters (eq. 7), then the weighted least squares problem eq. 8 (again eq. 6);
   stop reweighting when delta = max |w^(k) - w^(k-1)| <= 1e-2 (sec. 4.2.2);
4. eq. 6 is solved by block coordinate descent (sec. 4.2.3): network i is trained for
   one epoch on f_i(theta) + lam sum_l C_il ||theta^l - t_i^l||^2 with the others fixed,
   where C_il = sum_{j != i} c_ijl and t_i^l = sum_{j != i} c_ijl theta_j^l / C_il (eq. 9).

Every piece of arithmetic on the coupled parameters goes through the joint-IRLS ops of
:mod:`mtlkernels.ops` on the networks' flattened parameters, one row per network:
``pairwise_sq_dists`` (distances, and the differentiable distance to the eq. 9 target),
``sigma_init`` (sec. 4.2.1), ``irls_weights`` (eq. 7), ``layer_weights`` (the per-layer
c_ijl of eq. 6 from per-pair weights), ``irls_consensus`` (the eq. 9 targets) and
``robust_consistency`` (the f_cons value logged as "closs", the paper's Fig. 3).

Readings chosen where the paper is loose (each is tested):

- *Layers.* A layer is a module with parameters of its own (``nn.Linear``,
  ``nn.Conv2d``, ...), in registration order; a model may define ``irls_layers()``
  returning ``[(name, [params])]`` to choose otherwise. Layer pairs follow the ops'
  convention (:mod:`mtlkernels.ops.irls`): pair l joins layers l and l + 1, the last
  pair is the last layer alone, so there are L pairs and L sigma values.
- *Pairs and lam.* Eq. 4 and eq. 8 sum over ordered pairs (i, j), eq. 3 and eq. 5 over
  i < j; we use the i < j sum everywhere (a factor 2 absorbed in ``lam``). Network i's
  block subproblem is then exactly eq. 9 with lam in front.
- *Schedule.* ``config.epochs`` is the budget of sweeps (one epoch of every network),
  the same for every method so that the baselines are compared at equal cost. The
  first ``init_epochs`` sweeps solve eq. 5; then every ``epochs_per_iter`` sweeps (the
  paper: one epoch per iteration) a weighting step (eq. 7) starts a new IRLS iteration.
  The weights of iteration 0 are the L2 ones (w = 1), so delta^(1) = max |w^(1) - 1|.
  When delta <= tol or after ``max_irls_iters`` iterations the weights freeze and the
  remaining sweeps keep solving that last eq. 8 problem (the paper stops IRLS; it does
  not say what happens to the rest of a training budget).
- *Weight graph (Fig. 2).* At the end, the eq. 7 weights at the final parameters, per
  layer pair, as an (n, n) matrix; an edge joins i and j when each is among the other's
  ``graph_top_k`` largest weights (the paper's "3 most influential neighbours").

Baselines (sec. 5.1): :class:`Isolated` (no coupling), :class:`L2Reg` (eq. 5 for the
whole budget: the robust norm replaced by the squared L2 norm), :class:`Shareall` (one
network on the union of the datasets), :class:`PretrainFinetune` (Shareall, then each
network fine-tuned on its own dataset).

Tasks: ``config.task = "classification"`` (cross entropy, accuracy) or
``"autoencoder"`` (sec. 3: (1/|I|) sum_I ||I - G(I)||_F^2, the paper's Task II; metric
the same reconstruction error, lower is better). :class:`DigitsAutoEncoder` and
:class:`DigitsMLP` are small networks for the 8 x 8 digits.

Every trainer: a config dataclass (:class:`JointIRLSConfig`), ``fit`` with tqdm and
logging, per-task metrics (``evaluate``), checkpoints after every sweep with exact
resume, seeding, device selection, metrics as JSON, clear errors for mismatched
datasets, wrong label ranges and non-finite losses.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ._base import (Checkpointer, TrainConfig, batches, check_finite, check_images, check_labels, log, make_optimizer,
                    progress, seed_everything, write_json)

__all__ = [
    "JointIRLSConfig",
    "JointIRLSTrainer",
    "Isolated",
    "L2Reg",
    "Shareall",
    "PretrainFinetune",
    "DigitsMLP",
    "DigitsAutoEncoder",
    "irls_layers",
    "mutual_top_k_edges",
    "plot_weight_graph",
]

TASKS = ("classification", "autoencoder")


# ---- small networks ---------------------------------------------------------------------


class DigitsMLP(nn.Module):
    """A small classifier for (N, 1, 8, 8) digits: flatten - [linear - ReLU] * k - linear."""

    def __init__(self, n_out: int = 10, hidden: Sequence[int] = (64, 32), in_features: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DigitsAutoEncoder(nn.Module):
    """A small auto-encoder for (N, 1, 8, 8) images in [0, 1] (seed 001, Task II at small scale).

    Encoder 64 - hidden - code, decoder code - hidden - 64 (ReLU inside, a sigmoid on the
    output), four linear layers in all, so four layer pairs for the consistency term;
    the output has the input's shape.
    """

    def __init__(self, code: int = 16, hidden: int = 48, side: int = 8):
        super().__init__()
        d = side * side
        self.side = side
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, code), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, d), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x)).view(x.shape[0], 1, self.side, self.side)


# ---- layers and flattened parameters ------------------------------------------------------


def irls_layers(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """The layers theta^1..theta^L of seed 001 sec. 3 for ``model``.

    ``model.irls_layers()`` when defined, else every module owning trainable parameters
    (``parameters(recurse=False)``), in registration order. Every trainable parameter
    must belong to exactly one layer.
    """
    custom = getattr(model, "irls_layers", None)
    if callable(custom):
        layers = [(str(n), list(ps)) for n, ps in custom()]
    else:
        layers = []
        for name, m in model.named_modules():
            ps = [p for p in m.parameters(recurse=False) if p.requires_grad]
            if ps:
                layers.append((name or "<root>", ps))
    seen: dict[int, str] = {}
    for name, ps in layers:
        if not ps:
            raise ValueError(f"irls_layers: layer {name!r} has no parameters")
        for p in ps:
            if id(p) in seen:
                raise ValueError(f"irls_layers: a parameter appears in layers {seen[id(p)]!r} and {name!r}")
            seen[id(p)] = name
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"irls_layers: trainable parameters outside every layer: {missing}")
    if not layers:
        raise ValueError("irls_layers: the model has no trainable parameters")
    return layers


def _flat(layers) -> Tensor:
    """One network's parameters as a vector, layer by layer (differentiable)."""
    return torch.cat([p.reshape(-1) for _, ps in layers for p in ps])


# ---- config and data ----------------------------------------------------------------------


@dataclass
class JointIRLSConfig(TrainConfig):
    """Options of :class:`JointIRLSTrainer` and its baselines (seed 001).

    ``epochs`` is the budget of sweeps (one epoch of every network) shared by every
    method. Joint IRLS: ``init_epochs`` sweeps of the L2-coupled problem (eq. 5;
    ``None``: half the budget), then IRLS iterations of ``epochs_per_iter`` sweeps each
    (sec. 4.2.3: one epoch), at most ``max_irls_iters`` of them (the paper sees 4-8),
    until delta <= ``tol`` (sec. 4.2.2). PretrainFinetune: ``pretrain_epochs`` of
    Shareall (``None``: half the budget), the rest fine-tuning. ``graph_top_k``: the
    mutual-neighbour rule of Fig. 2. ``same_init``: every network starts from the same
    weights (the paper starts all of them from one ImageNet-pretrained network, sec.
    5.1; from independent random inits the consensus of eq. 9 averages unaligned hidden
    units and L2 coupling destroys them). ``metrics_path``: JSON written at the end of fit.
    """

    task: str = "classification"
    init_epochs: int | None = None
    epochs_per_iter: int = 1
    max_irls_iters: int = 8
    tol: float = 1e-2
    pretrain_epochs: int | None = None
    graph_top_k: int = 3
    same_init: bool = True
    metrics_path: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
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


@dataclass
class _Data:
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


def _as_data(d, i: int, task: str) -> _Data:
    """An ImageSplits (train / val / test), a tuple (X, y), or, for auto-encoders, X alone."""
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
        return _Data(name, X, Y, splits)
    if isinstance(d, Tensor):
        return _Data(f"dataset{i}", *_pair(d, None, task, where), {})
    if isinstance(d, (tuple, list)) and len(d) in (1, 2):
        return _Data(f"dataset{i}", *_pair(d[0], d[1] if len(d) == 2 else None, task, where), {})
    raise TypeError(f"{where}: expected an ImageSplits, a tuple (X, y) or a tensor, got {type(d).__name__}")


def _recon_error(out: Tensor, Y: Tensor) -> Tensor:
    """(1/|I|) sum_I ||I - G(I)||_F^2 (seed 001 sec. 3, auto-encoder loss)."""
    return (out - Y).square().flatten(1).sum(1).mean()


# ---- the common machinery ------------------------------------------------------------------


class _JointBase:
    """n datasets, n (or one shared) networks, sweeps, checkpoints, evaluation, JSON."""

    method = "base"
    min_datasets = 1

    def __init__(self, model_factory: Callable[[], nn.Module], datasets: Sequence, config: JointIRLSConfig | None = None,
                 lam: float = 0.0, name: str | None = None, names: Sequence[str] | None = None):
        self.config = config if config is not None else JointIRLSConfig()
        if not isinstance(self.config, JointIRLSConfig):
            raise TypeError(f"config must be a JointIRLSConfig, got {type(self.config).__name__}")
        self.config.validate()
        if not callable(model_factory):
            raise TypeError("model_factory must be a callable returning a fresh nn.Module")
        lam = float(lam)
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"lam must be a finite non-negative number, got {lam}")
        self.model_factory = model_factory
        self.lam = lam
        self.name = name or self.method
        if isinstance(datasets, (Tensor,)) or not isinstance(datasets, Sequence) or len(datasets) < self.min_datasets:
            raise ValueError(f"{self.name}: needs a sequence of at least {self.min_datasets} datasets")
        self.data = [_as_data(d, i, self.config.task) for i, d in enumerate(datasets)]
        if names is not None:
            if len(names) != len(self.data):
                raise ValueError(f"{self.name}: {len(names)} names for {len(self.data)} datasets")
            for d, nm in zip(self.data, names):
                d.name = str(nm)
        self._check_datasets(datasets)
        self.n = len(self.data)
        self.history_: list[dict] = []
        self.nets: list[nn.Module] = []
        self.weight_graph_: dict | None = None
        self.fit_seconds_ = 0.0

    # -- validation

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

    def _check_model_output(self, net: nn.Module) -> None:
        d = self.data[0]
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

    # -- pieces used by the subclasses

    def _loss(self, out: Tensor, Y: Tensor) -> Tensor:
        if self.config.task == "classification":
            return F.cross_entropy(out, Y)
        return _recon_error(out, Y)

    def _batch_seed(self, k: int) -> int:
        return int(self.config.seed) * 1009 + k

    def _epoch_on(self, k: int, X: Tensor, Y: Tensor, epoch: int, penalty: Callable[[], Tensor] | None,
                  where: str) -> dict:
        """One epoch of network k on (X, Y) minimising loss + penalty()."""
        cfg = self.config
        net, opt = self.nets[k], self.opts[k]
        net.train()
        tot = pen_tot = 0.0
        count = 0
        for step, idx in enumerate(batches(len(X), cfg.batch_size, self._batch_seed(k), epoch, self.device)):
            data = self._loss(net(X[idx]), Y[idx])
            pen = penalty() if penalty is not None else None
            loss = data + pen if pen is not None else data
            check_finite(loss, f"{self.name} {where} epoch {epoch} step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(data.detach()) * len(idx)
            pen_tot += float(pen.detach()) * len(idx) if pen is not None else 0.0
            count += len(idx)
        return {"loss": tot / max(count, 1), "penalty": pen_tot / max(count, 1)}

    def _net_for(self, i: int) -> nn.Module:
        return self.nets[i]

    @property
    def models_(self) -> list[nn.Module]:
        """The network of each dataset (Shareall: the same module n times)."""
        return [self._net_for(i) for i in range(self.n)]

    def _params_matrix(self) -> Tensor:
        """(n, P): network i's flattened parameters in row i (no grad)."""
        with torch.no_grad():
            return torch.stack([_flat(lay) for lay in self.layers])

    # -- subclass hooks

    def _n_nets(self) -> int:
        return self.n

    def _init_state(self) -> dict:
        return {}

    def _run_epoch(self, epoch: int) -> dict:
        raise NotImplementedError

    def _on_load(self) -> None:
        pass

    def _finish(self) -> None:
        pass

    def _state_for_save(self) -> dict:
        return self.state_

    # -- fit

    def _build(self) -> None:
        cfg = self.config
        self.device = torch.device(cfg.device)
        seed_everything(cfg.seed)
        self.nets = []
        for _ in range(self._n_nets()):
            net = self.model_factory()
            if not isinstance(net, nn.Module):
                raise TypeError(f"{self.name}: model_factory must return an nn.Module, got {type(net).__name__}")
            self.nets.append(net.to(self.device))
        self._check_model_output(self.nets[0])
        self.layers = [irls_layers(net) for net in self.nets]
        sizes = [sum(p.numel() for p in ps) for _, ps in self.layers[0]]
        for k, lay in enumerate(self.layers[1:], 1):
            if [sum(p.numel() for p in ps) for _, ps in lay] != sizes:
                raise ValueError(f"{self.name}: model_factory returned networks of different architectures "
                                 f"(network {k} differs from network 0)")
        if cfg.same_init:
            for net in self.nets[1:]:
                net.load_state_dict(self.nets[0].state_dict())
        self.layer_names = [n for n, _ in self.layers[0]]
        self.offsets = ops.layer_offsets(sizes)
        self.opts = [make_optimizer(net.parameters(), cfg) for net in self.nets]
        self._dev_data = [(d.X.to(self.device), d.Y.to(self.device)) for d in self.data]

    def fit(self, val: str | Sequence | None = None, max_epochs: int | None = None):
        """Train (or resume from ``config.checkpoint_path``) up to ``config.epochs`` sweeps.

        ``val``: ``"val"`` (the datasets' own validation splits) or a list with one
        (X, y) / X per dataset: per-task metrics are logged after every sweep.
        ``max_epochs``: run at most that many sweeps in this call (a later ``fit`` with
        the same config and checkpoint path resumes where it stopped).
        """
        cfg = self.config
        t0 = time.perf_counter()
        self._build()
        self.history_ = []
        self.weight_graph_ = None
        self.state_ = self._init_state()
        ckpt = Checkpointer(cfg.checkpoint_path)
        start = 0
        saved = ckpt.load()
        if saved is not None:
            self._load(saved)
            start = int(saved["epoch"])
            log.info("%s: resumed from %s at sweep %d", self.name, cfg.checkpoint_path, start)
        val_sets = self._eval_sets(val) if val is not None else None
        end = cfg.epochs if max_epochs is None else min(cfg.epochs, start + int(max_epochs))
        bar = progress(range(start, end), cfg.progress, self.name, total=end - start)
        for epoch in bar:
            record = {"epoch": epoch + 1, **self._run_epoch(epoch)}
            if val_sets is not None:
                record["val"] = self._scores(val_sets)["per_task"]
            self.history_.append(record)
            log.info("%s: %s", self.name, record)
            if cfg.progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}", phase=record.get("phase", ""))
            ckpt.save(self._checkpoint(epoch + 1))
        self.fit_seconds_ += time.perf_counter() - t0
        self.epochs_done_ = end
        if end == cfg.epochs:
            self._finish()
            if cfg.metrics_path:
                self.write_metrics(cfg.metrics_path)
        return self

    def _checkpoint(self, epoch: int) -> dict:
        return {"method": self.method, "n": self.n, "offsets": list(self.offsets),
                "nets": [net.state_dict() for net in self.nets], "opts": [o.state_dict() for o in self.opts],
                "epoch": epoch, "state": self._state_for_save(), "history": self.history_,
                "rng": Checkpointer.rng_state(), "config": asdict(self.config), "lam": self.lam}

    def _load(self, saved: dict) -> None:
        if saved.get("method") != self.method or int(saved.get("n", -1)) != self.n:
            raise ValueError(f"{self.name}: the checkpoint {self.config.checkpoint_path} belongs to "
                             f"{saved.get('method')!r} with {saved.get('n')} datasets, not {self.method!r} with {self.n}")
        if list(saved["offsets"]) != list(self.offsets):
            raise ValueError(f"{self.name}: the checkpoint's networks have a different architecture")
        self.state_ = dict(saved["state"])
        self._on_load()
        for net, sd in zip(self.nets, saved["nets"]):
            net.load_state_dict(sd)
        for opt, sd in zip(self.opts, saved["opts"]):
            opt.load_state_dict(sd)
        self.history_ = list(saved["history"])
        Checkpointer.set_rng_state(saved["rng"])

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
            dd = _as_data(d, i, self.config.task)
            if tuple(dd.X.shape[1:]) != tuple(self.data[i].X.shape[1:]):
                raise ValueError(f"{self.name}: evaluation dataset {i} has inputs of shape {tuple(dd.X.shape[1:])}, "
                                 f"the training data {tuple(self.data[i].X.shape[1:])}")
            if self.config.task == "classification" and self.nets:
                check_labels(dd.Y, self.n_classes, f"{self.name}: evaluation dataset {i}")
            out.append((dd.X, dd.Y))
        return out

    @torch.no_grad()
    def predict(self, i: int, X: Tensor) -> Tensor:
        """Outputs of dataset i's network on X (scores, or reconstructions)."""
        if not self.nets:
            raise RuntimeError(f"{self.name}: call fit first")
        net = self._net_for(i)
        was = net.training
        net.eval()
        outs = [net(X[a:a + 1024].to(self.device)) for a in range(0, len(X), 1024)]
        net.train(was)
        return torch.cat(outs).cpu()

    def _scores(self, sets) -> dict:
        per = []
        for i, (X, Y) in enumerate(sets):
            out = self.predict(i, X)
            if self.config.task == "classification":
                per.append(float((out.argmax(1) == Y.cpu()).double().mean()))
            else:
                per.append(float(_recon_error(out.double(), Y.cpu().double())))
        return {"per_task": per, "mean": sum(per) / len(per)}

    def evaluate(self, data: str | Sequence = "test") -> dict:
        """Per-task metrics: accuracy (classification) or reconstruction error
        (1/|I|) sum ||I - G(I)||_F^2 (auto-encoders, lower is better)."""
        sets = self._eval_sets(data)
        res = self._scores(sets)
        return {"method": self.method, "metric": "accuracy" if self.config.task == "classification" else "recon_error",
                "tasks": [d.name for d in self.data], **res}

    def metrics(self) -> dict:
        """Everything worth keeping about a run, JSON-ready."""
        out = {"method": self.method, "name": self.name, "lam": self.lam, "config": asdict(self.config),
               "datasets": [d.name for d in self.data], "layers": getattr(self, "layer_names", None),
               "history": self.history_, "fit_seconds": self.fit_seconds_}
        if all(d.splits for d in self.data) and self.nets:
            out["evaluation"] = {s: self.evaluate(s) for s in ("val", "test") if all(s in d.splits for d in self.data)}
        if self.weight_graph_ is not None:
            out["weight_graph"] = self.weight_graph_
        return out

    def write_metrics(self, path) -> None:
        write_json(path, self.metrics())


# ---- the baselines and the method -------------------------------------------------------------


class Isolated(_JointBase):
    """Baseline I of seed 001 sec. 5.1: each network trained on its own dataset alone."""

    method = "isolated"

    def _run_epoch(self, epoch: int) -> dict:
        recs = [self._epoch_on(i, *self._dev_data[i], epoch, None, f"network {i}") for i in range(self.n)]
        return {"phase": "isolated", "loss": sum(r["loss"] for r in recs) / self.n,
                "task_loss": [r["loss"] for r in recs]}


class Shareall(_JointBase):
    """Baseline III of seed 001 sec. 5.1: one network shared by all datasets.

    Trained on the union of the training sets, batches drawn from the union: with
    datasets of equal size the loss is (1/n) sum_i f_i (eq. 1 up to the factor 1/n).
    """

    method = "shareall"

    def _n_nets(self) -> int:
        return 1

    def _net_for(self, i: int) -> nn.Module:
        return self.nets[0]

    def _build(self) -> None:
        super()._build()
        Xs, Ys = zip(*self._dev_data)
        self._union = (torch.cat(Xs), torch.cat(Ys))

    def _run_epoch(self, epoch: int) -> dict:
        r = self._epoch_on(0, *self._union, epoch, None, "shared network")
        return {"phase": "shareall", "loss": r["loss"]}


class PretrainFinetune(_JointBase):
    """Baseline IV of seed 001 sec. 5.1: Shareall for ``pretrain_epochs`` sweeps, then each
    network starts from the shared weights and is fine-tuned on its own dataset alone
    (fresh optimisers) for the rest of the budget."""

    method = "pretrain_finetune"

    def _pretrain_epochs(self) -> int:
        p = self.config.pretrain_epochs
        return self.config.epochs // 2 if p is None else min(p, self.config.epochs)

    def _init_state(self) -> dict:
        self._union = (torch.cat([x for x, _ in self._dev_data]), torch.cat([y for _, y in self._dev_data]))
        st = {"phase": "pretrain"}
        if self._pretrain_epochs() == 0:
            self._switch(st)
        return st

    def _net_for(self, i: int) -> nn.Module:
        return self.nets[0] if self.state_.get("phase") == "pretrain" else self.nets[i]

    def _switch(self, st: dict) -> None:
        sd = self.nets[0].state_dict()
        for net in self.nets[1:]:
            net.load_state_dict(sd)
        self.opts = [make_optimizer(net.parameters(), self.config) for net in self.nets]
        st["phase"] = "finetune"

    def _run_epoch(self, epoch: int) -> dict:
        st = self.state_
        if st["phase"] == "pretrain":
            r = self._epoch_on(0, *self._union, epoch, None, "pretraining")
            out = {"phase": "pretrain", "loss": r["loss"]}
            if epoch + 1 >= self._pretrain_epochs():
                self._switch(st)
            return out
        recs = [self._epoch_on(i, *self._dev_data[i], epoch, None, f"fine-tuning network {i}") for i in range(self.n)]
        return {"phase": "finetune", "loss": sum(r["loss"] for r in recs) / self.n, "task_loss": [r["loss"] for r in recs]}


class JointIRLSTrainer(_JointBase):
    """Joint learning of n networks via IRLS (seed 001, eqs. 3-9; see the module docstring).

    Args:
        model_factory: a callable returning a fresh network (one architecture for all).
        datasets: n >= 2 datasets of one task: ``ImageSplits`` (train / val / test), tuples
            (X, y), or for auto-encoders image tensors X (the target is X) or (X_in, X_out).
        lam: the weight of the consistency term (eq. 4; the paper uses 10 for networks of
            millions of parameters: the scale of the squared distances depends on the
            network, so tune it). Sums run over i < j.
        config: :class:`JointIRLSConfig`.
        name, names: the trainer's name (logs) and the datasets' names (metrics, Fig. 2);
            by default ImageSplits' own names, else "dataset<i>".

    After ``fit``: ``sigma_`` (sec. 4.2.1, one per layer pair), ``weights_`` (the last
    IRLS weights, (L, n, n)), ``irls_iters_``, ``converged_`` (delta <= tol reached),
    ``weight_graph_`` (Fig. 2 as data, :meth:`plot_weight_graph` for the PNG),
    ``history_`` (per sweep: phase, data loss, coupling penalty, closs = f_cons of eq. 3,
    delta at weighting steps, validation metrics).
    """

    method = "joint_irls"
    min_datasets = 2
    robust = True

    def __init__(self, model_factory: Callable[[], nn.Module], datasets: Sequence, lam: float = 10.0,
                 config: JointIRLSConfig | None = None, name: str | None = None, names: Sequence[str] | None = None):
        super().__init__(model_factory, datasets, config, lam=lam, name=name, names=names)

    def _init_epochs(self) -> int:
        cfg = self.config
        if not self.robust:
            return cfg.epochs
        return cfg.epochs // 2 if cfg.init_epochs is None else min(cfg.init_epochs, cfg.epochs)

    # -- state: phase in {"init", "irls", "frozen"}; c (L, n, n) per-layer coefficients of eq. 6

    def _l2_pair_weights(self) -> Tensor:
        L = len(self.offsets) - 1
        return torch.ones(L, self.n, self.n, device=self.device)

    def _init_state(self) -> dict:
        st = {"phase": "init", "k": 0, "sweeps_in_iter": 0, "converged": False, "sigma": None,
              "w": self._l2_pair_weights(), "c": ops.layer_weights(self._l2_pair_weights())}
        self.state_ = st
        if self._init_epochs() == 0 and self.robust:
            self._weighting(st)
        return st

    def _on_load(self) -> None:
        for key in ("w", "c", "sigma"):
            if isinstance(self.state_.get(key), Tensor):
                self.state_[key] = self.state_[key].to(self.device)

    def _weighting(self, st: dict) -> dict:
        """One weighting step of IRLS (eq. 7) at the current parameters; sigma (sec. 4.2.1)
        is set at the first one, from the L2-initialised parameters."""
        P = self._params_matrix()
        D = ops.pairwise_sq_dists(P, self.offsets)
        if st["sigma"] is None:
            st["sigma"] = ops.sigma_init(D)
        if st["k"] >= self.config.max_irls_iters:
            st["phase"] = "frozen"
            return {}
        w, _ = ops.irls_weights(D, st["sigma"])
        iu = torch.triu_indices(self.n, self.n, 1, device=w.device)
        delta = float((w - st["w"])[:, iu[0], iu[1]].abs().max())
        st["k"] += 1
        st["w"], st["c"] = w, ops.layer_weights(w)
        st["phase"] = "irls"
        st["sweeps_in_iter"] = 0
        if delta <= self.config.tol:
            st["converged"] = True
            st["phase"] = "frozen"
        log.info("%s: IRLS iteration %d, delta %.4g%s", self.name, st["k"], delta,
                 " (converged)" if st["converged"] else "")
        return {"irls_iter": st["k"], "delta": delta}

    def _coupling(self, i: int, c: Tensor) -> Callable[[], Tensor] | None:
        """Network i's block subproblem (eq. 9): lam sum_l C_il ||theta^l - t_i^l||^2 with the
        other networks fixed at their current parameters."""
        if self.lam == 0:
            return None
        P = self._params_matrix()
        target = ops.irls_consensus(c, P, self.offsets)[i].detach()
        C = c[:, i, :].sum(-1) - c[:, i, i]  # (L,): sum_{j != i} c_ijl
        layers = self.layers[i]
        lam, offsets = self.lam, self.offsets

        def penalty() -> Tensor:
            D = ops.pairwise_sq_dists(torch.stack([_flat(layers), target]), offsets)[:, 0, 1]
            return lam * (C.to(D.dtype) * D).sum()

        return penalty

    def _closs(self, st: dict) -> float:
        """f_cons of eq. 3 at the current parameters (sigma = inf before sigma is set: the L2 sum)."""
        P = self._params_matrix()
        sigma = st["sigma"] if st["sigma"] is not None and self.robust else math.inf
        return float(ops.robust_consistency(P, self.offsets, sigma=sigma))

    def _run_epoch(self, epoch: int) -> dict:
        st = self.state_
        phase = st["phase"]
        recs = []
        for i in range(self.n):  # block coordinate descent: one network at a time (sec. 4.2.3)
            recs.append(self._epoch_on(i, *self._dev_data[i], epoch, self._coupling(i, st["c"]), f"network {i}"))
        out = {"phase": phase if self.robust else "l2", "loss": sum(r["loss"] for r in recs) / self.n,
               "task_loss": [r["loss"] for r in recs], "penalty": sum(r["penalty"] for r in recs)}
        if self.robust:
            if phase == "init" and epoch + 1 >= self._init_epochs():
                out.update(self._weighting(st))
            elif phase == "irls":
                st["sweeps_in_iter"] += 1
                if st["sweeps_in_iter"] >= self.config.epochs_per_iter:
                    out.update(self._weighting(st))
        out["closs"] = self._closs(st)
        return out

    def _finish(self) -> None:
        st = self.state_
        self.sigma_ = st["sigma"]
        self.weights_ = st["w"]
        self.irls_iters_ = st["k"]
        self.converged_ = bool(st["converged"])
        if self.robust:
            self.weight_graph_ = self.weight_graph()

    def weight_graph(self, top_k: int | None = None) -> dict:
        """The per-layer weight graph of seed 001 Fig. 2, as data.

        For each layer pair l (layers l and l + 1; the last layer alone): the eq. 7
        weights w_ijl at the current parameters, the pair distances d_l(i, j), and the
        edges {i, j} where i and j are each among the other's ``top_k`` largest weights.
        """
        st = self.state_
        P = self._params_matrix()
        D = ops.pairwise_sq_dists(P, self.offsets)
        sigma = st["sigma"] if st["sigma"] is not None else ops.sigma_init(D)
        w, _ = ops.irls_weights(D, sigma)
        d = ops.layer_pair_sq_dists(D).clamp_min(0).sqrt()
        k = min(top_k or self.config.graph_top_k, self.n - 1)
        w_cpu = w.detach().double().cpu()
        edges = [mutual_top_k_edges(w_cpu[l], k) for l in range(w_cpu.shape[0])]
        names = self.layer_names
        pairs = [f"{names[l]}+{names[l + 1]}" if l + 1 < len(names) else names[l] for l in range(len(names))]
        return {"datasets": [d_.name for d_ in self.data], "layer_pairs": pairs, "top_k": k,
                "sigma": [float(s) for s in torch.as_tensor(sigma).reshape(-1).expand(len(names)).tolist()],
                "weights": w_cpu.tolist(), "distances": d.double().cpu().tolist(), "edges": edges,
                "irls_iters": int(st["k"]), "converged": bool(st["converged"])}

    def plot_weight_graph(self, path, title: str | None = None) -> str:
        """Write the Fig. 2 graph of :meth:`weight_graph` as a PNG; returns the path."""
        graph = self.weight_graph_ if self.weight_graph_ is not None else self.weight_graph()
        return plot_weight_graph(graph, path, title=title or f"{self.name}: IRLS weights per layer pair (Fig. 2)")


class L2Reg(JointIRLSTrainer):
    """Baseline II of seed 001 sec. 5.1: the robust norm replaced by the squared L2 norm,
    i.e. eq. 5 (every pair weight 1) for the whole budget, by the same block coordinate
    descent towards the eq. 9 consensus."""

    method = "l2reg"
    robust = False


def mutual_top_k_edges(w: Tensor, k: int) -> list[list[int]]:
    """Edges {i, j} (i < j) of seed 001 Fig. 2: i is among j's k largest weights w_j. and j
    among i's (the diagonal is ignored; ties go to the lower index)."""
    n = w.shape[0]
    m = w.detach().double().cpu().clone()
    m.fill_diagonal_(-math.inf)
    k = max(0, min(int(k), n - 1))
    top = [set(torch.argsort(m[i], descending=True, stable=True)[:k].tolist()) for i in range(n)]
    return [[i, j] for i in range(n) for j in range(i + 1, n) if j in top[i] and i in top[j]]


# ---- Fig. 2 as a picture --------------------------------------------------------------------------


def plot_weight_graph(graph: dict, path, title: str | None = None) -> str:
    """Seed 001 Fig. 2 from :meth:`JointIRLSTrainer.weight_graph` data: per layer pair, the
    datasets on a circle with an edge of width proportional to w_ij (mutual top-k edges
    drawn dark), and below it the (n, n) weight matrix. Written with matplotlib (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    W = np.asarray(graph["weights"], dtype=float)
    names = list(graph["datasets"])
    L, n = W.shape[0], W.shape[1]
    fig, axes = plt.subplots(2, L, figsize=(3.2 * L, 6.4), squeeze=False)
    ang = np.pi / 2 - 2 * np.pi * np.arange(n) / n
    xy = np.stack([np.cos(ang), np.sin(ang)], 1)
    for l in range(L):
        ax = axes[0, l]
        strong = {tuple(e) for e in graph["edges"][l]}
        for i in range(n):
            for j in range(i + 1, n):
                w = W[l, i, j]
                mutual = (i, j) in strong
                ax.plot(*xy[[i, j]].T, color="tab:blue" if mutual else "0.75", lw=0.5 + 5 * w,
                        alpha=0.9 if mutual else 0.6, zorder=1)
        ax.scatter(*xy.T, s=260, color="tab:orange", zorder=2)
        for i in range(n):
            ax.annotate(str(i), xy[i], ha="center", va="center", fontsize=9, zorder=3)
            ax.annotate(names[i], 1.28 * xy[i], ha="center", va="center", fontsize=8)
        ax.set_xlim(-1.7, 1.7)
        ax.set_ylim(-1.5, 1.5)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"{graph['layer_pairs'][l]}\nsigma={graph['sigma'][l]:.3g}", fontsize=9)
        hm = axes[1, l]
        im = hm.imshow(W[l], vmin=0, vmax=1, cmap="viridis")
        hm.set_xticks(range(n))
        hm.set_yticks(range(n))
        hm.set_xticklabels([s[:4] for s in names], fontsize=7, rotation=90)
        hm.set_yticklabels([s[:4] for s in names], fontsize=7)
        for i in range(n):
            for j in range(n):
                if i != j:
                    hm.text(j, i, f"{W[l, i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="w" if W[l, i, j] < 0.6 else "k")
    fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.8, label="w_ij (eq. 7)")
    if title:
        fig.suptitle(title, fontsize=10)
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path)
