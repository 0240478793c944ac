"""Shrinkage ops: soft-thresholding, elastic-net prox, group soft-thresholding and
the fused proximal-gradient steps built on them.

These are the proximal operators of every solver in the library: the l1 penalty on
S in Shen et al. 2015 (Adaptive Sharing), eq. 3 and the prox in eq. 9; the group lasso
on S within attribute groups and the l1 + Frobenius prox on L of Abdulnabi et al. 2015
(attribute MTL), eq. 2; the mu-weighted l1 of Go-MTL / AMTFL in Lee et al. 2018
(Deep-AMTFL), eqs. 3 and 6.

Thresholds (``tau``, ``l1``) are Python numbers or tensors; a number is passed to the
kernel as a 0-dim CPU tensor, so it costs no device transfer. Numbers are applied in
double precision; a threshold above x's largest finite value acts as that value (the
same result), a step size ``lr`` or a factor ``1 / (1 + lr * l2)`` that does not fit x's
dtype is refused. NaN in ``x`` propagates to the output (to the whole group for the
group ops); negative or NaN thresholds are rejected with a ``RuntimeError`` (for a CUDA
threshold tensor this check reads one value back from the device).

Autograd: the out-of-place ops are differentiable with respect to ``x`` (and ``grad``
for the fused steps); thresholds are constants, and one that requires grad is refused.
The in-place variants are solver steps: with grad mode on they refuse arguments that
require grad (a leaf updated in place included, as torch does); under
``torch.no_grad()`` they bump x's version counter as torch's in-place ops do. An input
that shares memory with x (``soft_threshold_(x, x[:1])``) is read before x is written.
Under ``torch.autocast`` the out-of-place ops compute float16 / bfloat16 inputs in
float32; the in-place ops take float16 / bfloat16 x and compute it in float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _checks as C

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


# ---- argument checks (the wrappers and the fake kernels; csrc/ops/shrinkage.cpp: the same) ----


def _threshold(op: str, name: str, value: float | Tensor) -> Tensor:
    """A threshold as the kernels take it: a tensor (a number becomes a 0-dim CPU tensor)."""
    if isinstance(value, Tensor):
        return C.constant(op, value, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a number or a tensor, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{op}: {name} must be finite and non-negative, got {value}")
    return torch.tensor(float(value), dtype=torch.float64)


def _check_step(op: str, x: Tensor, grad, lr, inplace: bool):
    C.tensor(op, grad, "grad")
    C.same_device(op, x, "x", grad, "grad")
    C.same_dtype(op, x, "x", grad, "grad", autocast=not inplace)
    C.same_shape(op, x, "x", grad, "grad")
    return C.positive(op, lr, "lr")


def _fast_valid(x, thr, grad, lr, l2, inplace) -> bool:
    """The common valid call of an elementwise op, decided in one expression (a float32 /
    float64 x, a threshold given as a number or as a floating tensor on x's device that
    broadcasts to x, a matching gradient, moderate numbers; in place: a contiguous x). A
    subset of what the full checks accept: anything else is checked by them."""
    return (isinstance(x, Tensor) and x.dtype in C.FLOATS and isinstance(thr, Tensor) and thr.dtype in C.FLOATS
            and ((thr.dim() == 0 and thr.device.type == "cpu")
                 or (thr.device == x.device and C.broadcasts_to(thr, x.shape)))
            and (not inplace or x.is_contiguous())
            and (lr is None or (isinstance(grad, Tensor) and grad.dtype == x.dtype and grad.device == x.device
                                and grad.shape == x.shape and type(lr) is float and 0 < lr <= 1e30))
            and (l2 is None or (type(l2) is float and 0 <= l2 and (lr or 1.0) * l2 <= 1e30)))


def _check_elementwise(op, x, thr, name, grad=None, lr=None, l2=None, inplace=False) -> None:
    """soft_threshold, elastic_net_prox, prox_grad_step and their in-place forms."""
    if _fast_valid(x, thr, grad, lr, l2, inplace):
        return
    if inplace:
        C.writable(op, x, "x")
    else:
        C.floating(op, x, "x")
    tmul = 1.0
    if lr is not None:
        tmul = _check_step(op, x, grad, lr, inplace)
    l2 = 0.0 if l2 is None else C.nonneg(op, l2, "l2")
    dtype = C.working_dtype(x) if inplace else C.effective_dtype(x)
    C.step_fits(op, dtype, tmul if lr is not None else 0.0, 1.0 / (1.0 + tmul * l2))
    C.real(op, thr, name)
    C.scalar_device(op, thr, name, x)
    if not C.broadcasts_to(thr, x.shape):
        C.fail(op, f"{name} of shape {list(thr.shape)} does not broadcast to x of shape {list(x.shape)} "
                   "(it must broadcast without changing x's shape)")


def _check_group(op, x, tau, dim, groups, l1, grad=None, lr=None, inplace=False) -> None:
    """group_soft_threshold, group_prox_grad_step and their in-place forms."""
    if inplace:
        C.writable(op, x, "x")
    else:
        C.floating(op, x, "x")
    if x.dim() != 2:
        C.fail(op, f"x must be a 2-D matrix, got shape {list(x.shape)}")
    dim = C.index(op, dim, "dim")
    if not -2 <= dim <= 1:
        C.fail(op, f"dim must be 0 or 1 (or -2, -1) for a matrix, got {dim}")
    dim %= 2
    if lr is not None:
        lr = _check_step(op, x, grad, lr, inplace)
        C.step_fits(op, C.working_dtype(x) if inplace else C.effective_dtype(x), lr)
    C.nonneg(op, l1, "l1")
    C.real(op, tau, "tau")
    C.scalar_device(op, tau, "tau", x)
    if tau.dim() > 1:
        C.fail(op, f"tau must be a scalar or a 1-D tensor with one value per group, got shape {list(tau.shape)}")
    if groups is not None:
        C.integer(op, groups, "groups", "group labels")
        if groups.dim() != 1:
            C.fail(op, f"groups must be 1-D (one label per entry along dim), got shape {list(groups.shape)}")
        if groups.shape[0] != x.shape[dim]:
            C.fail(op, f"groups has {groups.shape[0]} labels but x has {x.shape[dim]} entries along dim {dim}")
        C.same_device(op, x, "x", groups, "groups")
    elif tau.numel() > 1:
        count = x.shape[0] if dim == 1 else x.shape[1]
        if tau.numel() != count:
            C.fail(op, f"tau has {tau.numel()} values but there are {count} groups")


# ---- public wrappers ----------------------------------------------------------


def soft_threshold(x: Tensor, tau: float | Tensor) -> Tensor:
    """``sign(x) * max(|x| - tau, 0)``, the proximal operator of tau * ||x||_1.

    Args:
        x: float32 or float64 tensor of any shape, on CPU or CUDA.
        tau: a non-negative number, or a tensor broadcastable to ``x`` (one threshold
            per row, per column, per matrix of a batch, ...).
    Returns:
        A new contiguous tensor of x's shape. Differentiable with respect to ``x``
        (derivative 1 where ``|x| > tau``, else 0).
    """
    op = "soft_threshold"
    tau = _threshold(op, "tau", tau)
    _check_elementwise(op, x, tau, "tau")
    return C.call(_ops.soft_threshold, x, tau, differentiable=(x,))


def soft_threshold_(x: Tensor, tau: float | Tensor) -> Tensor:
    """In-place :func:`soft_threshold`; returns ``x``."""
    op = "soft_threshold_"
    C.no_grad_step(op, x)
    tau = _threshold(op, "tau", tau)
    _check_elementwise(op, x, tau, "tau", inplace=True)
    _ops.soft_threshold_(x, tau)
    return x


def elastic_net_prox(x: Tensor, l1: float | Tensor, l2: float) -> Tensor:
    """Proximal operator of l1 * ||x||_1 + (l2 / 2) * ||x||_2^2.

    Equals soft_threshold(x, l1) / (1 + l2). ``l1`` may be a tensor broadcastable to x;
    ``l2`` is a non-negative number. Differentiable with respect to ``x``.
    """
    op = "elastic_net_prox"
    l1 = _threshold(op, "l1", l1)
    _check_elementwise(op, x, l1, "l1", l2=l2)
    return C.call(_ops.elastic_net_prox, x, l1, float(l2), differentiable=(x,))


def elastic_net_prox_(x: Tensor, l1: float | Tensor, l2: float) -> Tensor:
    """In-place :func:`elastic_net_prox`; returns ``x``."""
    op = "elastic_net_prox_"
    C.no_grad_step(op, x)
    l1 = _threshold(op, "l1", l1)
    _check_elementwise(op, x, l1, "l1", l2=l2, inplace=True)
    _ops.elastic_net_prox_(x, l1, float(l2))
    return x


def prox_grad_step(x: Tensor, grad: Tensor, lr: float, l1: float | Tensor, l2: float = 0.0) -> Tensor:
    """Fused proximal-gradient step ``prox_{lr h}(x - lr * grad)``.

    h = l1 * ||x||_1 + (l2 / 2) * ||x||_2^2 (pure l1 when l2 = 0): one read of x and
    grad, one write of the result. This is the update of ISTA / FISTA (Shen et al. 2015
    (Adaptive Sharing), eqs. 7-9) for l1 and elastic-net penalties. Differentiable with
    respect to ``x`` and ``grad`` (derivative 1 / (1 + lr l2) and -lr / (1 + lr l2)
    where the result is non-zero).
    """
    op = "prox_grad_step"
    l1 = _threshold(op, "l1", l1)
    _check_elementwise(op, x, l1, "l1", grad=grad, lr=lr, l2=l2)
    return C.call(_ops.prox_grad_step, x, grad, float(lr), l1, float(l2), differentiable=(x, grad))


def prox_grad_step_(x: Tensor, grad: Tensor, lr: float, l1: float | Tensor, l2: float = 0.0) -> Tensor:
    """In-place :func:`prox_grad_step` (x is overwritten); returns ``x``."""
    op = "prox_grad_step_"
    C.no_grad_step(op, x, grad)
    l1 = _threshold(op, "l1", l1)
    _check_elementwise(op, x, l1, "l1", grad=grad, lr=lr, l2=l2, inplace=True)
    _ops.prox_grad_step_(x, grad, float(lr), l1, float(l2))
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
            label, e.g. the attribute groups of Abdulnabi et al. 2015 (attribute MTL),
            eq. 2, within every row of S. Labels are non-negative; with a tensor tau
            they index it (label < tau.numel()), with a number any value is allowed
            (the cost is linear in x's size whatever the labels).
        l1: optional l1 weight for the sparse group lasso; the exact prox is the l1
            shrink followed by the group shrink.
    Returns:
        A new contiguous matrix. Differentiable with respect to ``x``.
    """
    op = "group_soft_threshold"
    tau = _threshold(op, "tau", tau)
    _check_group(op, x, tau, dim, groups, l1)
    return C.call(_ops.group_soft_threshold, x, tau, int(dim), groups, float(l1), differentiable=(x,))


