"""Research script (not a benchmark): are refits bitwise identical? scikit-learn's
check_fit_idempotent failed for ``AMTFL(hidden="relu", max_outer=5, max_iter=300)`` in one
``make test`` of 2026-11-28 and passed when rerun. Its data (100 x 2 around 100, the same
ShuffleSplit), one estimator refitted 40 times per trial with numpy buffers of other sizes
allocated in between, predictions compared bitwise.

Measured 2026-11-28 (two threads): with ``torch.linalg.lstsq``'s default CPU driver (gelsy)
for AMTFL's start of A (``--gelsy``), 1 and 3 of the 200 refits of two runs differ (a first
version of this script: 11 of 200; the start moves by 1 ulp, 8.9e-16 in the sum of A, and the
unconverged ReLU fit makes that 3e-5 in its objective and 1e-4 in its predictions); with
gelsd (the estimator since then) none of 200 does. A single gelsy call on fixed inputs
differs from its first result in 2 of 300 calls with the allocator's state shuffled (13 in a
first version), gelsd / gelss / gels in none (``--lstsq``).

Usage (from python_tests/, after `make install`; about a minute):
    ../.venv/bin/python ../benchmarks/research/refit_determinism.py [--gelsy | --lstsq]
"""

import sys
import warnings

import numpy as np
import torch
from sklearn.model_selection import ShuffleSplit

from mtlkernels.linear import AMTFL


def lstsq_drivers():
    """One lstsq of fixed inputs (80 x 1 and 80 x 6) 300 times per driver, the allocator's state
    shuffled by tensors of random sizes kept alive across each call."""
    torch.manual_seed(0)
    A, B = torch.randn(80, 1, dtype=torch.float64) * 100 + 3, torch.randn(80, 6, dtype=torch.float64) * 50
    for driver in ("gelsy", "gelsd", "gelss", "gels"):
        ref = torch.linalg.lstsq(A, B, driver=driver).solution
        differ = 0
        for _ in range(300):
            junk = [torch.empty(int(n)) for n in torch.randint(1, 5000, (7,))]  # noqa: F841
            differ += not torch.equal(torch.linalg.lstsq(A.clone(), B.clone(), driver=driver).solution, ref)
        print(f"{driver}: {differ} of 300 calls differ from the first")


def main():
    if "--lstsq" in sys.argv:
        return lstsq_drivers()
    if "--gelsy" in sys.argv:  # the default driver, as before
        lstsq = torch.linalg.lstsq
        torch.linalg.lstsq = lambda A, B, driver=None: lstsq(A, B)
    warnings.simplefilter("ignore")
    rng = np.random.RandomState(0)
    X0, y0 = rng.normal(loc=100, size=(100, 2)), rng.normal(size=100)
    train, _ = next(ShuffleSplit(test_size=0.2, random_state=rng).split(X0))
    X, y = X0[train], y0[train]
    for trial in range(5):
        est = AMTFL(hidden="relu", max_outer=5, max_iter=300)
        first = est.fit(X, y).predict(X)
        differ = 0
        for _ in range(40):
            junk = [np.empty(int(n)) for n in rng.randint(1, 500, size=7)]  # noqa: F841 (moves the next buffers)
            Xc = np.empty(X.size + int(rng.randint(0, 8)))[-X.size:].reshape(X.shape)
            Xc[:] = X
            differ += not np.array_equal(est.fit(Xc, y).predict(X), first)
        print(f"trial {trial}: {differ} of 40 refits differ")


if __name__ == "__main__":
    main()
