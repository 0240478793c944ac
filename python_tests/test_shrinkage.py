"""Shrinkage family: soft_threshold, elastic_net_prox, prox_grad_step, group ops."""

import math

import pytest
import torch

from mtlkernels import ops
from mtlkernels import reference as ref
from mtlkernels.testing import (
    TOL, cuda_only, devices, multi_gpu, non_contiguous, on_other_device, on_side_stream, randn, rel_err,
)

DTYPES = [torch.float32, torch.float64]
SHAPES = [(0,), (1,), (7,), (3, 5), (2, 3, 5), (33, 17), (1, 1, 1)]


def thresholds(shape, seed, dtype, device):
    """Scalar, per-row, per-column and full-shape thresholds that broadcast to `shape`."""
    out = [0.0, 0.4, torch.tensor(0.3, dtype=torch.float64)]
    if len(shape) >= 1:
        out.append(randn(shape[-1], seed=seed + 1, dtype=dtype, device=device).abs())
    if len(shape) >= 2:
        out.append(randn(shape[-2], 1, seed=seed + 2, dtype=dtype, device=device).abs())
        out.append(randn(*shape, seed=seed + 3, dtype=dtype, device=device).abs())
    if len(shape) == 3:  # per matrix of a batch, and varying along non-adjacent dims
        out.append(randn(shape[0], 1, 1, seed=seed + 4, dtype=dtype, device=device).abs())
        out.append(randn(shape[0], 1, shape[2], seed=seed + 5, dtype=dtype, device=device).abs())
    return out


def check(out, expected, dtype):
    assert out.shape == expected.shape and out.dtype == dtype
    assert out.is_contiguous()
    assert rel_err(out, expected) <= TOL[dtype]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_elementwise_ops_match_reference(device, dtype, shape):
    x = randn(*shape, seed=1, dtype=dtype, device=device)
    g = randn(*shape, seed=2, dtype=dtype, device=device)
    for i, tau in enumerate(thresholds(shape, 10, dtype, device)):
        for xin in (x, non_contiguous(x)):
            check(ops.soft_threshold(xin, tau), ref.soft_threshold(x, tau), dtype)
            check(ops.elastic_net_prox(xin, tau, 0.7), ref.elastic_net_prox(x, tau, 0.7), dtype)
            for l2 in (0.0, 0.5):
                check(ops.prox_grad_step(xin, g, 0.3, tau, l2), ref.prox_grad_step(x, g, 0.3, tau, l2), dtype)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
def test_inplace_variants_write_into_x(device, dtype):
    x = randn(6, 9, seed=3, dtype=dtype, device=device)
    g = randn(6, 9, seed=4, dtype=dtype, device=device)
    tau = randn(9, seed=5, dtype=dtype, device=device).abs()
    labels = torch.tensor([0, 1, 1, 2, 0, 2, 2, 1, 0], device=device)
    cases = [
        (ops.soft_threshold_, (tau,), ref.soft_threshold(x, tau)),
        (ops.elastic_net_prox_, (0.2, 0.5), ref.elastic_net_prox(x, 0.2, 0.5)),
        (ops.prox_grad_step_, (g, 0.1, tau, 0.3), ref.prox_grad_step(x, g, 0.1, tau, 0.3)),
        (ops.group_soft_threshold_, (0.8, 1, labels, 0.1), ref.group_soft_threshold(x, 0.8, 1, labels, 0.1)),
        (ops.group_soft_threshold_, (1.5, 0), ref.group_soft_threshold(x, 1.5, 0)),
        (ops.group_prox_grad_step_, (g, 0.2, 1.0, 1), ref.group_prox_grad_step(x, g, 0.2, 1.0, 1)),
        (ops.group_prox_grad_step_, (g, 0.2, 1.0, 0, torch.tensor([0, 0, 1, 1, 2, 2], device=device)),
         ref.group_prox_grad_step(x, g, 0.2, 1.0, 0, torch.tensor([0, 0, 1, 1, 2, 2], device=device))),
    ]
    for fn, args, expected in cases:
        y = x.clone()
        assert fn(y, *args) is y
        assert rel_err(y, expected) <= TOL[dtype], fn.__name__
        # a non-contiguous x is updated through the view
        buf = torch.zeros(6, 18, dtype=dtype, device=device)
        view = buf[:, ::2]
        view.copy_(x)
        assert fn(view, *args) is view
        assert rel_err(view, expected) <= TOL[dtype], fn.__name__
        assert torch.all(buf[:, 1::2] == 0)


# (300, 257) and (1000, 70): column groups over many rows, summed in several row chunks
GROUP_SHAPES = [(0, 5), (4, 0), (1, 1), (1, 9), (9, 1), (7, 13), (40, 70), (3, 2000), (2500, 3), (300, 257),
                (1000, 70)]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GROUP_SHAPES)
