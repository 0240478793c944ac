"""The models of Lee et al. 2018 (Deep-AMTFL) sec. 4.1-4.2 by name: :data:`METHODS` and
:func:`deep_amtfl_model`, the factory the trainer, the experiment and the CLI use."""

from __future__ import annotations

from torch import nn

from .amtfl import MTCNN, DeepAMTFL, DeepAMTL, OneVsAllCNN
from .amtfl_shallow import MTNN, OneHiddenLayer
from .digits import DigitsCNN

__all__ = ["METHODS", "deep_amtfl_model"]


#: The models of Lee et al. 2018 (Deep-AMTFL) sec. 4.2, by the names the trainer, the
#: experiment and the CLI use.
METHODS = {"nn": "NN", "mt_nn": "MT-NN", "cnn": "CNN", "mt_cnn": "MT-CNN", "deep_amtl": "Deep-AMTL",
           "deep_amtfl": "Deep-AMTFL"}


def deep_amtfl_model(method: str = "deep_amtfl", n_tasks: int = 10, *, backbone: nn.Module | None = None,
                     in_channels: int = 1, width: int = 16, hidden: int = 64, lam: float = 1e-3, mu: float = 1e-3,
                     alpha: float = 0.1, gamma: float = 1e-2, delta: float = 0.0, loss_ema: float = 0.9,
                     nonneg: bool = True) -> OneVsAllCNN:
    """The model ``method`` (a key of :data:`METHODS`) on ``backbone`` (default: a fresh
    :class:`~mtlkernels.nn.digits.DigitsCNN` of ``width``/``hidden`` with one output per
    task; "nn" / "mt_nn": a :class:`~mtlkernels.nn.amtfl_shallow.OneHiddenLayer` on the
    flattened 8 x 8 image, Table 1's shallow baselines). Hyper-parameters as in the classes: ``lam`` (weight decay of the lower layers;
    every layer for "cnn"), ``mu`` (l1 on the task layer), ``alpha``, ``gamma`` (the
    asymmetric terms; the paper searches both in {1, 0.1, 1e-2, 1e-3, 1e-4}), ``delta``
    (the imbalance term), ``nonneg`` (B >= 0 for "deep_amtl"). Seed torch first (or let
    a trainer call it as a model factory) for a reproducible initialisation."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if backbone is None and method in ("nn", "mt_nn"):
        backbone = OneHiddenLayer(64 * in_channels, hidden, n_tasks)
    elif backbone is None:
        backbone = DigitsCNN(n_out=n_tasks, width=width, hidden=hidden, in_channels=in_channels)
    common = {"delta": delta, "loss_ema": loss_ema}
    if method == "mt_nn":
        return MTNN(backbone, mu=mu, lam=lam, **common)
    if method in ("cnn", "nn"):
        return OneVsAllCNN(backbone, lam=lam, **common)
    if method == "mt_cnn":
        return MTCNN(backbone, mu=mu, lam=lam, **common)
    if method == "deep_amtl":
        return DeepAMTL(backbone, alpha=alpha, mu=mu, gamma=gamma, lam=lam, nonneg=nonneg, **common)
    return DeepAMTFL(backbone, alpha=alpha, mu=mu, gamma=gamma, lam=lam, **common)
