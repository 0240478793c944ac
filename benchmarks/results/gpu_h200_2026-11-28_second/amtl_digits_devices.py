"""The diagnostic behind this folder's README (run from python_tests/ on the GPU machine:
``python3 ../benchmarks/results/gpu_h200_2026-11-28_second/amtl_digits_devices.py``):
logistic AMTL on digits in 5 tasks on each device and tolerance, with time, steps, residual,
objective and warnings."""
import sys
import time
import warnings

import torch

sys.path.insert(0, ".")
from test_amtl_hessian import digits_in_five_tasks  # noqa: E402
from mtlkernels.linear import AMTL  # noqa: E402

Xs, ys = digits_in_five_tasks()
for d, tol in (("cpu", 1e-6), ("cuda", 1e-6), ("cuda", 1e-9), ("cpu", 1e-9)):
    t = time.time()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        e = AMTL(loss="logistic", device=d, tol=tol).fit(Xs, ys)
    if d == "cuda":
        torch.cuda.synchronize()
    print(d, tol, round(time.time() - t, 1), e.n_iter_, e.residual_, repr(e.objective_history_[-1]),
          [str(x.message)[:150] for x in w], flush=True)
