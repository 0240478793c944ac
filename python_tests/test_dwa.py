"""Tests of the CETL DWA penalty ops (Chen et al. 2018, eq. 11) against their pure-torch reference."""

import pytest
import torch

from mtlkernels import ops
from mtlkernels import reference as ref
from mtlkernels.testing import (
    TOL, cuda_only, devices, multi_gpu, non_contiguous, on_other_device, on_side_stream, randn, rel_err,
)

DTYPES = [torch.float32, torch.float64]
# A 0-dim tensor, size-1 and empty tensors, odd sizes, and one tensor spanning
# several CPU work items (32768 elements each) and CUDA chunks (16384 elements).
SHAPES = [(), (1,), (0,), (7, 3), (5, 0, 2), (33,), (3, 5, 7), (100003,), (64, 3, 3, 3)]


def rand(shape, *, seed, dtype, device):
    """mtlkernels.testing.randn, also for 0-dim shapes."""
    return randn(*(shape if shape != () else (1,)), seed=seed, dtype=dtype, device=device).reshape(shape)


def make(shapes, *, seed, dtype=torch.float64, device="cpu", grad=True):
    params = [rand(s, seed=seed + i, dtype=dtype, device=device) for i, s in enumerate(shapes)]
    anchors = [rand(s, seed=seed + 100 + i, dtype=dtype, device=device) for i, s in enumerate(shapes)]
    importance = [rand(s, seed=seed + 200 + i, dtype=dtype, device=device).abs() for i, s in enumerate(shapes)]
    if grad:
        for p in params:
            p.requires_grad_()
    return params, anchors, importance


def total_rel_err(outs, refs):
    num = sum(float((o.detach().double().cpu() - r.detach().double().cpu()).norm() ** 2) for o, r in zip(outs, refs)) ** 0.5
    den = sum(float(r.detach().double().cpu().norm() ** 2) for r in refs) ** 0.5
    return num / den if den else num


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference(device, dtype):
    params, anchors, importance = make(SHAPES, seed=1, dtype=dtype, device=device)
    lam = 0.7
    loss = ops.dwa_penalty(params, anchors, importance, lam)
    loss.backward()
    p64 = [p.detach().double().requires_grad_() for p in params]
    a64 = [a.double() for a in anchors]
    f64 = [f.double() for f in importance]
    loss_ref = ref.dwa_penalty(p64, a64, f64, lam)
    loss_ref.backward()
    assert loss.dtype == dtype and loss.shape == () and loss.device.type == device
    assert rel_err(loss, loss_ref) < TOL[dtype]
    assert total_rel_err([p.grad for p in params], [p.grad for p in p64]) < TOL[dtype]
    assert all(p.grad.shape == p.shape for p in params)


@pytest.mark.parametrize("device", devices())
def test_many_tensors(device):
    """More tensors than one CUDA launch takes (64): the batches add up."""
    shapes = [(i % 7 + 1, 3) for i in range(150)]
    params, anchors, importance = make(shapes, seed=2, device=device)
    loss = ops.dwa_penalty(params, anchors, importance, 2.0)
    loss.backward()
    assert rel_err(loss, ref.dwa_penalty(params, anchors, importance, 2.0)) < 1e-12
    assert total_rel_err([p.grad for p in params], ref.dwa_grad(params, anchors, importance, 2.0)) < 1e-12


@pytest.mark.parametrize("device", devices())
def test_single_tensor_and_zero_lam(device):
    params, anchors, importance = make([(4, 4)], seed=3, device=device)
    assert rel_err(ops.dwa_penalty(params, anchors, importance, 1.5), ref.dwa_penalty(params, anchors, importance, 1.5)) < 1e-12
    loss = ops.dwa_penalty(params, anchors, importance, 0.0)
    loss.backward()
    assert float(loss.detach()) == 0 and float(params[0].grad.abs().max()) == 0


@pytest.mark.parametrize("device", devices())
def test_anchor_gradient_is_the_negative(device):
    params, anchors, importance = make([(6,), (2, 3)], seed=4, device=device)
    anchors = [a.requires_grad_() for a in anchors]
    ops.dwa_penalty(params, anchors, importance, 0.3).backward()
    for p, a in zip(params, anchors):
        assert torch.equal(a.grad, -p.grad)
    # only some tensors of a list requiring grad
    params, anchors, importance = make([(6,), (2, 3)], seed=4, device=device, grad=False)
    params[1].requires_grad_()
    ops.dwa_penalty(params, anchors, importance, 0.3).backward()
    assert params[0].grad is None
    assert rel_err(params[1].grad, ref.dwa_grad(params, anchors, importance, 0.3)[1]) < 1e-12


