"""Tests of the joint-IRLS ops (Zhang et al. 2019, joint IRLS): pairwise_sq_dists, irls_weights, sigma_init,
robust_consistency, irls_consensus, pairwise_mix and the layer-pair helpers."""

import math

import pytest
import torch

from mtlkernels import ops
from mtlkernels import reference as ref
from mtlkernels.testing import (
    TOL, cuda_only, devices, multi_gpu, non_contiguous, on_other_device, on_side_stream, randn, rel_err,
)

DTYPES = [torch.float32, torch.float64]
F64 = torch.float64

# (n, layer sizes): n = 1 and 2, a layer of one parameter, sizes around the CPU
# block (512 columns) and chunk (8192 columns) boundaries, n not a multiple of 4.
SHAPES = [
    (1, [5]),
    (2, [1]),
    (2, [3, 1, 7]),
    (3, [7, 1, 600, 33]),
    (5, [1000]),
    (6, [513, 1, 2049]),
    (13, [20000, 3]),
    (17, [5, 300]),
    # more than one 64-row super-tile of the CUDA kernel (off-diagonal tile pairs), both dtypes
    (70, [33, 1, 700]),
    (130, [5, 300]),
]


def make(n, sizes, seed, dtype=F64, device="cpu"):
    return randn(n, sum(sizes), seed=seed, dtype=dtype, device=device), ops.layer_offsets(sizes)


def close_networks(n, P, rel, seed, dtype=torch.float32, device="cpu"):
    """n networks equal up to `rel` relative perturbations of a large common part."""
    base = 3 + randn(1, P, seed=seed)
    return (base + rel * randn(n, P, seed=seed + 1)).to(dtype=dtype, device=device)


# ---- pairwise_sq_dists -------------------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,sizes", SHAPES)
def test_sq_dists_matches_reference(device, dtype, n, sizes):
    x, off = make(n, sizes, seed=n + len(sizes), dtype=dtype, device=device)
    out = ops.pairwise_sq_dists(x, off)
    want = ref.pairwise_sq_dists(x.to(F64), off)
    assert out.shape == (len(sizes), n, n) and out.dtype == dtype and out.device == x.device
    assert rel_err(out, want) < TOL[dtype]
    assert torch.equal(out, out.transpose(1, 2))
    assert (out.diagonal(0, 1, 2) == 0).all()
    if dtype == torch.float32:
        assert rel_err(ops.pairwise_sq_dists(x, off, fp64_accumulate=True), want) < 1e-6


@pytest.mark.parametrize("device", devices())
def test_sq_dists_layouts(device):
    x, off = make(7, [300, 1, 900], seed=1, device=device)
    want = ops.pairwise_sq_dists(x, off)
    wide = torch.zeros(7, 1500, dtype=F64, device=device)
    wide[:, :1201] = x
    assert torch.equal(ops.pairwise_sq_dists(wide[:, :1201], off), want)  # row stride != P, read in place
    assert torch.equal(ops.pairwise_sq_dists(non_contiguous(x), off), want)
    assert torch.equal(ops.pairwise_sq_dists(x.T.contiguous().T, off), want)  # column-major
    assert torch.equal(ops.pairwise_sq_dists(x, torch.tensor(off)), want)  # offsets as a tensor


@pytest.mark.parametrize("isa", ["base", "avx2"])
def test_cpu_isa_variants(isa, monkeypatch):
    # The CPU kernels pick AVX-512, AVX2 + FMA or baseline code at run time; cap the
    # choice to check the narrower variants on this machine too.
    shapes = [(3, [7, 1, 600]), (9, [1100, 5])]
    cases = [(make(n, sizes, seed=30 + n, dtype=dt), dt) for n, sizes in shapes for dt in DTYPES]
    want = [(ops.pairwise_sq_dists(x, off), ops.pairwise_sq_dists(x, off, True)) for (x, off), _ in cases]
    monkeypatch.setenv("MTLKERNELS_CPU_ISA", isa)
    for ((x, off), dt), (d, d64) in zip(cases, want):
        exact = ref.pairwise_sq_dists(x.to(F64), off)
        assert rel_err(ops.pairwise_sq_dists(x, off), exact) < TOL[dt]
        assert rel_err(ops.pairwise_sq_dists(x, off, True), exact) < max(TOL[dt], 1e-7)
        m = randn(len(off) - 1, x.shape[0], x.shape[0], seed=31, dtype=dt)
        assert rel_err(ops.pairwise_mix(x, off, m), ref.pairwise_mix(x.to(F64), off, m.to(F64))) < 10 * TOL[dt]