def group_soft_threshold_(
    x: Tensor, tau: float | Tensor, dim: int = 1, groups: Tensor | None = None, l1: float = 0.0
) -> Tensor:
    """In-place :func:`group_soft_threshold`; returns ``x``."""
    op = "group_soft_threshold_"
    C.no_grad_step(op, x)
    tau = _threshold(op, "tau", tau)
    _check_group(op, x, tau, dim, groups, l1, inplace=True)
    _ops.group_soft_threshold_(x, tau, int(dim), groups, float(l1))
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
    """Fused step ``prox_{lr h}(x - lr * grad)`` for h = tau * sum_g ||x_g||_2 + l1 ||x||_1.

    Differentiable with respect to ``x`` and ``grad``.
    """
    op = "group_prox_grad_step"
    tau = _threshold(op, "tau", tau)
    _check_group(op, x, tau, dim, groups, l1, grad=grad, lr=lr)
    return C.call(_ops.group_prox_grad_step, x, grad, float(lr), tau, int(dim), groups, float(l1),
                  differentiable=(x, grad))


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
    op = "group_prox_grad_step_"
    C.no_grad_step(op, x, grad)
    tau = _threshold(op, "tau", tau)
    _check_group(op, x, tau, dim, groups, l1, grad=grad, lr=lr, inplace=True)
    _ops.group_prox_grad_step_(x, grad, float(lr), tau, int(dim), groups, float(l1))
    return x


