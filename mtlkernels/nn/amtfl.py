"""Deep Asymmetric Multi-task Feature Learning (Deep-AMTFL) and the deep baselines it is
compared with: Lee, Yang and Hwang 2018 (Deep-AMTFL), eq. 7 and sec. 4.2.

All four models are one network: a feature extractor (``backbone.features(x)``, the
layers W^(1) .. W^(L-1); for example :class:`mtlkernels.nn.digits.DigitsCNN`) whose
penultimate representation Z (N, k) feeds a task layer W^(L) (``backbone.head``, an
``nn.Linear(k, T)``: task t's weights w_t are row t of ``head.weight``, column t of
W^(L) = ``head.weight.T`` (k, T) in the paper's notation). Every class is a task: the
loss is the one-vs-all logistic loss per class (sec. 4.2, "we use one-vs-all classifier
instead of softmax, since we want to consider the classification of each class as a
separate task").

| class | objective (L_t: task t's loss, W: W^(L), W^(l<L): the lower layers) |
|---|---|
| :class:`OneVsAllCNN` (CNN)  | sum_t L_t + lam sum_{l<=L} ||W^(l)||_F^2 |
| :class:`MTCNN` (MT-CNN)     | sum_t L_t + mu ||W||_1 + lam sum_{l<L} ||W^(l)||_F^2 |
| :class:`DeepAMTL`           | sum_t (1 + alpha ||b_t^o||_1) L_t + mu ||W||_1 + gamma ||W - W B||_F^2 + lam sum_{l<L} ||W^(l)||_F^2 |
| :class:`DeepAMTFL` (eq. 7)  | sum_t (1 + alpha ||a_t^o||_1) L_t + mu ||W||_1 + gamma / N ||relu(Z W A + c) - Z||_F^2 + lam sum_{l<L} ||W^(l)||_F^2 |

How the terms are optimised (conventions of :class:`mtlkernels.train.SupervisedTrainer`):

- ``loss(out, y)`` is the smooth data term sum_t w_t L_t with the weights
  w_t = 1 + alpha ||a_t^o||_1 taken as constants (detached);
- ``penalty()`` adds the differentiable regularisers: lam times the squared Frobenius
  norms and, for Deep-AMTFL, gamma times ``ops.amtfl_reconstruction_loss`` (gradients
  into the features Z, hence into every lower layer, into W and into A through the
  op's fused autograd);
- ``proximal_step(lr)``, called after every optimiser step, applies the non-smooth
  terms through the shrinkage ops: ``ops.soft_threshold_`` with lr * mu on W, and
  ``ops.soft_threshold_`` with a (T, 1) tensor of per-row thresholds lr * alpha * L_t
  on the rows of A (of B for Deep-AMTL).

This splitting is exact for the product term: the partial gradient of
(1 + alpha ||a_t||_1) L_t(theta) with respect to the network is (1 + alpha ||a_t||_1)
dL_t / dtheta (the weighted loss), and with respect to a_t it is alpha L_t sign(a_t),
the subgradient of a weighted l1 norm whose proximal operator is soft-thresholding at
lr * alpha * L_t. In the prox, L_t is a bias-corrected exponential moving average of
task t's minibatch loss (``loss_ema``; one minibatch is a noisy estimate of the
training loss the paper weights by), plus the paper's imbalance term delta / sqrt(N_t)
(sec. 3.2, "Loss functions"; N_t: task t's number of positive training examples, set
by the trainer with :meth:`OneVsAllCNN.set_task_sizes`). The moving average and N_t are
buffers, so they are saved with the model and a resumed run is exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops

__all__ = ["OneVsAllCNN", "MTCNN", "DeepAMTL", "DeepAMTFL", "one_vs_all_losses"]


def one_vs_all_losses(out: Tensor, y: Tensor) -> Tensor:
    """Per-task one-vs-all logistic losses (Lee et al. 2018, sec. 3.2, "Loss functions").

    ``out`` (N, T) logits, ``y`` (N,) integer classes in [0, T). Returns (T,): task t's
    mean binary cross-entropy of sigmoid(out[:, t]) against 1[y == t] over the N samples.
    """
    if out.dim() != 2:
        raise ValueError(f"one_vs_all_losses: logits must be (N, T), got shape {tuple(out.shape)}")
    if y.shape != out.shape[:1]:
        raise ValueError(f"one_vs_all_losses: {out.shape[0]} logits but labels of shape {tuple(y.shape)}")
    target = F.one_hot(y.long(), out.shape[1]).to(out.dtype)
    return F.binary_cross_entropy_with_logits(out, target, reduction="none").mean(0)


def _check_nonneg(**kw) -> None:
    for name, v in kw.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")


class OneVsAllCNN(nn.Module):
    """The base network of Lee et al. 2018 (Deep-AMTFL) sec. 4.2 ("CNN") with one-vs-all logistic losses.

    Args:
        backbone: a module with ``features(x) -> (N, k)`` (the layers below the task
            layer) and ``head``, an ``nn.Linear(k, T)`` (the task layer W^(L); one
            output per class = task).
        lam: weight decay lam * ||W^(l)||_F^2 on the weight tensors (not the biases) of
            the lower layers (every parameter of ``backbone`` outside ``head`` with at
            least 2 dimensions), as a differentiable penalty (so it is independent of
            the optimiser's own ``weight_decay``, which should stay 0).
        lam_last: the same weight decay on the task layer W^(L); the CNN baseline uses
            lam_last = lam (its ordinary weight decay everywhere), the multi-task models
            replace it by an l1 norm (``mu``).
        mu: mu ||W^(L)||_1, applied as a proximal step (``ops.soft_threshold_``).
        delta: the imbalance term delta / sqrt(N_t) added to task t's loss (Lee et al. 2018 (Deep-AMTFL)
            sec. 3.2); a constant for the gradients, it enters the loss-weighted l1 of the
            asymmetric models.
        loss_ema: decay of the moving average of the per-task minibatch losses.
        warmup_steps: the asymmetric models ramp alpha and gamma linearly from 0 to their
            values over this many training steps (Lee et al. 2018, sec. 4.2 does so on CUB "for
            stability of learning at the initial stage"; 0: no ramp).

    ``forward(x)`` returns the (N, T) logits. ``loss(out, y)`` returns the weighted sum of
    the per-task losses (weights 1 here), ``penalty()`` the differentiable regularisers,
    ``proximal_step(lr)`` applies the l1 terms. ``task_reliability_losses()`` returns
    the L_t used for the asymmetric transfer (moving average + delta / sqrt(N_t)).
    """

    def __init__(self, backbone: nn.Module, lam: float = 0.0, lam_last: float | None = None, mu: float = 0.0,
                 delta: float = 0.0, loss_ema: float = 0.9, warmup_steps: int = 0):
        super().__init__()
        head = getattr(backbone, "head", None)
        if not isinstance(head, nn.Linear) or not callable(getattr(backbone, "features", None)):
            raise TypeError("backbone must have a features(x) method and an nn.Linear head (the task layer W^(L))")
        lam_last = lam if lam_last is None else lam_last
        _check_nonneg(lam=lam, lam_last=lam_last, mu=mu, delta=delta)
        if not 0.0 <= loss_ema < 1.0:
            raise ValueError(f"loss_ema must be in [0, 1), got {loss_ema}")
        self.backbone = backbone
        self.lam, self.lam_last, self.mu, self.delta, self.loss_ema = float(lam), float(lam_last), float(mu), float(delta), float(loss_ema)
        T, kw = head.out_features, {"dtype": head.weight.dtype, "device": head.weight.device}
        self.register_buffer("task_sizes", torch.ones(T, **kw))
        self.register_buffer("task_loss_avg", torch.zeros(T, **kw))
        self.register_buffer("loss_steps", torch.zeros((), dtype=torch.long))
        self._steps_host: int | None = None  # loss_steps mirrored on the host: no device read per step
        self.warmup_steps = int(warmup_steps)
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self._z: Tensor | None = None

    # ---- structure ---------------------------------------------------------------------
    @property
    def head(self) -> nn.Linear:
        return self.backbone.head

    @property
    def n_tasks(self) -> int:
        return self.head.out_features

    @property
    def n_features(self) -> int:
        return self.head.in_features

    def task_weights(self) -> Tensor:
        """W^(L) in the paper's layout (k, T): column t is task t's weight vector w_t."""
        return self.head.weight.t()

    def lower_weights(self) -> list[Tensor]:
        """The weight tensors W^(1) .. W^(L-1) that lam decays (biases excluded)."""
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.backbone.parameters() if p.dim() >= 2 and id(p) not in head_ids]

    def set_task_sizes(self, counts) -> None:
        """N_t, the number of positive training examples of each task (class)."""
        counts = torch.as_tensor(counts, dtype=self.task_sizes.dtype)
        if counts.shape != (self.n_tasks,):
            raise ValueError(f"task sizes must have shape ({self.n_tasks},), got {tuple(counts.shape)}")
        if (counts <= 0).any():
            raise ValueError(f"every task needs at least one positive training example, got sizes {counts.tolist()}")
        self.task_sizes.copy_(counts.to(self.task_sizes.device))

    # ---- forward and losses ------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        z = self.backbone.features(x)
        if self.training and torch.is_grad_enabled():
            self._z = z  # the penultimate features of this minibatch, for penalty()
        return self.head(z)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone.features(x)

    def task_losses(self, out: Tensor, y: Tensor) -> Tensor:
        """L_t of the minibatch (T,), without the constant delta / sqrt(N_t)."""
        return one_vs_all_losses(out, y)

    def loss_weights(self) -> Tensor:
        """The constants multiplying each task loss in the network update (1 for the CNN)."""
        return torch.ones(self.n_tasks, device=self.head.weight.device, dtype=self.head.weight.dtype)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """sum_t w_t L_t (w_t detached); in training mode also updates the loss average."""
        Lt = self.task_losses(out, y)
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                self.task_loss_avg.mul_(self.loss_ema).add_(Lt.detach().to(self.task_loss_avg.dtype), alpha=1 - self.loss_ema)
                self.loss_steps.add_(1)
                if self._steps_host is not None:
                    self._steps_host += 1
        return (self.loss_weights().detach().to(Lt.dtype) * Lt).sum()

    def ramp(self) -> float:
        """min(1, training steps taken / warmup_steps): the factor on alpha and gamma."""
        if self.warmup_steps <= 0:
            return 1.0
        return min(1.0, self.steps_taken() / self.warmup_steps)

    def steps_taken(self) -> int:
        """The ``loss_steps`` buffer as an int, read from the device once after a load."""
        if self._steps_host is None:
            self._steps_host = int(self.loss_steps)
        return self._steps_host

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._steps_host = None

    def task_reliability_losses(self) -> Tensor:
        """L_t for the asymmetric transfer: the bias-corrected moving average of task t's
        minibatch loss plus delta / sqrt(N_t) (Lee et al. 2018, sec. 3.2). (T,), no grad."""
        steps = self.steps_taken()
        avg = self.task_loss_avg / (1 - self.loss_ema ** steps) if steps > 0 else torch.zeros_like(self.task_loss_avg)
        return (avg + self.delta / self.task_sizes.sqrt()).detach()

    def penalty(self) -> Tensor:
        """lam * sum ||W^(l)||_F^2 over the lower layers (+ lam_last on W^(L))."""
        self._z = None  # the cached features are used at most once
        w = self.head.weight
        pen = w.new_zeros(())
        if self.lam > 0:
            pen = pen + self.lam * sum(p.pow(2).sum() for p in self.lower_weights())
        if self.lam_last > 0:
            pen = pen + self.lam_last * w.pow(2).sum()
        return pen

    @torch.no_grad()
    def proximal_step(self, lr: float) -> None:
        """The l1 term mu ||W^(L)||_1 through ``ops.soft_threshold_`` (threshold lr * mu)."""
        if self.mu > 0:
            ops.soft_threshold_(self.head.weight, lr * self.mu)

    def _take_features(self) -> Tensor:
        z, self._z = self._z, None
        if z is None:
            raise RuntimeError(f"{type(self).__name__}.penalty() needs the features of a training forward pass: "
                               "call model(x) in train mode (with grad enabled) first")
        return z

    def transfer_matrix(self) -> Tensor | None:
        """The (T, T) inter-task transfer matrix, when the model has one."""
        return None

    def extra_repr(self) -> str:
        return f"lam={self.lam}, lam_last={self.lam_last}, mu={self.mu}, delta={self.delta}"


class MTCNN(OneVsAllCNN):
    """MT-CNN (Lee et al. 2018, sec. 4.2, baseline 2): the base CNN with an l1 penalty
    mu ||W^(L)||_1 on the last layer instead of its l2 weight decay; the lower layers
    keep lam."""

    def __init__(self, backbone: nn.Module, mu: float = 1e-3, lam: float = 0.0, delta: float = 0.0, loss_ema: float = 0.9):
        super().__init__(backbone, lam=lam, lam_last=0.0, mu=mu, delta=delta, loss_ema=loss_ema)


class DeepAMTL(OneVsAllCNN):
    """Deep-AMTL (Lee et al. 2018, sec. 4.2, baseline 3): the deep version of eq. 5, AMTL's
    inter-task transfer (eq. 4; Lee et al., 2016) on the last layer, LS = W^(L):

        sum_t (1 + alpha ||b_t^o||_1) L_t + mu ||W^(L)||_1 + gamma ||W^(L) - W^(L) B||_F^2
            + lam sum_{l<L} ||W^(l)||_F^2,    B_tt = 0 (and B >= 0 with ``nonneg``)

    B (T, T): w_t ~ sum_s B_st w_s, so row s (b_s^o) is task s's outgoing transfer,
    l1-penalised in proportion to its loss L_s (hard tasks transfer little). Eq. 5's
    mu ||s_t||_1 and lam ||L||_F^2 on the factors of LS become mu ||W^(L)||_1 (the same
    l1 as MT-CNN and Deep-AMTFL) and the lower-layer weight decay, so the four models
    differ only in the transfer term. The prox on B (per-row thresholds
    lr * alpha * L_s through ``ops.soft_threshold_``) is followed by the projection
    onto the constraints (zero diagonal, and B >= 0 as in AMTL; ``nonneg=False`` drops
    it). B starts at 0; its gradient -2 gamma W^T (W - W B) grows it where tasks' weight
    vectors agree. ``transfer_matrix()`` is B.
    """

    def __init__(self, backbone: nn.Module, alpha: float = 0.1, mu: float = 1e-3, gamma: float = 1e-2, lam: float = 0.0,
                 nonneg: bool = True, delta: float = 0.0, loss_ema: float = 0.9, warmup_steps: int = 0):
        super().__init__(backbone, lam=lam, lam_last=0.0, mu=mu, delta=delta, loss_ema=loss_ema, warmup_steps=warmup_steps)
        _check_nonneg(alpha=alpha, gamma=gamma)
        self.alpha, self.gamma, self.nonneg = float(alpha), float(gamma), bool(nonneg)
        T = self.n_tasks
        w = self.head.weight
        self.B = nn.Parameter(torch.zeros(T, T, dtype=w.dtype, device=w.device))

    def loss_weights(self) -> Tensor:
        return 1 + self.ramp() * self.alpha * self.B.detach().abs().sum(1)

    def transfer_penalty(self) -> Tensor:
        """||W^(L) - W^(L) B||_F^2 (without gamma)."""
        W = self.task_weights()
        return (W - W @ self.B).pow(2).sum()

    def penalty(self) -> Tensor:
        pen = super().penalty()
        if self.gamma > 0:
            pen = pen + self.ramp() * self.gamma * self.transfer_penalty()
        return pen

    @torch.no_grad()
    def proximal_step(self, lr: float) -> None:
        super().proximal_step(lr)
        thresholds = (lr * self.ramp() * self.alpha * self.task_reliability_losses()).to(self.B.dtype)[:, None]  # (T, 1)
        ops.soft_threshold_(self.B, thresholds)
        self.B.fill_diagonal_(0.0)
        if self.nonneg:
            self.B.clamp_(min=0.0)

    def transfer_matrix(self) -> Tensor:
        return self.B.detach().clone()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha={self.alpha}, gamma={self.gamma}, nonneg={self.nonneg}"


class DeepAMTFL(OneVsAllCNN):
    """Deep-AMTFL, Lee et al. 2018 eq. 7:

        min_{A, W^(1..L)} sum_t (1 + alpha ||a_t^o||_1) L_t + mu ||w_t||_1
                          + gamma / N ||relu(Z W^(L) A + c) - Z||_F^2 + lam sum_{l<L} ||W^(l)||_F^2

    Z (N, k) are the minibatch's penultimate features (``backbone.features``), W^(L)
    (k, T) the task layer, A (T, k) the feedback connections from the task outputs
    Z W^(L) back to the features (Fig. 3), a_t^o its row t: task t's outgoing transfer
    to the features, l1-penalised in proportion to task t's loss L_t, so that reliable
    (low-loss) tasks shape the shared features and unreliable ones barely do.

    Readings chosen where eq. 7 is ambiguous (the text was extracted from a PDF):

    - the reconstruction is of the features from the task outputs: sigma(Z W^(L) A),
      not of any parameter matrix (as the op documents), with the head's bias left out
      of Z W^(L) (a bias b of the task layer would add the constant b A, which the
      reconstruction bias c absorbs exactly);
    - c (k,) is the bias inside the ReLU of Fig. 2(d) (``recon_bias=False`` drops it);
    - the Frobenius term is divided by the minibatch size N, so that gamma does not
      depend on the batch size (the task losses are means too);
    - the weight decay lam covers the weight tensors of the layers below W^(L) only
      (sum over l < L), not the biases, the task layer (which has the l1 norm) or A;
    - (1 + alpha ||a_t^o||_1) L_t is optimised by splitting, as described in the module
      docstring: the weights are constants in the network update, L_t (a moving average,
      plus delta / sqrt(N_t)) is a constant in the prox of A.

    A starts small and random (uniform in +-1/sqrt(T), as an ``nn.Linear(T, k)``): at
    A = 0 and c = 0 the ReLU's argument is 0 and A would get no gradient. The term
    goes through ``ops.amtfl_reconstruction_loss`` (fused forward and backward); its
    gradient reaches Z and hence every lower layer, W^(L) and A.

    ``transfer_matrix()`` is A W^(L) (T, T), the paper's inter-task transfer matrix
    "AS" (Fig. 6b; S = W^(L)): entry (t, t') is what task t passes to task t' through
    the features.
    """

    def __init__(self, backbone: nn.Module, alpha: float = 0.1, mu: float = 1e-3, gamma: float = 1e-2, lam: float = 0.0,
                 recon_bias: bool = True, delta: float = 0.0, loss_ema: float = 0.9, warmup_steps: int = 0):
        super().__init__(backbone, lam=lam, lam_last=0.0, mu=mu, delta=delta, loss_ema=loss_ema, warmup_steps=warmup_steps)
        _check_nonneg(alpha=alpha, gamma=gamma)
        self.alpha, self.gamma = float(alpha), float(gamma)
        T, k = self.n_tasks, self.n_features
        w = self.head.weight
        bound = 1.0 / math.sqrt(T)
        self.A = nn.Parameter(torch.empty(T, k, dtype=w.dtype, device=w.device).uniform_(-bound, bound))
        self.recon_bias = nn.Parameter(torch.zeros(k, dtype=w.dtype, device=w.device)) if recon_bias else None

    def loss_weights(self) -> Tensor:
        return 1 + self.ramp() * self.alpha * self.A.detach().abs().sum(1)

    def reconstruction_loss(self, Z: Tensor) -> Tensor:
        """||relu(Z W^(L) A + c) - Z||_F^2 / N through ``ops.amtfl_reconstruction_loss`` (without gamma).

        Computed in the parameters' dtype: features cached under mixed-precision autocast
        (bfloat16 / float16) are cast up first, so the penalty is a float32 term."""
        W = self.task_weights()
        return ops.amtfl_reconstruction_loss(Z.to(W.dtype), W, self.A, self.recon_bias) / max(Z.shape[0], 1)

    def penalty(self) -> Tensor:
        """lam on the lower layers + gamma * the reconstruction of this minibatch's features."""
        Z = self._take_features()
        pen = super().penalty()
        if self.gamma > 0:
            pen = pen + self.ramp() * self.gamma * self.reconstruction_loss(Z)
        return pen

    @torch.no_grad()
    def proximal_step(self, lr: float) -> None:
        """mu-l1 on W^(L), then the loss-weighted l1 on the rows of A: soft-thresholding
        with the (T, 1) thresholds lr * alpha * L_t (``ops.soft_threshold_``)."""
        super().proximal_step(lr)
        thresholds = (lr * self.ramp() * self.alpha * self.task_reliability_losses()).to(self.A.dtype)[:, None]  # (T, 1)
        ops.soft_threshold_(self.A, thresholds)

    def transfer_matrix(self) -> Tensor:
        return (self.A @ self.task_weights()).detach()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha={self.alpha}, gamma={self.gamma}"