def test_group_ops_match_reference(device, dtype, shape):
    m, n = shape
    x = randn(m, n, seed=7, dtype=dtype, device=device)
    g = randn(m, n, seed=8, dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(9)
    for dim in (0, 1, -1):
        size = x.shape[dim]
        labels = torch.randint(0, 4, (size,), generator=gen).to(device)
        typical = math.sqrt(x.shape[1 - (dim % 2)]) if size else 1.0  # norms are around this
        cases = [(0.5 * typical, None), (0.0, None), (randn(x.shape[1 - dim % 2], seed=11, device=device).abs() * typical, None),
                 (0.3 * typical, labels), (torch.rand(4, generator=gen, dtype=torch.float64).to(device) * typical, labels)]
        for tau, groups in cases:
            if isinstance(tau, torch.Tensor):
                tau = tau.to(dtype)
            for l1 in (0.0, 0.3):
                expected = ref.group_soft_threshold(x, tau, dim, groups, l1)
                for xin in (x, non_contiguous(x)):
                    check(ops.group_soft_threshold(xin, tau, dim, groups, l1), expected, dtype)
                check(ops.group_prox_grad_step(x, g, 0.25, tau, dim, groups, l1),
                      ref.group_prox_grad_step(x, g, 0.25, tau, dim, groups, l1), dtype)


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_isa_variants(isa, dtype, monkeypatch):
    # The elementwise and row-group CPU loops are compiled per ISA and picked at run time
    # (a cap above what the CPU has falls back to the widest it has).
    monkeypatch.setenv("MTLKERNELS_CPU_ISA", isa)
    x = randn(37, 131, seed=40, dtype=dtype)  # odd sizes: vector bodies and tails
    g = randn(37, 131, seed=41, dtype=dtype)
    x[3, 7] = float("nan")  # NaN where the reference has it (one element, or its row's group)

    def same(out, expected):
        assert torch.equal(out.isnan(), expected.isnan())
        check(out.nan_to_num(), expected.nan_to_num(), dtype)

    for tau in thresholds((37, 131), 42, dtype, "cpu"):
        same(ops.soft_threshold(x, tau), ref.soft_threshold(x, tau))
        same(ops.prox_grad_step(x, g, 0.3, tau, 0.1), ref.prox_grad_step(x, g, 0.3, tau, 0.1))
    for l1 in (0.0, 0.2):
        same(ops.group_soft_threshold(x, 1.5, 1, None, l1), ref.group_soft_threshold(x, 1.5, 1, None, l1))
        same(ops.group_prox_grad_step(x, g, 0.3, 1.5, 1, None, l1), ref.group_prox_grad_step(x, g, 0.3, 1.5, 1, None, l1))


def test_group_threshold_zeroes_and_keeps_groups():
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=torch.float64)  # row norms 5 and 0.5
    out = ops.group_soft_threshold(x, 1.0, dim=1)
    torch.testing.assert_close(out[0], x[0] * (1 - 1 / 5))
    assert torch.all(out[1] == 0)
    # a threshold of zero is the identity
    assert torch.equal(ops.group_soft_threshold(x, 0.0, dim=0), x)


def test_nan_propagates():
    x = torch.tensor([[1.0, float("nan"), -3.0], [2.0, 0.1, -0.2]])
    out = ops.soft_threshold(x, 0.5)
    assert torch.isnan(out[0, 1]) and not torch.isnan(out[0, [0, 2]]).any()
    grp = ops.group_soft_threshold(x, 0.5, dim=1)
    assert torch.isnan(grp[0]).all() and not torch.isnan(grp[1]).any()
    labels = torch.tensor([0, 1, 0])
    grp = ops.group_soft_threshold(x, 0.5, dim=1, groups=labels)
    assert torch.isnan(grp[0, 1]) and not torch.isnan(grp[0, [0, 2]]).any()
    col = ops.group_soft_threshold(x, 0.5, dim=0)
    assert torch.isnan(col[:, 1]).all() and not torch.isnan(col[:, [0, 2]]).any()
    tall = torch.randn(1000, 70, generator=torch.Generator().manual_seed(0))  # the row-chunk path
    tall[777, 5] = float("nan")
    col = ops.group_soft_threshold(tall, 0.5, dim=0)
    assert torch.isnan(col[:, 5]).all() and not torch.isnan(col[:, :5]).any() and not torch.isnan(col[:, 6:]).any()


# ---- opcheck, gradcheck, torch.compile ------------------------------------------------