# ---- fake kernels (shape inference for torch.compile / FakeTensor / meta) ----------------
# The same checks as the wrappers, so that a traced or meta call fails as eager does.


@torch.library.register_fake("mtlkernels::soft_threshold")
def _soft_threshold_fake(x, tau):
    _check_elementwise("soft_threshold", x, tau, "tau")
    return x.new_empty(x.shape)


@torch.library.register_fake("mtlkernels::soft_threshold_")
def _soft_threshold_inplace_fake(x, tau):
    _check_elementwise("soft_threshold_", x, tau, "tau", inplace=True)


@torch.library.register_fake("mtlkernels::elastic_net_prox")
def _elastic_net_fake(x, l1, l2):
    _check_elementwise("elastic_net_prox", x, l1, "l1", l2=l2)
    return x.new_empty(x.shape)


@torch.library.register_fake("mtlkernels::elastic_net_prox_")
def _elastic_net_inplace_fake(x, l1, l2):
    _check_elementwise("elastic_net_prox_", x, l1, "l1", l2=l2, inplace=True)


@torch.library.register_fake("mtlkernels::prox_grad_step")
def _prox_step_fake(x, grad, lr, l1, l2):
    _check_elementwise("prox_grad_step", x, l1, "l1", grad=grad, lr=lr, l2=l2)
    return x.new_empty(x.shape)


@torch.library.register_fake("mtlkernels::prox_grad_step_")
def _prox_step_inplace_fake(x, grad, lr, l1, l2):
    _check_elementwise("prox_grad_step_", x, l1, "l1", grad=grad, lr=lr, l2=l2, inplace=True)


@torch.library.register_fake("mtlkernels::group_soft_threshold")
def _group_fake(x, tau, dim, groups, l1):
    _check_group("group_soft_threshold", x, tau, dim, groups, l1)
    return x.new_empty(x.shape)


@torch.library.register_fake("mtlkernels::group_soft_threshold_")
def _group_inplace_fake(x, tau, dim, groups, l1):
    _check_group("group_soft_threshold_", x, tau, dim, groups, l1, inplace=True)


@torch.library.register_fake("mtlkernels::group_prox_grad_step")
def _group_step_fake(x, grad, lr, tau, dim, groups, l1):
    _check_group("group_prox_grad_step", x, tau, dim, groups, l1, grad=grad, lr=lr)
    return x.new_empty(x.shape)


@torch.library.register_fake("mtlkernels::group_prox_grad_step_")
def _group_step_inplace_fake(x, grad, lr, tau, dim, groups, l1):
    _check_group("group_prox_grad_step_", x, tau, dim, groups, l1, grad=grad, lr=lr, inplace=True)


from . import shrinkage_autograd as _autograd  # noqa: E402,F401  (registers the derivatives and autocast)
