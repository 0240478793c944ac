"""The shallow network baselines of Lee et al. 2018 (Deep-AMTFL) Table 1 (sec. 4.1):

- NN (baseline 4): "a simple feedforward neural network with a single hidden layer";
- MT-NN (baseline 5): "same as NN, but with each task loss divided by N_t, for
  balancing the task loss", with l1 on the last fully connected layer.

Both are :class:`~mtlkernels.nn.OneVsAllCNN` models (one-vs-all logistic loss per class,
sec. 4.2) on a :class:`OneHiddenLayer` backbone, so they train with the same trainer and
the same proximal steps as the deep models; build them with
``deep_amtfl_model("nn" | "mt_nn", backbone=OneHiddenLayer(...))`` or the defaults there.
"""

from __future__ import annotations

from torch import Tensor, nn

from .amtfl import OneVsAllCNN

__all__ = ["OneHiddenLayer", "MTNN"]


class OneHiddenLayer(nn.Module):
    """flatten - linear(in_features -> hidden) - ReLU (``features``) - ``head`` linear(hidden -> n_out).

    Lee et al. 2018 use 500 hidden units on MNIST (sec. 4.1, "MNIST")."""

    def __init__(self, in_features: int, hidden: int = 500, n_out: int = 10):
        super().__init__()
        for name, v in (("in_features", in_features), ("hidden", hidden), ("n_out", n_out)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"OneHiddenLayer: {name} must be a positive integer, got {v!r}")
        self.in_features, self.hidden = in_features, hidden
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_out)

    def features(self, x: Tensor) -> Tensor:
        if x[0].numel() != self.in_features:
            raise ValueError(f"OneHiddenLayer expects {self.in_features} input values per sample, got shape "
                             f"{tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MTNN(OneVsAllCNN):
    """MT-NN (Lee et al. 2018, Table 1 baseline 5): task t's loss weighted by 1 / N_t and
    mu ||W^(L)||_1 on the last layer (instead of its weight decay; lam stays on the lower
    layers).

    **Reading:** N_t is task t's number of positive training examples (the trainer's
    ``set_task_sizes``; with one-vs-all tasks on one shared design every task sees all N
    examples, and only the positives differ); the weight is mean_t(N_t) / N_t, i.e. 1 / N_t
    times a constant that keeps the loss on the CNN's scale (so lr and mu mean the same as
    for the other models)."""

    def __init__(self, backbone: nn.Module, mu: float = 1e-3, lam: float = 0.0, delta: float = 0.0,
                 loss_ema: float = 0.9):
        super().__init__(backbone, lam=lam, lam_last=0.0, mu=mu, delta=delta, loss_ema=loss_ema)

    def loss_weights(self) -> Tensor:
        return self.task_sizes.mean() / self.task_sizes