def test_no_networks_and_deterministic():
    empty, off = torch.empty(0, 10), [0, 4, 10]
    assert ops.pairwise_sq_dists(empty, off).shape == (2, 0, 0)
    assert float(ops.robust_consistency(empty, off, 1.0)) == 0
    assert ops.irls_consensus(torch.ones(2, 0, 0), empty, off).shape == (0, 10)
    assert ops.pairwise_mix(empty, off, torch.ones(2, 0, 0)).shape == (0, 10)
    w, rho = ops.irls_weights(torch.zeros(2, 0, 0), 1.0)
    assert w.shape == rho.shape == (2, 0, 0)
    x, off = make(9, [30000, 7], seed=2, dtype=torch.float32)
    assert torch.equal(ops.pairwise_sq_dists(x, off), ops.pairwise_sq_dists(x, off))


@pytest.mark.parametrize("device", devices())
def test_sq_dists_close_networks_no_cancellation(device):
    # Rows equal up to 1e-4 relative: ||a||^2 + ||b||^2 - 2 a.b loses every digit in
    # float32 (the Gram composite, and torch.cdist above 25 rows); the difference form
    # must match float64 to float32 accuracy.
    n, sizes = 32, [4000, 97]
    x = close_networks(n, sum(sizes), 1e-4, seed=3, device=device)
    off = ops.layer_offsets(sizes)
    want = ref.pairwise_sq_dists(x.to(F64), off)
    assert rel_err(ops.pairwise_sq_dists(x, off), want) < 1e-5
    assert rel_err(ref.gram_sq_dists(x, off), want) > 1e-2  # the case is hard for the Gram formula
    assert rel_err(ref.cdist_sq_dists(x, off), want) > 1e-2


# ---- layer pairs, irls_weights, sigma_init --------------------------------------------------


def test_layer_pairs_and_adjoint():
    D = torch.rand(4, 3, 3, dtype=F64)
    d2 = ops.layer_pair_sq_dists(D)
    assert torch.equal(d2[0], D[0] + D[1]) and torch.equal(d2[2], D[2] + D[3]) and torch.equal(d2[3], D[3])
    assert torch.equal(d2, ref.layer_pair_sq_dists(D))
    w = torch.rand(4, 3, 3, dtype=F64)
    c = ops.layer_weights(w)
    assert torch.equal(c[0], w[0]) and torch.equal(c[3], w[3] + w[2])
    # sum_l w_l d2_l = sum_l c_l D_l (eq. 8 expanded into eq. 6)
    assert torch.allclose((w * d2).sum(), (c * D).sum(), rtol=1e-14)
    one = torch.rand(1, 2, 2, dtype=F64)
    assert torch.equal(ops.layer_pair_sq_dists(one), one) and torch.equal(ops.layer_weights(one), one)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
def test_irls_weights_matches_reference(device, dtype):
    x, off = make(6, [40, 1, 25], seed=4, dtype=dtype, device=device)
    D = ops.pairwise_sq_dists(x, off)
    sig = torch.tensor([2.0, 0.5, 7.0], device=device)
    for sigma in (1.5, sig, torch.tensor(3.0), torch.tensor([4.0], dtype=F64, device=device)):
        w, rho = ops.irls_weights(D, sigma)
        w_ref, rho_ref = ref.irls_weights(D.to(F64), sigma)
        assert w.dtype == dtype and rho.dtype == dtype
        assert rel_err(w, w_ref) < TOL[dtype] and rel_err(rho, rho_ref) < TOL[dtype]
        assert torch.allclose(rho.to(F64), w.to(F64) * ops.layer_pair_sq_dists(D.to(F64)), rtol=1e-5)
        assert (w.diagonal(0, 1, 2) == 1).all() and (rho.diagonal(0, 1, 2) == 0).all()


def test_irls_weights_formula_and_special_values():
    D = torch.tensor([[[0.0, 3.0], [3.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]], dtype=F64)  # d2: pair 0 = 4, pair 1 = 1
    w, rho = ops.irls_weights(D, torch.tensor([2.0, 1.0], dtype=F64))
    assert w[0, 0, 1] == 4 / (4 + 4) and rho[0, 0, 1] == 4 * 4 / (4 + 4)  # eq. 7, rho under eq. 3
    assert w[1, 0, 1] == 0.5 and rho[1, 0, 1] == 0.5
    w, rho = ops.irls_weights(D, torch.tensor([0.0, math.inf], dtype=F64))
    assert (w[0] == 0).all() and (rho[0] == 0).all()  # sigma = 0: the pair is switched off
    assert (w[1] == 1).all() and torch.equal(rho[1], D[1])  # sigma = inf: L2 (eq. 5)
    # no overflow, no 0/0: huge distances saturate at sigma^2, huge sigma is L2
    big = torch.tensor([[[0.0, 1e300], [1e300, 0.0]]], dtype=F64)
    w, rho = ops.irls_weights(big, 1e-150)
    assert torch.isfinite(w).all() and torch.isfinite(rho).all()
    assert math.isclose(float(rho[0, 0, 1]), 1e-300, rel_tol=1e-12)
    w, rho = ops.irls_weights(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float32), 1e30)
    assert float(w[0, 0, 1]) == 1.0 and float(rho[0, 0, 1]) == 1.0


