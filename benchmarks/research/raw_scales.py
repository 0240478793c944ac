"""Research script (not a benchmark): every feature-based estimator, at its defaults, on
generated tables whose raw columns have wildly different units. Findings of 2026-11-27.

The generator (``make``): T tasks with n_t samples each drawn uniformly from a range, d
features z ~ N(0, 1) multiplied by scales 10^U(-spread, spread), every fifth column also
shifted by 1000 times its scale (removed by the intercept's centring), column 0 constant and
column 1 binary; targets from a rank-3 task matrix plus noise. school_like's columns span a
ratio of 2.4 (centred) to 266 (uncentred); these span 10^3 to 10^5 (``spread`` 1.5 to 2.5),
the units of a table with ratios next to incomes.

What it showed (one thread; ``tall``: 10 tasks, 50 features, 2000-8000 samples per task;
``many``: 300 tasks, 15 features, 5-40 samples; spread 2). Before the fix below, on a first
version of this generator (20% of the columns shifted at random, else the same):
SingleTaskLinear(penalty="l1") and JointFeatureSelection(alpha=1e-2) took 905 and 1415 ADMM
iterations on ``tall`` and 2000 (not converged) / 2255 on ``many``, and a residual could meet
tol with the objective still 3e-5 above scikit-learn's. Fixed: ADMM in W / inv, inv the
features' inverse scales, when they span more than 1e3 (``linear/_convex.py``).
This script after the fix, ``tall`` (2026-11-27; times taken while CI ran, so slow):
- SingleTaskLinear(penalty="l1") 30 iterations, JointFeatureSelection 25: at the optimum.
  (``many``, first generator: still 2000 / 1090, one rho for 300 tasks of different
  curvature; not fixed.)
- TraceNormMTL: 1030 iterations, converged (2370 on ``many``; spread 3, 10^6, defeats it).
- AdaptiveSharing: 5000 iterations, residual 8.3e-3, warns. The consensus ADMM's residual
  balancing on relative residuals drives rho to 1e-5 times the curvature; balancing on
  absolute residuals converged on the first generator's ``tall`` (5430 iterations) but is
  slower on school_like (3625 instead of 175) and on several other cases, and a rho fixed
  anywhere in 1e-4 .. 10 times the curvature does no better. The nuclear norm on C has no
  prox in a diagonal metric, so the rescaling above does not apply. Not fixed.
- GoMTL (residual 1.0e-5), LatentTaskMTL (6.6e-4), AMTL (3.3e-4, 30 s): warn. AMTL's W- and
  B-steps take 300-1400 ADMM iterations an outer step here. AMTFL did not finish in 7 min.
  On ``wide`` (30 tasks, 200 features, 20-60 samples, spread 4; d * n_latent > 1024, its
  FISTA path) AMTFL ran 10 minutes to a residual of 2e4. Not fixed.

After the ADMM engine's safeguards and proximal Newton (2026-11-27, later; one thread, CI
running beside it, so times are slow): ``tall`` spread 2: TraceNormMTL 175 iterations (was
1030), AdaptiveSharing converged in 3335 (was 5000 and 8.3e-3); ``many`` spread 2:
TraceNormMTL 260 (was 2370), AdaptiveSharing 685, JointFeatureSelection 365;
SingleTaskLinear(penalty="l1") still 2000 iterations, residual 1.5e-6 (one rho for 300
tasks). Spread 3 (10^6): TraceNormMTL converges (1015 and 550), AdaptiveSharing on ``tall``
ends at 2.7e-6 after 5000. The alternating estimators were not rerun.

Usage (from python_tests/, after `make install`; minutes per case):
    ../.venv/bin/python ../benchmarks/research/raw_scales.py SPREAD [tall|many|wide ...]
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import torch

from mtlkernels.linear import (AMTFL, AMTL, AdaptiveSharing, GoMTL, JointFeatureSelection, LatentTaskMTL,
                               SingleTaskLinear, TraceNormMTL)

CASES = {"tall": (10, 50, 2000, 8000), "many": (300, 15, 5, 40), "wide": (30, 200, 20, 60)}


def make(T, d, n_min, n_max, seed=0, spread=2.0):
    """Per-task lists (Xs, ys) with raw columns of scales 10^U(-spread, spread)."""
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-spread, spread, d)
    W = rng.normal(size=(d, 3)) @ rng.normal(size=(3, T)) + 0.1 * rng.normal(size=(d, T))
    shift = 1000 * scales * (np.arange(d) % 5 == 0)
    Xs, ys = [], []
    for _ in range(T):
        n = int(rng.integers(n_min, n_max + 1))
        Z = rng.normal(size=(n, d))
        Z[:, 0], Z[:, 1] = 1.0, rng.integers(0, 2, n)
        Xs.append(Z * scales + shift)
        ys.append(Z @ W[:, len(ys)] + rng.normal(size=n))
    return Xs, ys


def main():
    torch.set_num_threads(1)
    spread = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    for name in sys.argv[2:] or ["tall", "many"]:
        Xs, ys = make(*CASES[name], spread=spread)
        for est in [SingleTaskLinear(penalty="l1"), JointFeatureSelection(alpha=1e-2), TraceNormMTL(alpha=1e-2),
                    AdaptiveSharing(), GoMTL(), LatentTaskMTL(loss="squared"), AMTL(), AMTFL()]:
            t = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                est.fit(Xs, ys)
            print(f"{name} spread {spread:g} {type(est).__name__:22s} {time.perf_counter() - t:6.1f} s "
                  f"n_iter {est.n_iter_} residual {est.residual_:.1e} warned {bool(caught)}", flush=True)


if __name__ == "__main__":
    main()
