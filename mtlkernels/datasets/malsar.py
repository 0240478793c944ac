"""MALSAR's data format: ``.mat`` files with cell arrays of per-task designs and targets.

MALSAR (Zhou, Chen and Ye, 2011) ships its data sets (``school.mat``, ...) as MATLAB
files holding a cell array ``X`` of per-task designs, each (n_t, d), and a cell array
``Y`` of per-task targets, each (n_t, 1); the same layout its solvers take
(``Least_Trace(X, Y, rho1)``; its logistic solvers take labels in {-1, +1}).
:func:`load_malsar` reads such a file (any MATLAB format up to v7, dense or sparse cells;
v7.3 files are HDF5 and need ``h5py``, which we do not depend on).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._tasks import MultiTaskDataset
from .synthetic import split_tasks


def _cells(value, name: str, path) -> list[np.ndarray]:
    """A MATLAB cell array (loaded by scipy as an object array) as a list of float arrays."""
    if not (isinstance(value, np.ndarray) and value.dtype == object):
        raise ValueError(f"{path}: {name} must be a cell array with one entry per task, got "
                         f"{type(value).__name__} {getattr(value, 'dtype', '')}")
    out = []
    for t, cell in enumerate(value.reshape(-1)):
        # a sparse cell (text data sets) comes back as a scipy.sparse matrix: densify it
        a = cell.toarray() if hasattr(cell, "toarray") else np.asarray(cell)
        if a.dtype == object or not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"{path}: {name}{{{t + 1}}} must be numeric, got dtype {a.dtype}")
        out.append(np.asarray(a, dtype=np.float64))
    return out


def load_malsar(path, fractions=None, seed: int = 0, x_key: str = "X", y_key: str = "Y",
                name: str | None = None, task: str = "auto") -> MultiTaskDataset:
    """Read a MALSAR ``.mat`` file into a :class:`MultiTaskDataset` (regression).

    Args:
        path: the file (for example a local copy of MALSAR's ``data/school.mat``).
        fractions: (train, val, test) fractions for a seeded random split of every
            task; ``None`` (default) puts every sample in "train".
        seed: the split's seed.
        x_key, y_key: the names of the two cell arrays in the file.
        name: the data set's name (default: the file's stem).
        task: "regression", "classification", or "auto" (default): classification when
            every target is -1 or +1 (MALSAR's labels for its logistic solvers) and both
            occur, regression otherwise.
    Returns:
        A dataset with one task per cell; targets as 1-D arrays. Designs are kept as
        stored (School's last column is a constant 1), sparse ones made dense.
    Raises:
        ValueError: a missing or malformed variable, task counts or sample counts that
        differ between X and Y, designs with different numbers of columns, non-finite
        values, or an unknown ``task``.
    """
    from scipy.io import loadmat

    if task not in ("auto", "regression", "classification"):
        raise ValueError(f"task must be 'auto', 'regression' or 'classification', got {task!r}")
    path = Path(path)
    try:
        mat = loadmat(path)
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5)
        raise ValueError(f"{path} is a MATLAB v7.3 (HDF5) file; save it with -v7 or read it with h5py") from err
    for key in (x_key, y_key):
        if key not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise ValueError(f"{path} has no variable {key!r} (it has {found})")
    Xs = _cells(mat[x_key], x_key, path)
    ys = _cells(mat[y_key], y_key, path)
    if len(Xs) != len(ys) or not Xs:
        raise ValueError(f"{path}: {x_key} has {len(Xs)} tasks but {y_key} has {len(ys)}")
    d = None
    for t, (x, y) in enumerate(zip(Xs, ys)):
        if x.ndim != 2:
            raise ValueError(f"{path}: {x_key}{{{t + 1}}} must be a 2-D design (n_t, d), got shape {x.shape}")
        if d is None:
            d = x.shape[1]
        if x.shape[1] != d:
            raise ValueError(f"{path}: {x_key}{{{t + 1}}} has {x.shape[1]} columns but {x_key}{{1}} has {d}")
        if y.size != x.shape[0]:
            raise ValueError(f"{path}: task {t + 1} has {x.shape[0]} samples in {x_key} but {y.size} targets in "
                             f"{y_key}")
        for what, a in ((x_key, x), (y_key, y)):
            if not np.isfinite(a).all():
                raise ValueError(f"{path}: {what}{{{t + 1}}} has NaN or infinite values")
        ys[t] = y.reshape(-1)
    if task == "auto":
        labels = np.unique(np.concatenate(ys))
        task = "classification" if labels.tolist() == [-1.0, 1.0] else "regression"
    X, y = split_tasks(Xs, ys, fractions, seed)
    return MultiTaskDataset(name or path.stem, X, y, task, False, [f"task{t}" for t in range(len(Xs))],
                            {"path": str(path), "seed": seed})
