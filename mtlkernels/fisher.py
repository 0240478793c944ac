"""The information measures behind CETL's DWA loss (Chen, Zhang and Dong 2018, CETL,
sec. 3.2): per-sample gradients, the diagonal Fisher information (FI) of a task, the
relative Fisher RF between two tasks (eq. 9) and the Generalized Fisher Information GFI
(eq. 10). The DWA loss of eq. 11 itself is the op :func:`mtlkernels.ops.dwa_penalty`;
:class:`mtlkernels.train.CETLTrainer` computes GFI1-3 with these functions.

None of this is a module or a penalty: it is plain tensor math on gradients, kept here
so that :mod:`mtlkernels.nn` holds only ``torch.nn`` modules.

Readings chosen where the paper is silent or ambiguous (each is tested):

- **Diagonal Fisher.** The empirical Fisher of EWC (the paper's ref. [20]):
  ``F_i = mean_n (d l_n / d theta_i)^2`` over per-sample losses l_n at the current
  weights theta*; l_n is the cross entropy with the true label for classification and
  ``1/2 ||decoded - target||^2`` (a unit-variance Gaussian log-likelihood) for the
  reconstructions.
- **Relative Fisher (eq. 9).** RF_i = I(F_1,i, F_2,i | theta*_i), a mutual information
  "normalised in [0, 1]" between two random variables. We take the random variables to
  be the per-sample Fisher contributions ``(d l1_n / d theta_i)^2`` and
  ``(d l2_n / d theta_i)^2`` over the same n inputs (paired samples, theta* fixed).
  Estimator (default ``"gaussian_copula"``): rank-transform each variable to normal
  scores (average ranks for ties), take their Pearson correlation rho (the Gaussian
  copula MI is I = -1/2 log(1 - rho^2)) and normalise with Linfoot's informational
  coefficient of correlation ``sqrt(1 - exp(-2 I))``, which maps [0, inf) onto [0, 1]
  and equals |rho| here. It is invariant to monotone transforms (the scale of either
  Fisher does not matter), has little small-sample bias, and is one vectorised pass
  over all weights. A weight whose contribution is constant over the samples for either
  task (for example a dead ReLU unit: all zeros) carries no information: RF = 0.
  Alternative ``"histogram"``: equal-frequency bins (``bins`` per variable), plug-in
  MI normalised by sqrt(H1 H2) (Strehl & Ghosh); biased upward by about
  (bins - 1)^2 / (2 n) nats at n samples.
- **GFI (eq. 10).** Independent Bernoulli draws per weight: keep F_i with probability p
  where RF_i >= u and with probability 1 - p where RF_i < u (u = 0.5, p = 0.9), from a
  seeded generator. Optionally (default in the trainer) the Fisher is first divided by
  its mean over the sub-network, so that the DWA weight lambda does not depend on the
  loss scale; the paper does not normalise (EWC does not either).
"""


from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "RF_ESTIMATORS",
    "per_sample_grads",
    "diagonal_fisher",
    "relative_fisher",
    "generalized_fisher",
    "normalize_importance",
]

RF_ESTIMATORS = ("gaussian_copula", "histogram")


def per_sample_grads(loss_fn: Callable[..., Tensor], params: dict[str, Tensor], inputs: Sequence[Tensor],
                     chunk_size: int | None = 64) -> dict[str, Tensor]:
    """Per-sample gradients ``d loss_fn(params, *sample) / d params``, one (n, *shape) tensor per parameter.

    ``loss_fn(params, *tensors)`` is called on one sample at a time (leading dimension 1)
    through :func:`torch.func.vmap`; it usually wraps :func:`torch.func.functional_call`.
    """
    from torch.func import grad, vmap

    params = {k: v.detach() for k, v in params.items()}

    def one(p, *xs):
        return loss_fn(p, *(x.unsqueeze(0) for x in xs))

    return vmap(grad(one), in_dims=(None,) + (0,) * len(inputs), chunk_size=chunk_size)(params, *inputs)


def diagonal_fisher(sample_grads: Sequence[Tensor]) -> list[Tensor]:
    """The empirical diagonal Fisher information ``F_i = mean_n g_{n,i}^2`` (Chen et al. 2018, sec. 3.2,
    after EWC) from per-sample gradients (n, *shape)."""
    return [g.pow(2).mean(0) for g in sample_grads]


def _average_ranks(a: Tensor) -> Tensor:
    """1-based ranks along dim 1 of a contiguous (m, n) tensor; ties get their average rank."""
    m, n = a.shape
    s, order = a.sort(dim=1)
    diff = s[:, 1:] != s[:, :-1]
    one = torch.ones(m, 1, dtype=torch.bool, device=a.device)
    pos = torch.arange(n, dtype=torch.int32, device=a.device).expand(m, n)
    start = (pos * torch.cat([one, diff], 1)).cummax(1).values  # first position of the tie group
    end = torch.where(torch.cat([diff, one], 1), pos, n - 1).flip(1).cummin(1).values.flip(1)  # its last position
    avg = (start + end).to(torch.float32) * 0.5 + 1
    return torch.empty_like(avg).scatter_(1, order, avg)


