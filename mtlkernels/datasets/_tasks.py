"""Multi-task feature datasets: the :class:`MultiTaskDataset` container and the bundled
digits as ten one-vs-all tasks (nothing is downloaded)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MultiTaskDataset:
    """Per-task train / val / test splits.

    ``X[split]`` is a list with one (n_t, d) array per task, ``y[split]`` a list of
    (n_t,) targets. ``shared`` is True when every task has the same design in a split
    (``X[split]`` then holds that one array, and ``y[split]`` one target vector per task).
    """

    name: str
    X: dict
    y: dict
    task: str  # "regression" or "classification"
    shared: bool = False
    task_names: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        return len(self.y["train"])

    @property
    def n_features(self) -> int:
        return self.X["train"][0].shape[1]

    def split(self, name: str) -> tuple[list, list]:
        """(list of X_t, list of y_t) of one split (a one-element X list when shared)."""
        if name not in self.X:
            raise ValueError(f"{self.name} has splits {sorted(self.X)}, not {name!r}")
        return self.X[name], self.y[name]

    def stacked(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A shared split as (X, Y (n, T))."""
        if not self.shared:
            raise ValueError(f"{self.name} has a design per task; use split()")
        return self.X[name][0], np.stack(self.y[name], 1)


def digits_tasks(
    imbalanced: bool = False,
    seed: int = 0,
    train_fraction: float = 0.5,
    val_fraction: float = 0.2,
    add_bias_feature: bool = False,
) -> MultiTaskDataset:
    """scikit-learn's bundled digits (8x8 images, 64 features) as 10 one-vs-all tasks.

    A stratified train/val/test split (by ``train_fraction`` and ``val_fraction``),
    features standardised with the training statistics. All tasks share one design
    (``shared=True``): task k's labels are 1 for digit k and 0 otherwise.

    ``imbalanced=True`` follows the MNIST-Imbalanced set of Lee et al. 2018 (Deep-AMTFL):
    the training counts of digits 0..9 decrease like 200, 180, ..., 20, scaled so that digit 0 keeps every
    training sample it has (about 90 here, so about 90, 81, ..., 9). Val and test stay
    balanced.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=train_fraction, random_state=seed, stratify=y)
    val_share = val_fraction / (1 - train_fraction)
    X_va, X_te, y_va, y_te = train_test_split(X_rest, y_rest, train_size=val_share, random_state=seed, stratify=y_rest)
    counts = None
    if imbalanced:
        rng = np.random.default_rng(seed)
        target = np.arange(200, 0, -20)
        scale = np.min(np.bincount(y_tr, minlength=10)) / 200
        counts = np.maximum(1, np.round(target * scale)).astype(int)
        keep = np.concatenate([rng.permutation(np.flatnonzero(y_tr == k))[: counts[k]] for k in range(10)])
        X_tr, y_tr = X_tr[keep], y_tr[keep]
    mean, std = X_tr.mean(0), X_tr.std(0)
    std[std == 0] = 1
    prep = lambda a: (a - mean) / std  # noqa: E731
    X_tr, X_va, X_te = prep(X_tr), prep(X_va), prep(X_te)
    if add_bias_feature:
        X_tr, X_va, X_te = (np.hstack([a, np.ones((len(a), 1))]) for a in (X_tr, X_va, X_te))
    labels = {"train": y_tr, "val": y_va, "test": y_te}
    Xd = {"train": [X_tr], "val": [X_va], "test": [X_te]}
    yd = {k: [(v == c).astype(np.float64) for c in range(10)] for k, v in labels.items()}
    return MultiTaskDataset(
        "digits_imbalanced" if imbalanced else "digits", Xd, yd, "classification", True,
        [f"digit{c}" for c in range(10)], {"class_labels": labels, "train_counts": counts},
    )


