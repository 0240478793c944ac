"""Experiments of the feature-based methods on the offline datasets.

- :func:`synthetic_experiment`: Lee et al. 2018 (Deep-AMTFL), sec. 4.1 (STL, Go-MTL, AMTL,
  AMTFL; RMSE on easy, hard and all tasks over the five random splits), as the paper states
  it: task parameters generated with noise (:func:`mtlkernels.datasets.amtfl_synthetic`), an
  l1 on L for every model that has an L (Go-MTL, AMTFL), no non-negativity on AMTL's B,
  the linear hidden layer for AMTFL, hyper-parameters by validation over grids spanning
  four or five decades; the table says which chosen values sit on a grid's edge.
- :func:`digits_experiment`: one-vs-all digits, balanced and imbalanced (STL,
  AdaptiveSharing, LatentTaskMTL; multi-class accuracy and mean average precision).

Hyper-parameters are chosen on each split's validation set, never on test. Used by
``make demo`` (``quick=True``: fewer splits and smaller grids) and by
``benchmarks/methods_linear.py`` (the full run whose table is committed).
"""

from __future__ import annotations

import itertools
import time
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import average_precision_score

from ..datasets import amtfl_synthetic, digits_tasks
from ..linear import AMTFL, AMTL, AdaptiveSharing, GoMTL, LatentTaskMTL, SingleTaskLinear


def _grid(base, grid: dict):
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield clone(base).set_params(**dict(zip(keys, values)))


def _select(base, grid, fit_data, val_score):
    """Fit every grid point, keep the best by val_score (higher is better). The iteration
    caps are the experiment's (alternating models that stop early warn; the warning is
    counted, not shown)."""
    best, best_score, best_params = None, -np.inf, None
    for est in _grid(base, grid):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(fit_data)
        s = val_score(est)
        if s > best_score:
            best, best_score, best_params = est, s, {k: est.get_params()[k] for k in grid}
    return best, best_params


def on_edge(params: dict, grid: dict) -> list[str]:
    """The hyper-parameters whose chosen value is the first or last of its grid."""
    return [k for k, v in params.items() if len(grid[k]) > 1 and v in (grid[k][0], grid[k][-1])]