def _rf_gaussian_copula(a: Tensor, b: Tensor) -> Tensor:
    """|rho| of the normal scores of (m, n) samples along dim 1 (Linfoot-normalised Gaussian-copula MI)."""
    n = a.shape[1]
    za = math.sqrt(2.0) * torch.erfinv(_average_ranks(a).mul_(2.0 / (n + 1)).sub_(1))
    zb = math.sqrt(2.0) * torch.erfinv(_average_ranks(b).mul_(2.0 / (n + 1)).sub_(1))
    za = za - za.mean(1, keepdim=True)
    zb = zb - zb.mean(1, keepdim=True)
    den = (za.pow(2).sum(1) * zb.pow(2).sum(1)).sqrt()
    ok = den > 1e-6 * n
    rho = (za * zb).sum(1) / torch.where(ok, den, torch.ones_like(den))
    # Linfoot: r_I = sqrt(1 - exp(-2 I)) with I = -1/2 log(1 - rho^2)  =>  r_I = |rho|
    return torch.where(ok, rho.abs(), torch.zeros_like(rho)).clamp(0, 1)


def _rf_histogram(a: Tensor, b: Tensor, bins: int) -> Tensor:
    """Plug-in MI of equal-frequency bins of (m, n) samples along dim 1, over sqrt(H1 H2)."""
    m, n = a.shape
    ba = ((_average_ranks(a) - 1) * bins / n).floor().clamp(0, bins - 1).long()
    bb = ((_average_ranks(b) - 1) * bins / n).floor().clamp(0, bins - 1).long()
    cell = ba * bins + bb  # (m, n)
    joint = torch.zeros(m, bins * bins, dtype=torch.float64, device=a.device)
    joint.scatter_add_(1, cell, torch.ones_like(cell, dtype=torch.float64))
    joint = joint.view(m, bins, bins) / n
    pa, pb = joint.sum(2), joint.sum(1)

    def xlogx(p):
        return torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))

    ha, hb = -xlogx(pa).sum(1), -xlogx(pb).sum(1)
    mi = xlogx(joint).sum((1, 2)) + ha + hb
    den = (ha * hb).sqrt()
    ok = den > 1e-12
    return torch.where(ok, mi / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den)).clamp(0, 1)


def relative_fisher(samples1: Sequence[Tensor], samples2: Sequence[Tensor], estimator: str = "gaussian_copula",
                    bins: int = 4) -> list[Tensor]:
    """RF_i = I(F_1,i, F_2,i | theta*_i) normalised to [0, 1] (Chen et al. 2018, eq. 9).

    ``samples1[k]`` and ``samples2[k]`` are the per-sample Fisher contributions (n, *shape)
    of parameter k under the two tasks (squared per-sample gradients on the same n
    inputs). Returns one tensor of the parameter's shape per parameter (float32). See
    the module docstring for the estimators.
    """
    if estimator not in RF_ESTIMATORS:
        raise ValueError(f"estimator must be one of {RF_ESTIMATORS}, got {estimator!r}")
    if len(samples1) != len(samples2):
        raise ValueError(f"relative_fisher: {len(samples1)} vs {len(samples2)} parameters")
    out = []
    for a, b in zip(samples1, samples2):
        if a.shape != b.shape:
            raise ValueError(f"relative_fisher: sample shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
        n = a.shape[0]
        if n < 3:
            raise ValueError(f"relative_fisher needs at least 3 paired samples, got {n}")
        a2 = a.reshape(n, -1).T.to(torch.float32).contiguous()
        b2 = b.reshape(n, -1).T.to(torch.float32).contiguous()
        rf = _rf_gaussian_copula(a2, b2) if estimator == "gaussian_copula" else _rf_histogram(a2, b2, bins)
        out.append(rf.to(torch.float32).view(a.shape[1:]))
    return out


def generalized_fisher(fisher: Sequence[Tensor], rf: Sequence[Tensor], u: float = 0.5, p: float = 0.9,
                       generator: torch.Generator | None = None) -> list[Tensor]:
    """GFI (Chen et al. 2018, eq. 10): F_i kept with probability p where RF_i >= u (a shared weight),
    with probability 1 - p where RF_i < u (private to the new task); 0 otherwise.

    The draws are independent per weight, from ``generator`` (CPU) when given.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    out = []
    for f, r in zip(fisher, rf):
        if f.shape != r.shape:
            raise ValueError(f"generalized_fisher: fisher {tuple(f.shape)} and rf {tuple(r.shape)} differ")
        keep_prob = torch.where(r.to(f.device) >= u, p, 1.0 - p)
        draw = torch.rand(f.shape, generator=generator, dtype=torch.float64).to(f.device)
        out.append(torch.where(draw < keep_prob, f, torch.zeros_like(f)))
    return out


def normalize_importance(importance: Sequence[Tensor]) -> list[Tensor]:
    """Divide a list of importances by their mean over all elements (mean 1 afterwards;
    unchanged when all are zero)."""
    total = sum(float(f.double().sum()) for f in importance)
    count = sum(f.numel() for f in importance)
    if count == 0 or total <= 0:
        return [f.clone() for f in importance]
    return [f / (total / count) for f in importance]