def test_sigma_init_rule():
    # One layer, networks at 0, 3 and 4 on a line: nearest distances 3, 1, 1.
    x = torch.tensor([[0.0], [3.0], [4.0]], dtype=F64)
    D = ops.pairwise_sq_dists(x, [0, 1])
    assert torch.allclose(ops.sigma_init(D), torch.tensor([5.0 / 3.0], dtype=F64))
    # Two layers: pair 0 uses both layers (concatenated), pair 1 the last layer alone.
    x, off = make(5, [6, 4], seed=5)
    D = ops.pairwise_sq_dists(x, off)
    s = ops.sigma_init(D)
    assert s.shape == (2,) and not s.requires_grad
    assert torch.allclose(s, ref.sigma_init(D), rtol=1e-12)
    d_pair0 = torch.cdist(x, x)
    assert math.isclose(float(s[0]), float(d_pair0.fill_diagonal_(math.inf).amin(1).mean()), rel_tol=1e-12)
    with pytest.raises(ValueError, match="at least 2 networks"):
        ops.sigma_init(torch.zeros(2, 1, 1))


# ---- robust_consistency --------------------------------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,sizes", [(1, [4]), (2, [3, 1]), (5, [20, 1, 33]), (9, [700, 2])])
def test_robust_consistency_value_and_grad(device, dtype, n, sizes):
    x, off = make(n, sizes, seed=6, dtype=dtype, device=device)
    L = len(sizes)
    sigma = torch.linspace(0.5, 3.0, L, dtype=F64, device=device)
    x64 = x.detach().to(F64).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    want = ref.robust_consistency(x64, off, sigma=sigma)
    got = ops.robust_consistency(xr, off, sigma)
    assert got.dtype == dtype and got.shape == ()
    assert rel_err(got, want) < TOL[dtype] or abs(float(got) - float(want)) < 1e-12
    (g_want,) = torch.autograd.grad(want, x64) if n > 1 else (torch.zeros_like(x64),)
    (g_got,) = torch.autograd.grad(got, xr)
    assert rel_err(g_got, g_want) < 10 * TOL[dtype] or n == 1 and (g_got == 0).all()
    # the weighted form of eq. 8
    w = torch.rand(L, n, n, dtype=dtype, device=device)
    assert rel_err(ops.robust_consistency(x, off, weights=w), ref.robust_consistency(x64.detach(), off, weights=w)) < (
        TOL[dtype] if n > 1 else 1
    )


def test_robust_consistency_pairing_semantics():
    # L = 2: pair 0 = both layers concatenated (eq. 3), pair 1 = the last layer alone.
    x, off = make(4, [3, 5], seed=7)
    s0, s1 = 1.3, 0.7

    def rho(x2, s):
        return s * s * x2 / (s * s + x2)

    total = 0.0
    for i in range(4):
        for j in range(i + 1, 4):
            total += rho(float(((x[i] - x[j]) ** 2).sum()), s0) + rho(float(((x[i, 3:] - x[j, 3:]) ** 2).sum()), s1)
    assert math.isclose(float(ops.robust_consistency(x, off, torch.tensor([s0, s1], dtype=F64))), total, rel_tol=1e-12)
    # eq. 3 exactly (L - 1 pairs, no term for the last layer alone): sigma[-1] = 0
    only0 = sum(
        rho(float(((x[i] - x[j]) ** 2).sum()), s0) for i in range(4) for j in range(i + 1, 4)
    )
    assert math.isclose(float(ops.robust_consistency(x, off, torch.tensor([s0, 0.0], dtype=F64))), only0, rel_tol=1e-12)
    # sigma = inf: the L2 consistency of eq. 5
    l2 = float(ops.layer_pair_sq_dists(ops.pairwise_sq_dists(x, off)).triu(1).sum())
    assert math.isclose(float(ops.robust_consistency(x, off, math.inf)), l2, rel_tol=1e-12)


def test_robust_consistency_agrees_with_composite_and_irls():
    x, off = make(6, [50, 1, 20], seed=8)
    sigma = torch.tensor([2.0, 1.0, 4.0], dtype=F64)
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    xc = x.clone().requires_grad_()
    direct = ops.robust_consistency(xa, off, sigma)
    # the same loss through pairwise_sq_dists -> irls_weights (each op's own backward)
    composite = 0.5 * ops.irls_weights(ops.pairwise_sq_dists(xb, off), sigma)[1].sum()
    assert torch.allclose(direct, composite, rtol=1e-13)
    (ga,) = torch.autograd.grad(direct, xa)
    (gb,) = torch.autograd.grad(composite, xb)
    assert rel_err(ga, gb) < 1e-12
    # IRLS: d rho / d d^2 = w^2, so the robust gradient is the weighted-LS gradient with weights w^2
    w, _ = ops.irls_weights(ops.pairwise_sq_dists(x, off), sigma)
    (gc,) = torch.autograd.grad(ops.robust_consistency(xc, off, weights=w * w), xc)
    assert rel_err(ga, gc) < 1e-12


