"""Joint learning of n networks via iterative reweighted least squares (Zhang, Huang,
Huang, Zhang and Li 2019, joint IRLS) and its L2Reg baseline. n datasets of one task, one copy of one
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
``sigma_init`` (sec. 4.2.1), ``irls_weights`` (eq. 7, and the rho values of eq. 3 whose
sum over i < j is the f_cons logged as "closs", the paper's Fig. 3), ``layer_weights``
(the per-layer c_ijl of eq. 6 from per-pair weights) and ``irls_consensus`` (the eq. 9
targets); distances and targets come from :class:`~mtlkernels.train.joint_exchange.ParamExchange`,
which runs the same ops on a column block of every network in each rank.

Readings chosen where the paper is loose (each is tested):

- *Layers.* A layer is a module with parameters of its own (``nn.Linear``,
  ``nn.Conv2d``, ...), in registration order; a model may define ``irls_layers()``
  returning ``[(name, [params])]`` to choose otherwise. Layer pairs follow the ops'
  convention (:mod:`mtlkernels.ops.irls`): pair l joins layers l and l + 1, and the
  ops' L-th pair is the last layer alone. By default (``last_layer_term=False``) that
  pair is switched off (its weight and sigma are 0), so the objective is eq. 3 exactly:
  L - 1 adjacent pairs; ``last_layer_term=True`` keeps it (L pairs).
- *Normalisation* (``normalize``, default on): pair l's term is divided by its number of
  parameters P_l, so lam weighs mean squared differences per parameter and one grid of
  lam serves every network (the paper's lam = 10 is on it). The eq. 7 weights are
  unchanged; the eq. 6 coefficients become c_ijl = w_ijl / P_l + w_ij(l-1) / P_(l-1).
- *L2 initialisation.* Eq. 5 is solved until the relative change of its objective over a
  sweep is <= ``init_tol`` or for at most ``init_epochs`` sweeps (the paper gives no
  stop rule for it; "the standard practice in IRLS" is to start from the L2 solution).
- *Pairs and lam.* Eq. 4 and eq. 8 sum over ordered pairs (i, j), eq. 3 and eq. 5 over
  i < j; we use the i < j sum everywhere (a factor 2 absorbed in ``lam``). Network i's
  block subproblem is then exactly eq. 9 with lam in front.
- *Schedule.* ``config.epochs`` is the budget of sweeps (one epoch of every network),
  the same for every method so that the baselines are compared at equal cost. The
  first sweeps solve eq. 5 (see above); then every ``epochs_per_iter`` sweeps (the
  paper: one epoch per iteration) a weighting step (eq. 7) starts a new IRLS iteration.
  The weights of iteration 0 are the L2 ones (w = 1), so delta^(1) = max |w^(1) - 1|.
  When delta <= tol or after ``max_irls_iters`` iterations the weights freeze and the
  remaining sweeps keep solving that last eq. 8 problem (the paper stops IRLS; it does
  not say what happens to the rest of a training budget).
- *Schedules* (``config.schedule``). ``"gauss_seidel"`` is the paper's block coordinate
  descent: network i trains against the eq. 9 targets of the others' newest parameters,
  those trained earlier in the sweep included. ``"jacobi"`` computes every network's
  targets once, at the start of the sweep, so the networks of a sweep are independent:
  the schedule of a run across processes (one or k networks per rank under ``torchrun``,
  :mod:`mtlkernels.train.joint_exchange` for what the ranks send), and in one process the
  same parameters as that run, within float tolerance.
- *Weight graph (Fig. 2).* At the end, the eq. 7 weights at the final parameters, per
  layer pair, as an (n, n) matrix; an edge joins i and j when each is among the other's
  ``graph_top_k`` largest weights (the paper's "3 most influential neighbours").

The other baselines (Isolated, Shareall, PretrainFinetune) and the n-network machinery
are in :mod:`mtlkernels.train.joint`; the networks for the digits are in
:mod:`mtlkernels.nn.digits`; Fig. 2 is drawn by :func:`mtlkernels.plots.weight_graph_figure`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from torch import nn

from .. import ops
from .joint import JointTrainer
from .joint_exchange import ParamExchange
from .trainer import log

__all__ = ["IRLSState", "JointIRLSTrainer", "L2Reg", "irls_layers", "flat_params", "mutual_top_k_edges"]


def irls_layers(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """The layers theta^1..theta^L of Zhang et al. 2019 sec. 3 for ``model``.

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


def flat_params(layers) -> Tensor:
    """One network's parameters as a vector, layer by layer (differentiable)."""
    return torch.cat([p.reshape(-1) for _, ps in layers for p in ps])


