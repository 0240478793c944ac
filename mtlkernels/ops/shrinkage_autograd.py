"""Derivatives of the shrinkage ops (``torch.library.register_autograd``) and their
mixed-precision rule (``register_autocast``); the wrappers, argument checks and fake
kernels are in :mod:`mtlkernels.ops.shrinkage`.

Every out-of-place op is differentiable with respect to ``x`` (and ``grad`` for the
fused steps), also when called through ``torch.ops.mtlkernels``; a threshold that
requires grad is refused in the forward (no derivative is defined for it) instead of
getting a silent ``None``. The in-place ops have no derivative: their Autograd kernel is
in C++ (csrc/ops/autograd.cpp).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _checks as C

__all__: list[str] = []

_ops = torch.ops.mtlkernels


def _active(out: Tensor, g: Tensor, scale: float = 1.0) -> Tensor:
    """g * scale where the shrunk value is non-zero (the derivative of S), else 0."""
    return torch.where(out != 0, g * scale if scale != 1.0 else g, torch.zeros_like(g))


def _soft_threshold_setup(ctx, inputs, output):
    C.no_derivative("soft_threshold", inputs, {1: "tau"})
    ctx.save_for_backward(output)


def _soft_threshold_backward(ctx, gy):
    (out,) = ctx.saved_tensors
    return _active(out, gy), None


def _elastic_net_setup(ctx, inputs, output):
    C.no_derivative("elastic_net_prox", inputs, {1: "l1"})
    ctx.save_for_backward(output)
    ctx.scale = 1.0 / (1.0 + inputs[2])


def _elastic_net_backward(ctx, gy):
    (out,) = ctx.saved_tensors
    return _active(out, gy, ctx.scale), None, None


def _prox_step_setup(ctx, inputs, output):
    C.no_derivative("prox_grad_step", inputs, {3: "l1"})
    _, _, lr, _, l2 = inputs
    ctx.save_for_backward(output)
    ctx.lr, ctx.scale = lr, 1.0 / (1.0 + lr * l2)


def _prox_step_backward(ctx, gy):
    # out = scale * S(x - lr * grad, lr * l1): d/dx = scale 1[out != 0], d/dgrad = -lr d/dx.
    (out,) = ctx.saved_tensors
    gx = _active(out, gy, ctx.scale)
    return gx, (-ctx.lr) * gx if ctx.needs_input_grad[1] else None, None, None, None


def _dense_labels(groups: Tensor | None):
    """Labels renumbered 0, 1, ... in the order of their values (equal labels, one group;
    a sort: linear work whatever the values, and static shapes for tracing) and an upper
    bound on the number of groups (the number of labels)."""
    if groups is None:
        return None, 0
    g = groups.long()
    n = g.shape[0]
    if n == 0:
        return g, 0
    values, perm = torch.sort(g)
    step = torch.cat([values.new_zeros(1), (values[1:] != values[:-1]).long()])
    return torch.empty_like(g).scatter_(0, perm, step.cumsum(0)), n


def _group_sums(v: Tensor, dim: int, labels: Tensor | None, G: int) -> Tensor:
    """Sum of v over each group, broadcast back to v's shape: whole rows (dim=1) or
    columns (dim=0), or the entries of each row / column that share a label."""
    if labels is None:
        return v.sum(dim=dim, keepdim=True).expand_as(v)
    shape = list(v.shape)
    shape[dim] = G
    return v.new_zeros(shape).index_add_(dim, labels, v).index_select(dim, labels)


def _group_vjp(x, gy, tau, tmul, dim, groups, l1) -> Tensor:
    """Vector-Jacobian product of out_g = z_g (1 - t_g / r_g)_+ with z = S(x, l1),
    t = tmul * tau, r_g = ||z_g||.

    On an active group (r_g > t_g): d out_g / d z_g = (1 - t/r) I + (t / r^3) z_g z_g^T;
    an inactive group has zero derivative; the l1 shrink multiplies by 1[|x| > l1].
    """
    dim %= 2
    labels, G = _dense_labels(groups)
    t = tau.to(device=x.device, dtype=x.dtype) * tmul
    if t.numel() != 1:  # per group: laid out along the rows or the columns of x
        t = t.index_select(0, groups.long()) if groups is not None else t
        t = t.view(-1, 1) if (dim == 1) == (groups is None) else t.view(1, -1)
    else:
        t = t.reshape(())
    z = _ops.soft_threshold(x, torch.tensor(l1, dtype=torch.float64)) if l1 > 0 else x
    r = _group_sums(z * z, dim, labels, G).sqrt()
    zg = _group_sums(z * gy, dim, labels, G)
    active = r > t
    safe_r = torch.where(active, r, torch.ones_like(r))
    gz = (1 - t / safe_r) * gy + (t / safe_r**3) * z * zg
    gz = torch.where(active, gz, torch.zeros_like(gz))
    if l1 > 0:
        gz = torch.where(z != 0, gz, torch.zeros_like(gz))
    return gz


def _group_setup(ctx, inputs, output):
    C.no_derivative("group_soft_threshold", inputs, {1: "tau"})
    x, tau, dim, groups, l1 = inputs
    ctx.save_for_backward(x, tau, groups)
    ctx.dim, ctx.l1 = dim, l1


def _group_backward(ctx, gy):
    x, tau, groups = ctx.saved_tensors
    return _group_vjp(x, gy, tau, 1.0, ctx.dim, groups, ctx.l1), None, None, None, None


def _group_step_setup(ctx, inputs, output):
    C.no_derivative("group_prox_grad_step", inputs, {3: "tau"})
    x, grad, lr, tau, dim, groups, l1 = inputs
    ctx.save_for_backward(x, grad, tau, groups)
    ctx.lr, ctx.dim, ctx.l1 = lr, dim, l1


def _group_step_backward(ctx, gy):
    # out = G_{lr tau, lr l1}(x - lr * grad): d/dgrad = -lr d/dx.
    x, grad, tau, groups = ctx.saved_tensors
    lr = ctx.lr
    gx = _group_vjp(x - lr * grad, gy, tau, lr, ctx.dim, groups, ctx.l1 * lr)
    return gx, (-lr) * gx if ctx.needs_input_grad[1] else None, None, None, None, None, None


for _name, _bwd, _setup in [
    ("soft_threshold", _soft_threshold_backward, _soft_threshold_setup),
    ("elastic_net_prox", _elastic_net_backward, _elastic_net_setup),
    ("prox_grad_step", _prox_step_backward, _prox_step_setup),
    ("group_soft_threshold", _group_backward, _group_setup),
    ("group_prox_grad_step", _group_step_backward, _group_step_setup),
]:
    torch.library.register_autograd(f"mtlkernels::{_name}", _bwd, setup_context=_setup)

C.register_autocast(["soft_threshold", "elastic_net_prox", "prox_grad_step", "group_soft_threshold",
                     "group_prox_grad_step"])
