"""Nuclear-norm family: svt, nuclear_norm, smoothed_nuclear_norm (+ its gradient).

Tolerances: relative Frobenius error against the float64 SVD reference computed on the
same input values, TOL[float32] = 1e-5 (about 80 float32 ulps) and TOL[float64] = 1e-12,
from mtlkernels.testing. Where the exact answer is 0 (tau >= s_max, zero matrices) the
test asserts exact zeros.
"""

import math

import numpy as np
import pytest
import torch

from mtlkernels import ops
from mtlkernels import reference as ref
from mtlkernels.testing import (
    TOL, cuda_only, devices, multi_gpu, non_contiguous, on_other_device, on_side_stream, randn, rel_err,
)

DTYPES = [torch.float32, torch.float64]
T = torch.ops.mtlkernels
GRAM, GRAM64, EXACT, SMALL = 1, 2, 3, 0

SHAPES = [(7, 4), (4, 7), (6, 6), (1, 5, 3), (2, 3, 5, 4), (3, 1, 6), (3, 6, 1), (2, 9, 9), (3, 13, 2)]


def median_sv(x):
    return float(torch.linalg.svdvals(x.double()).median())


def with_spectrum(b, m, n, svals, seed, dtype=torch.float64, device="cpu"):
    """b random matrices (m, n) with the given singular values (length min(m, n))."""
    k = min(m, n)
    u, _ = torch.linalg.qr(randn(b, m, k, seed=seed))
    v, _ = torch.linalg.qr(randn(b, n, k, seed=seed + 1))
    s = torch.as_tensor(svals, dtype=torch.float64)
    return ((u * s.unsqueeze(-2)) @ v.mT).to(dtype=dtype, device=device)


def geometric(k, cond):
    return torch.logspace(0, -math.log10(cond), k, dtype=torch.float64)


def check(out, expected, dtype, tol=None, scale=None):
    """Relative error against `expected`, or against `scale` (a norm) when given."""
    assert out.shape == expected.shape and out.dtype == dtype
    assert out.is_contiguous()
    if scale is None:
        err = rel_err(out, expected)
    else:
        err = float((out.double() - expected.double()).norm() / scale)
    assert err <= (tol or TOL[dtype]), err


# ---- values against the reference -----------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_ops_match_reference(device, dtype, shape):
    x = randn(*shape, seed=1, dtype=dtype, device=device)
    xd = x.double()
    tau = median_sv(x)
    for xin in (x, non_contiguous(x)):
        check(ops.svt(xin, tau), ref.svt(xd, tau).to(dtype), dtype)
        check(ops.svt(xin, 0.3 * tau), ref.svt(xd, 0.3 * tau).to(dtype), dtype)
        check(ops.nuclear_norm(xin), ref.nuclear_norm(xd).to(dtype), dtype)
        for lam, eps in [(1.0, 0.5 * tau), (0.7, 0.1), (2.0, 5.0)]:
            check(ops.smoothed_nuclear_norm(xin, lam, eps), ref.smoothed_nuclear_norm(xd, lam, eps).to(dtype), dtype)
            check(ops.smoothed_nuclear_norm_grad(xin, lam, eps),
                  ref.smoothed_nuclear_norm_grad(xd, lam, eps).to(dtype), dtype)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
def test_transposed_view_and_batch_of_thousands(device, dtype):
    x = randn(3000, 5, 4, seed=2, dtype=dtype, device=device)
    tau = median_sv(x)
    check(ops.svt(x, tau), ref.svt(x.double(), tau).to(dtype), dtype)
    check(ops.nuclear_norm(x), ref.nuclear_norm(x.double()).to(dtype), dtype)
    xt = x.mT  # a non-contiguous (wide) view
    check(ops.svt(xt, tau), ref.svt(xt.double(), tau).to(dtype), dtype)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
def test_rank_deficient(device, dtype):
    a = randn(4, 9, 2, seed=3) @ randn(4, 2, 7, seed=4)  # rank 2, 9 x 7
    x = a.to(dtype=dtype, device=device)
    xd = x.double()
    s = torch.linalg.svdvals(xd)
    for tau in (0.5 * float(s[:, 1].min()), 1e-3 * float(s.max()), 1e-7):
        check(ops.svt(x, tau), ref.svt(xd, tau).to(dtype), dtype)
    check(ops.nuclear_norm(x), ref.nuclear_norm(xd).to(dtype), dtype)
    check(ops.smoothed_nuclear_norm(x, 1.0, 1e-3), ref.smoothed_nuclear_norm(xd, 1.0, 1e-3).to(dtype), dtype)
    # The gradient U diag(min(s, t)) V^T / eps is small here (t = 1e-3 << s_max) while any
    # route, the SVD reference included, errs by about eps_dtype * s_max / eps on the null
    # space: measure the error against ||x|| / eps.
    check(ops.smoothed_nuclear_norm_grad(x, 1.0, 1e-3), ref.smoothed_nuclear_norm_grad(xd, 1.0, 1e-3).to(dtype),
          dtype, scale=float(xd.norm()) / 1e-3)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_thresholds_and_zeros(device, dtype):
    x = randn(5, 8, 6, seed=5, dtype=dtype, device=device)
    # tau = 0: the identity up to rounding
    check(ops.svt(x, 0.0), x, dtype)
    # tau >= s_max: exactly zero
    smax = float(torch.linalg.svdvals(x.double()).max())
    assert torch.all(ops.svt(x, 1.01 * smax) == 0)
    assert torch.all(ops.svt(x, torch.tensor(math.inf, dtype=torch.float64)) == 0)
    # all-zero matrices
    z = torch.zeros(3, 4, 7, dtype=dtype, device=device)
    assert torch.all(ops.svt(z, 0.5) == 0) and torch.all(ops.svt(z, 0.0) == 0)
    assert torch.all(ops.nuclear_norm(z) == 0)
    assert torch.all(ops.smoothed_nuclear_norm(z, 1.0, 0.1) == 0)
    assert torch.all(ops.smoothed_nuclear_norm_grad(z, 1.0, 0.1) == 0)
    # lam = 0: the envelope and its gradient vanish
    assert torch.all(ops.smoothed_nuclear_norm(x, 0.0, 0.1) == 0)
    assert torch.all(ops.smoothed_nuclear_norm_grad(x, 0.0, 0.1) == 0)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