@dataclass
class IRLSState:
    """Where a joint IRLS run stands (checkpointed with the networks).

    ``phase``: "init" (eq. 5, every pair weight 1), "irls" (an eq. 8 problem with the
    weights of iteration ``k``) or "frozen" (the weights stopped changing: delta <= tol,
    or ``max_irls_iters`` reached); ``sweeps_in_iter``: sweeps done in the current IRLS
    iteration; ``sigma`` (L,): sec. 4.2.1, set at the first weighting step; ``w`` (L, n, n):
    the eq. 7 pair weights of the current problem; ``c`` (L, n, n): the per-layer
    coefficients of eq. 6 they give (``ops.layer_weights``); ``converged_at``: the number
    of sweeps after which delta <= tol was reached; ``delta``: that of the last weighting;
    ``init_obj``: the eq. 5 objective of the last initialisation sweep (its stop test).
    """

    w: Tensor
    c: Tensor
    phase: str = "init"
    k: int = 0
    sweeps_in_iter: int = 0
    converged: bool = False
    sigma: Tensor | None = None
    converged_at: int | None = None
    delta: float = math.nan
    init_obj: float = math.nan

    def state_dict(self) -> dict:
        return {"w": self.w, "c": self.c, "phase": self.phase, "k": self.k, "sweeps_in_iter": self.sweeps_in_iter,
                "converged": self.converged, "sigma": self.sigma, "converged_at": self.converged_at,
                "delta": self.delta, "init_obj": self.init_obj}

    @classmethod
    def from_state_dict(cls, d: dict, device) -> "IRLSState":
        move = lambda t: t.to(device) if isinstance(t, Tensor) else t  # noqa: E731
        return cls(**{k: move(v) for k, v in d.items()})


