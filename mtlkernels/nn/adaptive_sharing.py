"""The Adaptive Sharing layer (Shen et al. 2015, sec. 3.2, eqs. 10-13): a drop-in replacement
for a network's last linear layer whose weight is W = C + S, with a low-rank shared
part C (smoothed nuclear norm) and a sparse class-specific part S (l1).

Also the small piece that makes proximal steps work with any torch optimiser:
:func:`add_proximal_hook` (an ``Optimizer.register_step_post_hook`` that calls every
submodule's ``proximal_step(lr)`` after ``optimizer.step()``), for users who write
their own training loop. :class:`mtlkernels.train.supervised.SupervisedTrainer` calls
the same hooks itself.

Example (any network whose last layer is replaced)::

    from mtlkernels.nn import AdaptiveSharingLinear, DigitsCNN, WithPenalty
    from mtlkernels.train import SupervisedTrainer, TrainConfig

    net = DigitsCNN()
    net.head = AdaptiveSharingLinear(net.hidden, 10, lambda_c=1e-3, lambda_s=5e-4, eps=1e-2)
    trainer = SupervisedTrainer(WithPenalty(net), TrainConfig(epochs=30)).fit(X, y)
    net.head.similarity()          # C^T C, the class similarity of the paper's Fig. 3

or in your own loop: ``loss = F.cross_entropy(net(x), y) + total_penalty(net)``, with
``add_proximal_hook(optimizer, net)`` once before training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ._checks import check_weight

__all__ = ["AdaptiveSharingLinear"]


class AdaptiveSharingLinear(nn.Module):
    """Last layer with W = C + S (Shen et al. 2015, eqs. 3 and 10-13).

    ``y = x (C + S)^T + b``: ``C`` and ``S`` are stored like ``nn.Linear.weight``, shape
    (out_features, in_features) = (K classes, D features), i.e. the transposes of the
    paper's D x K matrices (the nuclear norm, the l1 norm and C^T C do not change).

    Regularisers, split by smoothness:

    - ``penalty()`` = Omega_eps(C) = ``ops.smoothed_nuclear_norm(C, lambda_c, eps)``, the
      Moreau envelope of lambda_c ||C||_* (eq. 11). The trainer adds it to the batch
      loss, so the gradient on C is <dL/dC>_batch + grad Omega_eps(C) (eq. 13); the
      gradient flows through the op's registered autograd. **Reading:** eq. 12 prints
      grad Omega = lambda_c (C - Q*); the gradient of eq. 11 as defined is
      (C - Q*) / eps, and that is what the op returns (they agree only when
      eps * lambda_c = 1; see ``ops.smoothed_nuclear_norm``).
    - ``proximal_step(lr)``: the l1 penalty lambda_s ||S||_1 as a proximal step after
      each optimiser step, S <- soft_threshold(S, lr * lambda_s) via
      ``ops.soft_threshold_`` (the S-part of the APG prox, eq. 9, with eta_t = lr).
      The paper's deep experiments apply l1 "weight decay" (a subgradient) instead; the
      prox gives exact zeros. With an adaptive optimiser (Adam) ``lr`` is its base
      step size, the usual proximal-Adam heuristic.

    The data loss (eq. 10: the negative log-likelihood of a softmax, ``F.cross_entropy``)
    belongs to the trainer. The bias ``b`` is not regularised.

    Initialisation: C like ``nn.Linear``'s weight (uniform +-1/sqrt(D)), S = 0 (the
    data gradient is the same for C and S; starting S at zero lets the l1 prox keep
    only the class-specific deviations that pay for themselves). :meth:`from_linear`
    starts from a trained plain layer (C = its weight, S = 0).

    Args:
        in_features: D, the width of the representation.
        out_features: K, the number of classes.
        lambda_c: weight of the nuclear norm on C (Table 5 best: 1e-3).
        lambda_s: weight of the l1 norm on S (the paper uses 5e-4).
        eps: the smoothing factor epsilon of eq. 11 (Table 5: insensitive; 1e-2).
        bias: learn an unpenalised intercept.
    """

    def __init__(self, in_features: int, out_features: int, lambda_c: float = 1e-3, lambda_s: float = 5e-4,
                 eps: float = 1e-2, bias: bool = True, device=None, dtype=None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        self.lambda_c = check_weight("lambda_c", lambda_c)
        self.lambda_s = check_weight("lambda_s", lambda_s)
        self.eps = check_weight("eps", eps, positive=True)
        kw = {"device": device, "dtype": dtype}
        self.C = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.S = nn.Parameter(torch.zeros(out_features, in_features, **kw))
        self.bias = nn.Parameter(torch.empty(out_features, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.C.uniform_(-bound, bound)
            self.S.zero_()
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> "AdaptiveSharingLinear":
        """An AS layer whose C is a copy of ``linear``'s weight (S = 0, same bias)."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype, **kwargs)
        with torch.no_grad():
            layer.C.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    @property
    def weight(self) -> Tensor:
        """W = C + S, shape (out_features, in_features) (differentiable)."""
        return self.C + self.S

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"AdaptiveSharingLinear expects {self.in_features} input features, got shape "
                             f"{tuple(x.shape)}")
        return F.linear(x, self.C + self.S, self.bias)

    def penalty(self) -> Tensor:
        """Omega_eps(C) of eq. 11 (a scalar tensor; gradient through the op)."""
        if self.lambda_c == 0:
            return self.C.new_zeros(())
        return ops.smoothed_nuclear_norm(self.C, self.lambda_c, self.eps)

    @torch.no_grad()
    def proximal_step(self, lr: float) -> None:
        """S <- prox_{lr lambda_s ||.||_1}(S) (eq. 9, S-part), in place via ``ops.soft_threshold_``."""
        if self.lambda_s > 0:
            ops.soft_threshold_(self.S.data, float(lr) * self.lambda_s)

    def regularizer(self) -> float:
        """The exact (unsmoothed) penalty value lambda_c ||C||_* + lambda_s ||S||_1 of eq. 3."""
        with torch.no_grad():
            return float(self.lambda_c * ops.nuclear_norm(self.C) + self.lambda_s * self.S.abs().sum())

    @torch.no_grad()
    def similarity(self) -> Tensor:
        """The class similarity C^T C of the paper's Fig. 3 (K x K, paper's D x K layout)."""
        return self.C @ self.C.T

    @torch.no_grad()
    def stats(self) -> dict:
        """Diagnostics: singular values of C, its effective rank (exp of the entropy of
        the normalised singular values), the fraction of zeros in S, and the Frobenius
        norms of C and S."""
        s = torch.linalg.svdvals(self.C.double())
        p = s / s.sum().clamp_min(1e-300)
        ent = -(p * torch.log(p.clamp_min(1e-300))).sum()
        return {"singular_values_C": s.tolist(), "effective_rank_C": float(torch.exp(ent)),
                "zero_fraction_S": float((self.S == 0).double().mean()),
                "norm_C": float(self.C.norm()), "norm_S": float(self.S.norm())}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, lambda_c={self.lambda_c}, "
                f"lambda_s={self.lambda_s}, eps={self.eps}, bias={self.bias is not None}")
