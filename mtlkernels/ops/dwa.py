"""CETL ops: the Dynamic Weight Allocation penalty and its fused in-place gradient.

Chen et al. 2018 (CETL, coupled end-to-end transfer learning), eq. 11:

    DWA = sum_i lam/2 * GFI_i * (theta_i - theta*_i)^2,

an EWC-style quadratic anchor with the Generalized Fisher Information of eq. 10 as the
per-weight importance: theta* are the weights learned in the previous stage, GFI_i the
(randomly dropped, eq. 10) Fisher information of weight i. The sum runs over every
weight of the regularised sub-network, i.e. over every element of a list of tensors.

Both ops take lists (``model.parameters()``, the stored anchors, the GFI tensors, one
per parameter, same shapes) and process the whole list in one multi-tensor sweep: one
kernel launch per 64 tensors on CUDA, one parallel loop over (tensor, chunk) items on
the CPU; never a Python loop over parameters. All tensors share one dtype (float32 or
float64) and one device. The sum accumulates in float64.

Importance must be non-negative (a Fisher information); by default this is checked,
fused into the sweep (on CUDA the check reads one flag back from the device, a
synchronisation). Pass ``check=False`` in a training loop once the GFI is known good.

Every list is checked before the op runs (lengths, dtypes, devices, shapes; also by the
fake kernels). ``dwa_grad_`` takes a gradient listed twice (tied parameters) or sharing
memory with an input: every update lands. The raw ``torch.ops.mtlkernels.dwa_grad_``
refuses tensors that require grad with grad mode on (it is not differentiable); under
``torch.autocast`` the penalty computes float16 / bfloat16 inputs in float32.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import Tensor

from . import _checks as C

__all__ = ["dwa_penalty", "dwa_grad_"]

_ops = torch.ops.mtlkernels


def _lam(op: str, lam: float) -> float:
    if isinstance(lam, Tensor):
        raise TypeError(f"{op}: lam must be a Python number, got a tensor")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise TypeError(f"{op}: lam must be a number, got {type(lam).__name__}")
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"{op}: lam must be finite and non-negative, got {lam}")
    return float(lam)


def _non_empty(op: str, params: Sequence[Tensor]) -> None:
    # the dispatcher cannot route an op whose only tensor arguments are empty lists
    if len(params) == 0:
        raise ValueError(f"{op}: params is empty; pass a list of at least one tensor")


def _check_lists(op: str, params, anchors, importance, grads=None, lam=None) -> None:
    """The C++ rules (csrc/ops/dwa.cpp): equal lengths; every tensor float32 / float64 with
    params[0]'s dtype and device and params[i]'s shape. One pass, the message built only
    on a failure (lists of hundreds of tensors are checked on every call)."""
    if len(params) == 0:
        raise ValueError(f"{op}: params is empty; pass a list of at least one tensor")
    ref = C.floating(op, params[0], "params[0]")
    dtype, device = C.effective_dtype(ref), ref.device
    if lam is not None and not isinstance(lam, torch.SymFloat) and lam > torch.finfo(dtype).max:
        C.fail(op, f"lam = {lam} overflows {C.dtype_name(dtype)}; pass a smaller lam or float64 tensors")
    cast = dtype == torch.float32 and C.autocast_on(device.type)
    lists = [("params", params), ("anchors", anchors), ("importance", importance)]
    if grads is not None:
        lists.append(("grads", grads))
    for name, lst in lists:
        if len(lst) != len(params):
            C.fail(op, f"params has {len(params)} tensors but {name} has {len(lst)}; pass one {name} tensor "
                       "per parameter")
        for i, (t, p) in enumerate(zip(lst, params)):
            if (isinstance(t, Tensor) and t.device == device and t.shape == p.shape
                    and (t.dtype == dtype or (cast and t.dtype in C.HALVES))):
                continue
            C.floating(op, t, f"{name}[{i}]")
            C.same_dtype(op, ref, "params[0]", t, f"{name}[{i}]")
            C.same_device(op, ref, "params[0]", t, f"{name}[{i}]")
            C.same_shape(op, p, f"params[{i}]", t, f"{name}[{i}]")
    for i, g in enumerate(grads or ()):
        C.writable(op, g, f"grads[{i}]")


def _constant_importance(op: str, importance: Sequence[Tensor]) -> None:
    if torch.is_grad_enabled() and any(isinstance(f, Tensor) and f.requires_grad for f in importance):
        raise RuntimeError(f"{op}: importance (the GFI) is treated as a constant; pass detached tensors")


def dwa_penalty(
    params: Iterable[Tensor],
    anchors: Iterable[Tensor],
    importance: Iterable[Tensor],
    lam: float,
    *,
    check: bool = True,
) -> Tensor:
    """``sum_i lam/2 * GFI_i * (theta_i - theta*_i)^2``, the DWA loss of Chen et al. 2018 (CETL), eq. 11.

    Args:
        params: the current weights theta (e.g. ``list(net.parameters())``).
        anchors: theta*, the weights of the previous stage, one tensor per parameter.
        importance: the GFI (Chen et al. 2018, eq. 10), one non-negative tensor per parameter.
        lam: the non-negative weight lambda.
        check: verify that every importance value is >= 0 and not NaN (default).
    Returns:
        A 0-dim tensor (dtype and device of the parameters). Differentiable with
        respect to params (gradient lam * GFI * (theta - theta*)) and anchors (its
        negative); importance is a constant.
    """
    params, anchors, importance = list(params), list(anchors), list(importance)
    _non_empty("dwa_penalty", params)
    _constant_importance("dwa_penalty", importance)
    lam = _lam("dwa_penalty", lam)
    _check_lists("dwa_penalty", params, anchors, importance, lam=lam)
    return C.call(_ops.dwa_penalty, params, anchors, importance, lam, bool(check), differentiable=(*params, *anchors))


def dwa_grad_(
    grads: Iterable[Tensor] | None,
    params: Iterable[Tensor],
    anchors: Iterable[Tensor],
    importance: Iterable[Tensor],
    lam: float,
    *,
    check: bool = True,
) -> list[Tensor]:
    """Add the DWA gradient ``lam * GFI * (theta - theta*)`` to existing gradients, in place.

    The fused alternative to ``dwa_penalty(...).backward()``: one read of theta, theta*,
    GFI and the gradients, one write of the gradients, no autograd graph. Call it after
    ``loss.backward()`` and before ``optimizer.step()``.

    Args:
        grads: the gradients to update, one per parameter, or ``None`` for the
            parameters' own ``.grad`` (created as zeros where it is missing).
        params, anchors, importance, lam, check: as in :func:`dwa_penalty`.
    Returns:
        The list of updated gradient tensors.
    """
    params, anchors, importance = list(params), list(anchors), list(importance)
    _non_empty("dwa_grad_", params)
    lam = _lam("dwa_grad_", lam)
    if grads is None:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
    else:
        grads = list(grads)
        if any(g is None for g in grads):
            raise ValueError("dwa_grad_: a gradient is None; pass grads=None to use (and create) the params' .grad")
    _check_lists("dwa_grad_", params, anchors, importance, grads, lam=lam)
    with torch.no_grad():
        _ops.dwa_grad_(grads, params, anchors, importance, lam, bool(check))
    return grads


# ---- fake kernels (shape inference for torch.compile / FakeTensor) ------------


@torch.library.register_fake("mtlkernels::dwa_penalty")
def _dwa_penalty_fake(params, anchors, importance, lam, check):
    C.nonneg("dwa_penalty", lam, "lam")
    _check_lists("dwa_penalty", params, anchors, importance, lam=lam)
    return params[0].new_empty(())


@torch.library.register_fake("mtlkernels::dwa_penalty_backward")
def _dwa_penalty_backward_fake(grad, params, anchors, importance, lam):
    op = "dwa_penalty_backward"
    C.nonneg(op, lam, "lam")
    _check_lists(op, params, anchors, importance, lam=lam)
    C.floating(op, grad, "grad")
    if grad.numel() != 1:
        C.fail(op, f"grad must hold one value (the gradient of the scalar penalty), got shape {list(grad.shape)}")
    return [torch.empty_like(p, memory_format=torch.contiguous_format) for p in params]


@torch.library.register_fake("mtlkernels::dwa_grad_")
def _dwa_grad_fake(grads, params, anchors, importance, lam, check):
    C.nonneg("dwa_grad_", lam, "lam")
    _check_lists("dwa_grad_", params, anchors, importance, grads, lam=lam)
    return None


# ---- autograd --------------------------------------------------------------------


def _dwa_setup(ctx, inputs, output):
    C.no_derivative("dwa_penalty", inputs, {2: "importance"})
    params, anchors, importance, lam, _check = inputs
    ctx.save_for_backward(*params, *anchors, *importance)
    ctx.n = len(params)
    ctx.lam = lam


def _dwa_backward(ctx, grad):
    n = ctx.n
    saved = ctx.saved_tensors
    params, anchors, importance = list(saved[:n]), list(saved[n : 2 * n]), list(saved[2 * n :])
    need_p, need_a = ctx.needs_input_grad[0], ctx.needs_input_grad[1]  # one bool per tensor
    none = [None] * n
    if not (any(need_p) or any(need_a)):
        return none, none, none, None, None
    gp = _ops.dwa_penalty_backward(grad, params, anchors, importance, ctx.lam)
    ga = list(torch._foreach_neg([g for g, need in zip(gp, need_a) if need])) if any(need_a) else []
    ga_iter = iter(ga)
    grad_params = [g if need else None for g, need in zip(gp, need_p)]
    grad_anchors = [next(ga_iter) if need else None for need in need_a]
    return grad_params, grad_anchors, none, None, None


def _dwa_bwd_setup(ctx, inputs, output):
    C.no_derivative("dwa_penalty_backward", inputs, {3: "importance"})
    grad, params, anchors, importance, lam = inputs
    ctx.save_for_backward(grad, *params, *anchors, *importance)
    ctx.n = len(params)
    ctx.lam = lam


def _dwa_bwd_backward(ctx, vs):
    """Double backward: out_i = lam * g * F_i * (p_i - a_i) is linear in g, p and a."""
    n = ctx.n
    saved = ctx.saved_tensors
    g, params, anchors, importance = saved[0], saved[1 : n + 1], saved[n + 1 : 2 * n + 1], saved[2 * n + 1 :]
    vs = [torch.zeros_like(p) if v is None else v for v, p in zip(vs, params)]
    need_g = ctx.needs_input_grad[0]
    need_p, need_a = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    none = [None] * n
    grad_g = None
    if need_g:
        diff = torch._foreach_sub(list(params), list(anchors))
        terms = torch._foreach_mul(torch._foreach_mul(diff, list(importance)), vs)
        grad_g = (ctx.lam * torch.stack([t.sum() for t in terms]).sum()).reshape(g.shape).to(g.dtype)
    gp = ga = none
    if any(need_p) or any(need_a):
        fv = torch._foreach_mul(torch._foreach_mul(list(importance), vs), g * ctx.lam)
        gp = [x if need else None for x, need in zip(fv, need_p)]
        ga = [-x if need else None for x, need in zip(fv, need_a)]
    return grad_g, gp, ga, none, None


torch.library.register_autograd("mtlkernels::dwa_penalty", _dwa_backward, setup_context=_dwa_setup)
torch.library.register_autograd("mtlkernels::dwa_penalty_backward", _dwa_bwd_backward, setup_context=_dwa_bwd_setup)

C.register_autocast(["dwa_penalty", "dwa_penalty_backward"])