def test_per_matrix_tau(device, dtype):
    x = randn(2, 3, 6, 5, seed=6, dtype=dtype, device=device)
    s = torch.linalg.svdvals(x.double())
    tau = s.median(-1).values.to(device)  # (2, 3), one per matrix
    check(ops.svt(x, tau), ref.svt(x.double(), tau).to(dtype), dtype)
    tau_b = tau[:, :1]  # (2, 1) broadcast over the second batch dim
    check(ops.svt(x, tau_b), ref.svt(x.double(), tau_b.expand(2, 3)).to(dtype), dtype)
    tau_f = torch.tensor([0.0, 1.0, 100.0], dtype=dtype, device=device)  # broadcast over the first
    out = ops.svt(x, tau_f)
    check(out, ref.svt(x.double(), tau_f.double().expand(2, 3)).to(dtype), dtype)
    check(out[:, 0].contiguous(), x[:, 0], dtype)
    assert torch.all(out[:, 2] == 0)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty(device, dtype):
    for shape in [(0, 3, 4), (2, 0, 3), (2, 3, 0), (0, 0), (3, 0, 0)]:
        x = torch.zeros(shape, dtype=dtype, device=device)
        y = ops.svt(x, 0.5)
        assert y.shape == x.shape
        nn = ops.nuclear_norm(x)
        assert nn.shape == x.shape[:-2] and torch.all(nn == 0)
        assert ops.smoothed_nuclear_norm(x, 1.0, 0.1).shape == x.shape[:-2]
        assert ops.smoothed_nuclear_norm_grad(x, 1.0, 0.1).shape == x.shape
        assert ops.spectral_route(x).shape == x.shape[:-2]


@pytest.mark.parametrize("device", devices())
def test_nan_matrix_gives_nan_others_unaffected(device):
    x = randn(4, 6, 5, seed=7, device=device)
    x[1, 2, 3] = float("nan")
    x[3, 0, 0] = float("inf")
    tau = median_sv(x[0])
    out = ops.svt(x, tau)
    assert torch.isnan(out[1]).all() and torch.isnan(out[3]).all()
    check(out[0], ref.svt(x[0], tau), torch.float64)
    check(out[2], ref.svt(x[2], tau), torch.float64)
    nn = ops.nuclear_norm(x)
    assert torch.isnan(nn[1]) and torch.isnan(nn[3]) and torch.isfinite(nn[[0, 2]]).all()
    assert ops.spectral_route(x, "svt", tau)[[1, 3]].tolist() in ([EXACT, EXACT], [SMALL, SMALL])


def test_huge_and_tiny_matrices_do_not_overflow():
    x = randn(3, 6, 4, seed=8, dtype=torch.float32)
    for scale in (1e25, 1e-25):  # x^T x overflows / underflows in float32
        xs = x * scale
        tau = median_sv(xs)
        check(ops.svt(xs, tau), ref.svt(xs.double(), tau).float(), torch.float32)
        check(ops.nuclear_norm(xs), ref.nuclear_norm(xs.double()).float(), torch.float32)
        assert (ops.spectral_route(xs, "svt", tau) == GRAM64).all()


# ---- the accuracy rule of the Gram route (see csrc/ops/nuclear.cpp) ------------------------


def gram_composite(x, tau):
    """The plain Gram + eigh composite in x's precision, without any rule."""
    w, v = torch.linalg.eigh(x.mT @ x)
    s = w.clamp(min=0).sqrt()
    f = torch.where(s > tau, 1 - tau / s, torch.zeros_like(s))
    return x @ ((v * f.unsqueeze(-2)) @ v.mT)


def test_rule_accepts_gram_when_tau_is_well_above_the_floor():
    # well conditioned, tau at the median: the Gram route in float32 is kept and accurate
    x = randn(6, 300, 40, seed=9, dtype=torch.float32)
    tau = median_sv(x)
    assert (ops.spectral_route(x, "svt", tau) == GRAM).all()
    check(ops.svt(x, tau), ref.svt(x.double(), tau).float(), torch.float32)
    # every singular value far above a small tau: also kept (the error scales with tau / s)
    y = with_spectrum(4, 30, 10, torch.linspace(1, 2, 10), seed=10, dtype=torch.float32)
    assert (ops.spectral_route(y, "svt", 1e-4) == GRAM).all()
    check(ops.svt(y, 1e-4), ref.svt(y.double(), 1e-4).float(), torch.float32)
    # nuclear norm of a well conditioned float64 matrix: Gram in float64 is kept
    z = with_spectrum(3, 20, 8, torch.linspace(1, 3, 8), seed=11)
    assert (ops.spectral_route(z, "nuclear_norm") == GRAM).all()
    check(ops.nuclear_norm(z), ref.nuclear_norm(z), torch.float64)


def test_rule_rejects_gram_near_the_floor_float32():
    # s_max = 1 and ten singular values around tau = 1e-4, below the float32 Gram floor
    # sqrt(eps32) ~ 3e-4
    svals = torch.cat([torch.tensor([1.0, 0.5]), torch.logspace(-3.5, -4.5, 10, dtype=torch.float64)])
    x = with_spectrum(4, 30, 12, svals, seed=12, dtype=torch.float32)
    tau = 1e-4
    naive = rel_err(gram_composite(x, tau), ref.svt(x.double(), tau))
    assert naive > 5 * TOL[torch.float32]  # the Gram route in float32 would be wrong here
    assert (ops.spectral_route(x, "svt", tau) == GRAM64).all()
    check(ops.svt(x, tau), ref.svt(x.double(), tau).float(), torch.float32)
    # nuclear norm of a rank-deficient float32 matrix: tiny singular values are noise in float32
    r = (randn(3, 12, 3, seed=13) @ randn(3, 3, 10, seed=14)).float()
    assert (ops.spectral_route(r, "nuclear_norm") == GRAM64).all()
    check(ops.nuclear_norm(r), ref.nuclear_norm(r.double()).float(), torch.float32)


