"""The multi-task CNN for binary attributes (Abdulnabi et al. 2015, attribute MTL): per-attribute (or shared)
convolutional trunks under a joint loss layer whose weights are W = L S, with a latent
task matrix L shared by all attributes and per-attribute combination vectors s_m.

Eq. 2 of the paper::

    min_{L,S}  sum_m sum_i 1/2 max(0, 1 - Y_mi (L s_m)^T X_mi)^2
               + mu sum_k sum_g ||s_k^g||_2 + gamma ||L||_1 + lambda ||L||_F^2

X_mi is attribute m's feature vector of image i (the output of CNN m), s_k^g the
entries of row k of S that belong to the attributes of group g. The squared hinge loss
is :func:`squared_hinge_loss`; the three penalties are non-smooth or separable and are
applied as proximal steps after every optimiser step, through the fused ops:

- group lasso on S within attribute groups: ``ops.group_soft_threshold_(S, lr mu,
  dim=1, groups=labels)`` (the exact prox of the disjoint-group norm);
- l1 + Frobenius on L: ``ops.elastic_net_prox_(L, lr gamma, 2 lr lambda)`` (the prox of
  lr (gamma ||L||_1 + lambda ||L||_F^2); lambda ||.||_F^2 = (2 lambda)/2 ||.||_F^2).

Variants compared in the paper (Table III): single-task (S-CNN: each attribute its own
CNN and linear classifier), M-CNN (W = L S without group information, "[62]") and MG-CNN
(with the groups); Table IV adds the "l21 all-sharing" baseline. **M** is the paper's
ref. [62] (Kumar and Daume's GO-MTL): no group information means every attribute is its
own group, so the S-penalty is mu sum_k sum_m |s_km| = mu ||S||_1 (the group prox with
singleton groups is the soft threshold). **all-sharing** is the l2,1 norm over the rows
of S, mu sum_k ||s_k||_2 (all attributes in one group: every attribute uses the same
latent tasks), as ``mtlkernels.linear.LatentTaskMTL(groups=None)``.

**Reading for the optimisation:** Algorithm 1 alternates APG on L (S fixed) and SPGD on
S (L fixed) on frozen features. When the trunks are trained with the loss layer (the
paper's Clothing setting) we take one *proximal stochastic gradient* step on all blocks
per mini-batch (data gradient for trunks, L and S, then the prox of each block), the
usual stochastic form of block proximal gradient; S uses the exact group prox, so no
smoothing parameter is needed. The step is SGD (the experiment: momentum 0.9, the
paper's CNN setting), not Adam: the thresholds lr * mu and lr * gamma are then in the
units of the steps taken, so they act (the experiment reports the zeros of S); under
Adam's normalised steps they were nearly inert.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ._checks import check_weight, positive_int
from .digits import DigitsCNN
from .lenet import LeNetConv

__all__ = ["squared_hinge_loss", "attribute_accuracy", "PerAttributeConvTrunks", "LatentTaskHead",
           "SingleTaskHead", "AttributeCNN", "VARIANTS", "TRUNKS"]

VARIANTS = ("single", "M", "all_sharing", "MG")
TRUNKS = ("per_attribute", "shared")


def squared_hinge_loss(scores: Tensor, targets: Tensor) -> Tensor:
    """The loss of Abdulnabi et al. 2015 (attribute MTL) eq. 2 averaged over the batch:
    (1/N) sum_i sum_m 1/2 max(0, 1 - y_mi f_mi)^2 with y = 2 t - 1 in {-1, +1}.

    Args:
        scores: (N, M) decision values f.
        targets: (N, M) binary attributes t in {0, 1}; -1 marks a missing annotation,
            left out of the sum (eq. 2 has N_m samples per attribute: attribute m's
            sum runs over the images annotated for it).
    The paper sums over samples; dividing by N rescales mu, gamma and lambda by N.
    """
    if scores.shape != targets.shape:
        raise ValueError(f"squared_hinge_loss: scores {tuple(scores.shape)} and targets {tuple(targets.shape)} differ")
    t = targets.to(scores.dtype)
    y = 2.0 * t - 1.0
    margin = torch.clamp(1.0 - y * scores, min=0.0)
    margin = torch.where(t >= 0, margin, torch.zeros_like(margin))
    return 0.5 * (margin * margin).sum(-1).mean()


def attribute_accuracy(scores: Tensor, targets: Tensor) -> float:
    """Mean of 1[(f > 0) == t] over the annotated entries (targets -1 are left out)."""
    known = targets >= 0
    correct = ((scores > 0) == (targets > 0)) & known
    return float(correct.sum().double() / known.sum().clamp_min(1))


def _group_labels(groups, n_tasks: int) -> Tensor | None:
    if groups is None:
        return None
    labels = torch.as_tensor(groups)
    if labels.dim() != 1 or labels.numel() != n_tasks:
        raise ValueError(f"groups must give one label per attribute ({n_tasks}), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or (labels.numel() and int(labels.min()) < 0):
        raise ValueError(f"groups must be non-negative integer labels, got {labels.tolist()}")
    # relabel to 0..G-1 so that every group label is used
    _, labels = torch.unique(labels.long(), return_inverse=True)
    return labels


class PerAttributeConvTrunks(nn.Module):
    """M independent small CNNs (one per attribute, the paper's Fig. 2), computed as one
    network with grouped convolutions, no weight shared between trunks. For 8 x 8 images
    (``side=8``) each trunk is :class:`~mtlkernels.nn.digits.DigitsCNN`'s body,
    conv3x3(1->w) - ReLU - conv3x3(w->2w) - ReLU - maxpool2 - linear(32w -> hidden) - ReLU;
    for 28 x 28 (``side=28``) a LeNet body, conv5x5(1->w) - ReLU - maxpool2 -
    conv5x5(w->2w) - ReLU - maxpool2 - linear(32w -> hidden) - ReLU. Input (N, C, side,
    side); output (N, M, hidden).
    """

    def __init__(self, n_trunks: int, width: int = 8, hidden: int = 32, in_channels: int = 1, side: int = 8):
        super().__init__()
        self.n_trunks = positive_int("n_trunks", n_trunks)
        if side not in (8, 28):
            raise ValueError(f"PerAttributeConvTrunks: side must be 8 or 28, got {side}")
        self.width, self.hidden, self.in_channels, self.side = width, hidden, in_channels, side
        M, w = n_trunks, width
        k, pad = (3, 1) if side == 8 else (5, 0)
        self.conv1 = nn.Conv2d(M * in_channels, M * w, k, padding=pad, groups=M)
        self.conv2 = nn.Conv2d(M * w, M * 2 * w, k, padding=pad, groups=M)
        fan_in = 2 * w * 16
        bound = 1.0 / math.sqrt(fan_in)
        self.fc_weight = nn.Parameter(torch.empty(M, fan_in, hidden).uniform_(-bound, bound))
        self.fc_bias = nn.Parameter(torch.empty(M, hidden).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        side = self.side
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (side, side):
            raise ValueError(f"PerAttributeConvTrunks expects (N, {self.in_channels}, {side}, {side}) images, got shape "
                             f"{tuple(x.shape)}")
        N, M = x.shape[0], self.n_trunks
        h = x.repeat(1, M, 1, 1)  # trunk m sees channels [m C, (m + 1) C)
        h = F.relu(self.conv1(h))
        if side == 28:
            h = F.max_pool2d(h, 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (N, M 2w, 4, 4), trunk-major channels
        h = h.reshape(N, M, -1)
        return F.relu(torch.einsum("nmi,mih->nmh", h, self.fc_weight) + self.fc_bias)


def _scores(features: Tensor, W: Tensor, bias: Tensor | None) -> Tensor:
    """f_m = X_m^T w_m: features (N, D) shared, or (N, M, D) one vector per attribute."""
    if features.dim() == 2:
        out = features @ W
    elif features.dim() == 3:
        if features.shape[1] != W.shape[1]:
            raise ValueError(f"per-attribute features have {features.shape[1]} attributes, the head {W.shape[1]}")
        out = torch.einsum("nmd,dm->nm", features, W)
    else:
        raise ValueError(f"features must be (N, D) or (N, M, D), got shape {tuple(features.shape)}")
    return out if bias is None else out + bias


class LatentTaskHead(nn.Module):
    """The joint loss layer of Abdulnabi et al. 2015 (attribute MTL): W = L S (eq. 1, w_m = L s_m).

    ``L`` (D, K): the latent task matrix shared by all attributes; ``S`` (K, M): the
    combination vectors, one column per attribute. ``forward(features)`` takes (N, D)
    features from a shared trunk or (N, M, D) attribute-specific features (one trunk per
    attribute) and returns the (N, M) decision values f_m = X_m^T L s_m + b_m (``b`` an
    unpenalised intercept per attribute, an addition to eq. 2).

    ``proximal_step(lr)`` applies the prox of the three penalties of eq. 2 (see the
    module docstring): group soft-thresholding of S within attribute groups
    (``groups``: one integer label per attribute; ``None`` puts all attributes in one
    group, the all-sharing l2,1 norm; one group per attribute is the l1 norm of the M
    variant) and the elastic-net prox on L. ``penalty()`` is zero: every
    penalty of eq. 2 is handled by its prox.

    Initialisation: L and S uniform like ``nn.Linear`` (fan-in D and K), or from stacked
    single-task weights with :meth:`init_from_weights` (the SVD initialisation of the
    paper, sec. IV-C).
    """

    def __init__(self, in_features: int, n_tasks: int, n_latent: int, groups=None, mu: float = 1e-3,
                 gamma: float = 1e-4, lam: float = 1e-3, bias: bool = True):
        super().__init__()
        self.in_features = positive_int("in_features", in_features)
        self.n_tasks = positive_int("n_tasks", n_tasks)
        self.n_latent = positive_int("n_latent", n_latent)
        self.mu = check_weight("mu", mu)
        self.gamma = check_weight("gamma", gamma)
        self.lam = check_weight("lam", lam)
        labels = _group_labels(groups, n_tasks)
        self.register_buffer("groups", labels, persistent=False)
        self.L = nn.Parameter(torch.empty(in_features, n_latent))
        self.S = nn.Parameter(torch.empty(n_latent, n_tasks))
        self.bias = nn.Parameter(torch.zeros(n_tasks)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.L.uniform_(-1 / math.sqrt(self.in_features), 1 / math.sqrt(self.in_features))
            self.S.uniform_(-1 / math.sqrt(self.n_latent), 1 / math.sqrt(self.n_latent))
            if self.bias is not None:
                self.bias.zero_()

    @property
    def n_groups(self) -> int:
        return 1 if self.groups is None else int(self.groups.max()) + 1

    @property
    def weight(self) -> Tensor:
        """W = L S (D, M), differentiable."""
        return self.L @ self.S

    def forward(self, features: Tensor) -> Tensor:
        if features.shape[-1] != self.in_features:
            raise ValueError(f"LatentTaskHead expects {self.in_features} features, got shape {tuple(features.shape)}")
        return _scores(features, self.L @ self.S, self.bias)

    def penalty(self) -> Tensor:
        return self.L.new_zeros(())

    @torch.no_grad()
    def proximal_step(self, lr: float) -> None:
        """S <- prox of lr mu sum_k sum_g ||s_k^g||_2; L <- prox of lr (gamma ||L||_1 + lambda ||L||_F^2)."""
        lr = float(lr)
        if self.mu > 0:
            ops.group_soft_threshold_(self.S.data, lr * self.mu, dim=1, groups=self.groups)
        if self.gamma > 0 or self.lam > 0:
            ops.elastic_net_prox_(self.L.data, lr * self.gamma, 2.0 * lr * self.lam)

    @torch.no_grad()
    def group_norms(self) -> Tensor:
        """||s_k^g||_2 as a (K, G) matrix (which latent tasks each group uses)."""
        G = self.n_groups
        labels = self.groups if self.groups is not None else torch.zeros(self.n_tasks, dtype=torch.long,
                                                                         device=self.S.device)
        sq = torch.zeros(self.n_latent, G, dtype=self.S.dtype, device=self.S.device)
        return sq.index_add_(1, labels, self.S * self.S).sqrt()

    def regularizer(self) -> float:
        """The value of the penalties of eq. 2 (for reporting the objective)."""
        with torch.no_grad():
            return float(self.mu * self.group_norms().sum() + self.gamma * self.L.abs().sum()
                         + self.lam * (self.L * self.L).sum())

    @torch.no_grad()
    def init_from_weights(self, W0: Tensor) -> None:
        """SVD initialisation from stacked single-task classifiers W0 (D, M) (Abdulnabi et al. 2015 (attribute MTL)
        sec. IV-C, following Go-MTL): L S = the best rank-K approximation of W0 with the
        singular values split evenly, L = U_K sqrt(s_K), S = sqrt(s_K) V_K^T (columns
        beyond rank(W0) keep their random values in L and are zero in S).

        **Deviation:** the paper initialises S at random; then L S would not reproduce
        the single-task classifiers that the SVD was computed from, so we take both
        factors from the SVD.
        """
        if tuple(W0.shape) != (self.in_features, self.n_tasks):
            raise ValueError(f"W0 must be ({self.in_features}, {self.n_tasks}), got {tuple(W0.shape)}")
        U, s, Vh = torch.linalg.svd(W0.to(self.L.dtype), full_matrices=False)
        k = min(self.n_latent, s.numel())
        r = s[:k].sqrt()
        self.L[:, :k] = U[:, :k] * r
        self.S.zero_()
        self.S[:k] = r[:, None] * Vh[:k]


class SingleTaskHead(nn.Module):
    """One independent linear classifier per attribute (the single-task baseline,
    S-CNN in Abdulnabi et al. 2015 (attribute MTL) Table III): f_m = X_m^T w_m + b_m, with the same elastic-net
    penalty as L, gamma ||W||_1 + lambda ||W||_F^2, as a prox step (separable over
    attributes, so nothing is shared)."""

    def __init__(self, in_features: int, n_tasks: int, gamma: float = 1e-4, lam: float = 1e-3, bias: bool = True):
        super().__init__()
        self.in_features = positive_int("in_features", in_features)
        self.n_tasks = positive_int("n_tasks", n_tasks)
        self.gamma = check_weight("gamma", gamma)
        self.lam = check_weight("lam", lam)
        bound = 1 / math.sqrt(in_features)
        self.W = nn.Parameter(torch.empty(in_features, n_tasks).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(n_tasks)) if bias else None

    @property
    def weight(self) -> Tensor:
        return self.W

    def forward(self, features: Tensor) -> Tensor:
        if features.shape[-1] != self.in_features:
            raise ValueError(f"SingleTaskHead expects {self.in_features} features, got shape {tuple(features.shape)}")
        return _scores(features, self.W, self.bias)

    def penalty(self) -> Tensor:
        return self.W.new_zeros(())

    @torch.no_grad()
    def proximal_step(self, lr: float) -> None:
        if self.gamma > 0 or self.lam > 0:
            ops.elastic_net_prox_(self.W.data, float(lr) * self.gamma, 2.0 * float(lr) * self.lam)

    def regularizer(self) -> float:
        with torch.no_grad():
            return float(self.gamma * self.W.abs().sum() + self.lam * (self.W * self.W).sum())


class AttributeCNN(nn.Module):
    """Multi-task attribute CNN (Abdulnabi et al. 2015, Fig. 2 and eq. 2) for 8 x 8 images.

    Args:
        n_attributes: M.
        variant: ``"single"`` (independent classifiers: S-CNN), ``"M"`` (W = L S, l1 on S:
            M-CNN, the paper's ref. [62]), ``"all_sharing"`` (W = L S, l2,1 on the rows of
            S: Table IV's "l21 all-sharing") or ``"MG"`` (W = L S with ``groups``: MG-CNN).
        groups: one integer group label per attribute (required for ``"MG"``; ignored
            otherwise).
        trunk: ``"per_attribute"`` (one CNN per attribute, the paper's setting; the
            single-task variant is then exactly M separate networks) or ``"shared"``
            (one :class:`DigitsCNN` body, or :class:`~mtlkernels.nn.LeNetConv` body for
            28 x 28, for all attributes).
        side: the images' side, 8 or 28.
        n_latent: K, the number of latent tasks (columns of L).
        width, hidden: trunk size (channels of the first conv, feature dimension D).
        mu, gamma, lam: the weights of eq. 2 (mu unused by ``"single"``).
    ``forward(x)`` returns (N, M) decision values (attribute m present when f_m > 0).
    """

    def __init__(self, n_attributes: int, variant: str = "MG", groups=None, trunk: str = "per_attribute",
                 n_latent: int = 8, width: int = 8, hidden: int = 32, mu: float = 1e-3, gamma: float = 1e-4,
                 lam: float = 1e-3, in_channels: int = 1, side: int = 8):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if trunk not in TRUNKS:
            raise ValueError(f"trunk must be one of {TRUNKS}, got {trunk!r}")
        if variant == "MG" and groups is None:
            raise ValueError("variant 'MG' needs groups (one label per attribute)")
        self.n_attributes = positive_int("n_attributes", n_attributes)
        self.variant, self.trunk_kind = variant, trunk
        if groups is not None and len(groups) != n_attributes:
            raise ValueError(f"groups must give one label per attribute ({n_attributes}), got {len(groups)}")
        #: the group label of each attribute (for per-group metrics, whatever the variant)
        self.attribute_groups = None if groups is None else [int(g) for g in groups]
        if trunk == "per_attribute":
            self.trunk = PerAttributeConvTrunks(n_attributes, width, hidden, in_channels, side)
        else:
            body = (DigitsCNN(n_out=1, width=width, hidden=hidden, in_channels=in_channels) if side == 8 else
                    LeNetConv(1, width, 2 * width, hidden, in_channels))
            body.head = nn.Identity()
            self.trunk = body
        if variant == "single":
            self.head = SingleTaskHead(hidden, n_attributes, gamma=gamma, lam=lam)
        else:
            s_groups = {"MG": groups, "M": list(range(n_attributes)), "all_sharing": None}[variant]
            self.head = LatentTaskHead(hidden, n_attributes, n_latent, s_groups, mu=mu, gamma=gamma, lam=lam)

    def features(self, x: Tensor) -> Tensor:
        """(N, M, hidden) per-attribute features or (N, hidden) shared features."""
        return self.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))

    def penalty(self) -> Tensor:
        return self.head.penalty()

    @torch.no_grad()
    def init_from_single_task(self, single: "AttributeCNN") -> "AttributeCNN":
        """Start a latent-task model from a trained single-task one with the same trunk:
        copy the trunks and initialise L, S by the SVD of the stacked classifiers
        (Abdulnabi et al. 2015, sec. IV-C; see :meth:`LatentTaskHead.init_from_weights`). Returns self."""
        if self.variant == "single":
            raise ValueError("init_from_single_task is for the 'M' and 'MG' variants")
        if single.variant != "single" or single.trunk_kind != self.trunk_kind:
            raise ValueError("init_from_single_task needs a single-task AttributeCNN with the same trunk kind")
        self.trunk.load_state_dict(single.trunk.state_dict())
        self.head.init_from_weights(single.head.W)
        if self.head.bias is not None and single.head.bias is not None:
            self.head.bias.copy_(single.head.bias)
        return self