def test_robust_consistency_one_network_at_a_time():
    # Train network 1 only (sec. 4.2.3): a stacked row that requires grad among fixed rows.
    x, off = make(4, [10, 6], seed=9)
    row = x[1].clone().requires_grad_()
    stacked = torch.stack([x[0], row, x[2], x[3]])
    loss = ops.robust_consistency(stacked, off, 1.0)
    (g,) = torch.autograd.grad(loss, row)
    xf = x.clone().requires_grad_()
    (gf,) = torch.autograd.grad(ops.robust_consistency(xf, off, 1.0), xf)
    assert torch.allclose(g, gf[1], rtol=1e-13)


def test_robust_consistency_close_networks_gradient():
    x = close_networks(8, 3000, 1e-4, seed=10)
    off = [0, 1000, 3000]
    xr = x.clone().requires_grad_()
    x64 = x.to(F64).requires_grad_()
    (g,) = torch.autograd.grad(ops.robust_consistency(xr, off, 0.05), xr)
    (g_want,) = torch.autograd.grad(ref.robust_consistency(x64, off, sigma=0.05), x64)
    assert rel_err(g, g_want) < 1e-4


# ---- irls_consensus and pairwise_mix ------------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,sizes", [(1, [3]), (2, [1, 4]), (5, [600, 1, 9]), (11, [40, 700])])
def test_consensus_matches_reference(device, dtype, n, sizes):
    x, off = make(n, sizes, seed=11, dtype=dtype, device=device)
    c = torch.rand(len(sizes), n, n, dtype=dtype, device=device)
    out = ops.irls_consensus(c, x, off)
    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous()
    assert rel_err(out, ref.irls_consensus(c.to(F64), x.to(F64), off)) < TOL[dtype]
    assert rel_err(ops.irls_consensus(c, non_contiguous(x), off), out) < TOL[dtype]


def test_consensus_semantics():
    x, off = make(4, [5, 3], seed=12)
    c = torch.rand(2, 4, 4, dtype=F64)
    out = ops.irls_consensus(c, x, off)
    # j = i is excluded (eq. 9): the diagonal of the weights does not matter
    c_diag = c.clone()
    c_diag.diagonal(0, 1, 2).fill_(1e6)
    assert torch.allclose(ops.irls_consensus(c_diag, x, off), out, rtol=1e-13)
    # layer 1 of network 2 explicitly
    w = c[1, 2].clone()
    w[2] = 0
    assert torch.allclose(out[2, 5:], (w[:, None] * x[:, 5:]).sum(0) / w.sum(), rtol=1e-13)
    # the target minimises the per-network quadratic of eq. 9: zero gradient there
    theta = out[2, :5].clone().requires_grad_()
    q = sum(c[0, 2, j] * ((theta - x[j, :5]) ** 2).sum() for j in range(4) if j != 2)
    (g,) = torch.autograd.grad(q, theta)
    assert g.abs().max() < 1e-12
    # no weight to any other network: the network keeps its parameters
    c0 = c.clone()
    c0[0, 1] = 0
    c0[0, 1, 1] = 5.0
    assert torch.equal(ops.irls_consensus(c0, x, off)[1, :5], x[1, :5])
    assert torch.equal(ops.irls_consensus(torch.ones(2, 1, 1), x[:1].float(), off), x[:1].float())


def test_consensus_and_mix_close_networks_accuracy():
    x = close_networks(16, 5000, 1e-4, seed=13)
    c = torch.rand(1, 16, 16)
    want = ref.irls_consensus(c.to(F64), x.to(F64), [0, 5000])
    got = ops.irls_consensus(c, x, [0, 5000])
    # within two float32 ulps of the exact target
    assert float((got.to(F64) - want).abs().max()) <= 2 * torch.finfo(torch.float32).eps * float(x.abs().max())
    # a zero self coefficient (a gradient): accurate relative to the differences, which
    # are 1e-4 of the parameters (a Gram-style A @ x would lose most digits here)
    m = randn(1, 16, 16, seed=14, dtype=torch.float32)
    m.diagonal(0, 1, 2).zero_()
    want = ref.pairwise_mix(x.to(F64), [0, 5000], m.to(F64))
    assert rel_err(ops.pairwise_mix(x, [0, 5000], m), want) < 1e-5
    a = m[0] - torch.diag(m[0].sum(1))
    assert rel_err(a @ x, want) > 1e-3


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("n,sizes", [(1, [2]), (3, [1, 5]), (6, [513, 40]), (70, [37, 5])])
def test_mix_matches_reference(device, dtype, transpose, n, sizes):
    x, off = make(n, sizes, seed=14, dtype=dtype, device=device)
    coeffs = randn(len(sizes), n, n, seed=15, dtype=dtype, device=device)
    out = ops.pairwise_mix(x, off, coeffs, transpose)
    assert rel_err(out, ref.pairwise_mix(x.to(F64), off, coeffs.to(F64), transpose)) < 10 * TOL[dtype]