def _samples(device, requires_grad):
    x = randn(5, 7, seed=21, device=device).requires_grad_(requires_grad)
    g = randn(5, 7, seed=22, device=device)
    col = randn(7, seed=23, device=device).abs()
    labels = torch.tensor([0, 1, 1, 2, 0, 2, 2], device=device)
    s = torch.tensor(0.4, dtype=torch.float64)
    T = torch.ops.mtlkernels
    out_of_place = [
        (T.soft_threshold, (x, s)),
        (T.soft_threshold, (x, col)),
        (T.elastic_net_prox, (x, col, 0.5)),
        (T.group_soft_threshold, (x, s, 1, None, 0.0)),
        (T.group_soft_threshold, (x, s, 0, None, 0.2)),
        (T.group_soft_threshold, (x, torch.rand(3, dtype=torch.float64, device=device), 1, labels, 0.1)),
        (T.prox_grad_step, (x, g, 0.1, col, 0.2)),
        (T.group_prox_grad_step, (x, g, 0.1, s, 1, labels, 0.0)),
        (T.group_prox_grad_step, (x, g.clone().requires_grad_(requires_grad), 0.3, s, 0, None, 0.1)),
    ]
    return out_of_place


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, requires_grad):
    out_of_place = _samples(device, requires_grad)
    for op, args in out_of_place:
        torch.library.opcheck(op, args)
    if not requires_grad:
        x = args[0].clone()
        T = torch.ops.mtlkernels
        s = torch.tensor(0.4, dtype=torch.float64)
        for op, a in [(T.soft_threshold_, (x.clone(), s)), (T.elastic_net_prox_, (x.clone(), s, 0.1)),
                      (T.prox_grad_step_, (x.clone(), x.clone(), 0.1, s, 0.0)),
                      (T.group_soft_threshold_, (x.clone(), s, 1, None, 0.0)),
                      (T.group_prox_grad_step_, (x.clone(), x.clone(), 0.1, s, 0, None, 0.0))]:
            torch.library.opcheck(op, a)


def _away_from_kinks(x, tau):
    """Move entries at least 1e-2 away from |x| = tau, where the derivative jumps."""
    near = (x.abs() - tau).abs() < 1e-2
    return torch.where(near, x * 1.5 + 0.1 * torch.sign(x), x)


@pytest.mark.parametrize("device", devices())
def test_gradcheck(device):
    x = _away_from_kinks(randn(4, 6, seed=31, device=device), 0.5).requires_grad_()
    col = torch.full((6,), 0.5, dtype=torch.float64, device=device)
    assert torch.autograd.gradcheck(lambda v: ops.soft_threshold(v, 0.5), (x,))
    assert torch.autograd.gradcheck(lambda v: ops.soft_threshold(v, col), (x,))
    assert torch.autograd.gradcheck(lambda v: ops.elastic_net_prox(v, 0.5, 0.3), (x,))
    y = randn(4, 6, seed=32, device=device).requires_grad_()
    labels = torch.tensor([0, 1, 1, 0, 2, 2], device=device)
    # thresholds chosen so that some groups are active and some are zeroed, none at the boundary
    for tau, dim, groups, l1 in [(2.0, 1, None, 0.0), (1.5, 0, None, 0.0), (0.8, 1, labels, 0.0), (1.0, 1, None, 0.05),
                                 (torch.tensor([0.5, 3.0, 0.1], dtype=torch.float64, device=device), 1, labels, 0.0)]:
        v = _away_from_kinks(y.detach(), l1).requires_grad_() if l1 else y
        assert torch.autograd.gradcheck(lambda a: ops.group_soft_threshold(a, tau, dim, groups, l1), (v,))


def test_gradient_zero_on_zeroed_group():
    x = torch.tensor([[0.1, 0.2], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    ops.group_soft_threshold(x, 1.0, dim=1).sum().backward()
    assert torch.all(x.grad[0] == 0) and torch.all(x.grad[1] != 0)


def test_torch_compile_fullgraph():
    x = randn(8, 10, seed=41, dtype=torch.float32)
    g = randn(8, 10, seed=42, dtype=torch.float32)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])

    def f(x, g):
        a = ops.soft_threshold(x, 0.3)
        b = ops.elastic_net_prox(a, 0.1, 0.2)
        c = ops.group_soft_threshold(b, 0.5, 1, labels, 0.05)
        d = ops.prox_grad_step(c, g, 0.1, 0.2)
        e = ops.group_prox_grad_step(d, g, 0.1, 0.3, 0)
        ops.soft_threshold_(e, 0.01)
        return e

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, g), f(x, g))


# ---- bad input -----------------------------------------------------------------------


