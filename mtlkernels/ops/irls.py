"""Joint-IRLS ops: robust pairwise consistency between n networks of one architecture.

Zhang et al. 2019 (joint IRLS; "Joint Learning of Neural Networks via Iterative
Reweighted Least Squares"): n networks theta_1..theta_n share an
architecture of L layers; the consistency term f_cons (eq. 3) applies the robust
norm rho(x, sigma) = sigma^2 x^2 / (sigma^2 + x^2) to the distance between the
concatenated adjacent layers (theta_i^l, theta_i^{l+1}) and (theta_j^l, theta_j^{l+1}).
IRLS (sec. 4.2.2) replaces rho by weighted squares with w = sigma^2 / (sigma^2 + d^2)
(eq. 7, the weighted problem eq. 8), and block coordinate descent (sec. 4.2.3)
pulls each network towards the weighted mean of the others (eq. 9).

Layout. The n networks are the rows of an (n, P) matrix ``params`` (row i: network
i's parameters flattened, e.g. ``torch.nn.utils.parameters_to_vector``; stack the
rows with ``torch.stack`` to keep autograd), and ``offsets`` (L + 1 increasing ints
from 0 to P, see :func:`layer_offsets`) cuts the columns into L non-empty layers.

Layer pairs: how eqs. 3 and 4 are read. Eq. 3 sums the pairs (l, l + 1) for
l = 1..L-1, eq. 4 (and eqs. 5, 8) sums L terms l = 0..L-1, and sec. 4.2.1 sets one
sigma^l for each 1 <= l <= L (the stop rule of sec. 4.2.2 also runs over L weights
per network pair). We read the L terms with eq. 3's pairing rule: in 0-based layer
numbers, **layer pair l joins layers l and l + 1 for l < L - 1, and the last pair,
l = L - 1, is the last layer alone** (its partner theta^{L} does not exist). So
pair l has squared distance d_l^2 = D_l + D_{l+1} (D_{L-1} for the last), with
D_l = ||theta_i^l - theta_j^l||^2, sigma has L values (one per pair), and with one
layer (L = 1) f_cons is the plain robust fusion penalty of eq. 2. Eq. 3 exactly
(L - 1 pairs, no term for the last layer alone) is sigma[-1] = 0: sigma = 0 switches
a pair off (w = 0, rho = 0). sigma = inf gives the L2 terms of eqs. 5-6 (w = 1,
rho = d^2). Eq. 4 and eq. 8 sum over ordered pairs (i, j), twice the i < j sum of
eq. 3; these ops use the i < j sum and leave the factor to lambda.

Accuracy. Distances use the difference form sum_c (x_i[c] - x_j[c])^2, never
||x_i||^2 + ||x_j||^2 - 2 x_i.x_j, which cancels catastrophically when networks are
close (what torch.cdist does for more than 25 rows); gradients and consensus targets
are also formed from differences x_j - x_i.

Autograd. ``pairwise_sq_dists``, ``robust_consistency`` and ``irls_weights`` are
differentiable (once) with respect to params / sq_dists; ``pairwise_mix`` and
``irls_consensus`` are linear in params and differentiable any number of times.
sigma, weights and coeffs are constants (passing them with requires_grad raises, also
through ``torch.ops.mtlkernels``). Under ``torch.autocast`` float16 / bfloat16 inputs are
computed in float32. Every argument is checked before the op runs (metadata here, the
values in C++); offsets must be ints (floats and bools are refused, not truncated).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import Tensor

from . import _checks as C

__all__ = [
    "layer_offsets",
    "pairwise_sq_dists",
    "layer_pair_sq_dists",
    "layer_weights",
    "irls_weights",
    "sigma_init",
    "robust_consistency",
    "irls_consensus",
    "pairwise_mix",
]

_ops = torch.ops.mtlkernels


# ---- helpers --------------------------------------------------------------------


def layer_offsets(sizes: Iterable[int]) -> list[int]:
    """Layer boundaries [0, s_0, s_0 + s_1, ..., P] from the layers' parameter counts.

    Example: ``layer_offsets(sum(p.numel() for p in layer.parameters()) for layer in
    net.children())`` for a network whose parameters are flattened layer by layer.
    """
    out = [0]
    for i, s in enumerate(sizes):
        s = C.index("layer_offsets", s, f"sizes[{i}]")
        if s <= 0:
            raise ValueError(f"layer_offsets: every layer needs at least one parameter, got a size of {s}")
        out.append(out[-1] + s)
    if len(out) < 2:
        raise ValueError("layer_offsets: at least one layer is needed")
    return out


def _constant(op: str, name: str, t: Tensor | None) -> Tensor | None:
    return C.constant(op, t, name)


def _sigma(op: str, sigma: float | Tensor) -> Tensor:
    """sigma as the kernels take it (a number becomes a 0-dim CPU float64 tensor)."""
    if isinstance(sigma, Tensor):
        return _constant(op, "sigma", sigma)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"{op}: sigma must be a number or a tensor, got {type(sigma).__name__}")
    if math.isnan(sigma) or sigma < 0:
        raise ValueError(f"{op}: sigma must be non-negative, got {sigma}")
    return torch.tensor(float(sigma), dtype=torch.float64)


# ---- argument checks (the wrappers and the fake kernels; csrc/ops/irls.cpp: the same) ----


def _check_stack(op: str, t, name: str) -> None:
    C.real(op, t, name)
    if t.dim() != 3 or t.shape[1] != t.shape[2]:
        C.fail(op, f"{name} must be an (L, n, n) stack of per-layer matrices, got shape {list(t.shape)}")


#: The CUDA distance kernel's limit (csrc/ops/cuda/irls_kernel.cu): (s + 1) s / 2 <= 65535
#: super-tile pairs of 64 networks, s = ceil(n / 64), i.e. n <= 23104.
_CUDA_MAX_SUPER_PAIRS = 65535


def _check_params(op: str, params, offsets, convert: bool = False, distances: bool = False):
    """params (n, P) and its layer boundaries; returns the offsets as a list of ints.
    ``distances``: the op runs the distance kernel (its CUDA limit on n is checked too)."""
    C.floating(op, params, "params")
    if params.dim() != 2:
        C.fail(op, f"params must be a 2-D (networks, parameters) matrix, one row per network, got shape "
                   f"{list(params.shape)}")
    if distances and params.device.type == "cuda":
        s = (params.shape[0] + 63) // 64
        if s * (s + 1) // 2 > _CUDA_MAX_SUPER_PAIRS:
            C.fail("pairwise_sq_dists", f"the CUDA kernel supports at most {_CUDA_MAX_SUPER_PAIRS} super-tile pairs "
                                        f"(about 23000 networks), got n = {params.shape[0]}")
    if convert:
        return C.offsets(op, offsets, params.shape[1])
    C.layout(op, offsets, params.shape[1])
    return offsets


def _check_lnn(op: str, t, name: str, params: Tensor, L) -> None:
    C.floating(op, t, name)
    C.same_device(op, params, "params", t, name)
    n = params.shape[0]
    if t.dim() != 3 or tuple(t.shape) != (L, n, n):
        C.fail(op, f"{name} must have shape (L, n, n) = ({L}, {n}, {n}) (layers, networks, networks), "
                   f"got shape {list(t.shape)}")


def _check_sigma(op: str, sigma, L, device) -> None:
    C.real(op, sigma, "sigma")
    if not ((sigma.dim() == 0 and sigma.device.type == "cpu") or sigma.device == device):
        C.fail(op, f"sigma is on {sigma.device} but the distances are on {device} "
                   "(only a 0-dim CPU scalar may stay on the CPU)")
    if not (sigma.numel() == 1 or (sigma.dim() == 1 and sigma.shape[0] == L)):
        C.fail(op, f"sigma must be a scalar or hold one value per layer pair (shape ({L},)), "
                   f"got shape {list(sigma.shape)}")


def _check_sq_dists(op: str, sq_dists, sigma) -> None:
    C.floating(op, sq_dists, "sq_dists")
    if sq_dists.dim() != 3 or sq_dists.shape[1] != sq_dists.shape[2]:
        C.fail(op, "sq_dists must be an (L, n, n) stack of per-layer squared distance matrices, "
                   f"got shape {list(sq_dists.shape)}")
    _check_sigma(op, sigma, sq_dists.shape[0], sq_dists.device)


def _check_consistency(op: str, params, offsets, sigma, weights, convert: bool = False):
    offs = _check_params(op, params, offsets, convert, distances=True)
    if (sigma is None) == (weights is None):
        C.fail(op, "pass exactly one of sigma (the robust loss of eq. 3) or weights (the weighted least "
                   f"squares of eq. 8), got {'neither' if sigma is None else 'both'}")
    L = len(offs) - 1
    if sigma is not None:
        _check_sigma(op, sigma, L, params.device)
    else:
        _check_lnn(op, weights, "weights", params, L)
    return offs


# ---- public wrappers ----------------------------------------------------------------


def pairwise_sq_dists(params: Tensor, offsets: Sequence[int] | Tensor, fp64_accumulate: bool = False) -> Tensor:
    """Per-layer pairwise squared distances D[l, i, j] = ||theta_i^l - theta_j^l||^2 (Zhang et al. 2019, eq. 3).

    The primitive of the consistency term: the squared distance of a pair of
    concatenated adjacent layers (eq. 3) is the sum of the two layers' D (see
    :func:`layer_pair_sq_dists`).

    Args:
        params: (n, P) float32/float64 matrix, one network per row, on CPU or CUDA. Any
            row stride is read in place; other layouts are copied first.
        offsets: L + 1 increasing ints, 0 = o_0 < ... < o_L = P; layer l is columns
            [o_l, o_{l+1}). Empty layers are rejected.
        fp64_accumulate: float32 input only: accumulate entirely in float64. By default
            float32 sums run in float32 over blocks of a few hundred columns and in
            float64 across blocks (relative error a few float32 ulps, never the
            cancellation of the Gram formula); float64 input always accumulates in float64.
    Returns:
        (L, n, n) symmetric, zero diagonal, dtype of params. One read of params.
        Differentiable with respect to params (once).
    """
    offs = _check_params("pairwise_sq_dists", params, offsets, convert=True, distances=True)
    return C.call(_ops.pairwise_sq_dists, params, offs, bool(fp64_accumulate), differentiable=(params,))


def layer_pair_sq_dists(sq_dists: Tensor) -> Tensor:
    """Squared distances of the layer pairs of eq. 3 from per-layer ones.

    d2[l] = D[l] + D[l + 1] for l < L - 1 and d2[L - 1] = D[L - 1] (the last layer
    alone; see the module docstring). Input and output (L, n, n).
    """
    _check_stack("layer_pair_sq_dists", sq_dists, "sq_dists")
    d2 = sq_dists.clone()
    if sq_dists.shape[0] > 1:
        d2[:-1] += sq_dists[1:]
    return d2


def layer_weights(pair_weights: Tensor) -> Tensor:
    """Per-layer coefficients c_ijl of eq. 6 from per-layer-pair weights (eq. 8 expanded).

    Layer l belongs to pair l and, for l >= 1, to pair l - 1, so
    c[l] = w[l] + w[l - 1] (c[0] = w[0]): sum_l w_l d2_l = sum_l c_l D_l. This is the
    adjoint of :func:`layer_pair_sq_dists`; the result feeds :func:`irls_consensus`.
    """
    _check_stack("layer_weights", pair_weights, "pair_weights")
    c = pair_weights.clone()
    if pair_weights.shape[0] > 1:
        c[1:] += pair_weights[:-1]
    return c


def irls_weights(sq_dists: Tensor, sigma: float | Tensor) -> tuple[Tensor, Tensor]:
    """IRLS weights (eq. 7) and robust values (eq. 3) of every layer pair and network pair.

    With d2 the layer pair's squared distance (formed here from the per-layer
    ``sq_dists``, see :func:`layer_pair_sq_dists`):
    ``w = sigma^2 / (sigma^2 + d2)`` and ``rho = sigma^2 d2 / (sigma^2 + d2) = w d2``.
    Conventions: w = 1 where d2 = 0 (and on the diagonal); sigma = 0 switches the pair
    off (w = rho = 0); sigma = inf gives w = 1, rho = d2. Evaluated in float64 without
    overflow or 0/0 (rho tends to sigma^2 as d2 grows).

    Args:
        sq_dists: (L, n, n) non-negative per-layer squared distances (from
            :func:`pairwise_sq_dists`).
        sigma: a non-negative number, or a tensor holding one value or one value per layer
            pair (shape (L,)), e.g. from :func:`sigma_init`.
    Returns:
        (w, rho), each (L, n, n) in sq_dists' dtype. Differentiable with respect to
        sq_dists (sigma is a constant).
    """
    sigma = _sigma("irls_weights", sigma)
    _check_sq_dists("irls_weights", sq_dists, sigma)
    return C.call(_ops.irls_weights, sq_dists, sigma, differentiable=(sq_dists,))


def sigma_init(sq_dists: Tensor) -> Tensor:
    """The layer-pair scales of sec. 4.2.1: sigma^l = mean_i min_{j != i} d_l(i, j).

    d_l(i, j) is the distance of layer pair l (concatenated adjacent layers, see
    :func:`layer_pair_sq_dists`) between networks i and j, taken at the L2-initialised
    parameters of eqs. 5-6. Returns an (L,) tensor (no grad) in sq_dists' dtype (float32 or float64); a pair
    in which every network has an identical twin gets sigma = 0, which switches it off
    in :func:`irls_weights`. Needs at least two networks.
    """
    op = "sigma_init"
    C.floating(op, sq_dists, "sq_dists")
    if sq_dists.dim() != 3 or sq_dists.shape[1] != sq_dists.shape[2]:
        raise ValueError(f"{op}: sq_dists must be (L, n, n), got shape {tuple(sq_dists.shape)}")
    n = sq_dists.shape[1]
    if n < 2:
        raise ValueError(f"{op}: needs at least 2 networks (min over j != i), got n = {n}")
    with torch.no_grad():
        if sq_dists.numel() and not bool((sq_dists >= 0).all()):  # one read (an initialisation)
            raise ValueError(f"{op}: sq_dists must be non-negative squared distances (no negative or NaN value)")
        d = layer_pair_sq_dists(sq_dists.to(torch.float64)).clamp_min(0).sqrt()
        eye = torch.eye(n, dtype=torch.bool, device=d.device)
        nearest = d.masked_fill(eye, math.inf).amin(dim=2)  # (L, n): min over j != i
        return nearest.mean(dim=1).to(sq_dists.dtype)


def robust_consistency(
    params: Tensor,
    offsets: Sequence[int] | Tensor,
    sigma: float | Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """The consistency loss f_cons of Zhang et al. 2019, eq. 3, or its IRLS form (eq. 8).

    Without weights: ``sum_l sum_{i<j} rho(d_l(i, j), sigma_l)`` with d_l the distance of
    layer pair l (layers l and l + 1 concatenated; the last layer alone for
    l = L - 1, see the module docstring) and rho(x, sigma) = sigma^2 x^2 / (sigma^2 + x^2).

    With weights (L, n, n) per layer pair, e.g. ``irls_weights(...)[0]`` of the previous
    iterate: ``1/2 sum_l sum_{i != j} w_lij d_l(i, j)^2`` (the weighted least squares of
    eq. 8, = sum_{i<j} for symmetric weights); sigma is then not used. Multiply by
    lambda (eq. 4; the paper uses 10) yourself.

    Differentiable with respect to params, so all networks can be trained together;
    to train one network at a time (sec. 4.2.3), stack a row that requires grad with
    detached rows of the others, or use :func:`irls_consensus`. The backward is one
    more pass over params (:func:`pairwise_mix`); double backward is not supported.

    Args:
        params, offsets: as in :func:`pairwise_sq_dists`.
        sigma: number or tensor (one value, or one per layer pair), non-negative.
        weights: non-negative finite (L, n, n) tensor, a constant.
    Returns:
        A 0-dim tensor of params' dtype (accumulated in float64).
    """
    op = "robust_consistency"
    if weights is not None:
        sigma = None
        weights = _constant(op, "weights", weights)
    elif sigma is None:
        raise ValueError(f"{op}: pass sigma (eq. 3) or weights (eq. 8)")
    else:
        sigma = _sigma(op, sigma)
    offs = _check_consistency(op, params, offsets, sigma, weights, convert=True)
    loss, _ = C.call(_ops.robust_consistency, params, offs, sigma, weights, differentiable=(params,))
    return loss


def irls_consensus(weights: Tensor, params: Tensor, offsets: Sequence[int] | Tensor) -> Tensor:
    """Block-coordinate targets of Zhang et al. 2019, eq. 9, for every network at once.

    ``target[i, layer l] = sum_{j != i} c_ijl theta_j^l / sum_{j != i} c_ijl``: when
    network i is trained with the others fixed, eq. 6 reduces (eq. 9) to
    ``f_i(theta) + lambda sum_l (sum_{j != i} c_ijl) ||theta^l - target_i^l||^2``.
    j = i is excluded as in eq. 9 (the diagonal of ``weights`` is ignored); a network
    whose weights to all others are zero in a layer keeps its own parameters there.
    Computed as theta_i + sum_j chat_ij (theta_j - theta_i), accurate when networks
    are close.

    Args:
        weights: (L, n, n) non-negative finite per-layer c_ijl (eq. 6); from per-pair IRLS
            weights use :func:`layer_weights`.
        params, offsets: as in :func:`pairwise_sq_dists`.
    Returns:
        (n, P) contiguous, params' dtype. Linear in params (differentiable); weights is a
        constant.
    """
    op = "irls_consensus"
    weights = _constant(op, "weights", weights)
    offs = _check_params(op, params, offsets, convert=True)
    _check_lnn(op, weights, "weights", params, len(offs) - 1)
    return C.call(_ops.irls_consensus, weights, params, offs, False, differentiable=(params,))


def pairwise_mix(
    params: Tensor, offsets: Sequence[int] | Tensor, coeffs: Tensor, transpose: bool = False
) -> Tensor:
    """Per-layer mixing of networks in difference form (the building block of the IRLS gradients).

    ``out[i, layer l] = coeffs[l, i, i] * theta_i^l + sum_{j != i} coeffs[l, i, j] (theta_j^l - theta_i^l)``.

    E.g. the gradient of the weighted penalty sum_{i<j} c_ijl ||theta_i^l - theta_j^l||^2
    of eq. 6 is pairwise_mix(params, offsets, -2 c) with a zero diagonal.
    ``transpose=True`` applies the adjoint (transposed) linear map.

    Args:
        params, offsets: as in :func:`pairwise_sq_dists`.
        coeffs: (L, n, n) real tensor on params' device, a constant.
    Returns:
        (n, P) contiguous, params' dtype. Linear in params (differentiable).
    """
    op = "pairwise_mix"
    coeffs = _constant(op, "coeffs", coeffs)
    offs = _check_params(op, params, offsets, convert=True)
    _check_lnn(op, coeffs, "coeffs", params, len(offs) - 1)
    return C.call(_ops.pairwise_mix, params, offs, coeffs, bool(transpose), differentiable=(params,))


# ---- fake kernels (shape inference for torch.compile / FakeTensor) -----------------


@torch.library.register_fake("mtlkernels::pairwise_sq_dists")
def _pairwise_sq_dists_fake(params, offsets, fp64_accumulate=False):
    _check_params("pairwise_sq_dists", params, offsets, distances=True)
    n = params.shape[0]
    return params.new_empty((len(offsets) - 1, n, n))


@torch.library.register_fake("mtlkernels::pairwise_mix")
def _pairwise_mix_fake(params, offsets, coeffs, transpose=False):
    _check_params("pairwise_mix", params, offsets)
    _check_lnn("pairwise_mix", coeffs, "coeffs", params, len(offsets) - 1)
    return params.new_empty(params.shape)


@torch.library.register_fake("mtlkernels::irls_weights")
def _irls_weights_fake(sq_dists, sigma):
    _check_sq_dists("irls_weights", sq_dists, sigma)
    return sq_dists.new_empty(sq_dists.shape), sq_dists.new_empty(sq_dists.shape)


@torch.library.register_fake("mtlkernels::robust_consistency")
def _robust_consistency_fake(params, offsets, sigma, weights):
    _check_consistency("robust_consistency", params, offsets, sigma, weights)
    n = params.shape[0]
    return params.new_empty(()), params.new_empty((len(offsets) - 1, n, n))


@torch.library.register_fake("mtlkernels::irls_consensus")
def _irls_consensus_fake(weights, params, offsets, transpose=False):
    _check_params("irls_consensus", params, offsets)
    _check_lnn("irls_consensus", weights, "weights", params, len(offsets) - 1)
    return params.new_empty(params.shape)


from . import irls_autograd as _autograd  # noqa: E402,F401  (registers the derivatives and autocast)
