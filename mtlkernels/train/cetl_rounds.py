"""Pieces of the CETL trainer's rounds (Chen, Zhang and Dong 2018, CETL): the per-stage
loss sums and the ``schedule="sequential"`` round of the Table 2 ablations CETL_f and
CETL_u (sec. 4.1.1).

- CETL_f: "we train T1 o S until convergence and then train T1 o T2 with T1 fixed";
- CETL_u: "update T1 o T2 after T1 o S converged", T1 included, "but ... T1 could be
  tuned as a convolutional auto-decoder without maintaining the knowledge learned from S".

**Reading.** "Until convergence" is the whole stage-1 budget of Algorithm 1
(``stage_epochs[0]`` passes per round times ``epochs`` rounds) spent in the first round;
recons1 = T1 o S(x) is then computed once and held fixed. Every round then runs stage 2
(eq. 5 towards recons1: T2 alone when ``decoder_fixed``, CETL_f; T1 and T2 otherwise,
CETL_u) and stage 3 (eq. 4, T2), as Algorithm 1 does, so the three ablations and CETL
spend the same number of passes per stage. Neither ablation has a DWA term (the
paper introduces the Fisher only with CETL_fi).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["StageSums", "round_sequential"]


class StageSums:
    """Sample-weighted means of scalar losses over a stage, across the ranks."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.total: dict[str, float] = {}
        self.count = 0

    def add(self, n: int, **values):
        self.count += n
        for k, v in values.items():
            self.total[k] = self.total.get(k, 0.0) + float(v.detach() if isinstance(v, Tensor) else v) * n

    def means(self) -> dict:
        keys = sorted(self.total)
        sums = self.trainer.dist.all_reduce_sum([self.total[k] for k in keys] + [float(self.count)])
        return {k: s / max(sums[-1], 1) for k, s in zip(keys, sums)}


def round_sequential(tr, rnd: int) -> dict:
    """One round of CETL_f / CETL_u (see the module docstring) on trainer ``tr``."""
    cfg, data = tr.config, tr.data
    T1, T2 = tr.decoder, tr.target
    l1, l2, l3 = (float(v) for v in cfg.lambdas)
    Xr, cS, X, y = data["Xr"], data["cS"], data["X"], data["y"]
    e1, e2, e3 = (int(v) for v in cfg.stage_epochs)
    none = ([], [])  # no DWA
    record: dict = {"round": rnd + 1}
    at = f"round {rnd + 1} stage"
    if rnd == 0 or "r1_fixed" not in data:
        sums = StageSums(tr)
        for e in range(e1 * cfg.epochs if rnd == 0 else 0):
            for step, idx in enumerate(tr._batches(len(Xr), cfg.seed * 3 + 1, e)):
                loss1, _ = tr._dwa_step(tr.optimizers["opt1"], lambda: F.mse_loss(T1(cS[idx]), Xr[idx]), l1, T1, none,
                                        f"{at} 1 step {step}")
                sums.add(len(idx), loss1=loss1)
        record.update(sums.means())
        data["r1_fixed"] = tr._decode_all(cS)  # recons1, fixed from here on
    r1 = data["r1_fixed"]
    sums = StageSums(tr)
    for e in range(e2):
        for step, idx in enumerate(tr._batches(len(Xr), cfg.seed * 3 + 2, rnd * e2 + e)):
            loss2, _ = tr._dwa_step(tr.optimizers["opt2"], lambda: F.mse_loss(T1(tr._code(T2, Xr[idx])), r1[idx]), l3,
                                    T1, none, f"{at} 2 step {step}")
            sums.add(len(idx), loss2=loss2)
    record.update(sums.means())
    sums = StageSums(tr)
    for e in range(e3):
        for step, idx in enumerate(tr._batches(len(X), cfg.seed * 3 + 3, rnd * e3 + e)):
            loss3, _ = tr._dwa_step(tr.optimizers["opt3"], lambda: F.cross_entropy(T2(X[idx]), y[idx]), l2, T2, none,
                                    f"{at} 3 step {step}")
            sums.add(len(idx), loss3=loss3)
    record.update(sums.means())
    return record
