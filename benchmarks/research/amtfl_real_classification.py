"""Research script (not a benchmark): AMTFL with a classification loss at its defaults on four
small real datasets bundled with scikit-learn, raw columns, split into tasks by a column's
quantiles (or, for digits, by sample index with one digit against the rest per task); one
thread: fit time, whether it converged, the KKT residual and the objective reached.

2026-11-27, night (the same session, one thread), before -> after the proximal Newton blocks of
``linear/_amtfl_newton.py`` with 20 joint FISTA steps (before: FISTA on (L, S, b) only):
    diabetes > median, 4 tasks by age    logistic 1.9528 -> 1.9479   squared hinge 3.1278 -> 2.4593
    breast cancer, 3 tasks by area       logistic 0.5232 -> 0.4175   squared hinge 0.3879 -> 0.2959
    wine class 1, 2 tasks by hue         logistic 0.1336 both        squared hinge 0.07241298 -> 0.07241337
    digits, 5 one-vs-rest tasks          logistic 0.3011 -> 0.1725   squared hinge 0.1680 -> 0.0594
19 s -> 51 s in all. Only wine's fits reach their optimum, before and after (the others warn;
the squared hinge's after at another stationary point, 5e-6 higher). Runs in separate
processes differ in the last digits where a fit crawls (digits / logistic 0.1725 or 0.1728).

``--school``: school_like(0)'s train split, labels y > the median of all y, n_latent=10
(the 139 tasks with both classes): 10.7 s, F 69.5524 -> 70 s, F 69.5475 (neither converges).

Usage (from python_tests/, after `make install`; about a minute, --school about 80 s more):
    ../.venv/bin/python ../benchmarks/research/amtfl_real_classification.py [--school]
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine

from mtlkernels.datasets import school_like
from mtlkernels.linear import AMTFL


def tasks_by(X, y, key, n_tasks):
    """Tasks by the quantiles of one column ``key``."""
    g = np.searchsorted(np.quantile(key, np.linspace(0, 1, n_tasks + 1)[1:-1]), key)
    return [X[g == i] for i in range(n_tasks)], [y[g == i] for i in range(n_tasks)]


def problems():
    d = load_diabetes(scaled=False)
    yield "diabetes/age4", *tasks_by(d.data, (d.target > np.median(d.target)).astype(int), d.data[:, 0], 4)
    b = load_breast_cancer()
    yield "cancer/area3", *tasks_by(b.data, b.target, b.data[:, 3], 3)
    w = load_wine()
    yield "wine/hue2", *tasks_by(w.data, (w.target == 1).astype(int), w.data[:, 10], 2)
    g = load_digits()
    part = np.arange(len(g.target)) % 5
    yield "digits/5", [g.data[part == i] for i in range(5)], [(g.target[part == i] == i).astype(int) for i in range(5)]
    if "--school" in sys.argv:
        Xs, ys = school_like(0).split("train")
        ys = [(y > np.median(np.concatenate(ys))).astype(int) for y in ys]
        keep = [t for t, y in enumerate(ys) if len(set(y)) == 2]
        yield "school_like", [Xs[t] for t in keep], [ys[t] for t in keep]


def main():
    torch.set_num_threads(1)
    total = 0.0
    for name, Xs, ys in problems():
        for loss in ("logistic",) if name == "school_like" else ("logistic", "squared_hinge"):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est = AMTFL(loss=loss, n_latent=10 if name == "school_like" else 6).fit(Xs, ys)
            t = time.perf_counter() - t0
            total += t
            print(f"{name:14s} {loss:14s} {t:6.2f} s  converged={est.converged_!s:5s} "
                  f"residual={est.residual_:.1e}  F={est.objective_history_[-1]:.8f}", flush=True)
    print(f"total {total:.0f} s")


if __name__ == "__main__":
    main()
