"""Research script (not a benchmark): how many of the 30 small raw problems of
``python_tests/test_linear_alternating_fuzz.py`` each alternating estimator fits to its
optimum (``converged_``; the others warn), and in what time, one thread.

Settings: those of the tests for Go-MTL, LatentTaskMTL and AMTL (squared loss; the
classification rows on the 14 of the first 20 problems whose tasks all have two classes,
labels y > median(y)), AMTFL at its defaults with n_latent=2 (too slow for a unit test).

Usage (from python_tests/, after `make install`; AMTFL takes about 4 minutes):
    ../.venv/bin/python ../benchmarks/research/alternating_fuzz.py [gomtl latent gomtl-logistic
        latent-hinge amtl amtfl] [--each]
(--each: a line per problem: time, outer steps, converged_, residual, objective.)

2026-11-28, one thread, before -> after the finish kept for a lower objective and the stall stop
(``_blocks.STALL_STEPS``): AMTL 27 -> 27 of 30 (7, 12 and 27 unconverged, each with a task of at
most d + 1 samples: no minimiser, named by the warning), in 36 -> 35 s (problem 13 at a lower
optimum, 74904.067 against 74912.102, 1.3 -> 2.2 s; problem 27 3.1 -> 4.8 s, 35 s without the stall
stop); Go-MTL 29 -> 29, LatentTaskMTL 27 -> 27; AMTFL 26 -> 27.
2026-11-28, later, one thread, before -> after AMTL's finish took its Hessian in closed form with the
squared loss too (the intercepts by a Schur complement, instead of batched autograd; the same cap
of 256 parts: larger finishes on the synthetic set of Lee et al. 2018 cost 2-10 s a fit for no fit
more at its optimum), the latent models' finish tried saddle-free Newton steps as well and LatentTaskMTL's ran
with its zero groups held at zero (before: no finish where a group was zero) (``_polish``): AMTL
27 -> 27 of 30 in 38.5 -> 13.1 s (problem 12 26 s -> 1.3 s, F 2.7370 -> 2.6414; 7, 12 and 27 still
warn: tasks with no minimiser); LatentTaskMTL 27 -> 29 in 7.6 -> 3.4 s; latent-hinge 13 -> 14 of 14
in 7.0 -> 2.8 s; Go-MTL 29, Go-MTL logistic 14 and AMTFL 27 (83 s) unchanged. The saddle-free steps in AMTL's finish too (tried):
problem 24 (a task whose targets are all 0) went to B ~ 1e8 and stalled at a residual of 0.24.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, ".")  # python_tests/, for the problems

from test_linear_alternating_fuzz import PROBLEMS  # noqa: E402

from mtlkernels.linear import AMTFL, AMTL, GoMTL, LatentTaskMTL  # noqa: E402

CASES = {
    "gomtl": (lambda T: GoMTL(n_latent=2, mu=0.1, lam=0.1), False),
    "latent": (lambda T: LatentTaskMTL(n_latent=2, mu=0.1, gamma=0.01, lam=0.01, loss="squared",
                                       groups=np.arange(T) % 2), False),
    "gomtl-logistic": (lambda T: GoMTL(n_latent=2, mu=0.1, lam=0.1, loss="logistic"), True),
    "latent-hinge": (lambda T: LatentTaskMTL(n_latent=2, mu=0.1, gamma=0.01, lam=0.01, groups=np.arange(T) % 2),
                     True),
    "amtl": (lambda T: AMTL(alpha=0.1, gamma=0.1), False),
    "amtfl": (lambda T: AMTFL(n_latent=2), False),
}


def run(name: str, each: bool = False) -> None:
    make, labels = CASES[name]
    converged, total, unconverged, t0 = 0, 0, [], time.perf_counter()
    for i, (Xs, ys) in enumerate(PROBLEMS[:20] if labels else PROBLEMS):
        if labels:
            ys = [np.where(y > np.median(y), 1.0, -1.0) for y in ys]
            if any(len(np.unique(y)) < 2 for y in ys):
                continue
        total += 1
        t1 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = make(len(Xs)).fit(Xs, ys)
        if each:
            print(f"  {name} problem {i}: {time.perf_counter() - t1:.2f} s, {est.n_iter_} outer steps, "
                  f"converged={est.converged_}, residual {est.residual_:.1e}, F {est.objective_history_[-1]:.10g}")
        converged += est.converged_
        if not est.converged_:
            unconverged.append(i)
    print(f"{name}: {converged} of {total} converged in {time.perf_counter() - t0:.1f} s; unconverged: {unconverged}",
          flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    names = [a for a in sys.argv[1:] if a != "--each"]
    for name in names or list(CASES):
        run(name, "--each" in sys.argv)
