"""Input validation of the feature-based estimators, in scikit-learn's terms.

Three input forms (every method takes each):

- **shared**: one design ``X`` (n_samples, n_features) seen by every task, with ``Y``
  (n_samples, n_tasks), or a 1-D ``y`` for one task (predictions are then 1-D);
- **per-task lists**: ``[X_1, ..., X_T]`` and ``[y_1, ..., y_T]`` (tasks may have
  different sample counts);
- **stacked**: ``X`` (n_samples, n_features), ``y`` (n_samples,) and ``tasks``
  (n_samples,), the task id of every row. This is the form for scikit-learn's model
  selection: a splitter cuts rows, so every fold keeps samples of every task
  (``StratifiedKFold(...).split(X, tasks)``), and ``tasks`` travels with them as
  metadata (``set_fit_request(tasks=True)``, ``set_score_request(tasks=True)``).

``X`` is checked with scikit-learn's ``check_array`` / ``validate_data`` (dense, numeric,
float64 or float32, finite, at least one sample and one feature): the messages are
scikit-learn's. Sparse input is refused: the solvers work on dense Gram matrices.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import issparse
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_array, validate_data

FLOATS = (np.float64, np.float32)
SPARSE_HINT = "mtlkernels' linear estimators need dense X: convert it with X.toarray()"


def _dense(X, name):
    if issparse(X):
        raise TypeError(f"Sparse data was passed for {name}, but dense data is required; {SPARSE_HINT}")


def _is_task_list(X) -> bool:
    """A list or tuple of 2-D designs (one per task), as opposed to a nested list of rows."""
    return isinstance(X, (list, tuple)) and len(X) > 0 and all(np.ndim(x) == 2 for x in X)


def check_features(est, X, *, reset: bool, name: str = "X"):
    """One design through scikit-learn's checks; sets (reset) or checks ``n_features_in_``."""
    _dense(X, name)
    kw = {"accept_sparse": False, "dtype": FLOATS, "ensure_min_features": 1, "ensure_min_samples": 1}
    if name == "X":
        return validate_data(est, X, reset=reset, **kw)
    X = check_array(X, input_name=name, **kw)
    if not reset and X.shape[1] != est.n_features_in_:
        raise ValueError(f"{name} has {X.shape[1]} features, but {type(est).__name__} is expecting "
                         f"{est.n_features_in_} features as input.")
    return X


def check_targets(est, y, name: str) -> np.ndarray:
    """Targets of one task or a (n, T) block: float64 for regression, labels kept for classifiers."""
    if est._is_classifier():
        y = np.asarray(y)
        for col in (y.reshape(len(y), -1).T if y.ndim == 2 else [y]):
            check_classification_targets(col)  # "Unknown label type: continuous ..." for regression targets
        return y
    return check_array(y, ensure_2d=False, dtype=np.float64, input_name=name, ensure_min_samples=0)


def task_index(est, tasks, n: int, *, reset: bool) -> np.ndarray:
    """Map the stacked form's task ids to 0..T-1 (``tasks_`` holds the ids, sorted)."""
    tasks = np.asarray(tasks)
    if tasks.ndim != 1 or len(tasks) != n:
        raise ValueError(f"tasks must be a 1-D array with one task id per row of X ({n}), got shape {tasks.shape}")
    if reset:
        est.tasks_ = np.unique(tasks)
        return np.searchsorted(est.tasks_, tasks)
    known = getattr(est, "tasks_", np.arange(est.n_tasks_))
    idx = np.searchsorted(known, tasks).clip(0, len(known) - 1)
    unknown = tasks[known[idx] != tasks]
    if len(unknown):
        raise ValueError(f"tasks holds ids not seen in fit: {np.unique(unknown)[:5].tolist()}; the fitted task ids "
                         f"are {known[:10].tolist()}")
    return idx


def _split_like(stacked: np.ndarray, parts: list) -> list:
    return np.split(stacked, np.cumsum([len(p) for p in parts])[:-1]) if len(parts) > 1 else [stacked]


def _check_designs(est, X, reset: bool) -> list:
    """The per-task designs through scikit-learn's checks: in one call on their
    concatenation when they are non-empty float arrays of one dtype and width (a check
    a task cost 0.25 ms: 35 ms for 139 tasks), else one by one; any error comes from the
    per-task checks, which name X[t]."""
    for t, x in enumerate(X):
        if np.shape(x)[0] == 0:
            raise ValueError(f"X[{t}] has 0 samples (shape {np.shape(x)}): every task needs at least one")
    if (all(isinstance(x, np.ndarray) and x.ndim == 2 and len(x) > 0 and x.dtype == X[0].dtype for x in X)
            and X[0].dtype in FLOATS and len({x.shape[1] for x in X}) == 1 and X[0].shape[1] > 0
            and (reset or X[0].shape[1] == est.n_features_in_)):
        try:
            return _split_like(check_array(np.concatenate(X), accept_sparse=False, dtype=FLOATS), X)
        except ValueError:
            pass
    return [check_features(est, x, reset=False, name=f"X[{t}]") if not reset else
            check_array(x, accept_sparse=False, dtype=FLOATS, input_name=f"X[{t}]") for t, x in enumerate(X)]


def _check_task_targets(est, Y) -> list:
    """Each task's targets (1-D), checked in one call on their concatenation for
    regression when they are numeric arrays, else one by one (errors name Y[t])."""
    ys = [np.asarray(y).reshape(-1) for y in Y]
    if not est._is_classifier() and all(y.dtype.kind in "fiu" for y in ys):
        try:
            return _split_like(check_array(np.concatenate(ys), ensure_2d=False, dtype=np.float64,
                                           ensure_min_samples=0), ys)
        except ValueError:
            pass
    return [check_targets(est, y, f"Y[{t}]") for t, y in enumerate(ys)]