def test_bad_thresholds():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="non-negative"):
        ops.soft_threshold(x, -0.1)
    with pytest.raises(ValueError, match="non-negative"):
        ops.soft_threshold(x, float("nan"))
    with pytest.raises(TypeError, match="number or a tensor"):
        ops.soft_threshold(x, "0.1")
    with pytest.raises(RuntimeError, match="non-negative"):
        ops.soft_threshold(x, torch.tensor([0.1, -0.1, 0.2, 0.3]))
    with pytest.raises(RuntimeError, match="non-negative"):
        ops.soft_threshold(x, torch.tensor([0.1, float("nan"), 0.2, 0.3]))
    with pytest.raises(RuntimeError, match="does not broadcast"):
        ops.soft_threshold(x, torch.rand(3))
    with pytest.raises(RuntimeError, match="does not broadcast"):
        ops.soft_threshold(x, torch.rand(2, 3, 4))
    with pytest.raises(RuntimeError, match="l2 must be finite and non-negative"):
        ops.elastic_net_prox(x, 0.1, -1.0)
    with pytest.raises(RuntimeError, match="treated as a constant"):
        ops.soft_threshold(x, torch.rand(4, requires_grad=True))


def test_bad_dtypes_and_shapes():
    with pytest.raises(RuntimeError, match="must be float32 or float64, got Long"):
        ops.soft_threshold(torch.arange(4), 0.1)
    with pytest.raises(RuntimeError, match="must be float32 or float64, got Half"):
        ops.soft_threshold(torch.ones(4, dtype=torch.half), 0.1)
    x = torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="grad has shape"):
        ops.prox_grad_step(x, torch.randn(4, 3), 0.1, 0.1)
    with pytest.raises(RuntimeError, match="grad is Double"):
        ops.prox_grad_step(x, torch.randn(3, 4, dtype=torch.float64), 0.1, 0.1)
    with pytest.raises(RuntimeError, match="lr must be finite and positive"):
        ops.prox_grad_step(x, x, 0.0, 0.1)
    with pytest.raises(RuntimeError, match="lr must be finite and positive"):
        ops.group_prox_grad_step(x, x, -1.0, 0.1)


def test_bad_group_input():
    x = torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="2-D matrix"):
        ops.group_soft_threshold(torch.randn(4), 0.1)
    with pytest.raises(RuntimeError, match="dim must be 0 or 1"):
        ops.group_soft_threshold(x, 0.1, dim=2)
    with pytest.raises(RuntimeError, match="groups has 3 labels but x has 4"):
        ops.group_soft_threshold(x, 0.1, dim=1, groups=torch.tensor([0, 1, 0]))
    with pytest.raises(RuntimeError, match="out of range for 2 groups"):
        ops.group_soft_threshold(x, torch.tensor([0.1, 0.2]), dim=1, groups=torch.tensor([0, 1, 2, 0]))
    with pytest.raises(RuntimeError, match="non-negative, found -1"):
        ops.group_soft_threshold(x, 0.1, dim=1, groups=torch.tensor([0, 1, -1, 0]))
    with pytest.raises(RuntimeError, match="integer tensor of group labels"):
        ops.group_soft_threshold(x, 0.1, dim=1, groups=torch.tensor([0.0, 1.0, 1.0, 0.0]))
    with pytest.raises(RuntimeError, match="tau has 2 values but there are 3 groups"):
        ops.group_soft_threshold(x, torch.tensor([0.1, 0.2]), dim=1)
    with pytest.raises(RuntimeError, match="l1 must be finite and non-negative"):
        ops.group_soft_threshold(x, 0.1, dim=1, l1=-0.5)


