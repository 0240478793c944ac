"""GFI1, GFI2 and GFI3 of CETL's Algorithm 1 (Chen, Zhang and Dong 2018, CETL, eqs. 7-10),
from the current weights of the trainer's networks (see the table in
:mod:`mtlkernels.train.cetl`).

Each GFI is the diagonal Fisher of the task whose weights are kept, its relative Fisher
against the other task sharing the weights, and the seeded Bernoulli drop of eq. 10
(:mod:`mtlkernels.fisher`). The inputs are drawn from the whole training pool by a
generator seeded with (seed, round, which GFI), so every rank of a data-parallel run
computes the same importances.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..fisher import diagonal_fisher, generalized_fisher, normalize_importance, per_sample_grads, relative_fisher

__all__ = ["importance"]

_WHICH = {"gfi1": 1, "gfi2": 2, "gfi3": 3}


def importance(trainer, which: str, rnd: int) -> tuple[list[Tensor], list[Tensor]]:
    """(importance, anchors) of ``which`` in {"gfi1", "gfi2", "gfi3"} at round ``rnd``;
    appends its statistics to ``trainer.gfi_stats_``."""
    cfg, data = trainer.config, trainer.data
    T1, T2 = trainer.decoder, trainer.target
    on_t1 = which in ("gfi1", "gfi2")
    net = T1 if on_t1 else T2
    names = [n for n, _ in net.named_parameters()]
    anchors = [p.detach().clone() for p in net.parameters()]
    if cfg.importance == "none":
        return [], []
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919 * rnd + _WHICH[which])
    if on_t1:
        idx = torch.randperm(data["n_recon"], generator=g)[: cfg.fisher_samples].to(data["device"])
        cS, x, r1 = data["cS"][idx], data["Xr"][idx], data["r1"][idx]
        with torch.no_grad():
            cT = trainer._code(T2, x)
        params = dict(T1.named_parameters())

        def l_rec(p, code, goal):  # 1/2 |T1(code) - goal|^2 per sample: eq. 2 (S, x) and eq. 5 (T2, recons1)
            return 0.5 * (torch.func.functional_call(T1, p, (code,)) - goal).pow(2).sum()

        g_rs = per_sample_grads(l_rec, params, (cS, x))
        g_rt = per_sample_grads(l_rec, params, (cT, r1))
        kept, other = (g_rs, g_rt) if which == "gfi1" else (g_rt, g_rs)
    else:
        idx = torch.randperm(data["n_lab"], generator=g)[: cfg.fisher_samples].to(data["device"])
        x, y = data["X"][idx], data["y"][idx]
        with torch.no_grad():
            r1 = trainer._decode_all(data["cS_lab"][idx])
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
    trainer.gfi_stats_.append(stats)
    imp = [f.detach().to(dtype=a.dtype).contiguous() for f, a in zip(imp, anchors)]
    return imp, anchors


def _features_call(net: nn.Module, params: dict, x: Tensor) -> Tensor:
    """``net.features(x)`` with ``params`` swapped in (torch.func.functional_call only calls forward)."""
    return torch.func.functional_call(_FeaturesOf(net), {f"net.{k}": v for k, v in params.items()}, (x,))


class _FeaturesOf(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.features(x)