@pytest.mark.parametrize("device", devices())
def test_non_contiguous(device):
    params, anchors, importance = make([(5, 4), (3, 8)], seed=5, device=device, grad=False)
    nc = [[non_contiguous(t) for t in lst] for lst in (params, anchors, importance)]
    assert not nc[0][0].is_contiguous()
    assert rel_err(ops.dwa_penalty(*nc, 0.9), ref.dwa_penalty(params, anchors, importance, 0.9)) < 1e-12
    grads = [non_contiguous(torch.ones_like(p)) for p in params]
    ops.dwa_grad_(grads, *nc, 0.9)
    expected = [1 + g for g in ref.dwa_grad(params, anchors, importance, 0.9)]
    assert total_rel_err(grads, expected) < 1e-12


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
def test_dwa_grad_inplace(device, dtype):
    params, anchors, importance = make(SHAPES, seed=6, dtype=dtype, device=device, grad=False)
    grads = [rand(p.shape, seed=50 + i, dtype=dtype, device=device) for i, p in enumerate(params)]
    before = [g.clone() for g in grads]
    out = ops.dwa_grad_(grads, params, anchors, importance, 0.25)
    assert all(o is g for o, g in zip(out, grads))
    expected = [b + d for b, d in zip(before, ref.dwa_grad(params, anchors, importance, 0.25))]
    assert total_rel_err(grads, expected) < TOL[dtype]


def test_dwa_grad_uses_param_grads():
    """grads=None updates each parameter's .grad, creating it (zeros) where missing."""
    params, anchors, importance = make([(3, 2), (4,)], seed=7)
    (params[0] ** 2).sum().backward()
    g0 = params[0].grad.clone()
    assert params[1].grad is None
    ops.dwa_grad_(None, params, anchors, importance, 1.0)
    d = ref.dwa_grad(params, anchors, importance, 1.0)
    assert rel_err(params[0].grad, g0 + d[0]) < 1e-14
    assert rel_err(params[1].grad, d[1]) < 1e-14


def test_dwa_grad_matches_autograd_of_penalty():
    """dwa_grad_ adds exactly what backward() of dwa_penalty would add."""
    params, anchors, importance = make(SHAPES, seed=8)
    ops.dwa_penalty(params, anchors, importance, 0.4).backward()
    via_autograd = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    ops.dwa_grad_(None, params, anchors, importance, 0.4)
    for p, g in zip(params, via_autograd):
        assert torch.allclose(p.grad, g, rtol=1e-15, atol=0)


def test_deterministic():
    params, anchors, importance = make(SHAPES, seed=9, dtype=torch.float32, grad=False)
    a = ops.dwa_penalty(params, anchors, importance, 1.0)
    b = ops.dwa_penalty(params, anchors, importance, 1.0)
    assert torch.equal(a, b)


def test_gradcheck_and_double_backward():
    params, anchors, importance = make([(3, 2), (), (4,)], seed=10)
    anchors = [a.requires_grad_() for a in anchors]
    n = len(params)

    def fn(*ts):
        return ops.dwa_penalty(list(ts[:n]), list(ts[n:]), importance, 0.6)

    assert torch.autograd.gradcheck(fn, (*params, *anchors))
    assert torch.autograd.gradgradcheck(fn, (*params, *anchors))
    g = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    bwd = torch.ops.mtlkernels.dwa_penalty_backward
    assert torch.autograd.gradcheck(lambda g, *ts: bwd(g, list(ts[:n]), list(ts[n:]), importance, 0.6), (g, *params, *anchors))


@pytest.mark.parametrize("device", devices())
def test_opcheck(device):
    params, anchors, importance = make([(5, 3), (7,), (0,)], seed=11, device=device)
    torch.library.opcheck(torch.ops.mtlkernels.dwa_penalty.default, (params, anchors, importance, 0.3, True))
    detached = [p.detach() for p in params]
    torch.library.opcheck(torch.ops.mtlkernels.dwa_penalty.default, (detached, anchors, importance, 0.3, False))
    g = torch.tensor(2.0, dtype=torch.float64, device=device)
    torch.library.opcheck(torch.ops.mtlkernels.dwa_penalty_backward.default, (g, detached, anchors, importance, 0.3))
    torch.library.opcheck(torch.ops.mtlkernels.dwa_penalty_backward.default, (g.requires_grad_(), params, anchors, importance, 0.3))
    grads = [torch.ones_like(p) for p in detached]
    torch.library.opcheck(torch.ops.mtlkernels.dwa_grad_.default, (grads, detached, anchors, importance, 0.3, True))


