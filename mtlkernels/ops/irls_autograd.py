"""Derivatives of the joint-IRLS ops (``torch.library.register_autograd``) and their
mixed-precision rule (``register_autocast``); the wrappers, argument checks and fake
kernels are in :mod:`mtlkernels.ops.irls`.

Differentiable with respect to params (pairwise_sq_dists, robust_consistency, once;
pairwise_mix and irls_consensus, linear, any number of times) and sq_dists
(irls_weights, once). sigma, weights and coeffs have no derivative: one that requires
grad is refused in the forward, also through ``torch.ops.mtlkernels``.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from . import _checks as C
from .irls import layer_weights

__all__: list[str] = []

_ops = torch.ops.mtlkernels


def _first_order(name: str):
    """Mark a backward as first-order only: with create_graph=True, differentiating its
    results again raises (like ``once_differentiable``, but also when only the op's
    saved inputs require grad) instead of silently dropping second-order terms."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(ctx, *grads):
            with torch.no_grad():
                out = fn(ctx, *grads)
            if not torch.is_grad_enabled():
                return out
            saved = ctx.saved_tensors
            if not any(isinstance(t, Tensor) and t.requires_grad for t in (*grads, *saved)):
                return out
            err = torch._C._functions.DelayedError(
                f"mtlkernels::{name}: double backward is not supported (its backward is first-order only)", len(out)
            )
            fake = [None if o is None else o.detach().requires_grad_() for o in out]
            return err(*fake)

        return wrapper

    return deco


def _zero_diag(m: Tensor) -> Tensor:
    return m * (1 - torch.eye(m.shape[-1], dtype=m.dtype, device=m.device))


def _sq_dists_setup(ctx, inputs, output):
    params, offsets, _ = inputs
    ctx.save_for_backward(params)
    ctx.offsets = offsets


@_first_order("pairwise_sq_dists")
def _sq_dists_backward(ctx, grad):
    # d/dtheta_i sum_lij G_lij D_lij = 2 sum_j (G_lij + G_lji) (theta_i - theta_j)
    (params,) = ctx.saved_tensors
    coeffs = _zero_diag(-2 * (grad + grad.transpose(1, 2)))
    return _ops.pairwise_mix(params, ctx.offsets, coeffs.to(params.dtype), False), None, None


def _mix_setup(ctx, inputs, output):
    C.no_derivative("pairwise_mix", inputs, {2: "coeffs"})
    _, offsets, coeffs, transpose = inputs
    ctx.save_for_backward(coeffs)
    ctx.offsets, ctx.transpose = offsets, transpose


def _mix_backward(ctx, grad):
    (coeffs,) = ctx.saved_tensors
    return _ops.pairwise_mix(grad, ctx.offsets, coeffs, not ctx.transpose), None, None, None


def _consensus_setup(ctx, inputs, output):
    C.no_derivative("irls_consensus", inputs, {0: "weights"})
    weights, _, offsets, transpose = inputs
    ctx.save_for_backward(weights)
    ctx.offsets, ctx.transpose = offsets, transpose


def _consensus_backward(ctx, grad):
    (weights,) = ctx.saved_tensors
    return None, _ops.irls_consensus(weights, grad, ctx.offsets, not ctx.transpose), None, None


def _weights_setup(ctx, inputs, output):
    C.no_derivative("irls_weights", inputs, {1: "sigma"})
    sq_dists, sigma = inputs
    w, _ = output
    ctx.save_for_backward(w, sigma)


@_first_order("irls_weights")
def _weights_backward(ctx, grad_w, grad_rho):
    # Per pair: d rho / d d2 = w^2 and d w / d d2 = -w^2 / sigma^2 (0 for sigma in {0, inf}).
    w, sigma = ctx.saved_tensors
    L = w.shape[0]
    w64 = w.to(torch.float64)
    s2 = sigma.to(device=w.device, dtype=torch.float64).reshape(-1).expand(L).reshape(L, 1, 1).square()
    g = torch.zeros_like(w64)
    if grad_rho is not None:
        g = g + grad_rho.to(torch.float64) * w64.square()
    if grad_w is not None:
        ok = (s2 > 0) & torch.isfinite(s2)
        dw = torch.where(ok, -w64.square() / torch.where(ok, s2, torch.ones_like(s2)), torch.zeros_like(w64))
        g = g + grad_w.to(torch.float64) * dw
    return layer_weights(g).to(w.dtype), None


def _consistency_setup(ctx, inputs, output):
    C.no_derivative("robust_consistency", inputs, {2: "sigma", 3: "weights"})
    params, offsets, _, _ = inputs
    _, coeffs = output
    ctx.mark_non_differentiable(coeffs)
    ctx.save_for_backward(params, coeffs)
    ctx.offsets = offsets


@_first_order("robust_consistency")
def _consistency_backward(ctx, grad_loss, grad_coeffs):
    # coeffs[l, i, j] = d loss / d D_l(i, j) for the unordered pair; zero diagonal.
    params, coeffs = ctx.saved_tensors
    mix = (-2 * grad_loss) * coeffs
    return _ops.pairwise_mix(params, ctx.offsets, mix, False), None, None, None


torch.library.register_autograd("mtlkernels::pairwise_sq_dists", _sq_dists_backward, setup_context=_sq_dists_setup)
torch.library.register_autograd("mtlkernels::pairwise_mix", _mix_backward, setup_context=_mix_setup)
torch.library.register_autograd("mtlkernels::irls_consensus", _consensus_backward, setup_context=_consensus_setup)
torch.library.register_autograd("mtlkernels::irls_weights", _weights_backward, setup_context=_weights_setup)
torch.library.register_autograd(
    "mtlkernels::robust_consistency", _consistency_backward, setup_context=_consistency_setup
)

C.register_autocast(["pairwise_sq_dists", "pairwise_mix", "irls_weights", "robust_consistency", "irls_consensus"])
