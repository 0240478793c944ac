"""Research script (not a benchmark): a crash sweep, not a convergence study. Every alternating
and classification path of ``mtlkernels.linear`` on the small raw problems of
``python_tests/test_linear_raw_fuzz.raw_problem`` (seeds [13, i]; labels y > the task's median
where every task has both classes), float32 and float64 in turn, few outer steps: each fit must
end without an exception and with finite coefficients (a fit not at its optimum warns, which is
allowed here).

2026-11-27, night, 40 problems: 2 failures (Go-MTL, logistic, float32: ``linalg.inv`` of a
valley move singular to float32, problems 11 and 27), then none; with AMTFL and AMTL
classification (seeds [11, i], 60 problems, ``--amtfl``): 1 failure (AMTFL, logistic, float32,
problem 57: a nan step in the (A, c) residual at ReLU kinks), then none.

Usage (from python_tests/, after `make install`; a few minutes):
    ../.venv/bin/python ../benchmarks/research/crash_sweep.py [--amtfl]
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from mtlkernels.linear import (AMTFL, AMTL, AdaptiveSharing, GoMTL, JointFeatureSelection, LatentTaskMTL,
                               SingleTaskLinear, TraceNormMTL)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python_tests"))
from test_linear_raw_fuzz import raw_problem  # noqa: E402


def fits(i, Xs, ys, labels, amtfl):
    dt = ["float64", "float32"][i % 2]
    if amtfl:
        return [] if labels is None else [
            (AMTFL(loss="logistic", n_latent=1 + i % 8, max_outer=5, dtype=dt), labels),
            (AMTFL(loss="squared_hinge", n_latent=3, max_outer=5, fit_intercept=bool(i % 3),
                   task_weighting=["mean", "sum"][i % 2]), labels),
            (AMTL(loss="logistic", max_outer=5, dtype=dt, mu=[0, 1e-2][i % 2]), labels),
            (AMTL(loss="squared_hinge", max_outer=5, fit_intercept=bool(i % 3)), labels)]
    out = [(GoMTL(n_latent=3, max_outer=5, dtype=dt), ys),
           (LatentTaskMTL(n_latent=3, max_outer=5, loss="squared", dtype=dt), ys),
           (AMTFL(n_latent=3, hidden="relu", max_outer=3, dtype=dt, max_iter=300), ys)]
    if labels is not None:
        out += [(GoMTL(n_latent=3, loss="logistic", max_outer=5, dtype=dt), labels),
                (LatentTaskMTL(n_latent=3, max_outer=5, dtype=dt), labels),
                (AMTFL(n_latent=3, loss="squared_hinge", hidden="relu", max_outer=3, dtype=dt, max_iter=300), labels),
                (AdaptiveSharing(loss="logistic", dtype=dt), labels),
                (TraceNormMTL(loss="squared_hinge", dtype=dt), labels),
                (JointFeatureSelection(loss="logistic", dtype=dt), labels),
                (SingleTaskLinear(loss="logistic", dtype=dt), labels)]
    return out


def main():
    torch.set_num_threads(1)
    amtfl = "--amtfl" in sys.argv
    failures = 0
    for i in range(60 if amtfl else 40):
        Xs, ys = raw_problem(np.random.default_rng([11 if amtfl else 13, i]))
        labels = [(y > np.median(y)).astype(int) for y in ys]
        labels = labels if all(len(set(y)) == 2 for y in labels) else None
        for est, targets in fits(i, Xs, ys, labels, amtfl):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est.fit(Xs, targets)
                assert np.isfinite(est.coef_).all(), "non-finite coefficients"
            except Exception as e:  # noqa: BLE001 - the sweep reports every failure
                failures += 1
                print(f"problem {i}: {est!r}: {type(e).__name__}: {str(e)[:200]}", flush=True)
    print(f"failures: {failures}")


if __name__ == "__main__":
    main()