def test_inplace_solver_steps_refuse_autograd():
    x = torch.randn(3, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        ops.soft_threshold_(x, 0.1)
    with pytest.raises(RuntimeError, match="not differentiable"):
        ops.prox_grad_step_(x.detach().clone(), x, 0.1, 0.1)
    with torch.no_grad():
        ops.prox_grad_step_(x, torch.randn(3, 4), 0.1, 0.1)
    # the out-of-place fused steps are differentiable (python_tests/test_op_safety.py)
    assert ops.prox_grad_step(x, torch.randn(3, 4), 0.1, 0.1).requires_grad


@cuda_only
def test_mismatched_devices():
    x = torch.randn(3, 4, device="cuda")
    with pytest.raises(RuntimeError, match="is on cpu but x is on cuda"):
        ops.soft_threshold(x, torch.rand(4))
    with pytest.raises(RuntimeError, match="grad is on"):
        ops.prox_grad_step(x, torch.randn(3, 4), 0.1, 0.1)
    with pytest.raises(RuntimeError, match="groups is on"):
        ops.group_soft_threshold(x, 0.1, dim=1, groups=torch.tensor([0, 1, 0, 1]))


# ---- the CUDA kernels' paths (python_tests run on CPU too where a case is device-neutral) ----

# One call of every op on (x, g): (name, fn(x, g) -> result, reference(x, g) in float64).
# In-place variants run on a clone, so that x stays intact.
def _every_op(tau, labels_row, labels_col, lr=0.3, l2=0.2, l1=0.1):
    def inplace(fn, args):
        return lambda x, g: fn(x.clone(), *args(g))

    return [
        ("soft_threshold", lambda x, g: ops.soft_threshold(x, tau), lambda x, g: ref.soft_threshold(x, tau)),
        ("soft_threshold_", inplace(ops.soft_threshold_, lambda g: (tau,)), lambda x, g: ref.soft_threshold(x, tau)),
        ("elastic_net_prox", lambda x, g: ops.elastic_net_prox(x, tau, l2),
         lambda x, g: ref.elastic_net_prox(x, tau, l2)),
        ("elastic_net_prox_", inplace(ops.elastic_net_prox_, lambda g: (tau, l2)),
         lambda x, g: ref.elastic_net_prox(x, tau, l2)),
        ("prox_grad_step", lambda x, g: ops.prox_grad_step(x, g, lr, tau, l2),
         lambda x, g: ref.prox_grad_step(x, g, lr, tau, l2)),
        ("prox_grad_step_", inplace(ops.prox_grad_step_, lambda g: (g, lr, tau, l2)),
         lambda x, g: ref.prox_grad_step(x, g, lr, tau, l2)),
        ("group_soft_threshold rows", lambda x, g: ops.group_soft_threshold(x, 4 * tau, 1, None, l1),
         lambda x, g: ref.group_soft_threshold(x, 4 * tau, 1, None, l1)),
        ("group_soft_threshold_ cols", inplace(ops.group_soft_threshold_, lambda g: (4 * tau, 0, None, l1)),
         lambda x, g: ref.group_soft_threshold(x, 4 * tau, 0, None, l1)),
        ("group_soft_threshold labels", lambda x, g: ops.group_soft_threshold(x, 2 * tau, 1, labels_row, l1),
         lambda x, g: ref.group_soft_threshold(x, 2 * tau, 1, labels_row, l1)),
        ("group_prox_grad_step labels dim 0", lambda x, g: ops.group_prox_grad_step(x, g, lr, 2 * tau, 0, labels_col, l1),
         lambda x, g: ref.group_prox_grad_step(x, g, lr, 2 * tau, 0, labels_col, l1)),
        ("group_prox_grad_step_ rows", inplace(ops.group_prox_grad_step_, lambda g: (g, lr, 4 * tau, 1, None, l1)),
         lambda x, g: ref.group_prox_grad_step(x, g, lr, 4 * tau, 1, None, l1)),
        ("group_prox_grad_step cols", lambda x, g: ops.group_prox_grad_step(x, g, lr, 4 * tau, 0),
         lambda x, g: ref.group_prox_grad_step(x, g, lr, 4 * tau, 0)),
    ]


def _labels(n, groups, seed, device):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, groups, (n,), generator=gen).to(device)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 7), (1, 1), (1, 13), (9, 1), (37, 21), (130, 333)])
def test_backward_matches_reference(device, dtype, shape):
    """d/dx of the differentiable ops against autograd through the float64 reference."""
    m, n = shape
    x = randn(m, n, seed=50, dtype=dtype, device=device)
    x = _away_from_kinks(_away_from_kinks(x, 0.4), 0.1)
    w = randn(m, n, seed=51, dtype=dtype, device=device)  # the upstream gradient
    col = (0.2 + randn(n, seed=52, device=device).abs() * 0.3).to(dtype)
    labels = _labels(n, min(3, n), 53, device)  # (test_group_backward_sparse_labels: labels >= n)
    # group thresholds well inside the spread of the group norms (no group at its kink)
    rn = x.double().norm(dim=1).median().item() if m and n else 1.0
    cn = x.double().norm(dim=0).median().item() if m and n else 1.0
    cases = [
        (lambda v: ops.soft_threshold(v, 0.4), lambda v: ref.soft_threshold(v, 0.4)),
        (lambda v: ops.soft_threshold(v, col), lambda v: ref.soft_threshold(v, col.double())),
        (lambda v: ops.elastic_net_prox(v, 0.4, 0.3), lambda v: ref.elastic_net_prox(v, 0.4, 0.3)),
        (lambda v: ops.group_soft_threshold(v, 0.7 * rn, 1), lambda v: ref.group_soft_threshold(v, 0.7 * rn, 1)),
        (lambda v: ops.group_soft_threshold(v, 0.7 * cn, 0, None, 0.1),
         lambda v: ref.group_soft_threshold(v, 0.7 * cn, 0, None, 0.1)),
        (lambda v: ops.group_soft_threshold(v, 0.3 * rn, 1, labels), lambda v: ref.group_soft_threshold(v, 0.3 * rn, 1, labels)),
    ]
    for i, (fn, rfn) in enumerate(cases):
        xa = x.clone().requires_grad_()
        (ga,) = torch.autograd.grad((fn(xa) * w).sum(), xa)
        xr = x.detach().to(torch.float64, copy=True).requires_grad_()  # on x's device, like w
        (gr,) = torch.autograd.grad((rfn(xr) * w.double()).sum(), xr)
        assert ga.dtype == dtype and ga.shape == x.shape and ga.device == x.device
        assert rel_err(ga, gr) <= TOL[dtype], i


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (1, 1), (1, 7), (5, 1), (9, 13)])
def test_every_op_small_and_empty(device, dtype, shape):
    """Every op, in place too, on empty, one-row / one-column and non-contiguous inputs."""
    m, n = shape
    x = randn(m, n, seed=56, dtype=dtype, device=device)
    g = randn(m, n, seed=57, dtype=dtype, device=device)
    cases = _every_op(0.4, _labels(n, max(1, min(3, n)), 58, device), _labels(m, max(1, min(3, m)), 59, device))
    for name, fn, rfn in cases:
        expected = rfn(x, g)
        check(fn(x, g), expected, dtype)
        check(fn(non_contiguous(x), non_contiguous(g)), expected, dtype)