def test_compile_fullgraph():
    params, anchors, importance = make([(6, 5), (5,), (2, 3, 4)], seed=12)
    compiled = torch.compile(ops.dwa_penalty, fullgraph=True)
    loss = compiled(params, anchors, importance, 0.5)
    loss.backward()
    assert rel_err(loss, ref.dwa_penalty(params, anchors, importance, 0.5)) < 1e-14
    assert total_rel_err([p.grad for p in params], ref.dwa_grad(params, anchors, importance, 0.5)) < 1e-14

    def step(grads, params, anchors, importance):
        ops.dwa_grad_(grads, params, anchors, importance, 0.5, check=False)
        return grads

    detached = [p.detach() for p in params]
    grads = [torch.zeros_like(p) for p in detached]
    torch.compile(step, fullgraph=True)(grads, detached, anchors, importance)
    assert total_rel_err(grads, ref.dwa_grad(detached, anchors, importance, 0.5)) < 1e-14


@pytest.mark.parametrize("device", devices())
def test_importance_check(device):
    params, anchors, importance = make([(4,), (3, 3)], seed=13, device=device, grad=False)
    for bad in (-1.0, float("nan")):
        imp = [f.clone() for f in importance]
        imp[1][1, 2] = bad
        with pytest.raises(RuntimeError, match="importance must be non-negative"):
            ops.dwa_penalty(params, anchors, imp, 1.0)
        grads = [torch.zeros_like(p) for p in params]
        with pytest.raises(RuntimeError, match="importance must be non-negative"):
            ops.dwa_grad_(grads, params, anchors, imp, 1.0)
        assert all(float(g.abs().max()) == 0 for g in grads)  # a failed check leaves grads untouched
    # check=False skips the check (the value follows the formula)
    imp = [f.clone() for f in importance]
    imp[0][0] = -1.0
    out = ops.dwa_penalty(params, anchors, imp, 1.0, check=False)
    assert rel_err(out, ref.dwa_penalty(params, anchors, imp, 1.0)) < 1e-12


def test_bad_input():
    params, anchors, importance = make([(4,), (3, 3)], seed=14, grad=False)
    with pytest.raises(ValueError, match="params is empty"):
        ops.dwa_penalty([], [], [], 1.0)
    with pytest.raises(ValueError, match="params is empty"):
        ops.dwa_grad_([], [], [], [], 1.0)
    with pytest.raises(RuntimeError, match="params has 2 tensors but anchors has 1"):
        ops.dwa_penalty(params, anchors[:1], importance, 1.0)
    with pytest.raises(RuntimeError, match="params has 2 tensors but importance has 3"):
        ops.dwa_penalty(params, anchors, importance + importance[:1], 1.0)
    with pytest.raises(RuntimeError, match=r"params\[1\] has shape \[3, 3\] but anchors\[1\] has shape \[9\]"):
        ops.dwa_penalty(params, [anchors[0], anchors[1].reshape(-1)], importance, 1.0)
    with pytest.raises(RuntimeError, match=r"params\[0\] is Double but importance\[1\] is Float"):
        ops.dwa_penalty(params, anchors, [importance[0], importance[1].float()], 1.0)
    with pytest.raises(RuntimeError, match="must be float32 or float64"):
        ops.dwa_penalty([p.int() for p in params], [a.int() for a in anchors], [f.int() for f in importance], 1.0)
    with pytest.raises(ValueError, match="lam must be finite and non-negative"):
        ops.dwa_penalty(params, anchors, importance, -0.1)
    with pytest.raises(RuntimeError, match="lam must be finite and non-negative"):
        torch.ops.mtlkernels.dwa_penalty(params, anchors, importance, -0.1, True)
    with pytest.raises(RuntimeError, match="importance .* is treated as a constant"):
        ops.dwa_penalty(params, anchors, [f.requires_grad_() for f in importance], 1.0)
    grads = [torch.zeros(4, dtype=torch.float64), torch.zeros(9, dtype=torch.float64)]
    with pytest.raises(RuntimeError, match=r"params\[1\] has shape \[3, 3\] but grads\[1\] has shape \[9\]"):
        ops.dwa_grad_(grads, params, anchors, [f.detach() for f in importance], 1.0)
    with pytest.raises(ValueError, match="a gradient is None"):
        ops.dwa_grad_([None, None], params, anchors, [f.detach() for f in importance], 1.0)


@cuda_only
def test_device_mismatch():
    params, anchors, importance = make([(4,), (3, 3)], seed=15, grad=False)
    with pytest.raises(RuntimeError, match="is on"):
        ops.dwa_penalty(params, [anchors[0].cuda(), anchors[1]], importance, 1.0)


