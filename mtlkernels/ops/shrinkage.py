"""Shrinkage ops: soft-thresholding, elastic-net prox, group soft-thresholding and
the fused proximal-gradient steps built on them.

These are the proximal operators of every solver in the library: the l1 penalty on
S in Adaptive Sharing (seed 000, eq. 3 and the prox in eq. 9), the group lasso on S
within attribute groups and the l1 + Frobenius prox on L (seed 003, eq. 2), and the
mu-weighted l1 of Go-MTL / AMTFL (seed 004, eqs. 3, 6).

Thresholds (``tau``, ``l1``) are Python numbers or tensors; a number is passed to the
kernel as a 0-dim CPU tensor, so it costs no device transfer. NaN in ``x`` propagates
to the output (to the whole group for the group ops); negative or NaN thresholds are
rejected with a ``RuntimeError`` (for a CUDA threshold tensor this check reads one
value back from the device).

Autograd: the out-of-place ``soft_threshold``, ``elastic_net_prox`` and
``group_soft_threshold`` are differentiable with respect to ``x`` (thresholds are
constants). The in-place variants and the fused steps are solver steps: they refuse
inputs that require grad while grad mode is on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import reference as _ref

__all__ = [
    "soft_threshold",
    "soft_threshold_",
    "elastic_net_prox",
    "elastic_net_prox_",
    "prox_grad_step",
    "prox_grad_step_",
    "group_soft_threshold",
    "group_soft_threshold_",
    "group_prox_grad_step",
    "group_prox_grad_step_",
]

_ops = torch.ops.mtlkernels


def _threshold(op: str, name: str, value: float | Tensor) -> Tensor:
    """A threshold as the kernels take it: a tensor (a number becomes a 0-dim CPU tensor)."""
    if isinstance(value, Tensor):
        if value.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"{op}: {name} is treated as a constant; pass {name}.detach()")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a number or a tensor, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{op}: {name} must be finite and non-negative, got {value}")
    return torch.tensor(float(value), dtype=torch.float64)


def _no_grad_step(op: str, *tensors: Tensor) -> None:
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise RuntimeError(
            f"{op} is a proximal solver step and is not differentiable; "
            "call it under torch.no_grad() or on detached tensors"
        )


# ---- public wrappers ----------------------------------------------------------


def soft_threshold(x: Tensor, tau: float | Tensor) -> Tensor:
    """sign(x) * max(|x| - tau, 0), the proximal operator of tau * ||x||_1.

    Args:
        x: float32 or float64 tensor of any shape, on CPU or CUDA.
        tau: a non-negative number, or a tensor broadcastable to ``x`` (one threshold
            per row, per column, per matrix of a batch, ...).
    Returns:
        A new contiguous tensor of x's shape. Differentiable with respect to ``x``
        (derivative 1 where |x| > tau, else 0).
    """
    return _ops.soft_threshold(x, _threshold("soft_threshold", "tau", tau))


def soft_threshold_(x: Tensor, tau: float | Tensor) -> Tensor:
    """In-place :func:`soft_threshold`; returns ``x``."""
    _no_grad_step("soft_threshold_", x)
    _ops.soft_threshold_(x, _threshold("soft_threshold_", "tau", tau))
    return x


def elastic_net_prox(x: Tensor, l1: float | Tensor, l2: float) -> Tensor:
    """Proximal operator of l1 * ||x||_1 + (l2 / 2) * ||x||_2^2.

    Equals soft_threshold(x, l1) / (1 + l2). ``l1`` may be a tensor broadcastable to x;
    ``l2`` is a non-negative number. Differentiable with respect to ``x``.
    """
    return _ops.elastic_net_prox(x, _threshold("elastic_net_prox", "l1", l1), float(l2))


def elastic_net_prox_(x: Tensor, l1: float | Tensor, l2: float) -> Tensor:
    """In-place :func:`elastic_net_prox`; returns ``x``."""
    _no_grad_step("elastic_net_prox_", x)
    _ops.elastic_net_prox_(x, _threshold("elastic_net_prox_", "l1", l1), float(l2))
    return x


def prox_grad_step(x: Tensor, grad: Tensor, lr: float, l1: float | Tensor, l2: float = 0.0) -> Tensor:
    """Fused proximal-gradient step ``prox_{lr h}(x - lr * grad)``.

    h = l1 * ||x||_1 + (l2 / 2) * ||x||_2^2 (pure l1 when l2 = 0): one read of x and
    grad, one write of the result. This is the update of ISTA / FISTA (seed 000,
    eqs. 7-9) for l1 and elastic-net penalties.
    """
    _no_grad_step("prox_grad_step", x, grad)
    return _ops.prox_grad_step(x, grad, float(lr), _threshold("prox_grad_step", "l1", l1), float(l2))


def prox_grad_step_(x: Tensor, grad: Tensor, lr: float, l1: float | Tensor, l2: float = 0.0) -> Tensor:
    """In-place :func:`prox_grad_step` (x is overwritten); returns ``x``."""
    _no_grad_step("prox_grad_step_", x, grad)
    _ops.prox_grad_step_(x, grad, float(lr), _threshold("prox_grad_step_", "l1", l1), float(l2))
    return x


def group_soft_threshold(
    x: Tensor, tau: float | Tensor, dim: int = 1, groups: Tensor | None = None, l1: float = 0.0
) -> Tensor:
    """Block soft-thresholding: the prox of tau * sum_g ||x_g||_2 (+ l1 * ||x||_1).

    For each group g: ``x_g * max(0, 1 - tau_g / ||x_g||_2)``.

    Args:
        x: a float32/float64 matrix (m, n).
        tau: a non-negative number, or a 1-D tensor with one threshold per group.
        dim: the dimension the l2 norm runs along. ``dim=1``: each row is a group (the
            l2,1 norm over rows); ``dim=0``: each column is a group.
        groups: optional integer labels, one per entry along ``dim``: the groups are
            then the entries of each row (``dim=1``) or column (``dim=0``) sharing a
            label, e.g. the attribute groups of seed 003 eq. 2 within every row of S.
            Labels run over [0, G); G is ``tau.numel()`` when tau is a tensor, else
            max label + 1.
        l1: optional l1 weight for the sparse group lasso; the exact prox is the l1
            shrink followed by the group shrink.
    Returns:
        A new contiguous matrix. Differentiable with respect to ``x``.
    """
    return _ops.group_soft_threshold(
        x, _threshold("group_soft_threshold", "tau", tau), int(dim), groups, float(l1)
    )


def group_soft_threshold_(
    x: Tensor, tau: float | Tensor, dim: int = 1, groups: Tensor | None = None, l1: float = 0.0
) -> Tensor:
    """In-place :func:`group_soft_threshold`; returns ``x``."""
    _no_grad_step("group_soft_threshold_", x)
    _ops.group_soft_threshold_(
        x, _threshold("group_soft_threshold_", "tau", tau), int(dim), groups, float(l1)
    )
    return x


def group_prox_grad_step(
    x: Tensor,
    grad: Tensor,
    lr: float,
    tau: float | Tensor,
    dim: int = 1,
    groups: Tensor | None = None,
    l1: float = 0.0,
) -> Tensor:
    """Fused step ``prox_{lr h}(x - lr * grad)`` for h = tau * sum_g ||x_g||_2 + l1 ||x||_1."""
    _no_grad_step("group_prox_grad_step", x, grad)
    return _ops.group_prox_grad_step(
        x, grad, float(lr), _threshold("group_prox_grad_step", "tau", tau), int(dim), groups, float(l1)
    )


def group_prox_grad_step_(
    x: Tensor,
    grad: Tensor,
    lr: float,
    tau: float | Tensor,
    dim: int = 1,
    groups: Tensor | None = None,
    l1: float = 0.0,
) -> Tensor:
    """In-place :func:`group_prox_grad_step` (x is overwritten); returns ``x``."""
    _no_grad_step("group_prox_grad_step_", x, grad)
    _ops.group_prox_grad_step_(
        x, grad, float(lr), _threshold("group_prox_grad_step_", "tau", tau), int(dim), groups, float(l1)
    )
    return x


# ---- fake kernels (shape inference for torch.compile / FakeTensor) ------------


def _fake_out(x, *args):
    return x.new_empty(x.shape)


def _fake_inplace(x, *args):
    return None


for _name in ("soft_threshold", "elastic_net_prox", "prox_grad_step", "group_soft_threshold", "group_prox_grad_step"):
    torch.library.register_fake(f"mtlkernels::{_name}")(_fake_out)
    torch.library.register_fake(f"mtlkernels::{_name}_")(_fake_inplace)


# ---- autograd -------------------------------------------------------------------


def _save_out(ctx, inputs, output):
    ctx.save_for_backward(output)


def _soft_threshold_backward(ctx, grad):
    (out,) = ctx.saved_tensors
    return torch.where(out != 0, grad, torch.zeros_like(grad)), None


def _elastic_net_setup(ctx, inputs, output):
    ctx.save_for_backward(output)
    ctx.scale = 1.0 / (1.0 + inputs[2])


def _elastic_net_backward(ctx, grad):
    (out,) = ctx.saved_tensors
    return torch.where(out != 0, grad * ctx.scale, torch.zeros_like(grad)), None, None


def _group_setup(ctx, inputs, output):
    x, tau, dim, groups, l1 = inputs
    ctx.save_for_backward(x, tau, groups)
    ctx.dim, ctx.l1 = dim, l1


def _group_backward(ctx, gy):
    """Vector-Jacobian product of out_g = z_g (1 - t_g / r_g)_+ with z = S(x, l1).

    On an active group (r_g > t_g): d out_g / d z_g = (1 - t/r) I + (t / r^3) z_g z_g^T;
    an inactive group has zero derivative; the l1 shrink multiplies by 1[|x| > l1].
    """
    x, tau, groups = ctx.saved_tensors
    dim, l1 = ctx.dim, ctx.l1
    z = _ops.soft_threshold(x, torch.tensor(l1, dtype=torch.float64)) if l1 > 0 else x
    # Labels with a scalar tau: G = max label + 1 (labels may skip values, so the number
    # of labels is not enough); one read of the labels' maximum.
    if tau.numel() > 1:
        num_groups = tau.numel()
    elif groups is not None:
        num_groups = int(groups.max()) + 1 if groups.numel() else 0
    else:
        num_groups = None
    r = _ref.group_sum(z * z, dim, groups, num_groups).sqrt()
    t = _ref.group_threshold(tau, x, dim, groups)
    zg = _ref.group_sum(z * gy, dim, groups, num_groups)
    active = r > t
    safe_r = torch.where(active, r, torch.ones_like(r))
    gz = (1 - t / safe_r) * gy + (t / safe_r**3) * z * zg
    gz = torch.where(active, gz, torch.zeros_like(gz))
    if l1 > 0:
        gz = torch.where(z != 0, gz, torch.zeros_like(gz))
    return gz, None, None, None, None


torch.library.register_autograd("mtlkernels::soft_threshold", _soft_threshold_backward, setup_context=_save_out)
torch.library.register_autograd(
    "mtlkernels::elastic_net_prox", _elastic_net_backward, setup_context=_elastic_net_setup
)
torch.library.register_autograd("mtlkernels::group_soft_threshold", _group_backward, setup_context=_group_setup)
