"""Offline multi-task datasets (nothing is downloaded).

- :func:`amtfl_synthetic`: the synthetic regression setting of seed 004 sec. 4.1.
- :func:`digits_tasks`: scikit-learn's bundled digits as ten one-vs-all tasks, balanced
  or imbalanced like seed 004's MNIST-Imbalanced.
- :class:`MultiTaskDataset`: per-task train / val / test splits, accepted by every
  estimator (``fit(ds)``, ``score(ds)``) and by the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

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


def amtfl_synthetic(
    seed: int = 0,
    split: int = 0,
    n_features: int = 30,
    noise: tuple[float, float] = (1.0, 2.0),
    sizes: tuple[tuple[int, int, int], tuple[int, int, int]] = ((50, 50, 100), (25, 25, 100)),
) -> MultiTaskDataset:
    """The synthetic experiment of seed 004 sec. 4.1 (Deep AMTFL), regression.

    Six ``n_features``-dimensional true bases l_1..l_6 (fixed by ``seed``). Twelve tasks:
    each of the C(4, 2) = 6 *easy* tasks combines two of {l_1..l_4}, each of the 6
    *hard* tasks two of {l_3..l_6}, so {l_3, l_4} are shared by both groups. Targets
    y = x^T w_t + eps with eps ~ N(0, sigma^2), sigma = 1 for easy and 2 for hard tasks
    (the paper says the 12 parameters are generated "with noise" and calls sigma the
    tasks' noise level; we read it as the observation noise that makes a task hard).
    Train/val/test sizes 50/50/100 (easy) and 25/25/100 (hard). ``split`` in 0..4
    draws one of the paper's five random splits (new samples, same bases and tasks).

    Readings we chose: bases and the combination coefficients are N(0, 1); inputs
    x ~ N(0, I). ``info`` holds ``L_true`` (d, 6), ``S_true`` (6, 12), ``W_true`` and
    ``easy`` (a boolean mask over tasks).
    """
    if not 0 <= split < 5:
        raise ValueError(f"split must be in 0..4 (the paper's five random splits), got {split}")
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((n_features, 6))
    pairs_easy = list(combinations(range(0, 4), 2))
    pairs_hard = list(combinations(range(2, 6), 2))
    S = np.zeros((6, 12))
    for t, (a, b) in enumerate(pairs_easy + pairs_hard):
        S[[a, b], t] = rng.standard_normal(2)
    W = L @ S
    easy = np.array([True] * 6 + [False] * 6)
    data_rng = np.random.default_rng([seed, split + 1])
    X = {"train": [], "val": [], "test": []}
    y = {"train": [], "val": [], "test": []}
    for t in range(12):
        sigma = noise[0] if easy[t] else noise[1]
        for name, n in zip(("train", "val", "test"), sizes[0] if easy[t] else sizes[1]):
            x = data_rng.standard_normal((n, n_features))
            X[name].append(x)
            y[name].append(x @ W[:, t] + sigma * data_rng.standard_normal(n))
    names = [f"easy{t}" for t in range(6)] + [f"hard{t}" for t in range(6)]
    return MultiTaskDataset(
        "amtfl_synthetic", X, y, "regression", False, names,
        {"L_true": L, "S_true": S, "W_true": W, "easy": easy, "seed": seed, "split": split},
    )


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

    ``imbalanced=True`` follows seed 004's MNIST-Imbalanced: the training counts of
    digits 0..9 decrease like 200, 180, ..., 20, scaled so that digit 0 keeps every
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


# ---- images, for the deep methods ---------------------------------------------------------


@dataclass
class ImageSplits:
    """One image classification problem: (N, 1, 8, 8) float tensors in [0, 1] and int64 labels."""

    name: str
    X_train: "object"
    y_train: "object"
    X_val: "object"
    y_val: "object"
    X_test: "object"
    y_test: "object"
    n_classes: int = 10


def _digits_tensors():
    import torch
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=torch.float32).view(-1, 1, 8, 8), torch.tensor(y, dtype=torch.long)


def _split(X, y, seed, fractions=(0.6, 0.2)):
    import torch

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(X), generator=g)
    n_tr = int(fractions[0] * len(X))
    n_va = int(fractions[1] * len(X))
    tr, va, te = perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]
    return X[tr], y[tr], X[va], y[va], X[te], y[te]


def digits_images(seed: int = 0, per_class: int | None = None, imbalanced: bool = False) -> ImageSplits:
    """Bundled digits as images, split 60/20/20 at random (``seed``).

    ``per_class`` keeps that many training images of each class (limited samples);
    ``imbalanced`` keeps 200, 180, ..., 20 scaled like :func:`digits_tasks` (class 0
    keeps all its training images, class 9 a tenth of them).
    """
    import torch

    X, y = _digits_tensors()
    Xtr, ytr, Xva, yva, Xte, yte = _split(X, y, seed)
    if per_class is not None or imbalanced:
        g = torch.Generator().manual_seed(seed + 7)
        counts = torch.bincount(ytr, minlength=10)
        if imbalanced:
            target = torch.arange(200, 0, -20, dtype=torch.float64) * (counts.min() / 200.0)
            keep_n = target.round().clamp(min=1).long()
        else:
            keep_n = torch.full((10,), int(per_class))
        keep = torch.cat([torch.nonzero(ytr == c).flatten()[torch.randperm(int(counts[c]), generator=g)][: int(keep_n[c])]
                          for c in range(10)])
        Xtr, ytr = Xtr[keep], ytr[keep]
    name = "digits" + ("_imbalanced" if imbalanced else "") + (f"_{per_class}pc" if per_class else "")
    return ImageSplits(name, Xtr, ytr, Xva, yva, Xte, yte)


DOMAINS = ("original", "rotated", "inverted", "noisy", "shifted")


def transform_domain(X, name: str, seed: int = 0):
    """A visually different digits domain: rot90, 1 - x, + Gaussian noise (sigma 0.3,
    clipped to [0, 1]), or a one-pixel shift down-right."""
    import torch

    if name == "original":
        return X.clone()
    if name == "rotated":
        return torch.rot90(X, 1, dims=(-2, -1)).contiguous()
    if name == "inverted":
        return 1.0 - X
    if name == "noisy":
        g = torch.Generator().manual_seed(seed + 123)
        return (X + 0.3 * torch.randn(X.shape, generator=g)).clamp(0, 1)
    if name == "shifted":
        out = torch.zeros_like(X)
        out[..., 1:, 1:] = X[..., :-1, :-1]
        return out
    raise ValueError(f"unknown domain {name!r}; choose from {DOMAINS}")


def digits_domains(domains=DOMAINS, seed: int = 0, train_per_domain: int | None = 150) -> list[ImageSplits]:
    """n datasets of one task (10-class digits) in visually different domains.

    The digits are split at random into len(domains) disjoint parts; part i is
    transformed into domain i and split 60/20/20; ``train_per_domain`` keeps that many
    training images per domain (small data is where joint training pays).
    """
    import torch

    X, y = _digits_tensors()
    g = torch.Generator().manual_seed(seed)
    parts = torch.randperm(len(X), generator=g).chunk(len(domains))
    out = []
    for i, (name, idx) in enumerate(zip(domains, parts)):
        Xd = transform_domain(X[idx], name, seed + i)
        Xtr, ytr, Xva, yva, Xte, yte = _split(Xd, y[idx], seed + i)
        if train_per_domain is not None:
            Xtr, ytr = Xtr[:train_per_domain], ytr[:train_per_domain]
        out.append(ImageSplits(name, Xtr, ytr, Xva, yva, Xte, yte))
    return out