def synthetic_methods(quick: bool):
    """(estimator, grid) per method. Lee, Yang and Hwang (2018), sec. 4.1: l1 on L for the
    models with an L (``l1_L``), no non-negativity on B, linear features for AMTFL."""
    decades = [1e-3, 1e-2, 1e-1, 1.0] if quick else [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    cap = {"max_outer": 15 if quick else 30}
    return {
        "STL": (SingleTaskLinear(), {"alpha": [1e-3, 1e-2, 1e-1, 1.0, 10.0]}),
        "Go-MTL": (GoMTL(n_latent=6, l1_L=1e-2, **cap), {"mu": decades, "lam": decades}),
        "AMTL": (AMTL(nonneg=False, **cap),
                 {"mu": [1e-3, 1e-1] if quick else [1e-3, 1e-2, 1e-1],
                  "gamma": [1e-3, 1e-1] if quick else [1e-3, 1e-2, 1e-1, 1.0], "alpha": [1e-2, 1e-1, 1.0]}),
        "AMTFL": (AMTFL(n_latent=6, mu=1e-2, l1_L=1e-2, **cap),
                  {"gamma": [1e-3, 1e-1] if quick else [1e-3, 1e-2, 1e-1, 1.0], "lam": decades}),
    }


def synthetic_experiment(splits=range(5), quick: bool = False, seed: int = 0, log=print) -> dict:
    """RMSE of each method on easy / hard / all tasks, per split, hyper-parameters by val RMSE."""
    methods = synthetic_methods(quick)
    results = {name: {"easy": [], "hard": [], "all": [], "params": [], "edges": [], "seconds": []} for name in methods}
    for split in splits:
        ds = amtfl_synthetic(seed=seed, split=split)
        easy = ds.info["easy"]
        Xv, yv = ds.split("val")
        for name, (base, grid) in methods.items():
            t0 = time.perf_counter()
            est, params = _select(base, grid, ds, lambda e: -float(np.mean(e.task_rmse(Xv, yv))))
            rmse = est.task_rmse(ds)
            r = results[name]
            r["easy"].append(float(rmse[easy].mean()))
            r["hard"].append(float(rmse[~easy].mean()))
            r["all"].append(float(rmse.mean()))
            r["params"].append(params)
            r["edges"].append(on_edge(params, grid))
            r["seconds"].append(time.perf_counter() - t0)
            log(f"  synthetic split {split} {name:7s} rmse all {rmse.mean():.3f} easy {rmse[easy].mean():.3f} "
                f"hard {rmse[~easy].mean():.3f} {params} ({r['seconds'][-1]:.1f} s)")
    return results


DIGIT_GROUPS = [0, 1, 2, 2, 1, 2, 0, 1, 0, 0]  # loops {0, 6, 8, 9}, straight strokes {1, 4, 7}, curves {2, 3, 5}


def digits_methods(quick: bool):
    small = {"max_outer": 5 if quick else 10}
    return {
        "STL": (SingleTaskLinear(loss="logistic", max_iter=500), {"alpha": [1e-3, 1e-2]}),
        "AdaptiveSharing": (AdaptiveSharing(loss="logistic", max_iter=500),
                            {"lambda_c": [1e-3, 1e-2], "lambda_s": [1e-4, 1e-3]}),
        "LatentTaskMTL (M)": (LatentTaskMTL(n_latent=10, **small), {"mu": [1e-3, 1e-2], "gamma": [1e-4]}),
        "LatentTaskMTL (MG)": (LatentTaskMTL(n_latent=10, groups=DIGIT_GROUPS, **small),
                               {"mu": [1e-3, 1e-2], "gamma": [1e-4]}),
    }


def _digits_scores(est, X, Y, labels):
    S = est.decision_function(X)
    acc = float((S.argmax(1) == labels).mean())
    ap = [float(average_precision_score(Y[:, t], S[:, t])) for t in range(Y.shape[1])]
    return acc, ap


def digits_experiment(imbalanced: bool, seeds=range(3), quick: bool = False, log=print) -> dict:
    """Multi-class accuracy (argmax of the one-vs-all scores) and mean AP on test."""
    results = {name: {"acc": [], "map": [], "ap": [], "params": [], "seconds": []} for name in digits_methods(quick)}
    for seed in seeds:
        ds = digits_tasks(imbalanced=imbalanced, seed=seed)
        Xv, Yv = ds.stacked("val")
        Xt, Yt = ds.stacked("test")
        for name, (base, grid) in digits_methods(quick).items():
            t0 = time.perf_counter()
            est, params = _select(base, grid, ds, lambda e: _digits_scores(e, Xv, Yv, ds.info["class_labels"]["val"])[0])
            acc, ap = _digits_scores(est, Xt, Yt, ds.info["class_labels"]["test"])
            r = results[name]
            r["acc"].append(acc)
            r["map"].append(float(np.mean(ap)))
            r["ap"].append(ap)
            r["params"].append(params)
            r["seconds"].append(time.perf_counter() - t0)
            log(f"  {ds.name} seed {seed} {name:18s} acc {acc:.3f} mAP {np.mean(ap):.3f} {params} "
                f"({r['seconds'][-1]:.1f} s)")
    return results


def mean_std(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def edge_note(results: dict) -> str:
    """Which chosen hyper-parameters sat on a grid's edge, and how often."""
    notes = []
    for name, r in results.items():
        counts = {}
        for edges in r.get("edges", []):
            for k in edges:
                counts[k] = counts.get(k, 0) + 1
        if counts:
            notes.append(f"{name}: " + ", ".join(f"{k} {n}/{len(r['edges'])}" for k, n in counts.items()))
    return ("chosen on a grid edge (splits): " + "; ".join(notes)) if notes else "no chosen value on a grid edge"


def ordering_note(results: dict) -> str:
    """Which of the orderings Lee, Yang and Hwang (2018) report on this experiment (sec. 4.1,
    Fig. 5a) hold here, by mean test RMSE."""
    m = {name: {k: float(np.mean(r[k])) for k in ("easy", "hard", "all")} for name, r in results.items()}
    if not {"STL", "Go-MTL", "AMTL", "AMTFL"} <= set(m):
        return ""
    claims = [
        ("AMTFL < STL on easy tasks", m["AMTFL"]["easy"] < m["STL"]["easy"]),
        ("AMTFL < STL on hard tasks", m["AMTFL"]["hard"] < m["STL"]["hard"]),
        ("Go-MTL > STL on hard tasks (negative transfer)", m["Go-MTL"]["hard"] > m["STL"]["hard"]),
        ("AMTFL < Go-MTL on all tasks", m["AMTFL"]["all"] < m["Go-MTL"]["all"]),
        ("AMTFL < AMTL on all tasks", m["AMTFL"]["all"] < m["AMTL"]["all"]),
    ]
    held = [c for c, ok in claims if ok]
    failed = [c for c, ok in claims if not ok]
    return (f"the paper's orderings that hold here: {'; '.join(held) or 'none'}; that do not: "
            f"{'; '.join(failed) or 'none'}.")


def synthetic_table(results: dict) -> list[list]:
    return [[name, mean_std(r["easy"]), mean_std(r["hard"]), mean_std(r["all"]), f"{np.mean(r['seconds']):.1f}"]
            for name, r in results.items()]


def digits_ordering_note(results: dict) -> str:
    """Whether the papers' orderings hold here by mean test accuracy: Adaptive Sharing above
    STL (Shen et al., 2015, Table 1) and MG >= M above STL (Abdulnabi et al., 2015)."""
    acc = {name: float(np.mean(r["acc"])) for name, r in results.items()}
    claims = [("AdaptiveSharing > STL", acc.get("AdaptiveSharing", 0) > acc.get("STL", 1)),
              ("LatentTaskMTL (M) > STL", acc.get("LatentTaskMTL (M)", 0) > acc.get("STL", 1)),
              ("LatentTaskMTL (MG) >= LatentTaskMTL (M)", acc.get("LatentTaskMTL (MG)", 0) >= acc.get("LatentTaskMTL (M)", 1))]
    held = [c for c, ok in claims if ok]
    failed = [c for c, ok in claims if not ok]
    return (f"the papers' orderings that hold here: {'; '.join(held) or 'none'}; that do not: "
            f"{'; '.join(failed) or 'none'} (differences within the seed spread unless they exceed it).")


def digits_table(results: dict) -> list[list]:
    return [[name, mean_std(r["acc"]), mean_std(r["map"]), f"{np.mean(r['seconds']):.1f}"] for name, r in results.items()]


# ---- the common experiment contract: run(seeds, quick, out_dir, log) -> dict ---------------


def run_synthetic(seeds=(0, 1, 2, 3, 4), quick: bool = False, out_dir=None, log=print) -> dict:
    """Lee et al. 2018 (Deep-AMTFL), sec. 4.1: STL, Go-MTL, AMTL, AMTFL on amtfl_synthetic (seeds = splits)."""
    res = synthetic_experiment(splits=seeds, quick=quick, log=log)
    order = sorted(res, key=lambda k: np.mean(res[k]["hard"]))
    best_hard = order[0]
    note = f"lowest hard-task RMSE: {best_hard}. {ordering_note(res)} {edge_note(res)}"
    return {"title": "Linear methods on the AMTFL synthetic data (test RMSE, lower is better)",
            "columns": ["method", "RMSE easy", "RMSE hard", "RMSE all", "s per split"],
            "rows": synthetic_table(res), "notes": note, "plots": [], "raw": res}


def run_digits(seeds=(0, 1, 2), quick: bool = False, out_dir=None, log=print) -> dict:
    """STL, AdaptiveSharing, LatentTaskMTL (M, MG) on one-vs-all digits, balanced and imbalanced."""
    rows, raw = [], {}
    for imb in (False, True):
        res = digits_experiment(imb, seeds=seeds, quick=quick, log=log)
        name = "imbalanced" if imb else "balanced"
        raw[name] = res
        rows += [[f"{r[0]} ({name})", *r[1:]] for r in digits_table(res)]
    return {"title": "Linear methods on one-vs-all digits (test multi-class accuracy and mean AP)",
            "columns": ["method", "multi-class acc", "mean AP", "s per seed"], "rows": rows,
            "notes": "hyper-parameters chosen by validation accuracy", "plots": [], "raw": raw}
