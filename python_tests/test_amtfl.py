"""Tests of the AMTFL reconstruction op (Lee et al. 2018, eqs. 6-7) against its pure-torch reference."""

import pytest
import torch

from mtlkernels import ops
from mtlkernels import reference as ref
from mtlkernels.testing import (
    TOL, cuda_only, devices, multi_gpu, non_contiguous, on_other_device, on_side_stream, randn, rel_err,
)

DTYPES = [torch.float32, torch.float64]


def make(N, k, T, *, seed, dtype=torch.float64, device="cpu", bias=True, grad=(True, True, True, True)):
    """Z (N, k) non-negative features (as in AMTFL), W (k, T), A (T, k), bias (k,)."""
    Z = randn(N, k, seed=seed, dtype=dtype, device=device).abs()
    W = randn(k, T, seed=seed + 1, dtype=dtype, device=device) / max(k, 1) ** 0.5
    A = randn(T, k, seed=seed + 2, dtype=dtype, device=device) / max(T, 1) ** 0.5
    b = randn(k, seed=seed + 3, dtype=dtype, device=device) * 0.1 if bias else None
    ts = [Z, W, A, b]
    for t, g in zip(ts, grad):
        if t is not None and g:
            t.requires_grad_()
    return ts


def grads_of(loss_fn, ts):
    """Loss and the gradients of the inputs that require grad (None elsewhere)."""
    for t in ts:
        if t is not None:
            t.grad = None
    loss = loss_fn(*ts)
    if loss.requires_grad:
        loss.backward()
    return loss.detach(), [None if t is None or t.grad is None else t.grad.clone() for t in ts]


def check_against_reference(ts, dtype, *, scale_tol=1.0):
    loss, grads = grads_of(ops.amtfl_reconstruction_loss, ts)
    # reference in float64 on copies of the same values
    ts64 = [None if t is None else t.detach().double().requires_grad_(t.requires_grad) for t in ts]
    loss_ref, grads_ref = grads_of(ref.amtfl_reconstruction_loss, ts64)
    tol = TOL[dtype] * scale_tol
    assert loss.dtype == dtype and loss.shape == ()
    assert rel_err(loss, loss_ref) < tol
    for g, gr in zip(grads, grads_ref):
        assert (g is None) == (gr is None)
        if g is not None:
            assert g.dtype == dtype
            assert rel_err(g, gr) < tol


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,k,T", [(1, 1, 1), (37, 13, 5), (300, 64, 10), (129, 33, 100), (1, 7, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference(device, dtype, N, k, T, bias):
    ts = make(N, k, T, seed=N + k + T, dtype=dtype, device=device, bias=bias)
    check_against_reference(ts, dtype)


@pytest.mark.parametrize("budget", ["1", "4000"])
def test_chunk_boundaries(monkeypatch, budget):
    """Many row chunks (512 rows each with budget 1; uneven last chunk) give the same result."""
    monkeypatch.setenv("MTLKERNELS_AMTFL_CPU_CHUNK", budget)
    ts = make(1800, 19, 7, seed=5)
    check_against_reference(ts, torch.float64)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize(
    "grad", [(True, False, False, False), (False, True, True, False), (False, False, False, True), (True, True, True, False)]
)
def test_subsets_of_gradients(device, grad):
    """Only the requested gradients are computed; the others stay None."""
    ts = make(50, 12, 4, seed=11, device=device, grad=grad)
    check_against_reference(ts, torch.float64)


@pytest.mark.parametrize("device", devices())
def test_no_grad_gives_loss_only(device):
    Z, W, A, b = make(40, 6, 3, seed=3, device=device)
    with torch.no_grad():
        loss = ops.amtfl_reconstruction_loss(Z, W, A, b)
    assert not loss.requires_grad
    assert rel_err(loss, ref.amtfl_reconstruction_loss(Z, W, A, b)) < 1e-12


@pytest.mark.parametrize("device", devices())
def test_empty_and_degenerate_shapes(device):
    # N = 0: zero loss, empty gradient for Z, zero gradients for W, A, bias
    Z, W, A, b = make(0, 5, 3, seed=1, device=device)
    loss, (gZ, gW, gA, gb) = grads_of(ops.amtfl_reconstruction_loss, [Z, W, A, b])
    assert float(loss) == 0 and gZ.shape == (0, 5)
    assert float(gW.abs().sum() + gA.abs().sum() + gb.abs().sum()) == 0
    # T = 0 (no task outputs): the reconstruction is relu(bias)
    ts = make(9, 4, 0, seed=2, device=device)
    check_against_reference(ts, torch.float64)
    # k = 0: no features, zero loss
    Z, W, A, b = make(6, 0, 3, seed=3, device=device)
    loss, grads = grads_of(ops.amtfl_reconstruction_loss, [Z, W, A, b])
    assert float(loss) == 0 and grads[0].shape == (6, 0) and grads[1].shape == (0, 3)