def test_group_backward_sparse_labels():
    """Labels that skip values (groups 1-4 empty): the backward sums over max label + 1 groups."""
    x = randn(2, 3, seed=54).requires_grad_()
    labels = torch.tensor([0, 5, 5])  # 6 groups (1 to 4 empty), 3 labels
    (g,) = torch.autograd.grad(ops.group_soft_threshold(x, 0.5, 1, labels).sum(), x)
    xr = x.detach().requires_grad_()
    (gr,) = torch.autograd.grad(ref.group_soft_threshold(xr, 0.5, 1, labels).sum(), xr)
    assert rel_err(g, gr) <= TOL[torch.float64]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [1, 3])
def test_unaligned_inputs(device, dtype, offset):
    """Views that start off a 16-byte boundary (the CUDA kernels' scalar fallback of the
    vectorised uniform-threshold loop): x, grad or both unaligned, in place too."""
    for n in (100, 10007):
        xb = randn(n + offset, seed=60, dtype=dtype, device=device)
        gb = randn(n + offset, seed=61, dtype=dtype, device=device)
        x, g = xb[offset:], gb[offset:]
        assert x.is_contiguous() and x.data_ptr() % 16 != 0
        xa, ga = x.clone(), g.clone()  # aligned copies
        for xin, gin in ((x, g), (x, ga), (xa, g)):
            check(ops.soft_threshold(xin, 0.4), ref.soft_threshold(xa, 0.4), dtype)
            check(ops.elastic_net_prox(xin, 0.4, 0.5), ref.elastic_net_prox(xa, 0.4, 0.5), dtype)
            check(ops.prox_grad_step(xin, gin, 0.3, 0.4, 0.2), ref.prox_grad_step(xa, ga, 0.3, 0.4, 0.2), dtype)
        for fn, args, expected in [
            (ops.soft_threshold_, (0.4,), ref.soft_threshold(xa, 0.4)),
            (ops.elastic_net_prox_, (0.4, 0.5), ref.elastic_net_prox(xa, 0.4, 0.5)),
            (ops.prox_grad_step_, (g, 0.3, 0.4, 0.2), ref.prox_grad_step(xa, ga, 0.3, 0.4, 0.2)),
        ]:
            buf = xb.clone()
            view = buf[offset:]
            assert fn(view, *args) is view
            assert rel_err(view, expected) <= TOL[dtype], fn.__name__
            assert torch.equal(buf[:offset], xb[:offset])  # nothing written before the view
        # a 2-D unaligned view for the group kernels
        m2 = randn(7 * 13 + offset, seed=62, dtype=dtype, device=device)[offset:].view(7, 13)
        check(ops.group_soft_threshold(m2, 1.0, 1), ref.group_soft_threshold(m2, 1.0, 1), dtype)
        check(ops.group_soft_threshold(m2, 1.0, 0, None, 0.1), ref.group_soft_threshold(m2, 1.0, 0, None, 0.1), dtype)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_every_op(device, dtype):
    """NaN in x (and in grad) propagates in every op: to its element for the elementwise
    ops, to its whole group for the group ops; everything else matches the reference."""
    m, n = 37, 131  # odd: vector bodies and tails
    x = randn(m, n, seed=70, dtype=dtype, device=device)
    g = randn(m, n, seed=71, dtype=dtype, device=device)
    x[3, 7] = float("nan")
    x[20, 100] = float("nan")
    g[30, 50] = float("nan")
    cases = _every_op(0.4, _labels(n, 5, 72, device), _labels(m, 4, 73, device))
    for name, fn, rfn in cases:
        out = fn(x, g)
        expected = rfn(x.double(), g.double())
        assert out.shape == x.shape and out.dtype == dtype
        nan = torch.isnan(expected)
        assert nan.any() and not nan.all(), name  # the case has NaN and finite values
        assert torch.equal(torch.isnan(out), nan), name
        assert rel_err(out.nan_to_num(), expected.nan_to_num()) <= TOL[dtype], name
    # the uniform-threshold vectorised loop and a threshold tensor, 1-D
    v = randn(1001, seed=74, dtype=dtype, device=device)
    v[0] = v[500] = v[1000] = float("nan")
    for tau in (0.3, randn(1001, seed=75, dtype=dtype, device=device).abs()):
        out = ops.soft_threshold(v, tau)
        assert torch.equal(torch.isnan(out), torch.isnan(v))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [1, 0])
