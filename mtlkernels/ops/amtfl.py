"""AMTFL op: the fused feature-reconstruction loss of (Deep-)AMTFL.

Lee et al. 2018 (Deep-AMTFL; "Deep Asymmetric Multi-task Feature Learning"), eq. 6
(shallow AMTFL) and eq. 7 (Deep-AMTFL): the autoencoding term
``gamma * ||Z - sigma(Z S A)||_F^2`` (eq. 6), written ``gamma * ||sigma(Z W^(L) A) - Z||_F^2``
in eq. 7, with sigma the ReLU.

Which product is reconstructed. Eq. 6 writes sigma(Z S A) and eq. 7 sigma(Z W^(L) A):
in both, the matrix between Z and A is the task-weight matrix of the last layer (S in
the shallow model, k x T; W^(L) in the deep one), so the argument of sigma is the matrix
of task outputs ``Z W`` (N x T, before any output nonlinearity) mapped back to the k
features by the feedback weights A (T x k). The text under eq. 6 says so ("reconstruct
features Z with model outputs ZS with the nonlinear transformation sigma(.; A)"), as does
the official Deep-AMTFL model, whose feedback connections run from the task outputs to
the penultimate features. It is not a reconstruction of the parameters (L S or W): Z W A
has Z's shape (N x k). Fig. 2(d) adds a bias inside the ReLU ("ReLU transformation with
a bias term"); it is the optional ``bias`` (one value per feature). The weight gamma is
left to the caller: the op returns the plain squared Frobenius norm.

Every argument is checked before the op runs (and by its fake kernel); under
``torch.autocast`` float16 / bfloat16 inputs are computed in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _checks as C

__all__ = ["amtfl_reconstruction_loss"]

_ops = torch.ops.mtlkernels


def amtfl_reconstruction_loss(Z: Tensor, W: Tensor, A: Tensor, bias: Tensor | None = None) -> Tensor:
    """``||relu(Z W A + bias) - Z||_F^2``, the reconstruction term of Lee et al. 2018 (Deep-AMTFL), eqs. 6-7.

    Args:
        Z: (N, k) features (the penultimate-layer representation; non-negative in AMTFL).
        W: (k, T) task weights; ``Z W`` are the task outputs.
        A: (T, k) feedback weights from the task outputs to the features.
        bias: optional (k,) bias inside the ReLU (Lee et al. 2018, Fig. 2(d)).
    Returns:
        A 0-dim tensor (dtype of Z). Float32 or float64, CPU or CUDA; the squared norm
        is accumulated in float64.

    Differentiable with respect to Z, W, A and bias. Forward and backward are fused:
    when any input requires grad (and grad mode is on), the gradients are computed in
    the forward sweep over row chunks of Z, and the backward only scales them by the
    upstream gradient (in place, unless the graph is retained). No N x T or N x k
    intermediate is kept whole (only dZ, N x k, which becomes Z's gradient), so the
    peak memory is a fraction of eager autograd's. Gradients are first-order only: a
    double backward through this loss is refused.

    The raw op ``torch.ops.mtlkernels.amtfl_reconstruction(Z, W, A, bias, grad_Z,
    grad_W, grad_A, grad_bias)`` returns ``(loss, dZ, dW, dA, dbias)`` (an empty tensor
    for a gradient not requested); its backward may scale those gradient outputs in
    place, so treat them as owned by autograd.
    """
    need = torch.is_grad_enabled()
    flags = [bool(need and isinstance(t, Tensor) and t.requires_grad) for t in (Z, W, A, bias)]
    _check_amtfl(Z, W, A, bias, flags[3])
    return C.call(_ops.amtfl_reconstruction, Z, W, A, bias, *flags, differentiable=(Z, W, A, bias))[0]


# ---- argument checks (the wrapper and the fake kernel; csrc/ops/amtfl.cpp: the same) ----

_OP = "amtfl_reconstruction"


def _check_amtfl(Z, W, A, bias, grad_bias) -> None:
    for t, name, shape in ((Z, "Z", "(N, k)"), (W, "W", "(k, T)"), (A, "A", "(T, k)")):
        C.floating(_OP, t, name)
        if t.dim() != 2:
            C.fail(_OP, f"{name} must be a matrix of shape {shape}, got shape {list(t.shape)}")
    for t, name in ((W, "W"), (A, "A")):
        C.same_device(_OP, Z, "Z", t, name)
        C.same_dtype(_OP, Z, "Z", t, name)
    k, T = Z.shape[1], W.shape[1]
    if W.shape[0] != k:
        C.fail(_OP, f"W must have shape (k, T) with k = Z.size(1) = {k}, got W of shape {list(W.shape)}")
    if A.shape[0] != T or A.shape[1] != k:
        C.fail(_OP, f"A must have shape (T, k) = ({T}, {k}) to map the task outputs Z W back to the features, "
                    f"got A of shape {list(A.shape)}")
    if bias is not None:
        C.floating(_OP, bias, "bias")
        C.same_device(_OP, Z, "Z", bias, "bias")
        C.same_dtype(_OP, Z, "Z", bias, "bias")
        if bias.dim() != 1 or bias.shape[0] != k:
            C.fail(_OP, f"bias must have shape (k,) = ({k},), got shape {list(bias.shape)}")
    if grad_bias and bias is None:
        C.fail(_OP, "grad_bias requested without a bias")


# ---- fake kernel (shape inference for torch.compile / FakeTensor) -------------


@torch.library.register_fake("mtlkernels::amtfl_reconstruction")
def _amtfl_fake(Z, W, A, bias, grad_Z, grad_W, grad_A, grad_bias):
    _check_amtfl(Z, W, A, bias, grad_bias)
    N, k = Z.shape
    T = W.shape[1]
    empty = Z.new_empty((0,))
    return (
        Z.new_empty(()),
        Z.new_empty((N, k)) if grad_Z else empty,
        Z.new_empty((k, T)) if grad_W else Z.new_empty((0,)),
        Z.new_empty((T, k)) if grad_A else Z.new_empty((0,)),
        Z.new_empty((k,)) if grad_bias else Z.new_empty((0,)),
    )


# ---- autograd: the gradients were computed by the forward op -------------------


def _amtfl_setup(ctx, inputs, output):
    for i, name in enumerate(("Z", "W", "A", "bias")):  # refused now, not at backward
        if ctx.needs_input_grad[i] and not inputs[4 + i]:
            raise RuntimeError(
                f"amtfl_reconstruction: {name} requires grad but grad_{name}=False, so its gradient is not "
                f"computed; pass grad_{name}=True (amtfl_reconstruction_loss sets the flags)"
            )
    _, dZ, dW, dA, db = output
    ctx.mark_non_differentiable(dZ, dW, dA, db)
    ctx.set_materialize_grads(False)  # no zero "gradients" for the gradient outputs (an N x k buffer)
    ctx.save_for_backward(dZ, dW, dA, db)
    ctx.computed = tuple(inputs[4:8])


def _saved_used_once(*tensors: Tensor) -> bool:
    """True inside an eager backward that frees the graph afterwards (no retain_graph);
    False under any tracing (torch.compile, AOTAutograd, FakeTensor, dispatch modes)."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return False
    if any(type(t) is not Tensor for t in tensors):
        return False
    try:
        return not torch._C._autograd._get_current_graph_task_keep_graph()
    except (AttributeError, RuntimeError):  # a torch without it, or not inside a backward
        return False


def _amtfl_backward(ctx, g, *_unused):
    if g is None:  # the loss was not used (grads are not materialised)
        return None, None, None, None, None, None, None, None
    if torch.is_grad_enabled():
        raise RuntimeError(
            "amtfl_reconstruction_loss: double backward (create_graph=True) is not supported: the fused op "
            "returns first-order gradients only; use mtlkernels.reference.amtfl_reconstruction_loss for that"
        )
    dZ, dW, dA, db = ctx.saved_tensors
    # The saved gradients are scaled in place when the graph is freed after this
    # backward (the common case): no second N x k buffer. With retain_graph=True
    # they are kept intact for the next backward.
    in_place = _saved_used_once(g, dZ, dW, dA, db)
    grads = []
    for i, (name, d) in enumerate(zip(("Z", "W", "A", "bias"), (dZ, dW, dA, db))):
        if not ctx.needs_input_grad[i]:
            grads.append(None)
            continue
        if not ctx.computed[i]:
            raise RuntimeError(
                f"amtfl_reconstruction: the gradient for {name} was not computed in the forward "
                f"(grad_{name}=False); call amtfl_reconstruction_loss, which sets the flags"
            )
        grads.append(d.mul_(g) if in_place else g * d)
    return (*grads, None, None, None, None)


torch.library.register_autograd("mtlkernels::amtfl_reconstruction", _amtfl_backward, setup_context=_amtfl_setup)

C.register_autocast(["amtfl_reconstruction"])