def test_mix_and_consensus_adjoints():
    x, off = make(5, [7, 1, 30], seed=16)
    y = randn(5, 38, seed=17)
    m = randn(3, 5, 5, seed=18)
    c = torch.rand(3, 5, 5, dtype=F64)
    consensus = torch.ops.mtlkernels.irls_consensus
    for f in (lambda v, t: ops.pairwise_mix(v, off, m, t), lambda v, t: consensus(c, v, off, t)):
        assert math.isclose(float((f(x, False) * y).sum()), float((x * f(y, True)).sum()), rel_tol=1e-12)


# ---- autograd, opcheck, torch.compile --------------------------------------------------------------


def test_gradcheck():
    x, off = make(4, [3, 1, 4], seed=19)
    x.requires_grad_()
    c = torch.rand(3, 4, 4, dtype=F64)
    sigma = torch.tensor([0.8, 0.0, math.inf], dtype=F64)
    # full Jacobians for the scalar losses, random projections (fast_mode) for the rest
    assert torch.autograd.gradcheck(lambda v: ops.pairwise_sq_dists(v, off), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda v: ops.robust_consistency(v, off, sigma), (x,))
    assert torch.autograd.gradcheck(lambda v: ops.robust_consistency(v, off, 1.7), (x,))
    assert torch.autograd.gradcheck(lambda v: ops.robust_consistency(v, off, weights=c), (x,))
    assert torch.autograd.gradcheck(lambda v: ops.irls_consensus(c, v, off), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda v: ops.pairwise_mix(v, off, c), (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda v: ops.pairwise_mix(v, off, c, True), (x,), fast_mode=True)
    D = (ops.pairwise_sq_dists(x.detach(), off) + 0.5).requires_grad_()  # stays positive under perturbation
    sig = torch.tensor([0.8, 1.0, 2.0], dtype=F64)
    assert torch.autograd.gradcheck(lambda d: ops.irls_weights(d, sig), (D,), fast_mode=True)


def test_double_backward_refused():
    x, off = make(3, [4], seed=20)
    x.requires_grad_()
    (g,) = torch.autograd.grad(ops.robust_consistency(x, off, 1.0), x, create_graph=True)
    with pytest.raises(RuntimeError, match="robust_consistency: double backward is not supported"):
        (g.square().sum() + x.sum()).backward()
    D = ops.pairwise_sq_dists(x, off)
    (g,) = torch.autograd.grad(D.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="pairwise_sq_dists: double backward is not supported"):
        g.sum().backward()


def _opcheck_samples(device="cpu"):
    x, off = make(5, [6, 1, 9], seed=21, device=device)
    c = torch.rand(3, 5, 5, dtype=F64).to(device)
    D = ops.pairwise_sq_dists(x, off)
    return [
        ("pairwise_sq_dists", lambda x: (x, off, False)),
        ("pairwise_sq_dists", lambda x: (x.float(), off, True)),
        ("pairwise_mix", lambda x: (x, off, c, True)),
        ("irls_weights", lambda x: (D.clone().requires_grad_(x.requires_grad), torch.tensor([1.0, 2.0, 0.5]).to(device))),
        ("robust_consistency", lambda x: (x, off, torch.tensor(1.5), None)),
        ("robust_consistency", lambda x: (x, off, None, c)),
        ("irls_consensus", lambda x: (c, x, off, False)),
    ], x


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, requires_grad):
    samples, x = _opcheck_samples(device)
    for name, args in samples:
        xs = x.clone().requires_grad_(requires_grad)
        torch.library.opcheck(getattr(torch.ops.mtlkernels, name), args(xs))