def test_more_labelled_groups_than_shared_memory(device, dtype, dim):
    """More than 6,144 labelled groups (beyond the shared-memory accumulators of the
    CUDA kernel; the CPU has no limit): both group ops, in place too, scalar and
    per-group thresholds."""
    G, n = 6500, 13001
    labels = torch.arange(n, device=device) % G  # every group has 2 or 3 entries
    labels = labels[torch.randperm(n, generator=torch.Generator().manual_seed(80)).to(device)]
    shape = (3, n) if dim == 1 else (n, 3)
    x = randn(*shape, seed=81, dtype=dtype, device=device)
    g = randn(*shape, seed=82, dtype=dtype, device=device)
    per_group = (randn(G, seed=83, dtype=dtype, device=device).abs() + 0.5)
    for tau, l1 in [(1.0, 0.0), (per_group, 0.2)]:
        expected = ref.group_soft_threshold(x, tau, dim, labels, l1)
        assert 0 < int((expected == 0).sum()) < expected.numel()  # some groups zeroed, some kept
        check(ops.group_soft_threshold(x, tau, dim, labels, l1), expected, dtype)
        y = x.clone()
        ops.group_soft_threshold_(y, tau, dim, labels, l1)
        assert rel_err(y, expected) <= TOL[dtype]
        expected = ref.group_prox_grad_step(x, g, 0.5, tau, dim, labels, l1)
        check(ops.group_prox_grad_step(x, g, 0.5, tau, dim, labels, l1), expected, dtype)
        y = x.clone()
        ops.group_prox_grad_step_(y, g, 0.5, tau, dim, labels, l1)
        assert rel_err(y, expected) <= TOL[dtype]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("groups", [8, 7000])
def test_labelled_group_norms_deterministic(device, groups):
    """Labelled group shrinkage gives the same bits run after run (no order-dependent
    atomics): float64, groups of hundreds of entries (8 groups) and beyond shared memory."""
    m, n = 64, 4099 if groups == 8 else 20011
    x = randn(m, n, seed=90, device=device)
    g = randn(m, n, seed=91, device=device)
    labels = _labels(n, groups, 92, device)
    # the fused step along dim 0 when the groups are few (groups of 8 entries of a column)
    step_dim, step_labels = (0, _labels(m, groups, 93, device)) if groups == 8 else (1, labels)
    tau = 0.2 * math.sqrt(n / groups)

    def run():
        return (ops.group_soft_threshold(x, tau, 1, labels),
                ops.group_prox_grad_step(x, g, 0.3, tau, step_dim, step_labels))

    first = run()
    assert rel_err(first[0], ref.group_soft_threshold(x, tau, 1, labels)) <= TOL[torch.float64]
    assert rel_err(first[1], ref.group_prox_grad_step(x, g, 0.3, tau, step_dim, step_labels)) <= TOL[torch.float64]
    for _ in range(4):
        again = run()
        assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])


