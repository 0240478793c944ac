"""The CETL trainer (seed 002: coupled end-to-end transfer learning) and its baselines.

Networks (sec. 3.1, Fig. 1): a pre-trained source network S (frozen, never updated and
never given the source data again, except as labelled data in the domain-adaptation
variant), a decoder T1 and a target network T2. Losses, with mean squared errors for
the squared norms (per pixel and sample) and the mean cross entropy:

- eq. 2  ``L_r^s  = |T1(code_S(x)) - x|^2``                      (stage 1, updates T1)
- eq. 5  ``L_r^t  = |T1(code_T2(x)) - T1(code_S(x))|^2``         (stage 2, updates T1 and T2)
- eq. 4  ``L_c^t  = CE(T2(x), y)``                                (stage 3, updates T2)
- eq. 6  ``L_coupled = l1 L_r^s + l2 L_c^t + l3 L_r^t``

In ``L_r^t`` the target ``T1(code_S(x))`` is recons1 of Algorithm 1 (line 13,
"reconstruct recons1"): computed at the end of stage 1 and held fixed (no gradient), so
that T1 cannot satisfy eq. 5 by collapsing both reconstructions onto each other.

``schedule="staged"`` (default) is Algorithm 1: each round runs stage 1 (T1 on
l1 L_r^s + DWA2), stage 2 (T1 and T2 on l3 L_r^t + DWA1 on T1) and stage 3 (T2 on
l2 L_c^t + DWA3), each for ``stage_epochs`` passes; GFI1 (T1, after stage 1), GFI2 (T1,
after stage 2) and GFI3 (T2, after stage 2) are computed from the diagonal Fisher and the
relative Fisher of the two tasks sharing those weights (eqs. 7-10):

=======  ========  =======================  ==============  ===================
GFI      weights   Fisher of (kept task)    RF against      used as, in
=======  ========  =======================  ==============  ===================
GFI1     T1        L_r^s (end of stage 1)   L_r^t           DWA1, stage 2
GFI2     T1        L_r^t (end of stage 2)   L_r^s           DWA2, next stage 1
GFI3     T2        L_r^t (end of stage 2)   L_c^t           DWA3, stage 3
=======  ========  =======================  ==============  ===================

and each DWA_k = sum_i lam/2 GFI_k,i (theta_i - theta*_i)^2 (eq. 11) is computed by
:func:`mtlkernels.ops.dwa_penalty`, theta* being the weights at the end of the stage that
produced GFI_k. A round is one "goto top" of Algorithm 1; ``config.epochs`` counts
rounds, and ``tol`` stops early when the three losses have converged (line 20).
``schedule="joint"`` minimises eq. 6 end to end with one optimiser (no DWA).

``importance`` picks the paper's Table 2 ablations: ``"gfi"`` (CETL), ``"fisher"``
(CETL_fi: the Fisher without the RF-driven drop), ``"none"`` (CETL_e: the three stages
iterated without any DWA).

Variants (sec. 3.4): ``"transfer"`` (3.4.1; classification on the labelled target data,
reconstruction on all target inputs, labelled and unlabelled; with the target test
inputs as unlabelled data this is the domain-adaptation scenario 1 of 3.4.3),
``"distillation"`` (3.4.2; S is the teacher, T2 the smaller student, coupled through the
soft targets by default) and ``"domain_adaptation"`` (3.4.3 scenario 2: no target
labels, stage 3 classifies the labelled *source* data, the reconstructions use the
unlabelled target inputs only).

Baselines: :class:`TargetOnlyTrainer` (T2 trained alone: the paper's "Baseline" and, on
source data, "Source") and :class:`FineTuneTrainer` (S with a new last layer, fine-tuned
on the target data: the paper's FT-VGG). :class:`SoftTargetTrainer` (Hinton's soft
targets, the paper's ref. [17]) is the classic distillation comparator.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ..nn.cetl import (COUPLINGS, RF_ESTIMATORS, CETLDecoder, coupling_code, diagonal_fisher, generalized_fisher,
                       normalize_importance, per_sample_grads, relative_fisher)
from ._base import (Checkpointer, TrainConfig, batches, check_finite, check_images, check_labels, log, make_optimizer,
                    progress, seed_everything, write_json)
from .supervised import SupervisedTrainer, accuracy

__all__ = ["CETLConfig", "CETLTrainer", "TargetOnlyTrainer", "FineTuneTrainer", "SoftTargetTrainer", "train_source"]

VARIANTS = ("transfer", "distillation", "domain_adaptation")
SCHEDULES = ("staged", "joint")
IMPORTANCES = ("gfi", "fisher", "none")


@dataclass
class CETLConfig(TrainConfig):
    """Options of :class:`CETLTrainer` (seed 002). ``epochs`` counts rounds of Algorithm 1.

    - ``lambdas``: (l1, l2, l3) of eq. 6, weights of L_r^s, L_c^t and L_r^t.
    - ``dwa_lambda``: lambda of eq. 11 (one value for DWA1, DWA2 and DWA3).
    - ``dwa_fused``: add the DWA gradient in place with ``ops.dwa_grad_`` after the task
      loss's backward (one fused sweep, no autograd graph) instead of back-propagating
      ``ops.dwa_penalty``; same update, the logged DWA value is computed without grad.
    - ``u``, ``p``: the GFI threshold and probability of eq. 10 (paper: 0.5 and 0.9).
    - ``importance``: "gfi" (CETL), "fisher" (CETL_fi), "none" (CETL_e), Table 2.
    - ``rf_estimator``: "gaussian_copula" or "histogram" (see :mod:`mtlkernels.nn.cetl`).
    - ``fisher_samples``: inputs drawn per GFI for the per-sample Fisher terms.
    - ``normalize_fisher``: divide each Fisher by its mean over the sub-network.
    - ``coupling``: "features" or "soft"; None picks "soft" for distillation, else "features".
    - ``temperature``: of the soft coupling.
    - ``stage_epochs``: passes over the data per stage and round.
    - ``tol``: stop when every stage loss changed by at most ``tol`` (relative) in a round.
    - ``metrics_path``: write the history and final metrics there as JSON after ``fit``.
    """

    variant: str = "transfer"
    schedule: str = "staged"
    importance: str = "gfi"
    lambdas: tuple = (1.0, 1.0, 1.0)
    dwa_lambda: float = 1.0
    dwa_fused: bool = False
    u: float = 0.5
    p: float = 0.9
    rf_estimator: str = "gaussian_copula"
    rf_bins: int = 4
    fisher_samples: int = 128
    normalize_fisher: bool = True
    coupling: str | None = None
    temperature: float = 4.0
    stage_epochs: tuple = (1, 1, 1)
    tol: float | None = None
    metrics_path: str | None = None

    def validate(self) -> None:
        super().validate()
        for name, value, allowed in (("variant", self.variant, VARIANTS), ("schedule", self.schedule, SCHEDULES),
                                     ("importance", self.importance, IMPORTANCES),
                                     ("rf_estimator", self.rf_estimator, RF_ESTIMATORS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.coupling is not None and self.coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS} or None, got {self.coupling!r}")
        if len(self.lambdas) != 3 or any(not (float(v) >= 0) for v in self.lambdas):
            raise ValueError(f"lambdas must be three non-negative weights (eq. 6), got {self.lambdas}")
        if len(self.stage_epochs) != 3 or any(int(v) < 1 for v in self.stage_epochs):
            raise ValueError(f"stage_epochs must be three positive integers, got {self.stage_epochs}")
        if not self.dwa_lambda >= 0:
            raise ValueError(f"dwa_lambda must be non-negative, got {self.dwa_lambda}")
        if not 0.0 <= self.p <= 1.0 or not 0.0 <= self.u <= 1.0:
            raise ValueError(f"u and p must lie in [0, 1], got u={self.u}, p={self.p}")
        if self.fisher_samples < 3:
            raise ValueError(f"fisher_samples must be >= 3, got {self.fisher_samples}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    @property
    def coupling_(self) -> str:
        return self.coupling or ("soft" if self.variant == "distillation" else "features")


class CETLTrainer:
    """Coupled end-to-end transfer learning (seed 002, Algorithm 1, eqs. 1-11).

    Args:
        source: S, pre-trained (eq. 1, see :func:`train_source`), frozen: its parameters are
            set to ``requires_grad=False`` and it is kept in eval mode; it is only run
            forward, once, on the inputs.
        target: T2, the network to train (a DigitsCNN-like module: ``forward`` gives the
            class scores, ``features`` the code for ``coupling="features"``).
        decoder: T1; by default ``CETLDecoder.mirror(target, coupling)``.
        config: :class:`CETLConfig`.

    After ``fit``: ``history_`` (one record per round: the three stage losses, the DWA
    values, val accuracy), ``gfi_stats_`` (fraction of weights with RF >= u, kept
    fraction, per GFI and round) and :meth:`evaluate` for per-task metrics.
    """

    def __init__(self, source: nn.Module, target: nn.Module, config: CETLConfig | None = None,
                 decoder: nn.Module | None = None, name: str = "cetl"):
        self.config = config or CETLConfig()
        self.config.validate()
        self.source = source
        self.target = target
        if decoder is None:
            with torch.random.fork_rng(devices=[]):  # T1's initialisation follows config.seed
                torch.manual_seed(self.config.seed + 104729)
                decoder = CETLDecoder.mirror(target, self.config.coupling_)
        self.decoder = decoder
        self.name = name
        self.history_: list[dict] = []
        self.gfi_stats_: list[dict] = []

    # ---- codes and losses --------------------------------------------------------------------

    def _code(self, net, x):
        return coupling_code(net, x, self.config.coupling_, self.config.temperature)

    @torch.no_grad()
    def _source_codes(self, X: Tensor) -> Tensor:
        self.source.eval()
        return torch.cat([self._code(self.source, X[i:i + 1024]) for i in range(0, len(X), 1024)])

    @torch.no_grad()
    def _decode_all(self, codes: Tensor) -> Tensor:
        self.decoder.eval()
        out = torch.cat([self.decoder(codes[i:i + 1024]) for i in range(0, len(codes), 1024)])
        self.decoder.train()
        return out

    # ---- Fisher / GFI ----------------------------------------------------------------------

    def _importance(self, which: str, rnd: int, data: dict) -> tuple[list[Tensor], list[Tensor]]:
        """(importance, anchors) of GFI1/2/3 at the current weights (see the module table)."""
        cfg = self.config
        T1, T2 = self.decoder, self.target
        on_t1 = which in ("gfi1", "gfi2")
        net = T1 if on_t1 else T2
        names = [n for n, p in net.named_parameters()]
        anchors = [p.detach().clone() for p in net.parameters()]
        if cfg.importance == "none":
            return [], []
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919 * rnd + {"gfi1": 1, "gfi2": 2, "gfi3": 3}[which])
        if on_t1:
            pool = data["n_recon"]
            idx = torch.randperm(pool, generator=g)[: cfg.fisher_samples].to(data["device"])
            cS, x, r1 = data["cS"][idx], data["Xr"][idx], data["r1"][idx]
            with torch.no_grad():
                cT = self._code(T2, x)
            params = dict(T1.named_parameters())

            def l_rec(p, code, goal):  # 1/2 |T1(code) - goal|^2 per sample: eq. 2 (S, x) and eq. 5 (T2, recons1)
                return 0.5 * (torch.func.functional_call(T1, p, (code,)) - goal).pow(2).sum()

            g_rs = per_sample_grads(l_rec, params, (cS, x))
            g_rt = per_sample_grads(l_rec, params, (cT, r1))
            kept, other = (g_rs, g_rt) if which == "gfi1" else (g_rt, g_rs)
        else:
            pool = data["n_lab"]
            idx = torch.randperm(pool, generator=g)[: cfg.fisher_samples].to(data["device"])
            x, y = data["X"][idx], data["y"][idx]
            with torch.no_grad():
                r1 = self._decode_all(data["cS_lab"][idx])
            params = dict(T2.named_parameters())
            t1_fixed = {k: v.detach() for k, v in T1.named_parameters()}
            coupling, temp = cfg.coupling_, cfg.temperature

            def l_rt2(p, xx, rr):  # eq. 5 w.r.t. T2 (T1 fixed), per sample
                if coupling == "features":
                    code = _features_call(T2, p, xx)
                else:
                    code = F.softmax(torch.func.functional_call(T2, p, (xx,)) / temp, dim=1)
                return 0.5 * (torch.func.functional_call(T1, t1_fixed, (code,)) - rr).pow(2).sum()

            def l_c(p, xx, yy):  # eq. 4, per sample
                return F.cross_entropy(torch.func.functional_call(T2, p, (xx,)), yy)

            kept = per_sample_grads(l_rt2, params, (x, r1))
            other = per_sample_grads(l_c, params, (x, y))
        kept = [kept[n] for n in names]
        other = [other[n] for n in names]
        fisher = diagonal_fisher(kept)
        if cfg.normalize_fisher:
            fisher = normalize_importance(fisher)
        if cfg.importance == "fisher":
            imp = fisher
            stats = {"round": rnd + 1, "gfi": which, "rf_shared": float("nan"), "kept": 1.0}
        else:
            rf = relative_fisher([k.pow(2) for k in kept], [o.pow(2) for o in other], cfg.rf_estimator, cfg.rf_bins)
            imp = generalized_fisher(fisher, rf, cfg.u, cfg.p, generator=g)
            n_all = sum(r.numel() for r in rf)
            shared = sum(int((r >= cfg.u).sum()) for r in rf) / n_all
            kept_frac = sum(int((f != 0).sum()) for f in imp) / n_all
            stats = {"round": rnd + 1, "gfi": which, "rf_shared": shared, "kept": kept_frac,
                     "rf_mean": sum(float(r.sum()) for r in rf) / n_all}
        self.gfi_stats_.append(stats)
        imp = [f.detach().to(dtype=a.dtype).contiguous() for f, a in zip(imp, anchors)]
        return imp, anchors

    def _dwa(self, net: nn.Module, importance: list[Tensor], anchors: list[Tensor]) -> Tensor | float:
        """DWA loss of eq. 11 through the fused multi-tensor op."""
        if not importance or self.config.dwa_lambda == 0:
            return 0.0
        return ops.dwa_penalty(list(net.parameters()), anchors, importance, self.config.dwa_lambda, check=False)

    def _step(self, opt, loss: Tensor, net: nn.Module, gfi, where: str):
        """One optimiser step on ``loss + DWA(net)`` (eq. 11); returns the DWA value."""
        cfg = self.config
        importance, anchors = gfi
        fused = cfg.dwa_fused and bool(importance) and cfg.dwa_lambda > 0
        if fused:
            with torch.no_grad():
                dwa = self._dwa(net, importance, anchors)
        else:
            dwa = self._dwa(net, importance, anchors)
        total = loss + dwa
        check_finite(total, where)
        opt.zero_grad(set_to_none=True)
        (loss if fused else total).backward()
        if fused:
            ops.dwa_grad_(None, list(net.parameters()), anchors, importance, cfg.dwa_lambda, check=False)
        opt.step()
        return dwa

    # ---- input checks ----------------------------------------------------------------------------

    def _check_inputs(self, X, y, X_unlabeled, X_val, y_val, device):
        cfg = self.config
        check_images(X, f"{self.name}: X")
        if y is None or len(X) != len(y):
            raise ValueError(f"{self.name}: X has {len(X)} samples but y has {None if y is None else len(y)}")
        probe = X[:2].to(device)
        with torch.no_grad():
            out = self.target(probe)
        n_classes = out.shape[1]
        check_labels(y, n_classes, f"{self.name}: y")
        if X_unlabeled is not None:
            check_images(X_unlabeled, f"{self.name}: X_unlabeled")
            if X_unlabeled.shape[1:] != X.shape[1:]:
                raise ValueError(f"{self.name}: X_unlabeled has sample shape {tuple(X_unlabeled.shape[1:])} but X has "
                                 f"{tuple(X.shape[1:])}; the datasets do not match")
        elif cfg.variant == "domain_adaptation":
            raise ValueError(f"{self.name}: variant 'domain_adaptation' needs the unlabelled target inputs X_unlabeled "
                             "(X, y are the labelled source data)")
        if X_val is not None:
            check_images(X_val, f"{self.name}: X_val")
            if y_val is None or len(X_val) != len(y_val):
                raise ValueError(f"{self.name}: X_val and y_val do not match")
            if X_val.shape[1:] != X.shape[1:]:
                raise ValueError(f"{self.name}: X_val has sample shape {tuple(X_val.shape[1:])}, X has {tuple(X.shape[1:])}")
            check_labels(y_val, n_classes, f"{self.name}: y_val")
        with torch.no_grad():
            cs = self._code(self.source, probe)
            ct = self._code(self.target, probe)
        if cs.shape[1:] != ct.shape[1:]:
            raise ValueError(f"{self.name}: the coupling codes of S {tuple(cs.shape[1:])} and T2 {tuple(ct.shape[1:])} "
                             f"differ (coupling={cfg.coupling_!r}); T1 decodes both, so they must have one width")
        code_dim = getattr(self.decoder, "code_dim", None)
        if code_dim is not None and code_dim != ct.shape[1]:
            raise ValueError(f"{self.name}: the decoder T1 takes codes of width {code_dim}, the coupling code has "
                             f"{ct.shape[1]}")
        return n_classes

    # ---- fit -------------------------------------------------------------------------------------

    def fit(self, X: Tensor, y: Tensor, X_unlabeled: Tensor | None = None, X_val: Tensor | None = None,
            y_val: Tensor | None = None) -> "CETLTrainer":
        """Train T1 and T2 (Algorithm 1 or eq. 6). ``X, y``: labelled target data (labelled
        *source* data for ``variant="domain_adaptation"``); ``X_unlabeled``: more target
        inputs for the reconstructions (required for domain adaptation)."""
        cfg = self.config
        device = torch.device(cfg.device)
        seed_everything(cfg.seed)
        for p in self.source.parameters():
            p.requires_grad_(False)
        self.source.to(device).eval()
        self.decoder.to(device).train()
        self.target.to(device).train()
        self._check_inputs(X, y, X_unlabeled, X_val, y_val, device)
        X, y = X.to(device), y.to(device)
        if cfg.variant == "domain_adaptation":
            Xr = X_unlabeled.to(device)
        else:
            Xr = X if X_unlabeled is None else torch.cat([X, X_unlabeled.to(device)])
        data = {"device": device, "X": X, "y": y, "Xr": Xr, "n_recon": len(Xr), "n_lab": len(X),
                "cS": self._source_codes(Xr), "cS_lab": self._source_codes(X)}

        t1_params, t2_params = list(self.decoder.parameters()), list(self.target.parameters())
        if cfg.schedule == "staged":
            opts = {"opt1": make_optimizer(t1_params, cfg), "opt2": make_optimizer(t1_params + t2_params, cfg),
                    "opt3": make_optimizer(t2_params, cfg)}
        else:
            opts = {"opt": make_optimizer(t1_params + t2_params, cfg)}
        ckpt = Checkpointer(cfg.checkpoint_path)
        start = 0
        gfi2: tuple[list, list] = ([], [])
        state = ckpt.load()
        if state is not None:
            if state.get("schedule") != cfg.schedule:
                raise ValueError(f"{self.name}: the checkpoint {cfg.checkpoint_path} is of schedule "
                                 f"{state.get('schedule')!r}, the config asks for {cfg.schedule!r}")
            self.decoder.load_state_dict(state["decoder"])
            self.target.load_state_dict(state["target"])
            for k, opt in opts.items():
                opt.load_state_dict(state[k])
            self.history_ = list(state["history"])
            self.gfi_stats_ = list(state["gfi_stats"])
            gfi2 = ([t.to(device) for t in state["gfi2"]], [t.to(device) for t in state["anchor2"]])
            start = int(state["round"])
            Checkpointer.set_rng_state(state["rng"])
            log.info("%s: resumed from %s at round %d", self.name, cfg.checkpoint_path, start)
            if self._converged():
                start = cfg.epochs

        for rnd in progress(range(start, cfg.epochs), cfg.progress, self.name, total=max(cfg.epochs - start, 0)):
            if cfg.schedule == "staged":
                record, gfi2 = self._round_staged(rnd, data, opts, gfi2)
            else:
                record = self._round_joint(rnd, data, opts)
            if X_val is not None:
                record["val_accuracy"] = self.score(X_val, y_val)
            self.history_.append(record)
            log.info("%s: %s", self.name, record)
            ckpt.save({"decoder": self.decoder.state_dict(), "target": self.target.state_dict(),
                       **{k: opt.state_dict() for k, opt in opts.items()}, "round": rnd + 1,
                       "history": self.history_, "gfi_stats": self.gfi_stats_, "gfi2": gfi2[0], "anchor2": gfi2[1],
                       "rng": Checkpointer.rng_state(), "schedule": cfg.schedule, "config": _config_dict(cfg)})
            if self._converged():
                log.info("%s: losses converged (tol %g) after round %d", self.name, cfg.tol, rnd + 1)
                break
        if cfg.metrics_path:
            final = self.evaluate(X_val, y_val) if X_val is not None else {}
            self.save_metrics(cfg.metrics_path, final=final)
        return self

    def _converged(self) -> bool:
        tol = self.config.tol
        if tol is None or len(self.history_) < 2:
            return False
        a, b = self.history_[-2], self.history_[-1]
        keys = ("loss1", "loss2", "loss3")
        return all(abs(b[k] - a[k]) <= tol * max(abs(a[k]), 1e-12) for k in keys)

    def _round_staged(self, rnd: int, data: dict, opts: dict, gfi2):
        """One round of Algorithm 1: stages 1, 2, 3 with GFI1 / GFI2 / GFI3 and DWA1 / DWA2 / DWA3."""
        cfg = self.config
        T1, T2 = self.decoder, self.target
        l1, l2, l3 = (float(v) for v in cfg.lambdas)
        device, Xr, cS, X, y = data["device"], data["Xr"], data["cS"], data["X"], data["y"]
        record = {"round": rnd + 1}
        e1, e2, e3 = (int(v) for v in cfg.stage_epochs)

        # stage 1: T1 o S reconstructs x_tgt (eq. 2), DWA2 keeps what stage 2 needed (lines 1-8)
        sums = _Sums()
        for e in range(e1):
            for step, idx in enumerate(batches(len(Xr), cfg.batch_size, cfg.seed * 3 + 1, rnd * e1 + e, device)):
                loss1 = F.mse_loss(T1(cS[idx]), Xr[idx])
                dwa2 = self._step(opts["opt1"], l1 * loss1, T1, gfi2, f"{self.name} round {rnd + 1} stage 1 step {step}")
                sums.add(len(idx), loss1=loss1, dwa2=dwa2)
        record.update(sums.means())
        data["r1"] = self._decode_all(cS)  # recons1 (line 6), the fixed target of stage 2
        gfi1 = self._importance("gfi1", rnd, data)

        # stage 2: T1 o T2 reconstructs recons1 (eq. 5), DWA1 on T1 (lines 9-15)
        sums = _Sums()
        r1 = data["r1"]
        for e in range(e2):
            for step, idx in enumerate(batches(len(Xr), cfg.batch_size, cfg.seed * 3 + 2, rnd * e2 + e, device)):
                loss2 = F.mse_loss(T1(self._code(T2, Xr[idx])), r1[idx])
                dwa1 = self._step(opts["opt2"], l3 * loss2, T1, gfi1, f"{self.name} round {rnd + 1} stage 2 step {step}")
                sums.add(len(idx), loss2=loss2, dwa1=dwa1)
        record.update(sums.means())
        gfi2 = self._importance("gfi2", rnd, data)
        gfi3 = self._importance("gfi3", rnd, data)

        # stage 3: T2 classifies (eq. 4), DWA3 keeps T2's reconstruction weights (lines 16-19)
        sums = _Sums()
        for e in range(e3):
            for step, idx in enumerate(batches(len(X), cfg.batch_size, cfg.seed * 3 + 3, rnd * e3 + e, device)):
                loss3 = F.cross_entropy(T2(X[idx]), y[idx])
                dwa3 = self._step(opts["opt3"], l2 * loss3, T2, gfi3, f"{self.name} round {rnd + 1} stage 3 step {step}")
                sums.add(len(idx), loss3=loss3, dwa3=dwa3)
        record.update(sums.means())
        del data["r1"]
        return record, gfi2

    def _round_joint(self, rnd: int, data: dict, opts: dict) -> dict:
        """One epoch of eq. 6 end to end: every step adds l1 L_r^s + l2 L_c^t + l3 L_r^t."""
        cfg = self.config
        T1, T2 = self.decoder, self.target
        l1, l2, l3 = (float(v) for v in cfg.lambdas)
        device, Xr, cS, X, y = data["device"], data["Xr"], data["cS"], data["X"], data["y"]
        lab = itertools.chain.from_iterable(
            batches(len(X), cfg.batch_size, cfg.seed * 3 + 3, rnd * 1000 + k, device) for k in itertools.count())
        sums = _Sums()
        for step, idx in enumerate(batches(len(Xr), cfg.batch_size, cfg.seed * 3 + 1, rnd, device)):
            jdx = next(lab)
            recon_s = T1(cS[idx])
            loss1 = F.mse_loss(recon_s, Xr[idx])
            loss2 = F.mse_loss(T1(self._code(T2, Xr[idx])), recon_s.detach())
            loss3 = F.cross_entropy(T2(X[jdx]), y[jdx])
            total = l1 * loss1 + l2 * loss3 + l3 * loss2
            check_finite(total, f"{self.name} epoch {rnd + 1} step {step}")
            opts["opt"].zero_grad(set_to_none=True)
            total.backward()
            opts["opt"].step()
            sums.add(len(idx), loss1=loss1, loss2=loss2, loss3=loss3, coupled=total)
        return {"round": rnd + 1, **sums.means()}

    # ---- evaluation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, X: Tensor) -> Tensor:
        """T2's class scores."""
        self.target.eval()
        device = torch.device(self.config.device)
        out = torch.cat([self.target(X[i:i + 1024].to(device)) for i in range(0, len(X), 1024)]).cpu()
        self.target.train()
        return out

    def score(self, X: Tensor, y: Tensor) -> float:
        return accuracy(self.predict(X), y.cpu())

    @torch.no_grad()
    def evaluate(self, X: Tensor, y: Tensor | None = None) -> dict:
        """Metrics per task: T2's classification (accuracy, cross entropy, per-class accuracy)
        and the two reconstructions (``recon_source``: eq. 2; ``recon_coupled``: eq. 5)."""
        device = torch.device(self.config.device)
        X = X.to(device)
        self.target.eval()
        self.decoder.eval()
        cS = self._source_codes(X)
        r1 = torch.cat([self.decoder(cS[i:i + 1024]) for i in range(0, len(X), 1024)])
        r2 = torch.cat([self.decoder(self._code(self.target, X[i:i + 1024])) for i in range(0, len(X), 1024)])
        out = {"recon_source_mse": float(F.mse_loss(r1, X)), "recon_coupled_mse": float(F.mse_loss(r2, r1))}
        self.decoder.train()
        self.target.train()
        if y is not None:
            logits = self.predict(X)
            y = y.cpu()
            out["accuracy"] = accuracy(logits, y)
            out["cross_entropy"] = float(F.cross_entropy(logits, y))
            n_classes = logits.shape[1]
            pred = logits.argmax(1)
            out["per_class_accuracy"] = [float((pred[y == c] == c).double().mean()) if (y == c).any() else float("nan")
                                         for c in range(n_classes)]
        return out

    def save_metrics(self, path, **extra) -> None:
        write_json(path, {"method": "CETL", "config": _config_dict(self.config), "history": self.history_,
                          "gfi_stats": self.gfi_stats_, **extra})