def test_rule_takes_exact_route_float64():
    x = with_spectrum(3, 25, 10, geometric(10, 1e12), seed=15)
    tau = 1e-8
    naive = rel_err(gram_composite(x, tau), ref.svt(x, tau))
    assert naive > 10 * TOL[torch.float64]
    assert (ops.spectral_route(x, "svt", tau) == EXACT).all()
    check(ops.svt(x, tau), ref.svt(x, tau), torch.float64)
    check(ops.smoothed_nuclear_norm_grad(x, 1e-4, 1e-4), ref.smoothed_nuclear_norm_grad(x, 1e-4, 1e-4),
          torch.float64)
    assert (ops.spectral_route(x, "smoothed_nuclear_norm_grad", 1e-8) == EXACT).all()
    # the gradient with t far below every singular value: t U V^T, which the Gram route
    # in float32 (error ~ eps32 t (s_max / s_min)^2) would get wrong relative to its size
    y = with_spectrum(3, 25, 10, geometric(10, 1e3), seed=16, dtype=torch.float32)
    assert (ops.spectral_route(y, "smoothed_nuclear_norm_grad", 1e-6) == GRAM64).all()
    check(ops.smoothed_nuclear_norm_grad(y, 1e-2, 1e-4), ref.smoothed_nuclear_norm_grad(y.double(), 1e-2, 1e-4).float(),
          torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rule_mixed_batch(dtype):
    """Matrices of one batch on different routes, each result in its place."""
    good = with_spectrum(3, 20, 6, torch.linspace(1, 2, 6), seed=16, dtype=dtype)
    bad = with_spectrum(2, 20, 6, geometric(6, 1e7), seed=17, dtype=dtype)
    nan = good[0].clone()
    nan[3, 4] = float("nan")
    x = torch.stack([good[0], bad[0], good[1], nan, bad[1], good[2]])
    tau = torch.tensor([1e-5, 1e-5, 1.5, 1.0, 1e-6, 0.5], dtype=torch.float64)
    routes = ops.spectral_route(x, "svt", tau).tolist()
    slow = GRAM64 if dtype == torch.float32 else EXACT
    assert routes == [GRAM, slow, GRAM, EXACT, slow, GRAM]
    out = ops.svt(x, tau)
    expected = ref.svt(torch.where(torch.isnan(x), 0, x).double(), tau)
    for b in (0, 1, 2, 4, 5):  # each matrix against its own norm
        check(out[b].contiguous(), expected[b].to(dtype), dtype)
    assert torch.isnan(out[3]).all()


def test_tau_zero_is_exact_even_near_the_floor():
    x = with_spectrum(3, 15, 9, geometric(9, 1e10), seed=18, dtype=torch.float32)
    assert (ops.spectral_route(x, "svt", 0.0) == GRAM).all()
    check(ops.svt(x, 0.0), x, torch.float32)


# ---- smoothed nuclear norm: Shen et al. 2015 (Adaptive Sharing) eqs. 11-12 -------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_smoothed_value_and_gradient_definition(dtype):
    x = randn(3, 7, 5, seed=19, dtype=dtype)
    lam, eps = 0.8, 0.6
    q = ref.svt(x.double(), eps * lam)
    # eq. 11 evaluated at its minimiser Q* = svt(x, eps lam)
    value = (q - x.double()).pow(2).sum((-2, -1)) / (2 * eps) + lam * torch.linalg.svdvals(q).sum(-1)
    check(ops.smoothed_nuclear_norm(x, lam, eps), value.to(dtype), dtype)
    # the gradient is (x - Q*) / eps, not the printed lam (x - Q*) of eq. 12 ...
    g = ops.smoothed_nuclear_norm_grad(x, lam, eps)
    check(g, ((x.double() - q) / eps).to(dtype), dtype)
    assert rel_err(g, lam * (x.double() - q)) > 0.5
    # ... which agree only when eps * lam = 1
    q1 = ref.svt(x.double(), 1.0)
    check(ops.smoothed_nuclear_norm_grad(x, 2.0, 0.5), (2.0 * (x.double() - q1)).to(dtype), dtype)
    # spectral norm of the gradient <= lam; the envelope is below lam ||x||_* by at most eps lam^2 k / 2
    assert torch.linalg.matrix_norm(g.double(), ord=2).max() <= lam * (1 + 1e-5)
    gap = lam * ops.nuclear_norm(x) - ops.smoothed_nuclear_norm(x, lam, eps)
    assert (gap >= -1e-5).all() and (gap <= eps * lam**2 * 5 / 2 + 1e-5).all()


def test_autograd_gradient_is_the_grad_op():
    x = randn(2, 6, 4, seed=20).requires_grad_()
    ops.smoothed_nuclear_norm(x, 1.3, 0.2).sum().backward()
    torch.testing.assert_close(x.grad, ops.smoothed_nuclear_norm_grad(x.detach(), 1.3, 0.2))


# ---- gradcheck, opcheck, torch.compile --------------------------------------------------------


def spread(b, m, n, seed, t=None):
    """Matrices whose singular values are well separated from each other and from t."""
    k = min(m, n)
    s = torch.linspace(0.5, 3.0, k, dtype=torch.float64)
    if t is not None:
        s = torch.where((s - t).abs() < 0.15, s + 0.3, s)
    return with_spectrum(b, m, n, s, seed=seed)


def test_gradcheck():
    for m, n in [(6, 4), (4, 6), (5, 5)]:
        x = spread(2, m, n, seed=21, t=1.0).requires_grad_()
        assert torch.autograd.gradcheck(lambda v: ops.svt(v, 1.0), (x,))
        assert torch.autograd.gradcheck(lambda v: ops.svt(v, 0.0), (x,))
        assert torch.autograd.gradcheck(lambda v: ops.svt(v, torch.tensor([0.2, 1.0], dtype=torch.float64)), (x,))
        assert torch.autograd.gradcheck(ops.nuclear_norm, (x,))
        assert torch.autograd.gradcheck(lambda v: ops.smoothed_nuclear_norm(v, 2.0, 0.5), (x,))
        assert torch.autograd.gradcheck(lambda v: ops.smoothed_nuclear_norm_grad(v, 2.0, 0.5), (x,))
        assert torch.autograd.gradgradcheck(lambda v: ops.smoothed_nuclear_norm(v, 2.0, 0.5), (x,))


def _samples(device, requires_grad):
    x = spread(3, 6, 4, seed=22).to(device).requires_grad_(requires_grad)
    w = spread(2, 3, 5, seed=23).to(device).requires_grad_(requires_grad)
    s = torch.tensor(1.0, dtype=torch.float64)
    per = torch.tensor([0.3, 1.0, 2.2], dtype=torch.float64, device=device)
    return [
        (T.svt, (x, s)),
        (T.svt, (x, per)),
        (T.svt, (w, s)),
        (T.nuclear_norm, (x,)),
        (T.smoothed_nuclear_norm, (x, 2.0, 0.5)),
        (T.smoothed_nuclear_norm, (w, 1.0, 0.1)),
        (T.smoothed_nuclear_norm_grad, (x, 2.0, 0.5)),
    ]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, requires_grad):
    for op, args in _samples(device, requires_grad):
        torch.library.opcheck(op, args)
    if not requires_grad:
        x = spread(3, 6, 4, seed=24).to(device)
        torch.library.opcheck(T._spectral_route, (x, torch.tensor(1.0, dtype=torch.float64), 0))