@cuda_only
@pytest.mark.parametrize("aligned", [True, False])
def test_cpu_cuda_bitwise(aligned):
    """Scalar-threshold shrinkage computes its threshold with one expression on both
    devices, so CPU and CUDA agree to the bit on the same float32 inputs (the fused step
    with a zero gradient, or with a power-of-two step size whose products lr * grad are
    exact, so that a fused multiply-add cannot round differently)."""
    n = 4099
    x = randn(n, seed=100, dtype=torch.float32)
    g = randn(n, seed=101, dtype=torch.float32)
    zero = torch.zeros(n, dtype=torch.float32)
    col = randn(n, seed=102, dtype=torch.float32).abs()
    l1, lr = 0.7, 0.3
    # the case can tell the two ways of rounding the threshold apart: float32(l1 * lr) and
    # float32(l1) * float32(lr) differ, and so do the soft-thresholds of x with each
    t_one, t_two = torch.tensor(l1 * lr, dtype=torch.float32), torch.tensor(l1, dtype=torch.float32) * torch.tensor(lr, dtype=torch.float32)
    assert t_one != t_two and not torch.equal(ref.soft_threshold(x, t_one), ref.soft_threshold(x, t_two))

    def on(device):
        def c(t):
            """A copy of t on the device, 16-byte aligned or one element past an aligned start."""
            if aligned:
                return t.to(device, copy=True)
            buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=device)
            buf[1:].copy_(t)
            assert buf[1:].data_ptr() % 16 != 0
            return buf[1:]

        out = [
            ops.soft_threshold(c(x), 0.4),
            ops.soft_threshold(c(x), c(col)),
            ops.elastic_net_prox(c(x), 0.4, 0.3),
            ops.prox_grad_step(c(x), c(zero), lr, l1),
            ops.prox_grad_step(c(x), c(zero), lr, l1, 0.2),
            ops.prox_grad_step(c(x), c(zero), lr, c(col)),
            ops.prox_grad_step(c(x), c(g), 0.25, l1, 0.2),
            ops.prox_grad_step(c(x), c(g), 0.25, c(col)),
        ]
        for fn, args in [(ops.soft_threshold_, (0.4,)), (ops.elastic_net_prox_, (0.4, 0.3)),
                         (ops.prox_grad_step_, (c(zero), lr, l1, 0.2)), (ops.prox_grad_step_, (c(g), 0.25, l1))]:
            y = c(x)  # a fresh copy (aligned or not, as c makes it)
            fn(y, *args)
            out.append(y)
        return [o.cpu() for o in out]

    for i, (a, b) in enumerate(zip(on("cpu"), on("cuda"))):
        assert torch.equal(a, b), i


@cuda_only
def test_side_stream():
    """Every op on a non-default stream (its kernels must run on the current stream)."""
    m, n = 37, 131
    for dtype in DTYPES:
        x = randn(m, n, seed=110, dtype=dtype, device="cuda")
        g = randn(m, n, seed=111, dtype=dtype, device="cuda")
        cases = _every_op(0.4, _labels(n, 5, 112, "cuda"), _labels(m, 4, 113, "cuda"))
        for name, fn, rfn in cases:
            out = on_side_stream(lambda: fn(x, g))
            assert rel_err(out, rfn(x.double(), g.double())) <= TOL[dtype], name


@multi_gpu
def test_inputs_on_cuda0_while_cuda1_is_current():
    m, n = 37, 131
    x = randn(m, n, seed=120, device="cuda:0")
    g = randn(m, n, seed=121, device="cuda:0")
    cases = _every_op(0.4, _labels(n, 5, 122, "cuda:0"), _labels(m, 4, 123, "cuda:0"))
    for name, fn, rfn in cases:
        out = on_other_device(lambda: fn(x, g))
        assert out.device == x.device, name
        assert rel_err(out, rfn(x, g)) <= TOL[torch.float64], name



@cuda_only
def test_host_syncs_per_call():
    """Issue 10, item 6: no host read-back with a number as threshold, one when the threshold
    is a device tensor (its value or its sign), one for labelled groups (label range and tau
    together), none for row and column groups."""
    from mtlkernels.testing import host_syncs

    x = randn(64, 256, seed=90, dtype=torch.float32, device="cuda")
    labels = torch.arange(256, device="cuda") % 8
    tau_dev = torch.tensor(0.5, device="cuda")
    assert host_syncs(lambda: x + 1) == 0 and host_syncs(lambda: x.sum().item()) == 1  # the counter itself
    assert host_syncs(lambda: ops.soft_threshold(x, 0.5)) == 0
    assert host_syncs(lambda: ops.prox_grad_step(x, x, 0.1, 0.5)) == 0
    assert host_syncs(lambda: ops.soft_threshold(x, tau_dev)) == 1
    assert host_syncs(lambda: ops.soft_threshold(x, torch.full((256,), 0.5, device="cuda"))) == 1
    assert host_syncs(lambda: ops.group_soft_threshold(x, 0.5, 1)) == 0
    assert host_syncs(lambda: ops.group_soft_threshold(x, 0.5, 0)) == 0
    assert host_syncs(lambda: ops.group_soft_threshold(x, 0.5, 1, labels)) == 1
    assert host_syncs(lambda: ops.group_prox_grad_step(x, x, 0.1, tau_dev, 1, labels)) == 1