def _features_call(net: nn.Module, params: dict, x: Tensor) -> Tensor:
    """``net.features(x)`` with ``params`` swapped in (torch.func.functional_call only calls forward)."""
    return torch.func.functional_call(_FeaturesOf(net), {f"net.{k}": v for k, v in params.items()}, (x,))


class _FeaturesOf(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.features(x)


class _Sums:
    """Sample-weighted running means of scalar losses."""

    def __init__(self):
        self.total: dict[str, float] = {}
        self.count = 0

    def add(self, n: int, **values):
        self.count += n
        for k, v in values.items():
            self.total[k] = self.total.get(k, 0.0) + float(v.detach() if isinstance(v, Tensor) else v) * n

    def means(self) -> dict:
        return {k: v / max(self.count, 1) for k, v in self.total.items()}


def _config_dict(cfg) -> dict:
    d = asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# ---- baselines ---------------------------------------------------------------------------------------------


def train_source(model: nn.Module, X: Tensor, y: Tensor, config: TrainConfig, X_val=None, y_val=None) -> nn.Module:
    """Pre-train the source network S on the source data with cross entropy (seed 002 eq. 1)."""
    check_labels(y, _n_outputs(model, X), "source: y")
    SupervisedTrainer(model, config, name="source").fit(X, y, X_val, y_val)
    return model


def _n_outputs(model: nn.Module, X: Tensor) -> int:
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    with torch.no_grad():
        was = model.training
        model.eval()
        n = model(X[:1].to(device)).shape[1]
        model.train(was)
    return int(n)


class TargetOnlyTrainer(SupervisedTrainer):
    """Baseline: T2 trained alone on the labelled data with cross entropy (seed 002 Tables 2-3
    "Baseline"; Table 5 "Source" when trained on the source domain). Checks the label range."""

    def __init__(self, model: nn.Module, config: TrainConfig, name: str = "target_only"):
        super().__init__(model, config, name=name)

    def fit(self, X, y, X_val=None, y_val=None):
        check_labels(y, _n_outputs(self.model, X), f"{self.name}: y")
        return super().fit(X, y, X_val, y_val)


class FineTuneTrainer(SupervisedTrainer):
    """Baseline: fine-tuning (seed 002 Table 3, FT-VGG): a copy of S whose last layer
    (``head``) is replaced by a fresh ``nn.Linear`` for ``n_classes``, trained on the
    target data. ``mode="all"`` updates every layer, ``"head"`` only the new last layer.
    S itself is not modified."""

    def __init__(self, source: nn.Module, n_classes: int, config: TrainConfig, mode: str = "all",
                 name: str = "fine_tune"):
        if mode not in ("all", "head"):
            raise ValueError(f"mode must be 'all' or 'head', got {mode!r}")
        head = getattr(source, "head", None)
        if not isinstance(head, nn.Linear):
            raise TypeError("FineTuneTrainer needs a source network with a linear .head (a DigitsCNN)")
        model = copy.deepcopy(source)
        g = torch.Generator().manual_seed(config.seed + 17)
        new = nn.Linear(head.in_features, n_classes)
        with torch.no_grad():
            bound = 1.0 / head.in_features ** 0.5
            new.weight.copy_(torch.empty_like(new.weight).uniform_(-bound, bound, generator=g))
            new.bias.copy_(torch.empty_like(new.bias).uniform_(-bound, bound, generator=g))
        model.head = new
        for p in model.parameters():
            p.requires_grad_(mode == "all")
        for p in model.head.parameters():
            p.requires_grad_(True)
        self.mode = mode
        self.n_classes = n_classes
        super().__init__(model, config, name=name)

    def fit(self, X, y, X_val=None, y_val=None):
        check_labels(y, self.n_classes, f"{self.name}: y")
        return super().fit(X, y, X_val, y_val)


class SoftTargetTrainer(SupervisedTrainer):
    """Distillation comparator: Hinton et al.'s soft targets (seed 002 ref. [17]):
    ``(1 - alpha) CE(s, y) + alpha T^2 KL(softmax(t / T) || softmax(s / T))`` with the
    teacher's scores t computed once (the teacher is frozen)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, config: TrainConfig, alpha: float = 0.7,
                 temperature: float = 4.0, name: str = "soft_targets"):
        if not 0 <= alpha <= 1 or not temperature > 0:
            raise ValueError(f"alpha must be in [0, 1] and temperature > 0, got {alpha}, {temperature}")
        self.teacher = teacher
        self.alpha, self.temperature = alpha, temperature
        super().__init__(student, config, loss_fn=self._loss, name=name)

    def _loss(self, out: Tensor, target: Tensor) -> Tensor:
        y, t = target[:, 0].long(), target[:, 1:]
        T = self.temperature
        kl = F.kl_div(F.log_softmax(out / T, 1), F.log_softmax(t / T, 1), log_target=True, reduction="batchmean")
        return (1 - self.alpha) * F.cross_entropy(out, y) + self.alpha * T * T * kl

    def fit(self, X, y, X_val=None, y_val=None):
        n = _n_outputs(self.model, X)
        check_labels(y, n, f"{self.name}: y")
        p = next(self.teacher.parameters())
        with torch.no_grad():
            self.teacher.eval()
            t = torch.cat([self.teacher(X[i:i + 1024].to(p.device)).cpu() for i in range(0, len(X), 1024)])
        if t.shape[1] != n:
            raise ValueError(f"{self.name}: the teacher has {t.shape[1]} outputs, the student {n}")
        target = torch.cat([y.cpu().to(t.dtype)[:, None], t], 1)
        return super().fit(X, target, X_val, y_val)
