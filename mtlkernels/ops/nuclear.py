"""Nuclear-norm ops: singular value soft-thresholding, the batched nuclear norm and
the smoothed nuclear norm with its gradient.

Shen et al. 2015 (Adaptive Sharing): :func:`svt` is the closed-form prox of the
nuclear norm on C in the APG step (eq. 9, lambda_c-hat = eta_t lambda_c);
:func:`smoothed_nuclear_norm` is Omega_eps of eq. 11, the smooth penalty of the
deep layer, and :func:`smoothed_nuclear_norm_grad` its gradient (eqs. 12-13, with
the correction explained there). The latent-task methods use :func:`svt` as the
prox of their low-rank penalty.

Every op takes a matrix or a batch of matrices ``x`` of shape (..., m, n),
float32 or float64, on CPU or CUDA, and works on each matrix independently.

How they are computed (csrc/ops/nuclear.cpp): on CUDA, matrices with
min(m, n) <= 64 that fit in shared memory go to a fused one-sided Jacobi SVD, one
matrix per thread block, thresholding and reconstruction in the same kernel.
Otherwise the Gram route: G = x^T x (k x k, k = min(m, n)) by a batched GEMM in
full float32 (never TF32), a batched symmetric eigensolver (CPU: LAPACK spread over
the batch; CUDA: our Jacobi kernel), then one GEMM ``x V diag(f(s)) V^T``. The Gram
route squares the condition number, so each matrix's result is checked by an
a-posteriori rule: it is kept when the error estimated from its singular values is
within 16x that of an exact SVD in the output precision (for svt: always when every
singular value is far from tau, and in the worst case, every singular value near tau,
when tau >= s_max / 16 with the Gram matrix in the input's precision); otherwise the
matrix is redone with the Gram matrix in float64 (float32 input), then with LAPACK /
cuSOLVER's SVD. The rule is stated in full in csrc/ops/nuclear.cpp.
:func:`spectral_route` tells which route each matrix took.

A matrix holding NaN or inf gives NaN (the whole matrix for svt, the value for the
norms). Thresholds must be non-negative. ``lam`` and ``eps`` are applied in double
precision (a float32 x whose eps, 1 / eps or eps * lam leave float32's normal range is
computed in float64).

Autograd: :func:`svt` (a composite backward through ``torch.linalg.svd``, the
derivative of the singular value map), :func:`nuclear_norm` (the subgradient
U_r V_r^T over the nonzero singular values), :func:`smoothed_nuclear_norm`
(gradient from :func:`smoothed_nuclear_norm_grad`, itself differentiable). All with
respect to ``x``; thresholds are constants (one that requires grad is refused).
Under ``torch.autocast`` float16 / bfloat16 inputs are computed in float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _checks as C
from .shrinkage import _threshold

__all__ = [
    "svt",
    "nuclear_norm",
    "smoothed_nuclear_norm",
    "smoothed_nuclear_norm_grad",
    "spectral_route",
    "ROUTES",
]

_ops = torch.ops.mtlkernels

#: Route codes of :func:`spectral_route`.
ROUTES = {
    -1: "empty matrix",
    0: "fused small-matrix Jacobi SVD (CUDA)",
    1: "Gram route, Gram matrix in x's dtype",
    2: "Gram route, Gram matrix in float64",
    3: "exact SVD (LAPACK / cuSOLVER)",
}

_KINDS = {"svt": 0, "smoothed_nuclear_norm_grad": 1, "nuclear_norm": 2, "smoothed_nuclear_norm": 3}


# ---- argument checks (the wrappers and the fake kernels; csrc/ops/nuclear.cpp: the same) ----


def _check_spectral(op: str, x, tau=None, lam=None, eps=None, kind=None) -> None:
    C.floating(op, x, "x")
    if x.dim() < 2:
        C.fail(op, f"x must be a matrix or a batch of matrices of shape (..., m, n), got shape {list(x.shape)}")
    if kind is not None:
        kind = C.index(op, kind, "kind")
        if not 0 <= kind <= 3:
            C.fail(op, "kind must be 0 (svt), 1 (smoothed gradient), 2 (nuclear norm) or 3 (smoothed value), "
                       f"got {kind}")
    if tau is not None:
        C.real(op, tau, "tau")
        batch = x.shape[:-2]
        if tau.dim() == 0:
            if tau.device.type != "cpu" and tau.device != x.device:
                C.fail(op, f"tau is on {tau.device} but x is on {x.device}")
        else:
            C.scalar_device(op, tau, "tau", x)
            if not C.broadcasts_to(tau, batch):
                C.fail(op, f"tau of shape {list(tau.shape)} does not match the batch shape {list(batch)} of x "
                           f"(shape {list(x.shape)}); pass a number or one value per matrix (a tensor "
                           "broadcastable to the batch shape)")
    if lam is not None:
        C.nonneg(op, lam, "lam")
        eps = C.positive(op, eps, "eps")
        if not isinstance(eps, torch.SymFloat) and not math.isfinite(1.0 / eps):
            C.fail(op, f"eps = {eps} is too small (1 / eps overflows float64)")


# ---- public wrappers ----------------------------------------------------------


def svt(x: Tensor, tau: float | Tensor) -> Tensor:
    """Singular value soft-thresholding: U diag(max(s - tau, 0)) V^T for each matrix.

    The proximal operator of tau * ||X||_* (Shen et al. 2015 (Adaptive Sharing), the C-part of eq. 9 with
    tau = eta_t * lambda_c): argmin_Q 1/2 ||Q - X||_F^2 + tau ||Q||_*.

    Args:
        x: float32 or float64 tensor of shape (..., m, n), on CPU or CUDA.
        tau: a non-negative number, or a tensor with one threshold per matrix (shape
            broadcastable to the batch shape ``x.shape[:-2]``, on x's device, or a 0-dim
            CPU tensor).
    Returns:
        A new contiguous tensor of x's shape. ``tau = 0`` gives x (up to rounding),
        ``tau >= s_max`` zeros. Differentiable with respect to ``x``.
    """
    tau = _threshold("svt", "tau", tau)
    _check_spectral("svt", x, tau)
    return C.call(_ops.svt, x, tau, differentiable=(x,))


def nuclear_norm(x: Tensor) -> Tensor:
    """The nuclear norm ||X||_* (sum of singular values) of each matrix, shape ``x.shape[:-2]``.

    Computed from singular values only (Gram eigenvalues or Jacobi column norms), never
    forming U and V. Differentiable: the gradient is the subgradient U_r V_r^T over the
    singular values above max(m, n) * eps * s_max (the minimum-norm subgradient).
    """
    _check_spectral("nuclear_norm", x)
    return C.call(_ops.nuclear_norm, x, differentiable=(x,))


def smoothed_nuclear_norm(x: Tensor, lam: float, eps: float) -> Tensor:
    """Omega_eps(x) = min_Q 1/(2 eps) ||Q - x||_F^2 + lam ||Q||_* per matrix (Shen et al. 2015, eq. 11).

    The Moreau envelope of lam ||.||_* with parameter eps: a smooth surrogate of
    lam ||x||_* (it differs by at most eps lam^2 k / 2). Per singular value it is the Huber
    function h(s) = s^2 / (2 eps) for s <= eps lam and lam (s - eps lam / 2) above, so
    the value needs singular values only.

    Gradient (registered with autograd): (x - Q*) / eps with Q* = svt(x, eps lam), which
    is U diag(min(s, eps lam)) V^T / eps, of spectral norm at most lam. **The paper
    prints lam (C - Q*) (eq. 12)**: that is eps * lam times the gradient of eq. 11, equal
    to it only when eps * lam = 1. We implement the gradient of the envelope as defined
    in eq. 11; :func:`smoothed_nuclear_norm_grad` returns it, and the tests check it
    against finite differences (gradcheck in float64).

    Args:
        x: float32 or float64 tensor (..., m, n).
        lam: the penalty weight lambda_c >= 0.
        eps: the approximation factor epsilon > 0.
    Returns:
        Tensor of shape ``x.shape[:-2]``.
    """
    _check_spectral("smoothed_nuclear_norm", x, lam=lam, eps=eps)
    return C.call(_ops.smoothed_nuclear_norm, x, float(lam), float(eps), differentiable=(x,))


def smoothed_nuclear_norm_grad(x: Tensor, lam: float, eps: float) -> Tensor:
    """The gradient of :func:`smoothed_nuclear_norm`: (x - svt(x, eps lam)) / eps.

    Shen et al. 2015 (Adaptive Sharing), eq. 12, corrected (the paper prints lam (C - Q*); see
    :func:`smoothed_nuclear_norm`). Computed as U diag(min(s, eps lam)) V^T / eps in one
    pass (no cancellation in x - Q*). This is the term added to the data gradient in
    eq. 13. Differentiable with respect to ``x``.
    """
    _check_spectral("smoothed_nuclear_norm_grad", x, lam=lam, eps=eps)
    return C.call(_ops.smoothed_nuclear_norm_grad, x, float(lam), float(eps), differentiable=(x,))


def spectral_route(x: Tensor, op: str = "svt", tau: float | Tensor = 0.0) -> Tensor:
    """Which route each matrix of x takes for ``op`` (a diagnostic; see :data:`ROUTES`).

    Args:
        x: as for the ops.
        op: "svt", "nuclear_norm", "smoothed_nuclear_norm" or "smoothed_nuclear_norm_grad".
        tau: the threshold: tau for svt, eps * lam for the smoothed ops (unused for
            nuclear_norm).
    Returns:
        int64 tensor of shape ``x.shape[:-2]`` with the codes of :data:`ROUTES`.
    """
    if not isinstance(op, str) or op not in _KINDS:
        raise ValueError(f"spectral_route: op must be one of {sorted(_KINDS)}, got {op!r}")
    # A diagnostic, not differentiable: the route does not depend on x's graph.
    x = x.detach() if isinstance(x, Tensor) else x
    tau = _threshold("spectral_route", "tau", tau.detach() if isinstance(tau, Tensor) else tau)
    _check_spectral("_spectral_route", x, tau, kind=_KINDS[op])
    return _ops._spectral_route(x, tau, _KINDS[op])


# ---- fake kernels (shape inference for torch.compile / FakeTensor) ------------


@torch.library.register_fake("mtlkernels::svt")
def _svt_fake(x, tau):
    _check_spectral("svt", x, tau)
    return x.new_empty(x.shape)


@torch.library.register_fake("mtlkernels::smoothed_nuclear_norm_grad")
def _grad_fake(x, lam, eps):
    _check_spectral("smoothed_nuclear_norm_grad", x, lam=lam, eps=eps)
    return x.new_empty(x.shape)


@torch.library.register_fake("mtlkernels::nuclear_norm")
def _nuclear_fake(x):
    _check_spectral("nuclear_norm", x)
    return x.new_empty(x.shape[:-2])


@torch.library.register_fake("mtlkernels::smoothed_nuclear_norm")
def _smoothed_fake(x, lam, eps):
    _check_spectral("smoothed_nuclear_norm", x, lam=lam, eps=eps)
    return x.new_empty(x.shape[:-2])


@torch.library.register_fake("mtlkernels::_spectral_route")
def _route_fake(x, tau, kind):
    _check_spectral("_spectral_route", x, tau, kind=kind)
    return x.new_empty(x.shape[:-2], dtype=torch.int64)


# ---- autograd -------------------------------------------------------------------


def _svt_vjp(x: Tensor, t: Tensor, gy: Tensor) -> Tensor:
    """Vector-Jacobian product of X -> U g(S) V^T, g(s) = max(s - t, 0), t of shape (..., 1).

    With P = U^T G V (G = gy) the derivative of a singular value function is
        U [ D1 o sym(P) + D2 o skew(P) ] V^T + (I - U U^T) G V diag(g(s) / s) V^T,
    D1_ij = (g_i - g_j) / (s_i - s_j) (g'(s_i) on the diagonal and for ties),
    D2_ij = (g_i + g_j) / (s_i + s_j); the map is self-adjoint (svt is the gradient of a
    convex function), so this is also its VJP. Wide matrices are handled transposed.
    """
    wide = x.shape[-2] < x.shape[-1]
    if wide:
        x, gy = x.mT, gy.mT
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    v = vh.mT
    tiny = torch.finfo(x.dtype).eps * x.shape[-1] * s.amax(-1, keepdim=True).unsqueeze(-1)
    g = torch.clamp(s - t, min=0)
    gp = (s > t).to(x.dtype)
    si, sj = s.unsqueeze(-1), s.unsqueeze(-2)
    gi, gj = g.unsqueeze(-1), g.unsqueeze(-2)
    diff, tot = si - sj, si + sj
    one = torch.ones((), dtype=x.dtype, device=x.device)
    d1 = torch.where(diff.abs() > tiny, (gi - gj) / torch.where(diff.abs() > tiny, diff, one),
                     (gp.unsqueeze(-1) + gp.unsqueeze(-2)) / 2)
    # (g_i + g_j) / (s_i + s_j) -> 1 when t = 0 (g = s), 0 otherwise, as s_i, s_j -> 0.
    t2 = t.unsqueeze(-1)
    d2 = torch.where(tot > tiny, (gi + gj) / torch.where(tot > tiny, tot, one), (t2 == 0).to(x.dtype))
    p = u.mT @ gy @ v
    core = d1 * (p + p.mT) / 2 + d2 * (p - p.mT) / 2
    gx = u @ core @ vh
    if x.shape[-2] > x.shape[-1]:
        gv = gy @ v
        ratio = torch.where(s > tiny.squeeze(-1), g / torch.where(s > tiny.squeeze(-1), s, one), (t == 0).to(x.dtype))
        gx = gx + ((gv - u @ (u.mT @ gv)) * ratio.unsqueeze(-2)) @ vh
    return gx.mT if wide else gx


def _per_matrix_t(tau: Tensor, x: Tensor) -> Tensor:
    """tau (0-dim or broadcastable to the batch shape) as (..., 1) on x's device and dtype."""
    t = tau.to(device=x.device, dtype=x.dtype)
    return t.expand(x.shape[:-2]).unsqueeze(-1)


def _svt_setup(ctx, inputs, output):
    C.no_derivative("svt", inputs, {1: "tau"})
    x, tau = inputs
    ctx.save_for_backward(x, tau)


def _svt_backward(ctx, gy):
    x, tau = ctx.saved_tensors
    return _svt_vjp(x, _per_matrix_t(tau, x), gy), None


def _nuclear_setup(ctx, inputs, output):
    (x,) = inputs
    ctx.save_for_backward(x)


def _nuclear_backward(ctx, gy):
    (x,) = ctx.saved_tensors
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    cut = torch.finfo(x.dtype).eps * max(x.shape[-2:]) * s.amax(-1, keepdim=True)
    keep = (s > cut).to(x.dtype)
    return gy.unsqueeze(-1).unsqueeze(-1) * ((u * keep.unsqueeze(-2)) @ vh)


def _smoothed_setup(ctx, inputs, output):
    x, lam, eps = inputs
    ctx.save_for_backward(x)
    ctx.lam, ctx.eps = lam, eps


def _smoothed_backward(ctx, gy):
    (x,) = ctx.saved_tensors
    grad = smoothed_nuclear_norm_grad(x, ctx.lam, ctx.eps)
    return gy.unsqueeze(-1).unsqueeze(-1) * grad, None, None


def _smoothed_grad_backward(ctx, gy):
    # d/dx (x - svt(x, t)) / eps = (I - J_svt) / eps, J_svt self-adjoint.
    (x,) = ctx.saved_tensors
    t = torch.full(x.shape[:-2] + (1,), ctx.eps * ctx.lam, dtype=x.dtype, device=x.device)
    return (gy - _svt_vjp(x, t, gy)) / ctx.eps, None, None


torch.library.register_autograd("mtlkernels::svt", _svt_backward, setup_context=_svt_setup)
torch.library.register_autograd("mtlkernels::nuclear_norm", _nuclear_backward, setup_context=_nuclear_setup)
torch.library.register_autograd(
    "mtlkernels::smoothed_nuclear_norm", _smoothed_backward, setup_context=_smoothed_setup
)
torch.library.register_autograd(
    "mtlkernels::smoothed_nuclear_norm_grad", _smoothed_grad_backward, setup_context=_smoothed_setup
)

C.register_autocast(["svt", "nuclear_norm", "smoothed_nuclear_norm", "smoothed_nuclear_norm_grad", "_spectral_route"])
