"""GridSearchCV on per-task data: the stacked (X, y, tasks) form of mtlkernels.linear, here
choosing the trace-norm weight of TraceNormMTL (Ji and Ye 2009).

Every row of X carries its task id; StratifiedKFold on the task ids cuts samples within
tasks (each fold holds samples of every task), and scikit-learn's metadata routing hands
each fold's ids to fit and score. Data: the synthetic tasks of Lee et al. 2018 (AMTFL),
sec. 4.1 (mtlkernels.datasets.amtfl_synthetic, generated offline).

    python examples/linear_gridsearch.py            # full grid
    MTLKERNELS_SMOKE=1 python examples/linear_gridsearch.py   # (or --smoke) seconds
"""

import os
import sys

import numpy as np
import sklearn
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from mtlkernels.datasets import amtfl_synthetic
from mtlkernels.linear import TraceNormMTL

torch.set_num_threads(1)  # tiny problems: one thread is fastest
smoke = os.environ.get("MTLKERNELS_SMOKE") == "1" or "--smoke" in sys.argv

ds = amtfl_synthetic(seed=0)
Xs, ys = ds.split("train")
X, y = np.concatenate(Xs), np.concatenate(ys)
tasks = np.concatenate([np.full(len(x), t) for t, x in enumerate(Xs)])  # the task id of every row

grid = {"alpha": [0.1, 1.0]} if smoke else {"alpha": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}  # the trace-norm weight
cv = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=0).split(X, tasks))  # samples within tasks

with sklearn.config_context(enable_metadata_routing=True):
    est = TraceNormMTL().set_fit_request(tasks=True).set_score_request(tasks=True)
    search = GridSearchCV(est, grid, cv=cv).fit(X, y, tasks=tasks)

scores = search.cv_results_["mean_test_score"]  # mean over tasks of R^2 on each fold's held-out rows
assert np.all(np.isfinite(scores)), scores
Xt, yt = ds.split("test")
print(f"validation R^2 per setting: {np.round(scores, 3).tolist()}")
print(f"best {search.best_params_}: test R^2 (mean over tasks) {search.best_estimator_.score(Xt, yt):.3f}")
