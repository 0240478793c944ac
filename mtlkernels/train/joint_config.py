"""The options of the joint trainers (Zhang et al. 2019, joint IRLS, and its baselines):
:class:`JointIRLSConfig`, the update schedules, and the seeds that make a network's
initial weights and random draws independent of the rank that trains it."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from .config import TrainConfig
from .joint_data import TASKS

__all__ = ["JointIRLSConfig", "SCHEDULES", "network_seed"]

#: ``config.schedule`` values: block coordinate descent one network after the other
#: against the others' newest parameters, or every network against the sweep's start.
SCHEDULES = ("gauss_seidel", "jacobi")


@dataclass
class JointIRLSConfig(TrainConfig):
    """Options of the joint trainers (:class:`~mtlkernels.train.JointIRLSTrainer` and the
    baselines). ``epochs`` is the budget of sweeps shared by every method.

    ``task``: "classification" or "autoencoder". ``lam``: the weight of the consistency
    term (eq. 4; JointIRLS and L2Reg; the paper uses 10). ``normalize`` (default True):
    each layer pair's term is divided by the number of parameters of the pair, P_l =
    n_l + n_{l+1} (n_L for the last layer alone), i.e. the distances are root mean squared
    differences per parameter: the squared distance of eq. 3 grows with P_l, so without
    it one lam means very different couplings for networks of different sizes, and lam
    can be chosen on one grid (the IRLS weights of eq. 7 do not change: sigma^l scales
    with the distances). ``last_layer_term``: eq. 3 sums the L - 1 adjacent pairs
    (l, l + 1) (False, the default); True adds the last layer alone as an L-th pair (the
    L terms l = 0..L-1 of eqs. 4, 5 and 8 read with eq. 3's pairing rule).
    Joint IRLS: the L2-coupled problem (eq. 5) is solved until its own convergence test,
    the relative change of its objective (sum of the data losses and the coupling
    penalty) over one sweep <= ``init_tol``, or the cap of ``init_epochs`` sweeps
    (``None``: half the budget), then IRLS iterations of ``epochs_per_iter`` sweeps each
    (sec. 4.2.3: one epoch), at most ``max_irls_iters`` of them (the paper sees 4-8),
    until delta <= ``tol`` (sec. 4.2.2). L2Reg: ``shared_fraction`` (None: every layer)
    couples only the first round(fraction * L) layers (at least one), the others train
    in isolation: the paper's L2Reg(25%) and L2Reg(50%) "with 25% and 50% weight shared
    in the first few layers" (Table 4), read as a fraction of the layers. ``schedule`` (JointIRLS and L2Reg): ``"gauss_seidel"``, the
    paper's block coordinate descent (sec. 4.2.3: network i trains against the newest
    parameters of the others, those trained earlier in the sweep included), or
    ``"jacobi"``: every network trains against the eq. 9 targets computed at the start of
    the sweep, the only schedule under which the networks of different ranks train in
    parallel (required under ``torchrun`` with more than one process).
    PretrainFinetune: ``pretrain_epochs`` of Shareall (``None``: half the budget), the rest
    fine-tuning. ``graph_top_k``: the mutual-neighbour rule of Fig. 2. ``same_init``:
    every network starts from the same weights (the paper starts all of them from one
    ImageNet-pretrained network, sec. 5.1; from independent random inits the consensus of
    eq. 9 averages unaligned hidden units and L2 coupling destroys them).
    """

    task: str = "classification"
    lam: float = 10.0
    normalize: bool = True
    last_layer_term: bool = False
    init_epochs: int | None = None
    init_tol: float = 1e-2
    shared_fraction: float | None = None
    epochs_per_iter: int = 1
    max_irls_iters: int = 8
    tol: float = 1e-2
    schedule: str = "gauss_seidel"
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
        if not (self.init_tol >= 0 and math.isfinite(self.init_tol)):
            raise ValueError(f"init_tol must be a finite non-negative number, got {self.init_tol}")
        if self.shared_fraction is not None and not 0 < self.shared_fraction <= 1:
            raise ValueError(f"shared_fraction must be in (0, 1] or None, got {self.shared_fraction}")
        if self.epochs_per_iter < 1 or self.max_irls_iters < 0:
            raise ValueError(f"epochs_per_iter must be >= 1 and max_irls_iters >= 0, got "
                             f"{self.epochs_per_iter}, {self.max_irls_iters}")
        if not (self.tol >= 0 and math.isfinite(self.tol)):
            raise ValueError(f"tol must be a finite non-negative number, got {self.tol}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.graph_top_k < 1:
            raise ValueError(f"graph_top_k must be >= 1, got {self.graph_top_k}")


def network_seed(seed: int, *key) -> int:
    """The seed of network k's initial weights (``key = (k,)``; k = 0 gives ``seed``
    itself) or of its random draws in a sweep (``key = (k, sweep)``)."""
    if key == (0,):
        return int(seed)
    text = "/".join(str(v) for v in (seed, *key))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "little")
