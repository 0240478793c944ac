"""The CETL trainer (Chen, Zhang and Dong 2018, CETL: coupled end-to-end transfer learning).

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
iterated without any DWA); ``schedule="sequential"`` gives CETL_u (T1 o S trained first,
then stages 2 and 3) and, with ``decoder_fixed``, CETL_f (T1 fixed after that):
:mod:`mtlkernels.train.cetl_rounds`.

Variants (sec. 3.4): ``"transfer"`` (3.4.1; classification on the labelled target data,
reconstruction on all target inputs, labelled and unlabelled; with the target test
inputs as unlabelled data this is the domain-adaptation scenario 1 of 3.4.3),
``"distillation"`` (3.4.2; S is the teacher, T2 the smaller student, coupled through the
soft targets by default; **reading:** sec. 3.4.2 says "let T1 be a much more concise
architecture comparing with S and let T2 have the reversed layers of T1", which swaps
the roles of sec. 3.1; we keep sec. 3.1's roles, T2 the classifier that stage 3 trains
and that is scored, T1 its mirrored decoder, and make T2 the concise student, the only
reading under which Algorithm 1 runs unchanged) and ``"domain_adaptation"`` (3.4.3 scenario 2: no target
labels, stage 3 classifies the labelled *source* data, the reconstructions use the
unlabelled target inputs only).

Usage: ``CETLTrainer(CETLNetworks(source, target), config).fit((X, y), val,
unlabeled=X_u)``; the baselines are in :mod:`mtlkernels.train.cetl_baselines`. Under
``torchrun`` every rank holds the data (the stages address samples by index: recons1 is
a fixed per-sample target) and trains on its share of each stage's batches through
DistributedDataParallel; the GFI are computed from the same seeded samples on every
rank, so they, and the DWA terms, are identical everywhere.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ..nn.cetl import CETLDecoder, CETLNetworks, coupling_code
from .cetl_config import CETLConfig
from .cetl_rounds import StageSums, round_sequential
from .data import as_tensors, check_images, check_labels, index_batches
from .supervised import accuracy
from .trainer import Trainer

__all__ = ["CETLTrainer"]

class CETLTrainer(Trainer):
    """Coupled end-to-end transfer learning (Algorithm 1, eqs. 1-11).

    ``model``: a :class:`~mtlkernels.nn.CETLNetworks` (S frozen, T2, and T1 or None:
    then ``CETLDecoder.mirror(T2, coupling)`` initialised from ``config.seed``), or a
    factory of one. ``fit(train, val=None, *, unlabeled=None)``: ``train`` is the
    labelled target data (X, y) (the labelled *source* data for
    ``variant="domain_adaptation"``), ``unlabeled`` more target inputs for the
    reconstructions (required for domain adaptation); a DataLoader is read once into
    memory.

    After ``fit``: ``history_`` (one record per round: the three stage losses, the DWA
    values, val accuracy), ``gfi_stats_`` (fraction of weights with RF >= u, kept
    fraction, per GFI and round) and :meth:`evaluate` for per-task metrics.
    """

    config_class = CETLConfig
    method = "cetl"
    find_unused_parameters = True  # each stage trains a part of the networks

    def __init__(self, model, config: CETLConfig, *, name: str | None = None):
        super().__init__(model, config, name=name)
        self.gfi_stats_: list[dict] = []

    @property
    def source(self) -> nn.Module:
        return self.model.source

    @property
    def target(self) -> nn.Module:
        return self.model.target

    @property
    def decoder(self) -> nn.Module:
        return self.model.decoder

    def build_model(self) -> CETLNetworks:
        model = super().build_model()
        if not isinstance(model, CETLNetworks):
            raise TypeError(f"{self.name}: model must be a CETLNetworks(source, target[, decoder]), got "
                            f"{type(model).__name__}")
        if model.decoder is None:
            with torch.random.fork_rng(devices=[]):  # T1's initialisation follows config.seed
                torch.manual_seed(self.config.seed + 104729)
                model.decoder = CETLDecoder.mirror(model.target, self.config.coupling_)
        return model

    def fit(self, train, val=None, *, unlabeled=None) -> "CETLTrainer":
        self._unlabeled = unlabeled
        self.gfi_stats_ = []
        return super().fit(train, val)

    # ---- codes and data --------------------------------------------------------------------------

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

    def check_data(self, data, name: str) -> None:
        X, y = as_tensors(data, f"{self.name}: {name}")[:2]
        check_images(X, f"{self.name}: {name} X")
        if len(X) != len(y):
            raise ValueError(f"{self.name}: {name} X has {len(X)} samples but y has {len(y)}")
        probe = X[:2].to(self.device)
        with torch.no_grad():
            n_classes = self.target.eval()(probe).shape[1]
        self.target.train()
        check_labels(y, n_classes, f"{self.name}: {name} y")
        if name != "train":
            if X.shape[1:] != self._train[0].shape[1:]:
                raise ValueError(f"{self.name}: {name} X has sample shape {tuple(X.shape[1:])}, the training X has "
                                 f"{tuple(self._train[0].shape[1:])}")
            return
        self._train = (X, y)
        Xu = self._unlabeled
        if Xu is not None:
            Xu = as_tensors(Xu, f"{self.name}: unlabeled")[0]
            check_images(Xu, f"{self.name}: unlabeled X")
            if Xu.shape[1:] != X.shape[1:]:
                raise ValueError(f"{self.name}: unlabeled has sample shape {tuple(Xu.shape[1:])} but X has "
                                 f"{tuple(X.shape[1:])}; the datasets do not match")
        elif self.config.variant == "domain_adaptation":
            raise ValueError(f"{self.name}: variant 'domain_adaptation' needs the unlabelled target inputs "
                             "(fit(..., unlabeled=X_target)); train is the labelled source data")
        self._unlabeled_X = Xu
        with torch.no_grad():
            cs, ct = self._code(self.source, probe), self._code(self.target.eval(), probe)
        self.target.train()
        if cs.shape[1:] != ct.shape[1:]:
            raise ValueError(f"{self.name}: the coupling codes of S {tuple(cs.shape[1:])} and T2 {tuple(ct.shape[1:])} "
                             f"differ (coupling={self.config.coupling_!r}); T1 decodes both, so they must have one width")
        code_dim = getattr(self.decoder, "code_dim", None)
        if code_dim is not None and code_dim != ct.shape[1]:
            raise ValueError(f"{self.name}: the decoder T1 takes codes of width {code_dim}, the coupling code has "
                             f"{ct.shape[1]}")

    def make_loader(self, data, name: str, shuffle: bool, split: bool = True):
        if name == "train":
            return None  # the stages draw their own index batches (see _batches)
        return super().make_loader(as_tensors(data, f"{self.name}: {name}")[:2], name, shuffle, split)

    def setup(self) -> None:
        device = self.device
        X, y = (t.to(device) for t in self._train)
        Xu = None if self._unlabeled_X is None else self._unlabeled_X.to(device)
        if self.config.variant == "domain_adaptation":
            Xr = Xu
        else:
            Xr = X if Xu is None else torch.cat([X, Xu])
        self.data = {"device": device, "X": X, "y": y, "Xr": Xr, "n_recon": len(Xr), "n_lab": len(X),
                     "cS": self._source_codes(Xr), "cS_lab": self._source_codes(X)}
        self.gfi2: tuple[list, list] = ([], [])

    def _batches(self, n: int, seed: int, epoch: int):
        """This rank's index batches of one pass (a permutation from (seed, epoch))."""
        return index_batches(n, self.config.batch_size, seed, epoch, self.dist.rank, self.dist.world_size, self.device)

    def configure_optimizers(self) -> dict:
        from .config import make_optimizer

        t1, t2 = list(self.decoder.parameters()), list(self.target.parameters())
        if self.config.schedule in ("staged", "sequential"):
            stage2 = t2 if self.config.decoder_fixed else t1 + t2  # CETL_f: T1 fixed in stage 2
            return {"opt1": make_optimizer(t1, self.config), "opt2": make_optimizer(stage2, self.config),
                    "opt3": make_optimizer(t2, self.config)}
        return {"opt": make_optimizer(t1 + t2, self.config)}

    # ---- one round -------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict:
        if self.config.schedule == "staged":
            return self._round_staged(epoch)
        if self.config.schedule == "sequential":
            return round_sequential(self, epoch)
        return self._round_joint(epoch)

    def _dwa_step(self, opt, loss_fn, weight: float, net: nn.Module, gfi, where: str) -> tuple[Tensor, Tensor | float]:
        """One optimiser step on ``weight * loss_fn() + DWA(net)`` (eq. 11); returns (loss, DWA value)."""
        cfg = self.config
        importance, anchors = gfi
        use = bool(importance) and cfg.dwa_lambda > 0
        fused = cfg.dwa_fused and use
        out: dict = {}

        def closure():
            loss = loss_fn()
            dwa: Tensor | float = 0.0
            if use:
                with self.precision.full(), torch.set_grad_enabled(not fused):
                    dwa = ops.dwa_penalty(list(net.parameters()), anchors, importance, cfg.dwa_lambda, check=False)
            out["loss"], out["dwa"] = loss, dwa
            return weight * loss + dwa  # fused: dwa carries no grad, its gradient is added by dwa_grad_

        after = None
        if fused:
            def after():
                ops.dwa_grad_(None, list(net.parameters()), anchors, importance, cfg.dwa_lambda, check=False)
        self.optimize(closure, opt, where, after_backward=after)
        return out["loss"], out["dwa"]

    def _round_staged(self, rnd: int) -> dict:
        """One round of Algorithm 1: stages 1, 2, 3 with GFI1 / GFI2 / GFI3 and DWA1 / DWA2 / DWA3."""
        from .cetl_importance import importance

        cfg, data = self.config, self.data
        T1, T2 = self.decoder, self.target
        l1, l2, l3 = (float(v) for v in cfg.lambdas)
        Xr, cS, X, y = data["Xr"], data["cS"], data["X"], data["y"]
        record: dict = {"round": rnd + 1}
        e1, e2, e3 = (int(v) for v in cfg.stage_epochs)
        at = f"round {rnd + 1} stage"

        # stage 1: T1 o S reconstructs x_tgt (eq. 2), DWA2 keeps what stage 2 needed (lines 1-8)
        sums = StageSums(self)
        for e in range(e1):
            for step, idx in enumerate(self._batches(len(Xr), cfg.seed * 3 + 1, rnd * e1 + e)):
                loss1, dwa2 = self._dwa_step(self.optimizers["opt1"], lambda: F.mse_loss(T1(cS[idx]), Xr[idx]), l1,
                                             T1, self.gfi2, f"{at} 1 step {step}")
                sums.add(len(idx), loss1=loss1, dwa2=dwa2)
        record.update(sums.means())
        data["r1"] = self._decode_all(cS)  # recons1 (line 6), the fixed target of stage 2
        gfi1 = importance(self, "gfi1", rnd)

        # stage 2: T1 o T2 reconstructs recons1 (eq. 5), DWA1 on T1 (lines 9-15)
        sums = StageSums(self)
        r1 = data["r1"]
        for e in range(e2):
            for step, idx in enumerate(self._batches(len(Xr), cfg.seed * 3 + 2, rnd * e2 + e)):
                loss2, dwa1 = self._dwa_step(self.optimizers["opt2"],
                                             lambda: F.mse_loss(T1(self._code(T2, Xr[idx])), r1[idx]), l3,
                                             T1, gfi1, f"{at} 2 step {step}")
                sums.add(len(idx), loss2=loss2, dwa1=dwa1)
        record.update(sums.means())
        self.gfi2 = importance(self, "gfi2", rnd)
        gfi3 = importance(self, "gfi3", rnd)

        # stage 3: T2 classifies (eq. 4), DWA3 keeps T2's reconstruction weights (lines 16-19)
        sums = StageSums(self)
        for e in range(e3):
            for step, idx in enumerate(self._batches(len(X), cfg.seed * 3 + 3, rnd * e3 + e)):
                loss3, dwa3 = self._dwa_step(self.optimizers["opt3"], lambda: F.cross_entropy(T2(X[idx]), y[idx]), l2,
                                             T2, gfi3, f"{at} 3 step {step}")
                sums.add(len(idx), loss3=loss3, dwa3=dwa3)
        record.update(sums.means())
        del data["r1"]
        return record

    def _round_joint(self, rnd: int) -> dict:
        """One epoch of eq. 6 end to end: every step adds l1 L_r^s + l2 L_c^t + l3 L_r^t."""
        cfg, data = self.config, self.data
        T1, T2 = self.decoder, self.target
        l1, l2, l3 = (float(v) for v in cfg.lambdas)
        Xr, cS, X, y = data["Xr"], data["cS"], data["X"], data["y"]
        lab = itertools.chain.from_iterable(
            self._batches(len(X), cfg.seed * 3 + 3, rnd * 1000 + k) for k in itertools.count())
        sums = StageSums(self)
        for step, idx in enumerate(self._batches(len(Xr), cfg.seed * 3 + 1, rnd)):
            jdx = next(lab)
            parts: dict = {}

            def closure():
                recon_s = T1(cS[idx])
                parts["loss1"] = F.mse_loss(recon_s, Xr[idx])
                parts["loss2"] = F.mse_loss(T1(self._code(T2, Xr[idx])), recon_s.detach())
                parts["loss3"] = F.cross_entropy(T2(X[jdx]), y[jdx])
                return l1 * parts["loss1"] + l2 * parts["loss3"] + l3 * parts["loss2"]

            total = self.optimize(closure, self.optimizers["opt"], f"epoch {rnd + 1} step {step}")
            sums.add(len(idx), **parts, coupled=total)
        return {"round": rnd + 1, **sums.means()}

    def should_stop(self) -> bool:
        tol = self.config.tol
        if tol is None or len(self.history_) < 2:
            return False
        a, b = self.history_[-2], self.history_[-1]
        keys = [k for k in ("loss1", "loss2", "loss3") if k in a and k in b]
        converged = all(abs(b[k] - a[k]) <= tol * max(abs(a[k]), 1e-12) for k in keys)
        if converged and self.dist.is_main:
            from .trainer import log

            log.info("%s: losses converged (tol %g) after round %d", self.name, tol, len(self.history_))
        return converged

    def _resume(self) -> int:
        start = super()._resume()
        return self.config.epochs if self.should_stop() else start

    def extra_state(self) -> dict:
        out = {"gfi_stats": self.gfi_stats_, "gfi2": list(self.gfi2[0]), "anchor2": list(self.gfi2[1])}
        if "r1_fixed" in self.data:  # schedule="sequential": recons1 of its first round
            out["r1_fixed"] = self.data["r1_fixed"]
        return out

    def load_extra_state(self, state: dict) -> None:
        self.gfi_stats_ = list(state["gfi_stats"])
        self.gfi2 = ([t.to(self.device) for t in state["gfi2"]], [t.to(self.device) for t in state["anchor2"]])
        if "r1_fixed" in state:
            self.data["r1_fixed"] = state["r1_fixed"].to(self.device)

    def fingerprint_extra(self) -> dict:
        import hashlib

        h = hashlib.sha1()
        for t in self.source.state_dict().values():
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return {"source_weights_sha1": h.hexdigest()}

    # ---- evaluation ------------------------------------------------------------------------------

    def validate(self) -> dict:
        return {"val_accuracy": self.score(self.val_loader)}

    def score(self, X, y: Tensor | None = None) -> float:
        """T2's accuracy on X (or on (X, y), or a DataLoader)."""
        return accuracy(self.predict(X), self.targets(X, y))

    def metrics(self) -> dict:
        out = {**super().metrics(), "gfi_stats": self.gfi_stats_}
        out["final"] = self.evaluate(self.val_loader) if self.val_loader is not None else {}
        return out

    @torch.no_grad()
    def evaluate(self, X, y: Tensor | None = None) -> dict:
        """Metrics per task: T2's classification (accuracy, cross entropy, per-class accuracy,
        when labels are given) and the two reconstructions (``recon_source``: eq. 2;
        ``recon_coupled``: eq. 5). X: a tensor, (X, y) or a DataLoader."""
        self._check_fitted()
        if isinstance(X, (tuple, list)) or isinstance(X, torch.utils.data.DataLoader):
            X, y = as_tensors(X, f"{self.name}: evaluate")[:2]
        device = next(self.model.parameters()).device
        X = X.to(device)
        was = self.model.training
        self.model.eval()
        cS = self._source_codes(X)
        r1 = torch.cat([self.decoder(cS[i:i + 1024]) for i in range(0, len(X), 1024)])
        r2 = torch.cat([self.decoder(self._code(self.target, X[i:i + 1024])) for i in range(0, len(X), 1024)])
        out = {"recon_source_mse": float(F.mse_loss(r1, X)), "recon_coupled_mse": float(F.mse_loss(r2, r1))}
        self.model.train(was)
        if y is not None:
            logits = self.predict(X)
            y = y.cpu()
            out["accuracy"] = accuracy(logits, y)
            out["cross_entropy"] = float(F.cross_entropy(logits, y))
            pred = logits.argmax(1)
            out["per_class_accuracy"] = [float((pred[y == c] == c).double().mean()) if (y == c).any() else float("nan")
                                         for c in range(logits.shape[1])]
        return out