# ---- CUDA: agreement with the CPU, streams, devices --------------------------------------------


@cuda_only
def test_cpu_cuda_bitwise():
    """The DWA gradient is elementwise with one expression for its scale lam * upstream
    gradient on both devices: CPU and CUDA agree to the bit on the same float32 inputs,
    for the backward of dwa_penalty (an upstream gradient other than 1) and for dwa_grad_
    into zero gradients (the accumulation into non-zero gradients may be fused into one
    multiply-add on the GPU, so it is compared with a tolerance elsewhere)."""
    shapes = [(), (1,), (7, 3), (33,), (100003,), (64, 3, 3, 3)]
    params, anchors, importance = make(shapes, seed=20, dtype=torch.float32, grad=False)
    lam, up = 0.3, 1.7
    # the case tells the two roundings of the scale apart: float32(lam * g) != float32(lam) * g
    # for the float32 upstream gradient g = float32(up)
    g32 = torch.tensor(up, dtype=torch.float32)
    one = torch.tensor(lam * float(g32), dtype=torch.float32)
    two = torch.tensor(lam, dtype=torch.float32) * g32
    assert one != two
    p, a, f = params[4], anchors[4], importance[4]
    assert not torch.equal(one * f * (p - a), two * f * (p - a))

    def on(device):
        p = [t.detach().to(device, copy=True).requires_grad_() for t in params]
        a = [t.to(device, copy=True) for t in anchors]
        f = [t.to(device, copy=True) for t in importance]
        (ops.dwa_penalty(p, a, f, lam) * up).backward()
        bwd = torch.ops.mtlkernels.dwa_penalty_backward(torch.tensor(up, device=device), [t.detach() for t in p], a, f, lam)
        grads = [torch.zeros_like(t) for t in a]
        ops.dwa_grad_(grads, [t.detach() for t in p], a, f, lam)
        return [t.grad.cpu() for t in p] + [t.cpu() for t in bwd] + [t.cpu() for t in grads]

    cpu, cuda = on("cpu"), on("cuda")
    for i, (x, y) in enumerate(zip(cpu, cuda)):
        assert torch.equal(x, y), i
    # the penalty itself sums in a device-dependent order: close, not bitwise
    p, a, f = [[t.cuda() for t in lst] for lst in (params, anchors, importance)]
    assert rel_err(ops.dwa_penalty(p, a, f, lam), ops.dwa_penalty(params, anchors, importance, lam)) < 1e-12


def _every_op(params, anchors, importance, grads, lam):
    loss = ops.dwa_penalty(params, anchors, importance, lam)
    loss.backward()
    ops.dwa_grad_(grads, [p.detach() for p in params], anchors, importance, lam)
    return [loss, *[p.grad for p in params], *grads]


def _every_ref(params, anchors, importance, grads0, lam):
    p, a, f = [[t.detach().double().cpu() for t in lst] for lst in (params, anchors, importance)]
    d = ref.dwa_grad(p, a, f, lam)
    return [ref.dwa_penalty(p, a, f, lam), *d, *[g.double().cpu() + x for g, x in zip(grads0, d)]]


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES)
def test_side_stream(dtype):
    shapes = SHAPES + [(i % 5 + 1,) for i in range(70)]  # two launches of at most 64 tensors
    params, anchors, importance = make(shapes, seed=21, dtype=dtype, device="cuda")
    grads = [rand(p.shape, seed=300 + i, dtype=dtype, device="cuda") for i, p in enumerate(params)]
    grads0 = [g.clone() for g in grads]
    got = on_side_stream(lambda: _every_op(params, anchors, importance, grads, 0.7))
    want = _every_ref(params, anchors, importance, grads0, 0.7)
    assert rel_err(got[0], want[0]) < TOL[dtype]
    assert total_rel_err(got[1:], want[1:]) < TOL[dtype]


@multi_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_on_cuda0_while_cuda1_is_current(dtype):
    shapes = SHAPES + [(i % 5 + 1,) for i in range(70)]
    params, anchors, importance = make(shapes, seed=22, dtype=dtype, device="cuda:0")
    grads = [rand(p.shape, seed=400 + i, dtype=dtype, device="cuda:0") for i, p in enumerate(params)]
    grads0 = [g.clone() for g in grads]
    got = on_other_device(lambda: _every_op(params, anchors, importance, grads, 0.7))
    assert all(t.device == params[0].device for t in got)
    want = _every_ref(params, anchors, importance, grads0, 0.7)
    assert rel_err(got[0], want[0]) < TOL[dtype]
    assert total_rel_err(got[1:], want[1:]) < TOL[dtype]
