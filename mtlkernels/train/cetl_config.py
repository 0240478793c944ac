"""Options of the CETL trainer (Chen, Zhang and Dong 2018, CETL): :class:`CETLConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from ..fisher import RF_ESTIMATORS
from ..nn.cetl import COUPLINGS
from .config import TrainConfig

__all__ = ["CETLConfig", "VARIANTS", "SCHEDULES", "IMPORTANCES"]

VARIANTS = ("transfer", "distillation", "domain_adaptation")
SCHEDULES = ("staged", "joint", "sequential")
IMPORTANCES = ("gfi", "fisher", "none")


@dataclass
class CETLConfig(TrainConfig):
    """Options of :class:`CETLTrainer`. ``epochs`` counts rounds of Algorithm 1.

    - ``variant``: "transfer", "distillation" or "domain_adaptation" (sec. 3.4).
    - ``schedule``: "staged" (Algorithm 1), "joint" (eq. 6 end to end) or "sequential"
      (T1 o S first, then stages 2 and 3 without DWA: the Table 2 ablation CETL_u, and
      CETL_f with ``decoder_fixed``; :mod:`mtlkernels.train.cetl_rounds`).
    - ``decoder_fixed``: keep T1 fixed in stage 2 (CETL_f; "sequential" only).
    - ``lambdas``: (l1, l2, l3) of eq. 6, weights of L_r^s, L_c^t and L_r^t.
    - ``dwa_lambda``: lambda of eq. 11 (one value for DWA1, DWA2 and DWA3).
    - ``dwa_fused``: add the DWA gradient in place with ``ops.dwa_grad_`` after the task
      loss's backward (one fused sweep, no autograd graph) instead of back-propagating
      ``ops.dwa_penalty``; same update, the logged DWA value is computed without grad.
    - ``u``, ``p``: the GFI threshold and probability of eq. 10 (paper: 0.5 and 0.9).
    - ``importance``: "gfi" (CETL), "fisher" (CETL_fi), "none" (CETL_e), Table 2.
    - ``rf_estimator``, ``rf_bins``: see :mod:`mtlkernels.fisher`.
    - ``fisher_samples``: inputs drawn per GFI for the per-sample Fisher terms.
    - ``normalize_fisher``: divide each Fisher by its mean over the sub-network.
    - ``coupling``: "features" or "soft"; None picks "soft" for distillation, else "features".
    - ``temperature``: of the soft coupling.
    - ``stage_epochs``: passes over the data per stage and round.
    - ``tol``: stop when every stage loss changed by at most ``tol`` (relative) in a round.
    """

    variant: str = "transfer"
    schedule: str = "staged"
    decoder_fixed: bool = False
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

    def validate(self) -> None:
        super().validate()
        for name, value, allowed in (("variant", self.variant, VARIANTS), ("schedule", self.schedule, SCHEDULES),
                                     ("importance", self.importance, IMPORTANCES),
                                     ("rf_estimator", self.rf_estimator, RF_ESTIMATORS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.decoder_fixed and self.schedule != "sequential":
            raise ValueError("decoder_fixed (CETL_f) needs schedule='sequential'")
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