def test_torch_compile_fullgraph():
    x = randn(3, 8, 5, seed=25, dtype=torch.float32)

    def f(x):
        a = ops.svt(x, 0.5)
        b = ops.nuclear_norm(a)
        c = ops.smoothed_nuclear_norm(x, 1.0, 0.3)
        d = ops.smoothed_nuclear_norm_grad(a, 1.0, 0.3)
        return a, b, c, d

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(x), f(x)):
        torch.testing.assert_close(got, want)


def test_torch_compile_backward():
    x = spread(2, 6, 4, seed=26).requires_grad_()

    def loss(x):
        return ops.smoothed_nuclear_norm(x, 1.0, 0.2).sum() + ops.svt(x, 1.0).square().sum() + ops.nuclear_norm(x).sum()

    (g_eager,) = torch.autograd.grad(loss(x), x)
    (g_comp,) = torch.autograd.grad(torch.compile(loss, fullgraph=True, backend="aot_eager")(x), x)
    torch.testing.assert_close(g_comp, g_eager)


# ---- bad input ------------------------------------------------------------------------------


def test_bad_input():
    x = randn(2, 4, 3, seed=27)
    with pytest.raises(ValueError, match="non-negative"):
        ops.svt(x, -0.1)
    with pytest.raises(RuntimeError, match="non-negative"):
        ops.svt(x, torch.tensor([0.1, -0.2], dtype=torch.float64))
    with pytest.raises(RuntimeError, match="non-negative"):
        T.svt(x, torch.tensor(-1.0, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="non-negative"):
        ops.svt(x, torch.tensor(float("nan")))
    with pytest.raises(RuntimeError, match=r"must be a matrix or a batch of matrices .* got shape \[5\]"):
        ops.svt(torch.ones(5, dtype=torch.float64), 0.1)
    with pytest.raises(RuntimeError, match=r"nuclear_norm: x must be a matrix"):
        ops.nuclear_norm(torch.ones(5))
    with pytest.raises(RuntimeError, match="must be float32 or float64, got Long"):
        ops.svt(torch.ones(3, 3, dtype=torch.long), 0.1)
    with pytest.raises(RuntimeError, match="must be float32 or float64, got Int"):
        ops.nuclear_norm(torch.ones(3, 3, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="must be float32 or float64, got Half"):
        ops.smoothed_nuclear_norm(torch.ones(3, 3, dtype=torch.half), 1.0, 0.1)
    with pytest.raises(RuntimeError, match=r"tau of shape \[3\] does not match the batch shape \[2\]"):
        ops.svt(x, torch.ones(3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"tau of shape \[2, 1, 1\] does not match the batch shape \[2\]"):
        ops.svt(x, torch.ones(2, 1, 1, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"does not match the batch shape \[\]"):
        ops.svt(x[0], torch.ones(1, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="eps must be finite and positive, got 0"):
        ops.smoothed_nuclear_norm(x, 1.0, 0.0)
    with pytest.raises(RuntimeError, match="eps must be finite and positive"):
        ops.smoothed_nuclear_norm_grad(x, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="lam must be finite and non-negative"):
        ops.smoothed_nuclear_norm(x, -1.0, 0.1)
    with pytest.raises(RuntimeError, match="treated as a constant"):
        ops.svt(x, torch.tensor(0.5, dtype=torch.float64, requires_grad=True))
    with pytest.raises(ValueError, match="op must be one of"):
        ops.spectral_route(x, "svd")


@cuda_only
def test_bad_device():
    x = randn(2, 4, 3, seed=28, device="cuda")
    with pytest.raises(RuntimeError, match="tau is on cpu but x is on cuda"):
        ops.svt(x, torch.ones(2, dtype=torch.float64))


# ---- CUDA routes -----------------------------------------------------------------------------


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,route",
    [((50, 32, 32), SMALL), ((20, 64, 64), SMALL), ((7, 200, 9), SMALL), ((5, 9, 200), SMALL),
     ((4, 1000, 30), GRAM), ((3, 700, 100), GRAM), ((2, 150, 300), GRAM), ((2, 600, 520), EXACT)],
)
def test_cuda_routes_match_reference(dtype, shape, route):
    x = randn(*shape, seed=29, dtype=dtype, device="cuda")
    xd = x.double()
    tau = median_sv(x)
    got = ops.spectral_route(x, "svt", tau)
    if route == GRAM:
        assert (got >= GRAM).all() and (got <= EXACT).all()
    else:
        assert (got == route).all(), got
    check(ops.svt(x, tau), ref.svt(xd, tau).to(dtype), dtype)
    check(ops.svt(x, 0.0), x, dtype)
    check(ops.nuclear_norm(x), ref.nuclear_norm(xd).to(dtype), dtype)
    check(ops.smoothed_nuclear_norm(x, 1.0, 0.5 * tau), ref.smoothed_nuclear_norm(xd, 1.0, 0.5 * tau).to(dtype),
          dtype)
    check(ops.smoothed_nuclear_norm_grad(x, 1.0, 0.5 * tau),
          ref.smoothed_nuclear_norm_grad(xd, 1.0, 0.5 * tau).to(dtype), dtype)
    z = torch.zeros_like(x)
    assert torch.all(ops.svt(z, tau) == 0) and torch.all(ops.nuclear_norm(z) == 0)


@cuda_only
def test_cuda_small_route_rank_deficient_and_per_matrix_tau():
    a = (randn(64, 20, 3, seed=30) @ randn(64, 3, 16, seed=31)).cuda()
    tau = torch.linspace(0.0, 5.0, 64, dtype=torch.float64, device="cuda")
    check(ops.svt(a, tau), ref.svt(a, tau), torch.float64)
    check(ops.svt(a.float(), tau), ref.svt(a.float().double(), tau).float(), torch.float32)
    check(ops.nuclear_norm(a.float()), ref.nuclear_norm(a.float().double()).float(), torch.float32)


# ---- the CUDA kernels' logic, emulated on the CPU -------------------------------------------
# A line-by-line NumPy mirror of csrc/ops/cuda/nuclear_kernel.cu (threads and warps become
# loops; layouts, orientation, power-of-two scaling, round-robin pairs, rotation formulas,
# filters and output indexing are the kernels'). It checks the kernels' arithmetic where
# no GPU is available; keep it in sync with the .cu file.

_DBL_EPS = float(np.finfo(np.float64).eps)
_SHRINK, _COMPLEMENT, _NUCLEAR, _SMOOTHED = 0, 1, 2, 3


def _rr_pair(j, rd, kp):
    def player(pos):
        return 0 if pos == 0 else ((pos - 1 + rd) % (kp - 1)) + 1

    a, b = player(j), player(kp - 1 - j)
    return min(a, b), max(a, b)


def _rotation(a, d, b):
    zeta = (d - a) / (2.0 * b)
    t = math.copysign(1.0, zeta) / (abs(zeta) + math.sqrt(1.0 + zeta * zeta)) if abs(zeta) < 1e150 else 0.0
    c = 1.0 / math.sqrt(1.0 + t * t)
    return c, c * t


def _exponent(amax):
    return math.frexp(amax)[1] if amax > 0 and math.isfinite(amax) else 0


def _filter(kind, s, t, scale):
    if kind == _SHRINK:
        return 1.0 if t == 0 else (1.0 - t / s if s > t else 0.0)
    return 0.0 if t == 0 else (t / s if s > t else 1.0) * scale


def _emulate_small(x, kind, t, lam=0.0, eps=1.0, scale=1.0):
    """small_spectral_kernel for one matrix x (m, n)."""
    m, n = x.shape
    k, r, wide = min(m, n), max(m, n), m < n
    kp, matrix = k + (k & 1), kind in (_SHRINK, _COMPLEMENT)
    flat = x.reshape(-1)
    A, V = np.zeros(r * k), np.zeros(k * k)
    for g in range(m * n):
        row, col = divmod(g, n)
        i, j = (col, row) if wide else (row, col)
        A[j * r + i] = float(flat[g])
    e = _exponent(float(np.nanmax(np.abs(A))))
    A = np.ldexp(A, -e)
    V[:: k + 1] = 1.0
    tol = math.sqrt(r) * _DBL_EPS
    for _ in range(30):
        rotated = False
        for rd in range(kp - 1):
            for j in range(kp // 2):
                p, q = _rr_pair(j, rd, kp)
                if q >= k:
                    continue
                ap, aq = A[p * r:(p + 1) * r], A[q * r:(q + 1) * r]
                al, be, ga = ap @ ap, aq @ aq, ap @ aq
                if abs(ga) > tol * math.sqrt(al * be):
                    c, s = _rotation(al, be, ga)
                    ap[:], aq[:] = c * ap - s * aq, s * ap + c * aq
                    vp, vq = V[p * k:(p + 1) * k], V[q * k:(q + 1) * k]
                    vp[:], vq[:] = c * vp - s * vq, s * vp + c * vq
                    rotated = True
        if not rotated:
            break
    sv = [math.ldexp(math.sqrt(A[j * r:(j + 1) * r] @ A[j * r:(j + 1) * r]), e) for j in range(k)]
    if not matrix:
        if kind == _NUCLEAR:
            return sum(sv)
        return sum(s * s / (2 * eps) if s <= t else lam * (s - 0.5 * t) for s in sv)
    f = [_filter(kind, s, t, scale) for s in sv]
    out = np.zeros(m * n)
    for g in range(m * n):
        row, col = divmod(g, n)
        i, l = (col, row) if wide else (row, col)
        out[g] = math.ldexp(sum(A[j * r + i] * f[j] * V[j * k + l] for j in range(k)), e)
    return out.reshape(m, n)


def _emulate_eigh(G):
    """jacobi_eigh_kernel for one symmetric matrix G (k, k): eigenvalues, V (columns)."""
    k = G.shape[0]
    kp, ld = k + (k & 1), k | 1
    flat = G.reshape(-1)
    e = _exponent(max(abs(float(flat[i * k + i])) for i in range(k)))
    W, V = np.zeros(k * ld), np.zeros(k * ld)
    for g in range(k * k):
        i, j = divmod(g, k)
        W[i * ld + j] = math.ldexp(0.5 * (float(flat[g]) + float(flat[j * k + i])), -e)
        V[i * ld + j] = 1.0 if i == j else 0.0
    for _ in range(30):
        rotated = False
        for rd in range(kp - 1):
            rots = []
            for j in range(kp // 2):
                p, q = _rr_pair(j, rd, kp)
                if q < k:
                    app, aqq, apq = W[p * ld + p], W[q * ld + q], W[p * ld + q]
                    if abs(apq) > max(_DBL_EPS * math.sqrt(abs(app * aqq)), _DBL_EPS**2):
                        rots.append((p, q) + _rotation(app, aqq, apq))
                        rotated = True
            for p, q, c, s in rots:  # rows
                for col in range(k):
                    u, v = W[p * ld + col], W[q * ld + col]
                    W[p * ld + col], W[q * ld + col] = c * u - s * v, s * u + c * v
            for p, q, c, s in rots:  # columns, exact zeros on the pair
                for row in range(k):
                    u, v = W[row * ld + p], W[row * ld + q]
                    W[row * ld + p] = 0.0 if row == q else c * u - s * v
                    W[row * ld + q] = 0.0 if row == p else s * u + c * v
                    y, z = V[row * ld + p], V[row * ld + q]
                    V[row * ld + p], V[row * ld + q] = c * y - s * z, s * y + c * z
        if not rotated:
            break
    w = np.array([math.ldexp(W[j * ld + j], e) for j in range(k)])
    return w, np.array([[V[i * ld + j] for j in range(k)] for i in range(k)])


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5), (1, 3), (3, 1), (9, 2), (2, 7)])
def test_cuda_small_kernel_emulation(shape):
    for dtype, scale in [(np.float32, 1.0), (np.float32, 1e30), (np.float64, 1e150)]:
        x = (randn(*shape, seed=40).numpy() * scale).astype(dtype)
        xd = torch.from_numpy(x.astype(np.float64))
        tau = 0.9 * median_sv(xd)
        lam, eps = 0.7 / scale, 0.5 * tau
        tol = 1e-13
        assert rel_err(torch.from_numpy(_emulate_small(x, _SHRINK, tau)), ref.svt(xd, tau)) < tol
        assert rel_err(torch.from_numpy(_emulate_small(x, _SHRINK, 0.0)), xd) < tol
        got = _emulate_small(x, _COMPLEMENT, eps * lam, scale=1 / eps)
        assert rel_err(torch.from_numpy(got), ref.smoothed_nuclear_norm_grad(xd, lam, eps)) < tol
        assert abs(_emulate_small(x, _NUCLEAR, 0.0) / float(ref.nuclear_norm(xd)) - 1) < tol
        val = _emulate_small(x, _SMOOTHED, eps * lam, lam=lam, eps=eps)
        assert abs(val / float(ref.smoothed_nuclear_norm(xd, lam, eps)) - 1) < tol


@pytest.mark.parametrize("k", [1, 2, 3, 8, 13])
def test_cuda_eigh_kernel_emulation(k):
    a = randn(k + 4, k, seed=41).numpy()
    for G in ((a.T @ a).astype(np.float32), a.T @ a * 1e280, np.zeros((k, k))):
        w, v = _emulate_eigh(G)
        gd = 0.5 * (G.astype(np.float64) + G.astype(np.float64).T)
        wmax = max(float(np.abs(w).max()), 1e-300)
        assert np.abs(gd @ v - v * w).max() / wmax < 1e-13
        assert np.abs(v.T @ v - np.eye(k)).max() < 1e-13
        assert np.abs(np.sort(w) - np.linalg.eigvalsh(gd)).max() / wmax < 1e-13


# ---- CUDA paths: shared-memory boundaries, the eigensolver in global memory, the tiers ----------
# Parametrised over devices() where the case means something on the CPU too (the CPU takes
# the Gram route for every k, as CUDA does for k > 64), so that the CPU run checks the
# cases and their tolerances; route codes are asserted where the devices agree.


def check_every_op(x, tau, tol=None):
    """svt, nuclear_norm, smoothed_nuclear_norm and its gradient of x against the float64
    SVD reference (each relative to its own norm)."""
    dtype = x.dtype
    xd = x.double()
    check(ops.svt(x, tau), ref.svt(xd, tau).to(dtype), dtype, tol)
    check(ops.nuclear_norm(x), ref.nuclear_norm(xd).to(dtype), dtype, tol)
    lam, eps = 1.0, 0.8 * tau  # t = eps * lam just below the threshold of the svt above
    check(ops.smoothed_nuclear_norm(x, lam, eps), ref.smoothed_nuclear_norm(xd, lam, eps).to(dtype), dtype, tol)
    check(ops.smoothed_nuclear_norm_grad(x, lam, eps), ref.smoothed_nuclear_norm_grad(xd, lam, eps).to(dtype),
          dtype, tol)


def is_cuda(device):
    return torch.device(device).type == "cuda"


# Issue 10, item 1: dynamic shared memory just below 48 KiB (48,880 < bytes <= 49,152), where
# the kernels' static shared memory pushes the total over the default limit, and item 8: the
# norm-only small kernel above 48 KiB. (op whose route is asserted, shape, CUDA route, bytes)
SMEM_BOUNDARY = [
    ("nuclear_norm", (2, 95, 64), SMALL),  # 8 * (95 * 64 + 64) = 49,152 bytes
    ("svt", (2, 158, 32), SMALL),  # 8 * (158 * 32 + 32 * 32 + 32) = 48,896 bytes
    ("svt", (2, 600, 55), GRAM),  # rows > 512: Gram eigensolver with vectors, 672 + 2 * 55 * 55 * 8 = 49,072
    ("nuclear_norm", (2, 300, 64), SMALL),  # 8 * (300 * 64 + 64) = 154,112 bytes, opted in
]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,shape,route", SMEM_BOUNDARY)
def test_shared_memory_boundary_shapes(device, dtype, op, shape, route):
    x = randn(*shape, seed=50, dtype=dtype, device=device)
    tau = median_sv(x)
    got = ops.spectral_route(x, op, tau)
    if is_cuda(device):
        assert set(got.tolist()) <= ({SMALL} if route == SMALL else {GRAM, GRAM64}), got
    check_every_op(x, tau)
    check_every_op(x.mT, tau)  # the wide orientation (x^T in the kernels)


# float32 through the Gram route at k in the hundreds: G = x^T x and x M are float32 GEMMs
# over a few hundred terms (the float64 eigensolver adds nothing): a few 1e-6 relative.
TOL_GRAM = {torch.float32: 5e-5, torch.float64: 1e-12}


# Gram sizes past the eigensolver's shared memory (k above ~120 with vectors, ~170 without):
# on CUDA a batch of at most k / 4 matrices goes to cuSOLVER (the first two), a larger one
# to the Jacobi kernel with its global workspace (the third).
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,m,n", [(2, 230, 200), (1, 171, 250), (40, 140, 130)])
def test_gram_eigensolver_outside_shared_memory(device, dtype, b, m, n):
    k = min(m, n)
    x = with_spectrum(b, m, n, torch.linspace(1.0, 2.0, k), seed=51, dtype=dtype, device=device)
    for op in ("svt", "nuclear_norm", "smoothed_nuclear_norm", "smoothed_nuclear_norm_grad"):
        assert (ops.spectral_route(x, op, 1.5) == GRAM).all(), op
    check_every_op(x, 1.5, TOL_GRAM[dtype])
    check_every_op(non_contiguous(x), 1.5, TOL_GRAM[dtype])


def block_diagonal(s, angles):
    """(B, k, k) block-diagonal matrices of 2 x 2 blocks diag(s_2i, s_2i+1) R(angle_i):
    singular values s, a Gram matrix with exact zeros off the blocks (so Jacobi converges
    in two sweeps), and the reference computable block by block."""
    B, k = s.shape
    c, sn = torch.cos(angles), torch.sin(angles)
    rot = torch.stack([torch.stack([c, -sn], -1), torch.stack([sn, c], -1)], -2)  # (B, k/2, 2, 2)
    blocks = s.view(B, k // 2, 2, 1) * rot
    x = torch.zeros(B, k // 2, 2, k // 2, 2, dtype=s.dtype)
    i = torch.arange(k // 2)
    x[:, i, :, i, :] = blocks.transpose(0, 1)
    return x.reshape(B, k, k), blocks


def from_blocks(blocks):
    B, h = blocks.shape[:2]
    x = torch.zeros(B, h, 2, h, 2, dtype=blocks.dtype)
    i = torch.arange(h)
    x[:, i, :, i, :] = blocks.transpose(0, 1)
    return x.reshape(B, 2 * h, 2 * h)


def test_block_diagonal_helper():
    s = 1 + torch.rand(3, 6, dtype=torch.float64)
    x, blocks = block_diagonal(s, torch.rand(3, 3, dtype=torch.float64))
    assert torch.equal(from_blocks(blocks), x)
    assert torch.allclose(torch.linalg.svdvals(x).sort(-1).values, s.sort(-1).values, rtol=1e-14)
    assert torch.allclose(ref.svt(x, 1.5), from_blocks(ref.svt(blocks, 1.5)), atol=1e-14)


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES)
def test_gram_eigensolver_workspace_in_chunks(dtype):
    """k = 512 with vectors: 2 * 512 * 513 float64 of workspace per matrix, so at most 127
    matrices per launch; 130 matrices take two launches. Without vectors (one launch here)
    the workspace is global too."""
    B, k = 130, 512
    gen = torch.Generator().manual_seed(52)
    s = 1 + torch.rand(B, k, generator=gen, dtype=torch.float64)
    x64, blocks = block_diagonal(s, 3 * torch.rand(B, k // 2, generator=gen, dtype=torch.float64))
    x = x64.to(dtype)
    blocks = blocks.to(dtype).double()  # the reference from the values x holds
    xc = x.cuda()
    tau = torch.linspace(1.2, 1.8, B, dtype=torch.float64, device="cuda")  # one per matrix
    assert (ops.spectral_route(xc, "svt", tau) == GRAM).all()
    assert (ops.spectral_route(xc, "nuclear_norm") == GRAM).all()
    expected = from_blocks(ref.svt(blocks, tau.cpu().view(B, 1)))
    out = ops.svt(xc, tau)
    for b in (0, 126, 127, 129):  # both launches, each matrix against its own norm
        check(out[b].contiguous(), expected[b].to(dtype), dtype)
    check(out, expected.to(dtype), dtype)
    check(ops.nuclear_norm(xc), ref.nuclear_norm(blocks).sum(-1).to(dtype), dtype)
    grad = ops.smoothed_nuclear_norm_grad(xc, 1.0, 1.5)
    check(grad, from_blocks(ref.smoothed_nuclear_norm_grad(blocks, 1.0, 1.5)).to(dtype), dtype)


@pytest.mark.parametrize("device", devices())
def test_float64_gram_tier(device):
    """float32 input whose singular values near tau are below the float32 Gram floor: the
    Gram matrix is redone in float64 (route 2), k > 64 so that CUDA takes the Gram route."""
    k = 70
    svals = torch.cat([torch.tensor([1.0, 0.5]), torch.logspace(-3.5, -4.5, k - 2, dtype=torch.float64)])
    x = with_spectrum(3, 100, k, svals, seed=53, dtype=torch.float32, device=device)
    tau = 1e-4
    assert (ops.spectral_route(x, "svt", tau) == GRAM64).all()
    check(ops.svt(x, tau), ref.svt(x.double(), tau).float(), torch.float32)
    # the nuclear norm of a rank-deficient float32 matrix: also the float64 tier
    r = (randn(2, 100, 3, seed=54) @ randn(2, 3, 80, seed=55)).float().to(device)
    assert (ops.spectral_route(r, "nuclear_norm") == GRAM64).all()
    check(ops.nuclear_norm(r), ref.nuclear_norm(r.double()).float(), torch.float32)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_routes_gram_sizes(device, dtype):
    """One batch whose matrices take the Gram route, the float64 Gram tier or the exact
    SVD (the rule's fallback, and NaN), each result in its place: k = 70 (> 64, the Gram
    route on CUDA too)."""
    m, k = 100, 70
    good = with_spectrum(3, m, k, torch.linspace(1, 2, k), seed=56, dtype=dtype)
    bad = with_spectrum(2, m, k, geometric(k, 1e7), seed=57, dtype=dtype)
    nan = good[0].clone()
    nan[3, 4] = float("nan")
    x = torch.stack([good[0], bad[0], good[1], nan, bad[1], good[2]]).to(device)
    tau = torch.tensor([1e-5, 1e-5, 1.5, 1.0, 1e-6, 0.5], dtype=torch.float64, device=device)
    routes = ops.spectral_route(x, "svt", tau).tolist()
    slow = GRAM64 if dtype == torch.float32 else EXACT
    assert routes == [GRAM, slow, GRAM, EXACT, slow, GRAM]
    out = ops.svt(x, tau)
    expected = ref.svt(torch.where(torch.isnan(x), 0, x).double().cpu(), tau.cpu())
    for b in (0, 1, 2, 4, 5):
        check(out[b].contiguous(), expected[b].to(dtype), dtype)
    assert torch.isnan(out[3]).all()
    nn = ops.nuclear_norm(x)
    assert torch.isnan(nn[3]) and torch.isfinite(nn[[0, 1, 2, 4, 5]]).all()
    keep = [0, 1, 2, 4, 5]
    check(nn[keep], ref.nuclear_norm(x[keep].double().cpu()).to(dtype), dtype)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_on_gram_route(device, dtype):
    """NaN and inf on the Gram route (k > 64): those matrices give NaN through the exact
    route, the others are unaffected."""
    x = with_spectrum(5, 100, 70, torch.linspace(1, 2, 70), seed=58, dtype=dtype, device=device)
    x[1, 2, 3] = float("nan")
    x[3, 0, 0] = float("inf")
    x[4, 99, 69] = -float("inf")
    routes = ops.spectral_route(x, "svt", 1.5).tolist()
    assert routes == [GRAM, EXACT, GRAM, EXACT, EXACT]
    out = ops.svt(x, 1.5)
    for b in (1, 3, 4):
        assert torch.isnan(out[b]).all()
    for b in (0, 2):
        check(out[b].contiguous(), ref.svt(x[b].double(), 1.5).to(dtype), dtype)
    for f in (ops.nuclear_norm, lambda v: ops.smoothed_nuclear_norm(v, 1.0, 1.2)):
        val = f(x)
        assert torch.isnan(val[[1, 3, 4]]).all() and torch.isfinite(val[[0, 2]]).all()
    g = ops.smoothed_nuclear_norm_grad(x, 1.0, 1.2)
    assert torch.isnan(g[[1, 3, 4]]).all() and torch.isfinite(g[[0, 2]]).all()


@pytest.mark.parametrize("device", devices())
def test_gram_overflow_and_underflow_float32(device):
    """float32 matrices whose Gram matrix overflows or underflows in float32 (k > 64): the
    float64 tier takes them."""
    x = with_spectrum(2, 100, 70, torch.linspace(1, 2, 70), seed=59, dtype=torch.float32, device=device)
    for scale in (1e25, 1e-25):
        xs = x * scale
        tau = 1.5 * scale
        assert (ops.spectral_route(xs, "svt", tau) == GRAM64).all()
        check(ops.svt(xs, tau), ref.svt(xs.double(), tau).float(), torch.float32)
        check(ops.nuclear_norm(xs), ref.nuclear_norm(xs.double()).float(), torch.float32)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 6, 4), (3, 4, 7), (2, 90, 70)])
def test_backward_matches_reference(device, dtype, shape):
    """Gradients of every op (through the registered autograd formulas, on the op's
    device) against autograd through the float64 SVD reference; singular values well
    separated from each other and from the threshold."""
    b, m, n = shape
    k = min(m, n)
    # k values in [0.3, 0.8] and [1.2, 3.0], at least 0.03 apart
    s = torch.cat([torch.linspace(0.3, 0.8, k // 3), torch.linspace(1.2, 3.0, k - k // 3)])
    x = with_spectrum(b, m, n, s, seed=60, dtype=dtype, device=device)
    w = randn(b, m, n, seed=61, dtype=dtype, device=device)
    wv = randn(b, seed=62, dtype=dtype, device=device)
    cases = [
        (lambda v: (ops.svt(v, 1.0) * w).sum(), lambda v: (ref.svt(v, 1.0) * w.double()).sum()),
        (lambda v: (ops.nuclear_norm(v) * wv).sum(), lambda v: (ref.nuclear_norm(v) * wv.double()).sum()),
        (lambda v: (ops.smoothed_nuclear_norm(v, 2.0, 0.5) * wv).sum(),
         lambda v: (ref.smoothed_nuclear_norm(v, 2.0, 0.5) * wv.double()).sum()),
        (lambda v: (ops.smoothed_nuclear_norm_grad(v, 2.0, 0.5) * w).sum(),
         lambda v: (ref.smoothed_nuclear_norm_grad(v, 2.0, 0.5) * w.double()).sum()),
    ]
    for i, (fn, rfn) in enumerate(cases):
        xa = x.clone().requires_grad_()
        (ga,) = torch.autograd.grad(fn(xa), xa)
        xr = x.detach().to(torch.float64, copy=True).requires_grad_()  # on x's device, like w
        (gr,) = torch.autograd.grad(rfn(xr), xr)
        assert ga.dtype == dtype and ga.device == x.device
        # the float32 gradients go through a float32 SVD and divided differences of
        # singular values at least 0.03 apart (about 1e-6 measured with LAPACK)
        assert rel_err(ga, gr) <= (TOL[dtype] if dtype == torch.float64 else 3e-5), i


# Routes for the stream and device tests: fused small, Gram, the float64 Gram tier, exact.
def _route_cases(device):
    small = randn(5, 20, 9, seed=63, device=device)
    gram = with_spectrum(3, 100, 70, torch.linspace(1, 2, 70), seed=64, device=device)
    exact = with_spectrum(2, 100, 70, geometric(70, 1e7), seed=65, device=device)
    tier2 = with_spectrum(2, 100, 70, torch.cat([torch.tensor([1.0, 0.5]), torch.logspace(-3.5, -4.5, 68)]),
                          seed=66, dtype=torch.float32, device=device)
    return [(small, median_sv(small)), (gram, 1.5), (exact, 1e-5), (tier2, 1e-4)]


def _every_op(x, tau):
    return [ops.svt(x, tau), ops.nuclear_norm(x), ops.smoothed_nuclear_norm(x, 1.0, tau),
            ops.smoothed_nuclear_norm_grad(x, 1.0, tau)]


def _every_ref(x, tau):
    x = x.double().cpu()
    return [ref.svt(x, tau), ref.nuclear_norm(x), ref.smoothed_nuclear_norm(x, 1.0, tau),
            ref.smoothed_nuclear_norm_grad(x, 1.0, tau)]


# The exact case's gradient (op 3): singular vectors of singular values near 1e-7 are
# determined only to about eps * s_max / gap, so any backward-stable SVD (the reference's
# LAPACK too) moves it by ~1e-11 relative; 4.9e-12 against the reference on an H200.
def _ref_tol(case, op, dtype):
    return 1e-10 if (case, op) == (2, 3) else TOL[dtype]


@cuda_only
def test_side_stream():
    for c, (x, tau) in enumerate(_route_cases("cuda")):
        got = on_side_stream(lambda: _every_op(x, tau))
        main = [t.cpu() for t in _every_op(x, tau)]
        for i, (o, m, e) in enumerate(zip(got, main, _every_ref(x, tau))):
            assert rel_err(o, m) <= TOL[x.dtype], (c, i)  # as on the default stream (same bits on an H200)
            assert rel_err(o, e) <= _ref_tol(c, i, x.dtype), (c, i)
        route = on_side_stream(lambda: ops.spectral_route(x, "svt", tau))
        assert torch.equal(route, ops.spectral_route(x, "svt", tau).cpu())


@multi_gpu
def test_inputs_on_cuda0_while_cuda1_is_current():
    for c, (x, tau) in enumerate(_route_cases("cuda:0")):
        got = on_other_device(lambda: _every_op(x, tau))
        for i, (o, e) in enumerate(zip(got, _every_ref(x, tau))):
            assert o.device == x.device
            assert rel_err(o, e) <= _ref_tol(c, i, x.dtype), (c, i)



@cuda_only
def test_host_syncs_per_call():
    """Issue 10, item 6: the fused small route reads nothing back; the Gram route reads back
    once per precision tier (which matrices the rule accepted), here one tier."""
    from mtlkernels.testing import host_syncs

    small = randn(5, 20, 9, seed=91, device="cuda")
    gram = randn(4, 90, 70, seed=92, device="cuda")  # float64, k = 70 > 64: the Gram route
    assert set(ops.spectral_route(gram, "svt", 1.0).tolist()) == {GRAM}
    assert host_syncs(lambda: ops.svt(small, 1.0)) == 0
    assert host_syncs(lambda: ops.nuclear_norm(small)) == 0
    assert host_syncs(lambda: ops.svt(gram, 1.0)) == 1
    assert host_syncs(lambda: ops.nuclear_norm(gram)) == 1