@pytest.mark.parametrize(
    "name", ["pairwise_sq_dists", "irls_weights", "robust_consistency", "irls_consensus", "pairwise_mix"]
)
def test_torch_compile(name):
    # aot_eager: dynamo + AOTAutograd through the fake kernels and autograd formulas,
    # without the C++ compile of inductor (that one runs in test_torch_compile_inductor)
    torch._dynamo.reset()
    x, off = make(4, [5, 3], seed=22)
    c = torch.rand(2, 4, 4, dtype=F64)
    sigma = torch.tensor([1.0, 2.0], dtype=F64)
    fns = {
        "pairwise_sq_dists": lambda v: ops.pairwise_sq_dists(v, off).sum(),
        "irls_weights": lambda v: ops.irls_weights(ops.pairwise_sq_dists(v, off), sigma)[1].sum(),
        "robust_consistency": lambda v: ops.robust_consistency(v, off, sigma) * 2,
        "irls_consensus": lambda v: ops.irls_consensus(c, v, off).square().sum(),
        "pairwise_mix": lambda v: ops.pairwise_mix(v, off, c).square().sum(),
    }
    fn = fns[name]
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    out, want = compiled(xa), fn(xb)
    assert torch.allclose(out, want, rtol=1e-13)
    out.backward()
    want.backward()
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-12)


def test_torch_compile_inductor():
    # One IRLS step through every op in one graph, with the default (inductor) backend.
    torch._dynamo.reset()
    x, off = make(5, [6, 1, 4], seed=23)
    sigma = torch.tensor([1.0, 0.5, 2.0], dtype=F64)

    def step(v):
        D = ops.pairwise_sq_dists(v, off)
        w, rho = ops.irls_weights(D.detach(), sigma)
        target = ops.irls_consensus(ops.layer_weights(w), v.detach(), off)
        mixed = ops.pairwise_mix(v, off, w)
        return ops.robust_consistency(v, off, sigma) + ops.robust_consistency(v, off, weights=w) + (
            (v - target).square().sum() + mixed.sum() + rho.sum()
        )

    compiled = torch.compile(step, fullgraph=True)
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    out, want = compiled(xa), step(xb)
    assert torch.allclose(out, want, rtol=1e-12)
    out.backward()
    want.backward()
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-11)


# ---- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offsets,match",
    [
        ([1, 10], "must start at 0"),
        ([0, 9], "must end at the number of parameters P = 10"),
        ([0, 4, 4, 10], "layer 1 is empty"),
        ([0, 6, 4, 10], "must be increasing"),
        ([0], "at least 2 entries"),
    ],
)
def test_bad_offsets(offsets, match):
    x = torch.randn(3, 10)
    for f in (
        lambda: ops.pairwise_sq_dists(x, offsets),
        lambda: ops.robust_consistency(x, offsets, 1.0),
        lambda: ops.pairwise_mix(x, offsets, torch.zeros(1, 3, 3)),
        lambda: ops.irls_consensus(torch.ones(1, 3, 3), x, offsets),
    ):
        with pytest.raises(RuntimeError, match=match):
            f()


def test_layer_offsets_helper():
    assert ops.layer_offsets([3, 1, 2]) == [0, 3, 4, 6]
    with pytest.raises(ValueError, match="at least one parameter"):
        ops.layer_offsets([3, 0])


def test_bad_input():
    x = torch.randn(3, 10)
    off = [0, 4, 10]
    with pytest.raises(RuntimeError, match="2-D"):
        ops.pairwise_sq_dists(torch.randn(30), [0, 30])
    with pytest.raises(RuntimeError, match="float32 or float64"):
        ops.pairwise_sq_dists(torch.ones(3, 10, dtype=torch.int64), off)
    with pytest.raises(RuntimeError, match=r"weights must have shape \(L, n, n\) = \(2, 3, 3\)"):
        ops.robust_consistency(x, off, weights=torch.ones(2, 4, 4))
    with pytest.raises(RuntimeError, match=r"weights must have shape"):
        ops.irls_consensus(torch.ones(3, 3, 3), x, off)
    with pytest.raises(RuntimeError, match="coeffs must have shape"):
        ops.pairwise_mix(x, off, torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="weights must be finite and non-negative"):
        ops.irls_consensus(-torch.ones(2, 3, 3), x, off)
    with pytest.raises(RuntimeError, match="weights must be finite and non-negative"):
        ops.robust_consistency(x, off, weights=torch.full((2, 3, 3), math.nan))
    D = ops.pairwise_sq_dists(x, off)
    with pytest.raises(ValueError, match="sigma must be non-negative"):
        ops.irls_weights(D, -1.0)
    with pytest.raises(RuntimeError, match="sigma must be non-negative"):
        ops.irls_weights(D, torch.tensor([1.0, -0.5]))
    with pytest.raises(RuntimeError, match="sigma must be non-negative"):
        ops.robust_consistency(x, off, torch.tensor(math.nan))
    with pytest.raises(RuntimeError, match=r"one value per layer pair \(shape \(2,\)\)"):
        ops.irls_weights(D, torch.ones(3))
    with pytest.raises(RuntimeError, match="sq_dists must be an \\(L, n, n\\)"):
        ops.irls_weights(torch.zeros(2, 3, 4), 1.0)
    with pytest.raises(RuntimeError, match="sq_dists must be non-negative"):
        ops.irls_weights(-D - 1, 1.0)
    with pytest.raises(RuntimeError, match="exactly one of sigma"):
        torch.ops.mtlkernels.robust_consistency(x, off, None, None)
    with pytest.raises(RuntimeError, match="exactly one of sigma"):
        torch.ops.mtlkernels.robust_consistency(x, off, torch.tensor(1.0), torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="pass sigma"):
        ops.robust_consistency(x, off)
    with pytest.raises(RuntimeError, match="sigma is treated as a constant"):
        ops.robust_consistency(x, off, torch.tensor(1.0, requires_grad=True))
    with pytest.raises(RuntimeError, match="weights is treated as a constant"):
        ops.irls_consensus(torch.ones(2, 3, 3, requires_grad=True), x, off)
    with pytest.raises(TypeError, match="sigma must be a number or a tensor"):
        ops.irls_weights(D, "1")


