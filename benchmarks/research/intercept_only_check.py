"""Research check (not a benchmark): does any alternating estimator end above the
intercept-only model? That model (L, S, A at 0, each task's best constant) is a feasible
point of every objective here, so a final objective above it means a fit that stopped at a
bad start or a false convergence. Go-MTL, LatentTaskMTL, AMTL, AMTFL (linear and ReLU) on
the 12 small raw problems of ``amtfl_raw_classification.py`` x logistic / squared hinge /
squared (labels x 3 as targets); prints the fits above that objective, non-finite, or
slower than 30 s.

2026-11-27, evening: 3 flagged (AMTFL with the ReLU layer on features of 1e6: F 47.6 /
132.4 / 168.0 against 2.08 / 3.00 / 3.37) before the joint scales of (L, S, A, c) in
``AMTFL._valley_steps``; 0 after.

Usage (from python_tests/, after `make install`; about 3 minutes):
    ../.venv/bin/python ../benchmarks/research/intercept_only_check.py
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import amtfl_raw_classification as raw  # noqa: E402

from mtlkernels.linear import AMTFL, AMTL, GoMTL, LatentTaskMTL  # noqa: E402


def intercepts_only(ys, loss: str) -> float:
    """The objective of the best constant per task (mean weighting)."""
    out = 0.0
    for y in ys:
        y = np.asarray(y, float)
        if loss == "squared":
            out += 0.5 * y.var()
        elif loss == "logistic":
            p = y.mean()
            out += -(p * np.log(p) + (1 - p) * np.log(1 - p)) if 0 < p < 1 else 0.0
        else:  # squared hinge on {-1, +1}: the best constant by a fine grid (it lies in [-1, 1])
            s = 2 * y - 1
            out += min(np.mean(np.maximum(0, 1 - s * b) ** 2) for b in np.linspace(-1, 1, 2001))
    return out


MODELS = [lambda loss: GoMTL(n_latent=2, loss=loss, max_outer=30),
          lambda loss: LatentTaskMTL(n_latent=2, loss=loss, max_outer=30),
          lambda loss: AMTL(loss=loss, max_outer=30),
          lambda loss: AMTFL(n_latent=2, loss=loss, max_outer=30),
          lambda loss: AMTFL(n_latent=2, loss=loss, hidden="relu", max_outer=10, max_iter=300)]


def main() -> None:
    flagged = 0
    for name, (Xs, ys) in raw.cases().items():
        for loss in ["logistic", "squared_hinge", "squared"]:
            yy = ys if loss != "squared" else [np.asarray(y, float) * 3.0 for y in ys]
            F0 = intercepts_only(yy, loss)
            for make in MODELS:
                est = make(loss)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est.fit(Xs, yy)
                dt, F = time.perf_counter() - t0, est.objective_history_[-1]
                above = not F <= 1.001 * F0 + 1e-9
                if above or not np.isfinite(F) or dt > 30:
                    flagged += 1
                    print(f"{name:16s} {loss:13s} {type(est).__name__:14s} {getattr(est, 'hidden', '')} "
                          f"F={F:.6g} intercepts only={F0:.6g} {dt:.1f} s{'  <-- above' if above else ''}", flush=True)
    print("flagged", flagged)


if __name__ == "__main__":
    main()
