"""Research script (not a benchmark): every estimator of ``mtlkernels.linear`` at its defaults
on two more shapes of public multi-task data, raw columns: fit time, whether it reached its
optimum (the others warn), the KKT residual and the training score.

--landmine  29 tasks of 445-690 samples, 9 columns of scales 1e-2..1e3 with offsets, about
            12 % positives, the logistic loss (LatentTaskMTL its squared hinge): the shape
            of the Landmine data (Xue et al., 2007) (``test_latent_hessian.landmine_like``).
--sarcos    one design of 20,000 samples, 21 correlated columns of scales 1e-1..1e2, 7
            regression targets from a nonlinear map of rank 3 plus noise: the shape of
            the Sarcos robot-arm data (one design shared by every task).

2026-11-27, late, two threads, before -> after the finish's Hessian from (weighted) Gram
matrices (``linear/_hessian.py``). --landmine: the four convex estimators at their optimum in
0.06-0.3 s; Go-MTL 4.1 s and a residual of 1.4e-3 -> 1.2 s at its optimum; LatentTaskMTL
4.8 s and 7.9e-4 -> 1.0 s at its optimum; AMTL (1.4e-6, 6.0 s) and AMTFL (4.5e-4, 25 s) warn.
--sarcos: the convex four 0.1-0.3 s; Go-MTL 13.2 s -> 2.2 s, at its optimum both times (the
Hessian from the squared loss's Gram form instead of autograd through 20,000 samples);
LatentTaskMTL 32 s -> 4.0 s, warning both times (5.2e-4); AMTL 1.0 s and AMTFL 3.0 s at theirs.
AMTL on --landmine reported ``converged_`` after 276 outer steps (max_outer=400) with its
objective still falling by 1e-5 a step (8.0770; 8.0084 after 2000 steps, still falling): the
stop rule now also asks the objective to have stopped falling (``_blocks.OuterLoop.update``),
and the fit warns.
2026-11-28, two threads, before -> after the finish's epsilon-active set (``linear/_polish.py``):
Go-MTL --landmine 1.4-1.6 s -> 0.8 s, --sarcos 2.2 s -> 0.5-0.6 s, both at the same optimum (F
10.26696 and 150047.31, now printed); LatentTaskMTL --landmine 1.0-1.2 s either way. Keeping an
l1 variable's two parts from both being positive (tried too) sent Go-MTL --landmine to another
local optimum 1.2 % higher (F 10.39282): not kept.

Usage (from python_tests/, after `make install`; about a minute each):
    ../.venv/bin/python ../benchmarks/research/shapes_sweep.py --landmine|--sarcos [EstimatorName ...]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

sys.path.insert(0, ".")  # python_tests/
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from real_sweep import sweep  # noqa: E402
from test_latent_hessian import landmine_like  # noqa: E402


def sarcos_like(seed=0, n=20000, d=21, T=7):
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-1, 2, d)
    X = (rng.standard_normal((n, d)) @ (np.eye(d) + 0.3 * rng.standard_normal((d, d))) * scales
         + rng.standard_normal(d) * scales)
    W = rng.standard_normal((d, 3)) @ rng.standard_normal((3, T)) / scales[:, None]
    return X, np.sin(X / scales) @ W * 10 + 5 * rng.standard_normal((n, T)) + 30


def main():
    torch.set_num_threads(2)
    landmine = "--sarcos" not in sys.argv
    X, Y = landmine_like() if landmine else sarcos_like()
    sweep("landmine" if landmine else "sarcos", landmine, X, Y, [a for a in sys.argv[1:] if not a.startswith("-")])


if __name__ == "__main__":
    main()
