"""Images for the deep methods: scikit-learn's bundled digits as image tensors, splits and domains."""

from __future__ import annotations

from dataclasses import dataclass

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
