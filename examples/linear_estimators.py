"""Every feature-based estimator of mtlkernels.linear on the synthetic tasks of Lee et al. 2018
(AMTFL), sec. 4.1: 12 regression tasks, half of them with fewer samples; test RMSE per method.
STL is the independent baseline; AdaptiveSharing (Shen et al. 2015), GoMTL (Kumar and Daume
2012), AMTL (Lee et al. 2016), AMTFL (Lee et al. 2018, eq. 6), TraceNormMTL (Ji and Ye 2009)
and JointFeatureSelection (Argyriou et al. 2007) share across tasks. LatentTaskMTL (Abdulnabi
et al. 2015) classifies: it is shown on the signs of the targets.

    python examples/linear_estimators.py [--smoke]     # MTLKERNELS_SMOKE=1 works too
"""

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from _smoke import smoke
from mtlkernels.datasets import amtfl_synthetic
from mtlkernels.linear import (AMTFL, AMTL, AdaptiveSharing, GoMTL, JointFeatureSelection, LatentTaskMTL,
                               SingleTaskLinear, TraceNormMTL)

torch.set_num_threads(1)
ds = amtfl_synthetic(seed=0)
caps = {"max_outer": 5, "max_iter": 300} if smoke() else {}
models = {
    "STL": SingleTaskLinear(alpha=1e-2),
    "AdaptiveSharing": AdaptiveSharing(lambda_c=0.1, lambda_s=0.01),
    "TraceNormMTL": TraceNormMTL(alpha=0.1),
    "JointFeatureSelection": JointFeatureSelection(alpha=0.01),
    "GoMTL": GoMTL(n_latent=6, **caps),
    "AMTL": AMTL(**caps),
    "AMTFL": AMTFL(n_latent=6, **caps),
}
with warnings.catch_warnings():
    if smoke():  # capped iterations: not at the optimum, on purpose
        warnings.simplefilter("ignore", ConvergenceWarning)
    for name, est in models.items():
        rmse = est.fit(ds).task_rmse(ds)  # a MultiTaskDataset: fit on its train split, score on test
        print(f"{name:22s} test RMSE {rmse.mean():.3f}")
    Xs, ys = ds.split("train")
    Xt, yt = ds.split("test")
    clf = LatentTaskMTL(n_latent=6, **caps).fit(Xs, [np.sign(y) for y in ys])
    print(f"{'LatentTaskMTL (signs)':22s} test accuracy {clf.score(Xt, [np.sign(y) for y in yt]):.3f}")
