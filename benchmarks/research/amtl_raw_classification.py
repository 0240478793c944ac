"""Research script (not a benchmark): AMTL with a classification loss at its defaults on the
small raw problems of ``python_tests/test_linear_raw_fuzz.raw_problem`` (seeds [7, i], labels
y > the task's median; problems where a task has one class are skipped), one thread: fit
time, whether it reached its optimum, the KKT residual and the objective.

2026-11-27, night, the W-step by FISTA -> by proximal Newton (``_newton.prox_newton`` with
gamma ||W (I - B)||^2 in every step's model), 29 problems of the first 40:
    logistic       134 s -> 6.8-8.5 s, at their optimum 27 -> 28
    squared hinge   80 s -> 14 s,      at their optimum 28 -> 28
Objectives the same to 1e-6 on most; nonconvex, so 2 logistic fits end at another stationary
point with a higher objective (problem 1: 0.0088 -> 0.0135, near-separable; 26: 2.152 -> 2.301)
and 3 lower (18, unconverged before: 0.652 -> 0.208).

Usage (from python_tests/, after `make install`; ~20 s, the FISTA W-step took minutes):
    ../.venv/bin/python ../benchmarks/research/amtl_raw_classification.py [logistic|squared_hinge] [N]
"""

from __future__ import annotations

import sys
from pathlib import Path
import time
import warnings

import numpy as np
import torch

from mtlkernels.linear import AMTL

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python_tests"))
from test_linear_raw_fuzz import raw_problem  # noqa: E402


def main():
    torch.set_num_threads(1)
    loss = sys.argv[1] if len(sys.argv) > 1 else "logistic"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    total, converged, fits = 0.0, 0, 0
    for i in range(n):
        Xs, ys = raw_problem(np.random.default_rng([7, i]))
        ys = [(y > np.median(y)).astype(int) for y in ys]
        if any(len(set(y)) < 2 for y in ys):
            continue
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = AMTL(loss=loss).fit(Xs, ys)
        t = time.perf_counter() - t0
        total, converged, fits = total + t, converged + est.converged_, fits + 1
        print(f"{i:3d} {t:6.2f} s  converged={est.converged_!s:5s} residual={est.residual_:.1e}  "
              f"F={est.objective_history_[-1]:.6f}", flush=True)
    print(f"total {total:.1f} s, at their optimum {converged} of {fits}")


if __name__ == "__main__":
    main()