@pytest.mark.parametrize("device", devices())
def test_non_contiguous_inputs(device):
    ts = make(31, 9, 5, seed=4, device=device)
    nc = [non_contiguous(t.detach()).requires_grad_() for t in ts[:3]] + [ts[3]]
    assert not any(t.is_contiguous() for t in nc[:3])
    check_against_reference(nc, torch.float64)
    # a transposed W and A (column-major) as well
    W = ts[1].detach().t().contiguous().t().requires_grad_()
    check_against_reference([ts[0], W, ts[2], ts[3]], torch.float64)


def test_reconstruction_is_from_task_outputs():
    """The documented reading of eqs. 6-7: sigma(Z W A) reconstructs Z from the task outputs Z W.

    With as many tasks as features, W = I (the outputs are the features themselves) and
    A = I, a non-negative Z is reconstructed exactly: zero loss and zero gradients.
    """
    k = 6
    Z = randn(20, k, seed=9).abs().requires_grad_()
    W = torch.eye(k, dtype=torch.float64, requires_grad=True)
    A = torch.eye(k, dtype=torch.float64, requires_grad=True)
    loss = ops.amtfl_reconstruction_loss(Z, W, A)
    loss.backward()
    assert float(loss.detach()) == 0
    assert float(Z.grad.abs().max()) == 0 and float(A.grad.abs().max()) == 0
    # a negative bias pushes part of the reconstruction through the ReLU's flat side
    b = torch.full((k,), -1.0, dtype=torch.float64)
    expected = (torch.relu(Z.detach() - 1) - Z.detach()).pow(2).sum()
    assert rel_err(ops.amtfl_reconstruction_loss(Z.detach(), W.detach(), A.detach(), b), expected) < 1e-14