# ---- CUDA against CPU -----------------------------------------------------------------------------


@pytest.mark.parametrize("device", devices()[1:])
@pytest.mark.parametrize("n", [2, 4, 7, 16, 64, 70])
def test_cuda_matches_cpu(device, n):
    sizes = [1, 5000, 33, 70001]
    x, off = make(n, sizes, seed=23, dtype=torch.float32)
    xc = x.to(device)
    assert rel_err(ops.pairwise_sq_dists(xc, off), ops.pairwise_sq_dists(x, off, fp64_accumulate=True)) < 1e-6
    assert rel_err(ops.pairwise_sq_dists(xc, off, fp64_accumulate=True), ops.pairwise_sq_dists(x.double(), off)) < 1e-7
    c = torch.rand(len(sizes), n, n)
    assert rel_err(ops.irls_consensus(c.to(device), xc, off), ops.irls_consensus(c, x, off)) < 1e-6
    assert rel_err(ops.robust_consistency(xc, off, 0.5), ops.robust_consistency(x, off, 0.5)) < 1e-6


# ---- CUDA paths: gradients, streams, devices, the size limit --------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,sizes", [(1, [3]), (2, [1, 4]), (7, [33, 1, 700]), (70, [5, 40])])
def test_backward_matches_reference(device, dtype, n, sizes):
    """Gradients of pairwise_sq_dists, irls_weights, irls_consensus and pairwise_mix
    (through the ops' kernels on the device) against autograd through the reference."""
    x, off = make(n, sizes, seed=40, dtype=dtype, device=device)
    L = len(sizes)
    G = randn(L, n, n, seed=41, dtype=dtype, device=device)  # upstream gradients
    Y = randn(n, x.shape[1], seed=42, dtype=dtype, device=device)
    c = torch.rand(L, n, n, generator=torch.Generator().manual_seed(43), dtype=F64).to(dtype=dtype, device=device)
    sigma = torch.linspace(0.5, 2.0, L, dtype=F64)
    cases = [
        (lambda v: (ops.pairwise_sq_dists(v, off) * G).sum(), lambda v: (ref.pairwise_sq_dists(v, off) * G.double()).sum()),
        (lambda v: (ops.irls_consensus(c, v, off) * Y).sum(), lambda v: (ref.irls_consensus(c.double(), v, off) * Y.double()).sum()),
        (lambda v: (ops.pairwise_mix(v, off, c, True) * Y).sum(),
         lambda v: (ref.pairwise_mix(v, off, c.double(), True) * Y.double()).sum()),
        (lambda v: ops.irls_weights(ops.pairwise_sq_dists(v, off), sigma.to(device))[1].sum(),
         lambda v: ref.irls_weights(ref.pairwise_sq_dists(v, off), sigma)[1].sum()),
    ]
    for i, (fn, rfn) in enumerate(cases):
        xa = x.clone().requires_grad_()
        (ga,) = torch.autograd.grad(fn(xa), xa)
        xr = x.detach().to(torch.float64, copy=True).requires_grad_()  # on x's device, like w
        (gr,) = torch.autograd.grad(rfn(xr), xr)
        assert ga.dtype == dtype and ga.device == x.device
        assert rel_err(ga, gr) <= 10 * TOL[dtype], i  # (absolute when the gradient is 0: n = 1)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1])
def test_no_or_one_network(device, dtype, n):
    """n = 0 or 1: no pairs; every op returns its shape (zeros where a sum is empty)."""
    x = randn(n, 10, seed=49, dtype=dtype, device=device)
    off = [0, 4, 10]
    c = torch.ones(2, n, n, dtype=dtype, device=device)
    D = ops.pairwise_sq_dists(x, off)
    assert D.shape == (2, n, n) and D.device == x.device and (D == 0).all()
    w, rho = ops.irls_weights(D, 1.0)
    assert w.shape == rho.shape == (2, n, n) and (rho == 0).all()
    assert float(ops.robust_consistency(x, off, 1.0)) == 0 and float(ops.robust_consistency(x, off, weights=c)) == 0
    assert torch.equal(ops.irls_consensus(c, x, off), x)  # no other network: keep its own parameters
    assert torch.equal(ops.pairwise_mix(x, off, c), x)  # self coefficient 1, no differences
    assert torch.equal(ops.pairwise_mix(x, off, c, True), x)