def parse(est, X, Y=None, tasks=None, *, reset: bool, split: str = "train"):
    """Normalise an input to (list of X_t, list of y_t or None, form, row->task index or None).

    ``form`` is "shared", "list" or "stacked" (see the module docstring); a
    :class:`mtlkernels.datasets.MultiTaskDataset` gives its ``split``."""
    from ..datasets import MultiTaskDataset

    if isinstance(X, MultiTaskDataset):
        if Y is not None or tasks is not None:
            raise ValueError("pass either a MultiTaskDataset or (X, Y), not both")
        Xs, ys = X.split(split)
        X, Y = (Xs[0], np.stack(ys, 1)) if X.shared else (list(Xs), list(ys))
    if _is_task_list(X):
        if tasks is not None:
            raise ValueError("tasks is for the stacked form (one X, one y); a list of per-task designs needs none")
        Xs = _check_designs(est, X, reset)
        d = Xs[0].shape[1]
        for t, x in enumerate(Xs):
            if x.shape[1] != d:
                raise ValueError(f"X[{t}] has {x.shape[1]} features but X[0] has {d}")
        if reset:
            est.n_features_in_ = d
            est.tasks_ = np.arange(len(Xs))
        elif len(Xs) != est.n_tasks_:
            raise ValueError(
                f"got {len(Xs)} task designs but the model has {est.n_tasks_} tasks. (In scikit-learn's model "
                "selection a list of tasks is split by task, not by sample: use the stacked form "
                "fit(X, y, tasks=task_ids) instead.)")
        ys = None
        if Y is not None:
            if not isinstance(Y, (list, tuple)) or len(Y) != len(Xs):
                raise ValueError(f"with a list of {len(Xs)} task designs, Y must be a list of as many target vectors")
            ys = _check_task_targets(est, Y)
            for t, (x, y) in enumerate(zip(Xs, ys)):
                if len(y) != len(x):
                    raise ValueError(f"task {t}: X has {len(x)} samples but y has {len(y)}")
        return Xs, ys, "list", None
    if isinstance(X, (list, tuple)) and len(X) == 0:
        raise ValueError("X is an empty list of tasks")
    X = check_features(est, X, reset=reset)
    if tasks is not None:
        idx = task_index(est, tasks, len(X), reset=reset)
        ys = None
        if Y is not None:
            y = check_targets(est, Y, "y")
            if y.ndim != 1 or len(y) != len(X):
                raise ValueError(f"with tasks, y must be 1-D with one target per row of X ({len(X)}), got shape "
                                 f"{np.shape(y)}")
        T = len(est.tasks_) if reset else est.n_tasks_
        Xs = [X[idx == t] for t in range(T)]
        if Y is not None:
            ys = [y[idx == t] for t in range(T)]
        return Xs, ys, "stacked", idx
    if Y is None:
        return [X], None, "shared", None
    Y = check_targets(est, Y, "Y")
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must be (n_samples, n_tasks) with n_samples = {X.shape[0]}, got shape {Y.shape}")
    if reset:
        est.tasks_ = np.arange(Y.shape[1])
    return [X], [Y[:, t] for t in range(Y.shape[1])], "shared", None


def check_magnitudes(Xs: list, ys: list | None, dtype) -> None:
    """The squared loss sums squares of the data (Gram matrices X^T X, ||y||^2): refuse
    entries so large that those sums overflow the working dtype (a ValueError naming X or
    Y and what fits) rather than fail later inside a linear-algebra routine."""
    name_of_dtype = str(dtype).removeprefix("torch.")
    n = sum(len(x) for x in Xs) * max(Xs[0].shape[1], 1) + 1
    limit = math.sqrt(float(np.finfo(np.dtype(name_of_dtype)).max) / n) / 10
    for name, arrays in (("X", Xs), ("Y", ys or [])):
        m = max((float(np.abs(a).max()) for a in arrays if np.size(a)), default=0.0)
        if m > limit:
            raise ValueError(f"{name} has entries up to {m:.3g} in magnitude: the squared loss's sums of squares "
                             f"overflow {name_of_dtype} (at most {limit:.3g} fits for these sizes); rescale {name}, for "
                             "example divide each column by its largest absolute value")


def encode_labels(est, ys: list) -> list[np.ndarray]:
    """Labels to {-1, +1} per task; ``classes_`` holds the two labels (shared by every task:
    the negative one first). Each task is one binary problem (one-vs-rest for K classes)."""
    classes = np.unique(np.concatenate([np.asarray(y).reshape(-1) for y in ys]))
    if len(classes) > 2:
        kind = type_of_target(np.concatenate([np.asarray(y).reshape(-1) for y in ys]))
        raise ValueError(
            f"Only binary classification is supported. The type of the target is {kind}: labels "
            f"{classes[:5].tolist()}{'...' if len(classes) > 5 else ''}. Every task is one binary problem with the "
            "same two labels; for K classes pass one task per class (one-vs-rest: Y of shape (n_samples, K)).")
    for t, y in enumerate(ys):
        values = np.unique(y)
        if len(values) < 2:
            raise ValueError(f"task {t} has one class {values.tolist()}: a classifier needs two classes in "
                             "every task")
    est.classes_ = classes
    return [np.where(np.asarray(y) == classes[1], 1.0, -1.0) for y in ys]