def test_relu_mask_and_nan():
    # where Z W A + b <= 0 only the -2R term reaches Z and nothing reaches W, A, b
    Z = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    W = torch.tensor([[1.0], [0.0]], dtype=torch.float64, requires_grad=True)
    A = torch.tensor([[-1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    loss, grads = grads_of(ops.amtfl_reconstruction_loss, [Z, W, A, b])
    loss_r, grads_r = grads_of(ref.amtfl_reconstruction_loss, [Z, W, A, b])
    assert float(loss) == float(loss_r)
    for g, gr in zip(grads, grads_r):
        assert torch.equal(g, gr)
    # NaN in the features propagates to the loss
    Zn = Z.detach().clone()
    Zn[0, 1] = float("nan")
    assert torch.isnan(ops.amtfl_reconstruction_loss(Zn, W.detach(), A.detach()))


def test_gradcheck():
    ts = make(7, 5, 3, seed=21)
    assert torch.autograd.gradcheck(ops.amtfl_reconstruction_loss, tuple(ts))
    assert torch.autograd.gradcheck(lambda Z, W, A: ops.amtfl_reconstruction_loss(Z, W, A), tuple(ts[:3]))


def test_retain_graph_and_upstream_scale():
    """The saved gradients are scaled in place only when the graph is freed: a retained
    graph gives the same gradients on its second backward."""
    ts = make(30, 5, 3, seed=31)
    _, expected = grads_of(ref.amtfl_reconstruction_loss, ts)
    for t in ts:
        t.grad = None
    loss = ops.amtfl_reconstruction_loss(*ts)
    (2 * loss).backward(retain_graph=True)
    for t, e in zip(ts, expected):
        assert rel_err(t.grad, 2 * e) < 1e-14
    loss.backward()  # upstream gradient 1, accumulated: 3x
    for t, e in zip(ts, expected):
        assert rel_err(t.grad, 3 * e) < 1e-14


def test_deep_amtfl_features_from_a_layer():
    """Deep-AMTFL (eq. 7): Z = relu(X L) is an activation; its gradient flows on to L,
    and adds up with the task loss on the outputs Z W."""
    X = randn(40, 12, seed=41)
    L = randn(12, 8, seed=42).requires_grad_()
    W = randn(8, 3, seed=43).requires_grad_()
    A = randn(3, 8, seed=44).requires_grad_()

    def total(fn):
        for t in (L, W, A):
            t.grad = None
        Z = torch.relu(X @ L)
        task = (Z @ W).pow(2).mean()
        (task + 0.1 * fn(Z, W, A)).backward()
        return [t.grad.clone() for t in (L, W, A)]

    for g, gr in zip(total(ops.amtfl_reconstruction_loss), total(ref.amtfl_reconstruction_loss)):
        assert rel_err(g, gr) < 1e-12


def test_double_backward_is_refused():
    Z, W, A, b = make(5, 3, 2, seed=2)
    loss = ops.amtfl_reconstruction_loss(Z, W, A, b)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, Z, create_graph=True)


@pytest.mark.parametrize("device", devices())
def test_opcheck(device):
    op = torch.ops.mtlkernels.amtfl_reconstruction.default
    for bias in (True, False):
        Z, W, A, b = make(23, 6, 4, seed=8, device=device, bias=bias)
        flags = [t is not None for t in (Z, W, A, b)]
        torch.library.opcheck(op, (Z, W, A, b, *flags))
        torch.library.opcheck(op, (Z.detach(), W.detach(), A.detach(), None if b is None else b.detach(), False, False, False, False))
        # some gradients only
        torch.library.opcheck(op, (Z.detach(), W, A, None if b is None else b.detach(), False, True, True, False))


def test_compile_fullgraph():
    ts = make(33, 8, 5, seed=13)
    compiled = torch.compile(ops.amtfl_reconstruction_loss, fullgraph=True)
    loss, grads = grads_of(compiled, ts)
    loss_e, grads_e = grads_of(ops.amtfl_reconstruction_loss, ts)
    assert rel_err(loss, loss_e) < 1e-14
    for g, ge in zip(grads, grads_e):
        assert rel_err(g, ge) < 1e-14


@pytest.mark.parametrize(
    "shapes,match",
    [
        (((5,), (5, 3), (3, 5), None), "Z must be a matrix"),
        (((4, 5), (4, 3), (3, 5), None), r"W must have shape \(k, T\)"),
        (((4, 5), (5, 3), (5, 3), None), r"A must have shape \(T, k\)"),
        (((4, 5), (5, 3), (3, 5), (4,)), r"bias must have shape \(k,\)"),
    ],
)
def test_bad_shapes(shapes, match):
    ts = [None if s is None else torch.rand(*s, dtype=torch.float64) for s in shapes]
    with pytest.raises(RuntimeError, match=match):
        ops.amtfl_reconstruction_loss(*ts)


def test_bad_dtypes_and_flags():
    Z, W, A = torch.rand(4, 5), torch.rand(5, 3), torch.rand(3, 5)
    with pytest.raises(RuntimeError, match="W is Double but Z is Float|Z is Float but W is Double"):
        ops.amtfl_reconstruction_loss(Z, W.double(), A)
    with pytest.raises(RuntimeError, match="must be float32 or float64"):
        ops.amtfl_reconstruction_loss(Z.int(), W.int(), A.int())
    with pytest.raises(RuntimeError, match="grad_bias requested without a bias"):
        torch.ops.mtlkernels.amtfl_reconstruction(Z, W, A, None, False, False, False, True)
    # calling the raw op without the flag of an input that requires grad: refused at once
    Wg = W.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="W requires grad but grad_W=False"):
        torch.ops.mtlkernels.amtfl_reconstruction(Z, Wg, A, None, False, False, False, False)


@cuda_only
def test_device_mismatch():
    Z, W, A = torch.rand(4, 5), torch.rand(5, 3), torch.rand(3, 5)
    with pytest.raises(RuntimeError, match="is on"):
        ops.amtfl_reconstruction_loss(Z, W.cuda(), A)


# ---- CUDA paths: row chunks, layouts, streams, devices ----------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,k,T", [(5000, 500, 13), (4097, 520, 1)])
def test_several_row_chunks(device, dtype, N, k, T):
    """N above 2,048 with k + T >= 512: the CUDA chunk rule gives chunks of 2,048 rows (an
    uneven last one), so the loss, dZ and the accumulated dW, dA, dbias span several
    chunks. The weight gradients sum N products per entry in dtype, and dA without a bias
    is ill-conditioned in float32 at (5000, 500, 13) (the eager float32 composite is
    1.6e-5 off): 30x the tolerance, still far below what a lost or doubled chunk gives."""
    ts = make(N, k, T, seed=61, dtype=dtype, device=device)
    check_against_reference(ts, dtype, scale_tol=30)
    # without a bias and with some gradients only
    ts = make(N, k, T, seed=62, dtype=dtype, device=device, bias=False, grad=(False, True, True, False))
    check_against_reference(ts, dtype, scale_tol=30)


@pytest.mark.parametrize("device", devices())
def test_non_contiguous_float32(device):
    ts = make(131, 17, 6, seed=63, dtype=torch.float32, device=device)
    nc = [non_contiguous(t.detach()).requires_grad_() for t in ts]
    check_against_reference(nc, torch.float32)


def _loss_and_grads(ts):
    loss, grads = grads_of(ops.amtfl_reconstruction_loss, ts)
    return [loss, *grads]


def _reference(ts):
    ts64 = [t.detach().double().cpu().requires_grad_() for t in ts]
    loss, grads = grads_of(ref.amtfl_reconstruction_loss, ts64)
    return [loss, *grads]


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES)
def test_side_stream(dtype):
    ts = make(2100, 300, 230, seed=64, dtype=dtype, device="cuda")  # two chunks of rows
    got = on_side_stream(lambda: _loss_and_grads(ts))
    for i, (o, e) in enumerate(zip(got, _reference(ts))):
        assert rel_err(o, e) < 10 * TOL[dtype], i