def _every_op(x, off, c, sigma):
    """Every op of the family on (x, off), as a list of results."""
    D = ops.pairwise_sq_dists(x, off)
    return [D, ops.pairwise_sq_dists(x, off, fp64_accumulate=True), *ops.irls_weights(D, sigma),
            ops.robust_consistency(x, off, sigma), ops.robust_consistency(x, off, weights=c),
            ops.irls_consensus(c, x, off), ops.pairwise_mix(x, off, c), ops.pairwise_mix(x, off, c, True)]


def _every_ref(x, off, c, sigma):
    x, c, sigma = x.double().cpu(), c.double().cpu(), sigma.cpu()
    D = ref.pairwise_sq_dists(x, off)
    return [D, D, *ref.irls_weights(D, sigma), ref.robust_consistency(x, off, sigma=sigma),
            ref.robust_consistency(x, off, weights=c), ref.irls_consensus(c, x, off),
            ref.pairwise_mix(x, off, c), ref.pairwise_mix(x, off, c, True)]


def _family_case(dtype, device):
    x, off = make(70, [33, 1, 700], seed=44, dtype=dtype, device=device)
    c = torch.rand(3, 70, 70, generator=torch.Generator().manual_seed(45), dtype=F64).to(dtype=dtype, device=device)
    return x, off, c, torch.tensor([2.0, 0.5, 40.0], dtype=F64, device=device)


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES)
def test_side_stream(dtype):
    x, off, c, sigma = _family_case(dtype, "cuda")
    got = on_side_stream(lambda: _every_op(x, off, c, sigma))
    for i, (o, e) in enumerate(zip(got, _every_ref(x, off, c, sigma))):
        assert rel_err(o, e) < 10 * TOL[dtype], i


@multi_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_on_cuda0_while_cuda1_is_current(dtype):
    x, off, c, sigma = _family_case(dtype, "cuda:0")
    got = on_other_device(lambda: _every_op(x, off, c, sigma))
    for i, (o, e) in enumerate(zip(got, _every_ref(x, off, c, sigma))):
        assert o.device == x.device, i
        assert rel_err(o, e) < 10 * TOL[dtype], i


# The CUDA kernel of pairwise_sq_dists runs one block row per pair of 64-row super-tiles,
# at most 65,535: n <= 361 * 64 = 23,104 networks.
N_MAX_CUDA = 23104


@cuda_only
def test_sq_dists_largest_n():
    """n = 23,104 (65,341 super-tile pairs, the largest grid): sampled entries against the
    difference form. One layer of 2 columns, float32: 2 GiB of output."""
    n = N_MAX_CUDA
    x = randn(n, 2, seed=46, dtype=torch.float32, device="cuda")
    D = ops.pairwise_sq_dists(x, [0, 2])
    assert D.shape == (1, n, n)
    gen = torch.Generator().manual_seed(47)
    i = torch.cat([torch.randint(0, n, (2000,), generator=gen), torch.tensor([0, 0, n - 1, n - 64, 63])])
    j = torch.cat([torch.randint(0, n, (2000,), generator=gen), torch.tensor([n - 1, 64, 0, n - 65, 64])])
    xd = x.double().cpu()
    want = ((xd[i] - xd[j]) ** 2).sum(1)
    got = D[0, i.cuda(), j.cuda()].cpu()
    assert rel_err(got, want) < TOL[torch.float32]
    assert (D[0, i.cuda(), i.cuda()] == 0).all()
    del D
    torch.cuda.empty_cache()


@cuda_only
def test_sq_dists_too_many_networks_says_so():
    """n = 23,105 is refused with the kernel's limit, before the float64 partial sums
    (n^2 / 2 doubles, as large as the output) are allocated: no out-of-memory error, and
    the peak memory of the refused call is at most the output's."""
    n = N_MAX_CUDA + 1
    x = randn(n, 2, seed=48, dtype=torch.float32, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with pytest.raises(RuntimeError, match=r"pairwise_sq_dists: .*at most") as err:
        ops.pairwise_sq_dists(x, [0, 2])
    assert "out of memory" not in str(err.value)
    peak = torch.cuda.max_memory_allocated() - before
    out_bytes = n * n * 4
    assert peak < 1.5 * out_bytes, (peak, out_bytes)
    torch.cuda.empty_cache()