class JointIRLSTrainer(JointTrainer):
    """Joint learning of n networks via IRLS (eqs. 3-9; see the module docstring).

    ``JointIRLSTrainer(model_factory, config).fit(datasets, val=None, *, names=None)``:
    the factory returns a fresh network (one architecture for all); ``datasets``: n >= 2
    datasets of one task (``ImageSplits``, tuples (X, y), or for auto-encoders image
    tensors X or pairs (X_in, X_out)); ``config.lam`` weighs the consistency term (sums
    over i < j).

    A ``ConvergenceWarning`` says when reweighting stopped before delta <= tol (the cap
    ``max_irls_iters`` or the sweep budget).

    After ``fit``: ``sigma_`` (sec. 4.2.1, one per layer pair), ``weights_`` (the last
    IRLS weights, (L, n, n)), ``irls_iters_``, ``converged_`` (delta <= tol reached),
    ``converged_sweep_`` (the sweeps it took, or None),
    ``weight_graph_`` (Fig. 2 as data), ``state_`` (:class:`IRLSState`), ``history_``
    (per sweep: phase, data loss, coupling penalty, closs = f_cons of eq. 3, delta at
    weighting steps, validation metrics).
    """

    method = "joint_irls"
    min_datasets = 2
    robust = True
    coupled = True

    def _init_epochs(self) -> int:
        cfg = self.config
        if not self.robust:
            return cfg.epochs
        return cfg.epochs // 2 if cfg.init_epochs is None else min(cfg.init_epochs, cfg.epochs)

    def fingerprint_extra(self) -> dict:
        return {**super().fingerprint_extra(), "init_epochs": self._init_epochs()}

    def setup(self) -> None:
        super().setup()
        self.layers = [irls_layers(net) for net in self.nets]
        self.layer_names = [n for n, _ in self.layers[0]]
        self.offsets = ops.layer_offsets([sum(p.numel() for p in ps) for _, ps in self.layers[0]])
        self.exchange = ParamExchange(self.comm, [len(r) for r in self.placement], self.offsets)
        self._stale = True
        L, cfg = len(self.offsets) - 1, self.config
        sizes = torch.tensor([self.offsets[l + 1] - self.offsets[l] for l in range(L)], dtype=torch.float64)
        pair_sizes = sizes.clone()
        pair_sizes[:-1] += sizes[1:]
        active = torch.ones(L, dtype=torch.float64)
        if not cfg.last_layer_term and L > 1:
            active[-1] = 0.0  # eq. 3: L - 1 adjacent pairs, no term for the last layer alone
        self.active_pairs = active.to(self.device)
        #: the factor on each layer pair's term: 1 / P_l (normalize) or 1, and 0 for a pair switched off
        self.pair_scale = (active / (pair_sizes if cfg.normalize else 1.0)).to(self.device)
        self.layer_mask = torch.ones(L, dtype=torch.float64, device=self.device)
        if not self.robust and cfg.shared_fraction is not None:  # L2Reg(25%), L2Reg(50%): the first layers only
            self.layer_mask[max(1, round(cfg.shared_fraction * L)):] = 0.0
        ones = torch.ones(L, self.n, self.n, device=self.device) * self.active_pairs.view(-1, 1, 1).float()
        self.state_ = IRLSState(w=ones, c=self._coeffs(ones))
        self.weight_graph_ = None
        if self._init_epochs() == 0 and self.robust:
            with self.comm.guard("the first weighting step"):
                self._weighting(0)

    def _coeffs(self, w: Tensor) -> Tensor:
        """The per-layer c_ijl of eq. 6 from per-pair weights w_ijl: ``ops.layer_weights`` of
        w times the pair scale (normalisation, pairs switched off), times the layer mask."""
        scale = self.pair_scale.to(w.dtype).view(-1, 1, 1)
        return ops.layer_weights(w * scale) * self.layer_mask.to(w.dtype).view(-1, 1, 1)

    def extra_state(self) -> dict:
        return {"irls": self.state_.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.state_ = IRLSState.from_state_dict(state["irls"], self.device)
        self._stale = True

    def _weighting(self, sweeps: int) -> dict:
        """One weighting step of IRLS (eq. 7) at the current parameters, after ``sweeps``
        sweeps; sigma (sec. 4.2.1) is set at the first one, from the L2-initialised parameters."""
        st = self.state_
        D = self._shared().sq_dists()
        if st.sigma is None:
            st.sigma = ops.sigma_init(D) * (self.active_pairs.to(D.dtype) > 0)  # sigma = 0: the pair is off
        if st.k >= self.config.max_irls_iters:
            st.phase = "frozen"
            return {}
        w, _ = ops.irls_weights(D, st.sigma)
        iu = torch.triu_indices(self.n, self.n, 1, device=w.device)
        delta = float((w - st.w)[:, iu[0], iu[1]].abs().max())
        st.k += 1
        st.w, st.c, st.delta = w, self._coeffs(w), delta
        st.phase = "irls"
        st.sweeps_in_iter = 0
        if delta <= self.config.tol:
            st.converged, st.converged_at = True, sweeps
            st.phase = "frozen"
        log.info("%s: IRLS iteration %d, delta %.4g%s", self.name, st.k, delta, " (converged)" if st.converged else "")
        return {"irls_iter": st.k, "delta": delta}

    def _params_matrix(self) -> Tensor:
        """(n_local, P): the flattened parameters of this rank's networks, one per row (no grad)."""
        with torch.no_grad():
            return torch.stack([flat_params(lay) for lay in self.layers])

    def _shared(self) -> ParamExchange:
        """The exchange, holding every network's current parameters (shared again when stale)."""
        if self._stale:
            self.comm.mark(self.comm.stage.split(":")[0] + ": exchanging parameters")
            self.exchange.share(self._params_matrix())
            self._stale = False
        return self.exchange

    def _coupling(self, i: int, c: Tensor, target: Tensor | None = None) -> Callable[[], Tensor] | None:
        """The block subproblem (eq. 9) of this rank's i-th network: lam sum_l C_il
        ||theta^l - t_i^l||^2 towards ``target`` (default: the eq. 9 targets of the other
        networks' current parameters)."""
        lam = float(self.config.lam)
        if lam == 0:
            return None
        if target is None:
            target = self._shared().targets(c)[i]
        target = target.detach()
        k = self.local_[i]
        C = c[:, k, :].sum(-1) - c[:, k, k]  # (L,): sum_{j != k} c_kjl
        layers, offsets = self.layers[i], self.offsets

        def penalty() -> Tensor:
            D = ops.pairwise_sq_dists(torch.stack([flat_params(layers), target]), offsets)[:, 0, 1]
            return lam * (C.to(D.dtype) * D).sum()

        return penalty

    def _closs(self) -> float:
        """f_cons of eq. 3 at the current parameters, sum_l sum_{i<j} rho (sigma = inf before
        sigma is set: the L2 sum)."""
        st = self.state_
        sigma = st.sigma if st.sigma is not None and self.robust else math.inf
        _, rho = ops.irls_weights(self._shared().sq_dists(), sigma)
        iu = torch.triu_indices(self.n, self.n, 1, device=rho.device)
        scale = self.pair_scale.to(rho.dtype)  # eq. 3's pairs, each over its P_l when normalised
        return float((rho[:, iu[0], iu[1]] * scale[:, None]).sum())

    def _run_epoch(self, epoch: int) -> dict:
        st = self.state_
        phase = st.phase
        jacobi = self.config.schedule == "jacobi" and self.config.lam != 0
        targets = self._shared().targets(st.c) if jacobi else None  # the sweep's start, for every network
        recs = []
        for i, k in enumerate(self.local_):  # block coordinate descent: one network at a time (sec. 4.2.3)
            penalty = self._coupling(i, st.c, None if targets is None else targets[i])
            recs.append(self._epoch_on(i, *self._dev_data[i], epoch, penalty, f"network {k}"))
            self._stale = True
        g = self._per_network({"loss": [r["loss"] for r in recs], "penalty": [r["penalty"] for r in recs]})
        out = {"phase": phase if self.robust else "l2", "loss": sum(g["loss"]) / self.n, "task_loss": g["loss"],
               "penalty": sum(g["penalty"])}
        if self.robust:
            obj = sum(g["loss"]) + out["penalty"]  # eq. 5 (data terms + this sweep's coupling penalty)
            change = abs(obj - st.init_obj) / max(abs(st.init_obj), 1e-12) if math.isfinite(st.init_obj) else math.inf
            if phase == "init":
                st.init_obj = obj
            if phase == "init" and (epoch + 1 >= self._init_epochs() or change <= self.config.init_tol):
                out["init_change"] = change
                out.update(self._weighting(epoch + 1))
            elif phase == "irls":
                st.sweeps_in_iter += 1
                if st.sweeps_in_iter >= self.config.epochs_per_iter:
                    out.update(self._weighting(epoch + 1))
        out["closs"] = self._closs()
        return out

    def finish(self) -> None:
        st = self.state_
        self.sigma_ = st.sigma
        self.weights_ = st.w
        self.irls_iters_ = st.k
        self.converged_ = bool(st.converged)
        self.converged_sweep_ = st.converged_at
        if self.robust:
            self.weight_graph_ = self.weight_graph()
            if st.k >= 1 and not st.converged:
                why = (f"after max_irls_iters={self.config.max_irls_iters} weighting steps"
                       if st.k >= self.config.max_irls_iters else
                       f"when the budget of epochs={self.config.epochs} sweeps ran out, after {st.k} weighting steps")
                self.fit_warnings.append(f"{self.name}: IRLS stopped {why} with delta = {st.delta:.3g} > tol = "
                                         f"{self.config.tol:g} (Zhang et al. 2019, sec. 4.2.2); raise max_irls_iters "
                                         "or epochs, or tol")

    def metrics(self) -> dict:
        out = super().metrics()
        if self.weight_graph_ is not None:
            out["weight_graph"] = self.weight_graph_
        return out

    def weight_graph(self, top_k: int | None = None) -> dict:
        """The per-layer weight graph of Fig. 2, as data.

        For each layer pair l of the objective (layers l and l + 1; the last layer alone
        only with ``last_layer_term``): the eq. 7
        weights w_ijl at the current parameters, the pair distances d_l(i, j), and the
        edges {i, j} where i and j are each among the other's ``top_k`` largest weights.
        Draw it with :func:`mtlkernels.plots.weight_graph_figure`.
        """
        st = self.state_
        D = self._shared().sq_dists()
        sigma = st.sigma if st.sigma is not None else ops.sigma_init(D)
        w, _ = ops.irls_weights(D, sigma)
        d = ops.layer_pair_sq_dists(D).clamp_min(0).sqrt()
        k = min(top_k or self.config.graph_top_k, self.n - 1)
        keep = [l for l in range(w.shape[0]) if float(self.active_pairs[l]) > 0]  # the pairs of the objective
        w_cpu = w.detach().double().cpu()[keep]
        edges = [mutual_top_k_edges(w_cpu[a], k) for a in range(len(keep))]
        names = self.layer_names
        pairs = [f"{names[l]}+{names[l + 1]}" if l + 1 < len(names) else names[l] for l in keep]
        sig = torch.as_tensor(sigma).reshape(-1).expand(len(names)).tolist()
        return {"datasets": [m["name"] for m in self.meta], "layer_pairs": pairs, "top_k": k,
                "sigma": [float(sig[l]) for l in keep],
                "weights": w_cpu.tolist(), "distances": d.double().cpu()[keep].tolist(), "edges": edges,
                "irls_iters": int(st.k), "converged": bool(st.converged)}


class L2Reg(JointIRLSTrainer):
    """Baseline II of Zhang et al. 2019 sec. 5.1: the robust norm replaced by the squared L2
    norm, i.e. eq. 5 (every pair weight 1) for the whole budget, by the same block
    coordinate descent towards the eq. 9 consensus. With ``config.shared_fraction`` only
    the first layers are coupled: the L2Reg(25%) and L2Reg(50%) baselines of Table 4."""

    method = "l2reg"
    robust = False


def mutual_top_k_edges(w: Tensor, k: int) -> list[list[int]]:
    """Edges {i, j} (i < j) of Zhang et al. 2019 Fig. 2: i is among j's k largest weights
    w_j. and j among i's (the diagonal is ignored; ties go to the lower index)."""
    n = w.shape[0]
    m = w.detach().double().cpu().clone()
    m.fill_diagonal_(-math.inf)
    k = max(0, min(int(k), n - 1))
    top = [set(torch.argsort(m[i], descending=True, stable=True)[:k].tolist()) for i in range(n)]
    return [[i, j] for i in range(n) for j in range(i + 1, n) if j in top[i] and i in top[j]]