@multi_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_on_cuda0_while_cuda1_is_current(dtype):
    ts = make(2100, 300, 230, seed=65, dtype=dtype, device="cuda:0")
    got = on_other_device(lambda: _loss_and_grads(ts))
    for i, (o, e) in enumerate(zip(got, _reference(ts))):
        assert o.device == ts[0].device, i
        assert rel_err(o, e) < 10 * TOL[dtype], i


def test_feedback_residual_takes_the_relu_kink_as_a_corner():
    """At a pre-activation of exactly 0 (here 1e-13) any slope in [0, 1] is a subgradient
    of the ReLU: two samples reconstructed by relu(c), targets -1 and 0.5, have their
    minimum at every c <= 0, so c = 1e-13 is stationary although autograd (slope 1 there)
    gives a gradient of 1 in c. Away from the kink both residuals agree."""
    from mtlkernels.linear._amtfl_blocks import feedback_residual
    from mtlkernels.linear._blocks import prox_residual

    Z = torch.tensor([[-1.0], [0.5]], dtype=torch.float64)
    S = torch.zeros(1, 1, dtype=torch.float64)  # Z S A = 0: the pre-activation is c for both samples
    thr = torch.tensor([[0.1], [0.0]], dtype=torch.float64)
    for c, stationary in [(1e-13, True), (0.3, False)]:
        X = torch.tensor([[0.0], [c]], dtype=torch.float64)
        r = feedback_residual(Z, S, X, 1.0, thr, 1.0)
        g = torch.tensor([[0.0], [2 * (1 + c) - 2 * (0.5 - c)]], dtype=torch.float64)  # slope 1 at u = c > 0
        plain = prox_residual(X, g, None, lambda x, gg, lr: ops.prox_grad_step(x, gg, lr, thr))
        if stationary:
            assert plain > 0.9 and r <= 1e-12, (plain, r)
        else:
            assert abs(r - plain) <= 1e-9 * plain, (plain, r)


def test_feedback_residual_at_kinks_with_no_slope_to_choose_in_float32():
    """Kinks whose samples have z = relu(u) = 0 leave the gradient free of the slope there:
    the residual is the plain one, in float32 too (the kink search's step, 1 / 0, made it nan
    there and the AMTFL fit raised: raw_problem([11, 57]) of test_linear_raw_fuzz, logistic)."""
    from mtlkernels.linear._amtfl_blocks import feedback_residual

    f32 = torch.float32
    Z, S = torch.zeros(2, 1, dtype=f32), torch.zeros(1, 1, dtype=f32)  # every pre-activation is c = 0
    X, thr = torch.tensor([[0.5], [0.0]], dtype=f32), torch.tensor([[0.1], [0.0]], dtype=f32)
    assert feedback_residual(Z, S, X, 1.0, thr, 1.0) == pytest.approx(0.1, rel=1e-3)  # thr: A = 0.5 with g = 0


def test_prox_residual_with_a_zero_gradient_is_the_penalty_subgradient():
    """A block whose smooth part is flat (gradient exactly 0) is at its optimum only where 0
    is in the penalty's subdifferential: with l1 weights thr at nonzero x the residual is
    ||thr sign(x)|| (it was reported as 0, so that AMTFL's (A, c) block stopped at once on a
    transfer matrix of 1e14 when the features were all zero)."""
    from mtlkernels.linear._blocks import prox_residual

    thr = torch.tensor([[0.5], [0.25], [2.0]], dtype=torch.float64)
    X = torch.tensor([[3.0e4], [0.0], [-1.0]], dtype=torch.float64)
    r = prox_residual(X, torch.zeros_like(X), None, lambda x, g, lr: ops.prox_grad_step(x, g, lr, thr))
    assert r == pytest.approx((0.5**2 + 2.0**2) ** 0.5, rel=1e-6)
    zero = torch.zeros_like(X)
    assert prox_residual(zero, zero, None, lambda x, g, lr: ops.prox_grad_step(x, g, lr, thr)) == 0.0
