"""Research script (not a benchmark): every estimator of ``mtlkernels.linear`` at its defaults
on small real datasets bundled with scikit-learn, raw columns, split into tasks as in
``amtfl_real_classification.py`` (diabetes as regression, breast cancer and digits with the
logistic loss, LatentTaskMTL with its squared hinge): fit time, whether it reached its
optimum (every other fit must warn), the KKT residual and the training score.

2026-11-27, night (two threads), after the proximal Newton blocks of AMTL and AMTFL: all 24 fits
run; at their optimum: the convex four everywhere, AMTL on diabetes and breast cancer (1.7 s on the latter;
112 s and unconverged before), Go-MTL on breast cancer. The others warn: Go-MTL, LatentTaskMTL
and AMTFL on diabetes and digits, LatentTaskMTL and AMTFL on breast cancer (residuals 1.3e-6 to
5.7e-3: the valley of W = L S), AMTL on digits (2.9e-5: the coupling of W and B).
2026-11-27, late: Go-MTL on digits now at its optimum too (0.25 s; 3.7 s and 8.8e-6 before), its
projected-Newton finish taking the data term's Hessian from weighted Gram matrices (``_hessian``).
2026-11-28 (two threads): the finish kept where it lowers the objective (``_polish.keep_polished``),
and AMTL's finish with its Hessian from each task's loss to second order: AMTL on breast cancer F
0.0637 -> 0.0480 (still warning: the objective keeps falling, raw areas of 1e3 and a nearly separable
problem), on digits at its optimum in 4.1 s (F 0.18978 and a warning at 2.9e-5 in 3.0 s before);
Go-MTL on diabetes F 5094.2613 -> 5094.2257 (still warning). The others as they were. AMTFL on
breast cancer is the farthest from its optimum: F 0.417 after its 100 outer steps, 0.291 after
1200 (warm restarts, ``max_outer=200`` each) and still falling; its finish (261 unknowns, above the
autograd cap of 256) lowers it to 0.363 in 50 steps when allowed, at 0.1 s a step.
2026-11-28, later (two threads): the latent models' finish tries saddle-free Newton steps too
(``_polish``): Go-MTL on diabetes (5 bases for 4 tasks) at its optimum in 0.6 s (1.3 s and a warning
at 5.7e-5 before: the shifted Newton steps zigzagged at half length); LatentTaskMTL's finish runs
with its zero groups held at zero: on diabetes at its optimum in 0.7 s (1.3e-6 and a warning before); on
breast cancer its finish stops at 7.2e-5 after 50 steps (the squared hinge's kinks) and the fit warns at
6.1e-6 after 200 outer steps (208 reach 1e-6). The others as they were.

Usage (from python_tests/, after `make install`; about a minute):
    ../.venv/bin/python ../benchmarks/research/real_sweep.py [EstimatorName ...]
"""

from __future__ import annotations

import sys
import time
import warnings

import torch
from sklearn.datasets import load_breast_cancer, load_diabetes

from mtlkernels.linear import (AMTFL, AMTL, AdaptiveSharing, GoMTL, JointFeatureSelection, LatentTaskMTL,
                               SingleTaskLinear, TraceNormMTL)

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from amtfl_real_classification import problems, tasks_by  # noqa: E402


def estimators(classification: bool):
    kw = {"loss": "logistic"} if classification else {}
    return [SingleTaskLinear(**kw), AdaptiveSharing(**kw), TraceNormMTL(**kw), JointFeatureSelection(**kw),
            GoMTL(**kw), LatentTaskMTL(**({} if classification else {"loss": "squared"})), AMTL(**kw), AMTFL(**kw)]


def sweep(name: str, classification: bool, Xs, ys, only=()) -> None:
    """Fit every estimator (or those named in ``only``) on (Xs, ys); one line each."""
    for est in estimators(classification):
        if only and type(est).__name__ not in only:
            continue
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est.fit(Xs, ys)
        t = time.perf_counter() - t0
        warned = any(w.category.__name__ == "ConvergenceWarning" for w in caught)
        print(f"{name:14s} {type(est).__name__:22s} {t:6.2f} s  converged={est.converged_!s:5s} "
              f"warned={warned!s:5s} residual={est.residual_:.1e}  score={est.score(Xs, ys):.3f}  "
              f"F={est.objective_history_[-1]:.10g}", flush=True)


def main():
    torch.set_num_threads(2)
    d, b = load_diabetes(scaled=False), load_breast_cancer()
    data = [("diabetes/age4", False, *tasks_by(d.data, d.target, d.data[:, 0], 4)),
            ("cancer/area3", True, *tasks_by(b.data, b.target, b.data[:, 3], 3))]
    data += [(name, True, Xs, ys) for name, Xs, ys in problems() if name == "digits/5"]
    only = [a for a in sys.argv[1:] if not a.startswith("-")]
    for name, classification, Xs, ys in data:
        sweep(name, classification, Xs, ys, only)


if __name__ == "__main__":
    main()
