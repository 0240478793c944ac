"""Ops that never return garbage: every reproducer of the table of issue 12, each a test.

``ops`` is the Python bridge (``mtlkernels.ops``), ``M`` the raw ops
(``torch.ops.mtlkernels``); where the issue names one path, both are tested.
"""

import pytest
import torch

from mtlkernels import ops
from mtlkernels import reference as ref
from mtlkernels.testing import TOL, cuda_only, devices, randn, rel_err

M = torch.ops.mtlkernels


# ---- a meta tensor in a secondary argument: a clear device error, not the fake kernel's output ----


@pytest.mark.parametrize("call", [
    lambda tau: ops.soft_threshold(torch.arange(1.0, 9.0), tau),
    lambda tau: M.soft_threshold(torch.arange(1.0, 9.0), tau),
])
def test_meta_threshold_on_a_cpu_call_is_a_device_error(call):
    with pytest.raises(RuntimeError, match="tau is on meta but x is on cpu"):
        call(torch.tensor(0.5, device="meta"))


@cuda_only
def test_meta_threshold_on_a_cuda_call_is_a_device_error():
    x, batch = torch.ones(2, 4, device="cuda"), torch.ones(3, 2, 4, device="cuda")
    for call, args in [(ops.soft_threshold, (x, torch.ones(4, device="meta"))),
                       (M.soft_threshold, (x, torch.ones(4, device="meta"))),
                       (ops.svt, (batch, torch.ones(3, device="meta"))), (M.svt, (batch, torch.ones(3, device="meta")))]:
        with pytest.raises(RuntimeError, match="tau is on meta"):
            call(*args)


@pytest.mark.parametrize("call", [ops.irls_weights, M.irls_weights])
def test_meta_sigma_on_a_cpu_call_is_a_device_error(call):
    with pytest.raises(RuntimeError, match="sigma is on meta but the distances are on cpu"):
        call(torch.ones(1, 2, 2), torch.ones(1, device="meta"))


def _meta(t):
    return t.to("meta")


# (name, call(secondary-argument transform) -> result): a meta tensor in each secondary
# tensor argument of every op, through the raw op (the wrappers run the same checks).
x34, g34 = torch.randn(3, 4), torch.randn(3, 4)
s0 = torch.tensor(0.3, dtype=torch.float64)
P = torch.randn(3, 5)
W3 = torch.rand(2, 3, 3)
SECONDARY = [
    ("soft_threshold tau", lambda f: M.soft_threshold(x34, f(torch.rand(4)))),
    ("elastic_net_prox l1", lambda f: M.elastic_net_prox(x34, f(torch.rand(4)), 0.1)),
    ("prox_grad_step grad", lambda f: M.prox_grad_step(x34, f(g34), 0.1, s0, 0.0)),
    ("prox_grad_step_ grad", lambda f: M.prox_grad_step_(x34.clone(), f(g34), 0.1, s0, 0.0)),
    ("soft_threshold_ tau", lambda f: M.soft_threshold_(x34.clone(), f(torch.rand(4)))),
    ("group_soft_threshold groups", lambda f: M.group_soft_threshold(x34, s0, 1, f(torch.tensor([0, 1, 0, 1])), 0.0)),
    ("group_prox_grad_step grad", lambda f: M.group_prox_grad_step(x34, f(g34), 0.1, s0, 1, None, 0.0)),
    ("svt tau", lambda f: M.svt(torch.randn(2, 3, 3), f(torch.rand(2)))),
    ("pairwise_mix coeffs", lambda f: M.pairwise_mix(P, [0, 2, 5], f(W3), False)),
    ("irls_consensus weights", lambda f: M.irls_consensus(f(W3), P, [0, 2, 5], False)),
    ("robust_consistency sigma", lambda f: M.robust_consistency(P, [0, 2, 5], f(torch.rand(2)), None)),
    ("amtfl A", lambda f: M.amtfl_reconstruction(torch.rand(5, 3), torch.rand(3, 2), f(torch.rand(2, 3)), None,
                                                 False, False, False, False)),
    ("dwa importance", lambda f: M.dwa_penalty([torch.ones(3)], [torch.zeros(3)], [f(torch.ones(3))], 1.0, True)),
]


@pytest.mark.parametrize("name,call", SECONDARY, ids=[s[0] for s in SECONDARY])
def test_meta_tensor_in_any_secondary_argument_is_refused(name, call):
    call(lambda t: t)  # valid on the CPU
    with pytest.raises(RuntimeError, match="meta"):
        call(_meta)


# ---- in-place ops with overlapping arguments: read before written ----------------------------


@pytest.mark.parametrize("path", ["ops", "raw"])
def test_inplace_step_with_overlapping_grad(path):
    b = torch.tensor([0.0, 1, 2, 3])
    if path == "ops":
        ops.prox_grad_step_(b[1:], b[:-1], 1.0, 0.0)
    else:
        M.prox_grad_step_(b[1:], b[:-1], 1.0, torch.tensor(0.0), 0.0)
    assert torch.equal(b, torch.tensor([0.0, 1, 1, 1]))


@pytest.mark.parametrize("path", ["ops", "raw"])
def test_inplace_threshold_aliasing_x(path):
    x = torch.tensor([[1.0, 1], [3, 3]])
    (ops.soft_threshold_ if path == "ops" else M.soft_threshold_)(x, x[:1])
    assert torch.equal(x, torch.tensor([[0.0, 0], [2, 2]]))


@pytest.mark.parametrize("device", devices())
def test_every_inplace_op_with_aliased_arguments_equals_out_of_place(device):
    """Thresholds and gradients that are views of x (x > 0, so a view is a valid threshold)."""
    x0 = randn(5, 6, seed=1, device=device).abs() + 0.1
    labels = torch.tensor([0, 1, 1, 0, 2, 2], device=device)
    cases = [  # (in-place op, out-of-place op, its other arguments built from x)
        (ops.soft_threshold_, ops.soft_threshold, lambda x: (x[:1],)),
        (ops.soft_threshold_, ops.soft_threshold, lambda x: (x,)),
        (ops.soft_threshold_, ops.soft_threshold, lambda x: (x[:, 2:3],)),
        (ops.elastic_net_prox_, ops.elastic_net_prox, lambda x: (x[:, :1], 0.3)),
        (ops.prox_grad_step_, ops.prox_grad_step, lambda x: (x, 0.5, 0.1)),
        (ops.prox_grad_step_, ops.prox_grad_step, lambda x: (x, 0.5, x[0], 0.2)),
        (ops.group_soft_threshold_, ops.group_soft_threshold, lambda x: (x[0, :3], 1, labels)),
        (ops.group_soft_threshold_, ops.group_soft_threshold, lambda x: (x[:, 0], 1)),
        (ops.group_prox_grad_step_, ops.group_prox_grad_step, lambda x: (x, 0.2, x[1], 0)),
    ]
    for inplace, out_of_place, args_of in cases:
        xc = x0.clone()
        expected = out_of_place(xc, *[a.clone() if isinstance(a, torch.Tensor) else a for a in args_of(xc)])
        xin = x0.clone()
        inplace(xin, *args_of(xin))
        assert rel_err(xin, expected) <= TOL[torch.float64], inplace.__name__


def test_inplace_refuses_x_whose_elements_share_memory():
    x = torch.ones(1, 3).expand(4, 3)
    for fn, args in [(ops.soft_threshold_, (0.1,)), (M.soft_threshold_, (s0,)),
                     (ops.group_soft_threshold_, (0.1,)), (M.prox_grad_step_, (torch.ones(4, 3), 0.1, s0, 0.0))]:
        with pytest.raises(RuntimeError, match="share one memory location"):
            fn(x, *args)


@pytest.mark.parametrize("device", devices())
def test_dwa_grad_with_a_gradient_listed_twice(device):
    n = 1 << 20
    one, zero = torch.ones(n, device=device), torch.zeros(n, device=device)
    for _ in range(20):
        g = torch.zeros(n, device=device)
        ops.dwa_grad_([g, g], [one] * 2, [zero] * 2, [one] * 2, 1.0)
        assert bool((g == 2).all())
    # a gradient listed twice, non-contiguous; a gradient overlapping another; one that is a param
    buf = torch.zeros(4, 2, device=device)
    g = buf[:, 0]
    M.dwa_grad_([g, g], [torch.ones(4, device=device)] * 2, [torch.zeros(4, device=device)] * 2,
                [torch.ones(4, device=device)] * 2, 1.0, True)
    assert torch.equal(buf[:, 0], torch.full((4,), 2.0, device=device)) and not buf[:, 1].any()
    b = torch.zeros(5, device=device)
    ops.dwa_grad_([b[1:], b[:-1]], [torch.ones(4, device=device)] * 2, [torch.zeros(4, device=device)] * 2,
                  [torch.ones(4, device=device)] * 2, 1.0)
    assert torch.equal(b, torch.tensor([1.0, 2, 2, 2, 1], device=device))
    p = torch.full((3,), 2.0, device=device)
    ops.dwa_grad_([p], [p], [torch.zeros(3, device=device)], [torch.ones(3, device=device)], 0.5)
    assert torch.equal(p, torch.full((3,), 3.0, device=device))  # 2 + 0.5 * 1 * (2 - 0), read before written


# ---- autograd: in-place ops as torch's, out-of-place ops give a gradient or refuse ------------


def test_raw_inplace_op_on_a_non_leaf_that_requires_grad_is_refused():
    a = torch.tensor([1.0, 2], requires_grad=True)
    y = a * 2
    with pytest.raises(RuntimeError, match="has no derivative"):
        M.soft_threshold_(y, torch.tensor(5.0))
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        M.soft_threshold_(a, torch.tensor(5.0))
    with pytest.raises(RuntimeError, match="not differentiable"):
        ops.soft_threshold_(y, 5.0)
    g = torch.zeros(2)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        M.dwa_grad_([a], [g], [g], [g], 1.0, True)


def test_raw_inplace_op_under_no_grad_bumps_the_version_counter():
    a = torch.tensor([1.0, 2], requires_grad=True)
    y = a * 2
    z = (y * y).sum()  # saves y
    with torch.no_grad():
        M.soft_threshold_(y, torch.tensor(0.5))
        M.soft_threshold_(a, torch.tensor(0.5))  # a leaf under no_grad, as an optimizer step
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()
    assert torch.equal(a.detach(), torch.tensor([0.5, 1.5]))
    for fn, args in [(M.elastic_net_prox_, (s0, 0.1)), (M.prox_grad_step_, (torch.ones(2), 0.1, s0, 0.0)),
                     (M.group_soft_threshold_, (s0, 0, None, 0.0))]:
        x = torch.ones(1, 2)
        v = x._version
        fn(x, *args) if fn is not M.prox_grad_step_ else fn(x, torch.ones(1, 2), 0.1, s0, 0.0)
        assert x._version > v
    g = torch.zeros(2)
    v = g._version
    M.dwa_grad_([g], [torch.ones(2)], [torch.zeros(2)], [torch.ones(2)], 1.0, True)
    assert g._version > v


@pytest.mark.parametrize("path", ["ops", "raw"])
def test_fused_steps_give_gradients_for_x_and_grad(path):
    x = randn(4, 5, seed=2).requires_grad_()
    g = randn(4, 5, seed=3).requires_grad_()
    w = randn(4, 5, seed=4)
    labels = torch.tensor([0, 3, 3, 0, 9])
    if path == "ops":
        out = ops.prox_grad_step(x, g, 0.1, 0.3, 0.2), ops.group_prox_grad_step(x, g, 0.1, 2.0, 1, labels, 0.1)
    else:
        t3 = torch.tensor(0.3, dtype=torch.float64)
        out = (M.prox_grad_step(x, g, 0.1, t3, 0.2),
               M.group_prox_grad_step(x, g, 0.1, torch.tensor(2.0, dtype=torch.float64), 1, labels, 0.1))
    refs = (lambda a, b: ref.prox_grad_step(a, b, 0.1, 0.3, 0.2),
            lambda a, b: ref.group_prox_grad_step(a, b, 0.1, 2.0, 1, labels, 0.1))
    for o, rfn in zip(out, refs):
        gx, gg = torch.autograd.grad((o * w).sum(), (x, g))
        xr, gr = x.detach().requires_grad_(), g.detach().requires_grad_()
        ex, eg = torch.autograd.grad((rfn(xr, gr) * w).sum(), (xr, gr))
        assert rel_err(gx, ex) <= 1e-12 and rel_err(gg, eg) <= 1e-12
    assert torch.autograd.gradcheck(lambda a, b: ops.prox_grad_step(a, b, 0.1, 0.3, 0.2), (x, g))


def test_raw_ops_refuse_a_gradient_they_do_not_define():
    x = torch.randn(3, 4, dtype=torch.float64)
    P = torch.randn(3, 5, dtype=torch.float64)
    W = torch.rand(2, 3, 3, dtype=torch.float64)
    t = lambda *s: torch.rand(s, dtype=torch.float64, requires_grad=True)  # noqa: E731
    cases = [
        ("tau", lambda: M.soft_threshold(x, t())),
        ("l1", lambda: M.elastic_net_prox(x, t(4), 0.1)),
        ("l1", lambda: M.prox_grad_step(x, x, 0.1, t(), 0.0)),
        ("tau", lambda: M.group_soft_threshold(x, t(), 1, None, 0.0)),
        ("tau", lambda: M.group_prox_grad_step(x, x, 0.1, t(3), 1, None, 0.0)),
        ("tau", lambda: M.svt(torch.randn(2, 3, 3, dtype=torch.float64), t(2))),
        ("sigma", lambda: M.irls_weights(torch.rand(2, 3, 3, dtype=torch.float64), t())),
        ("sigma", lambda: M.robust_consistency(P, [0, 2, 5], t(2), None)),
        ("weights", lambda: M.robust_consistency(P, [0, 2, 5], None, t(2, 3, 3))),
        ("weights", lambda: M.irls_consensus(t(2, 3, 3), P, [0, 2, 5], False)),
        ("coeffs", lambda: M.pairwise_mix(P, [0, 2, 5], t(2, 3, 3), False)),
        ("importance", lambda: M.dwa_penalty([x], [x], [t(3, 4)], 1.0, True)),
    ]
    for name, call in cases:
        with pytest.raises(RuntimeError, match=f"no derivative is defined for {name}"):
            call()
    with pytest.raises(RuntimeError, match="grad_Z=False"):
        M.amtfl_reconstruction(t(5, 3), torch.rand(3, 2, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64),
                               None, False, False, False, False)


def test_spectral_route_of_a_tensor_that_requires_grad():
    x = torch.randn(3, 3, requires_grad=True)
    assert ops.spectral_route(x).dtype == torch.int64
    assert M._spectral_route(x, torch.tensor(0.0, dtype=torch.float64), 0).shape == ()
    assert not M._spectral_route(torch.randn(2, 3, 3, requires_grad=True), torch.tensor(0.1), 1).requires_grad


# ---- arguments that were converted or unchecked ----------------------------------------------


def test_sigma_init_refuses_integers_and_negative_distances():
    with pytest.raises(RuntimeError, match="sq_dists must be float32 or float64, got Long"):
        ops.sigma_init(torch.tensor([[[0, 3], [3, 0]]]))
    with pytest.raises(ValueError, match="non-negative"):
        ops.sigma_init(-torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="non-negative"):
        ops.sigma_init(torch.tensor([[[0.0, float("nan")], [float("nan"), 0.0]]]))


@pytest.mark.parametrize("offsets", [[0, 1.9, 4], [0.0, 2, 4], [0, True, 4], torch.tensor([0.0, 2.0, 4.0]),
                                     torch.tensor([False, True]), "0,2,4"])
def test_offsets_are_never_converted(offsets):
    with pytest.raises(TypeError, match="offsets"):
        ops.pairwise_sq_dists(torch.randn(3, 4), offsets)


# ---- hyper-parameters applied in double precision or refused ---------------------------------


@pytest.mark.parametrize("device", devices())
def test_a_step_that_overflows_float32_is_refused_and_float64_is_right(device):
    one, zero = torch.ones(2, device=device), torch.zeros(2, device=device)
    for path in (lambda x, g: ops.prox_grad_step(x, g, 1e39, 0.0),
                 lambda x, g: M.prox_grad_step(x, g, 1e39, torch.tensor(0.0), 0.0),
                 lambda x, g: M.prox_grad_step_(x, g, 1e39, torch.tensor(0.0), 0.0),
                 lambda x, g: ops.group_prox_grad_step(x.view(1, 2), g.view(1, 2), 1e39, 0.0)):
        with pytest.raises(RuntimeError, match="lr = 1e\\+39 overflows Float"):
            path(one.clone(), one)
    out = ops.prox_grad_step(one.double(), one.double(), 1e39, 0.0)
    assert torch.equal(out.cpu(), torch.full((2,), 1 - 1e39, dtype=torch.float64))
    # zero gradient: x stays (never inf * 0 = NaN)
    assert torch.equal(ops.prox_grad_step(one, zero, 1e38, 0.0), one)
    with pytest.raises(RuntimeError, match="underflows to 0 in Float"):
        ops.prox_grad_step(one, one, 1.0, 0.0, 1e50)


@pytest.mark.parametrize("device", devices())
def test_dwa_lam_that_overflows_float32_is_refused(device):
    p = [torch.ones(3, device=device)]
    for call in (lambda t, lam: ops.dwa_grad_([torch.zeros_like(t[0])], t, t, t, lam),
                 lambda t, lam: M.dwa_grad_([torch.zeros_like(t[0])], t, t, t, lam, True),
                 lambda t, lam: M.dwa_penalty(t, t, t, lam, True)):
        with pytest.raises(RuntimeError, match="lam = 1e\\+39 overflows Float"):
            call(p, 1e39)
        call([t.double() for t in p], 1e39)  # float64: fine (theta = theta*: a zero gradient, not NaN)
    g = [torch.zeros(3, dtype=torch.float64, device=device)]
    ops.dwa_grad_(g, [t.double() for t in p], [t.double() for t in p], [t.double() for t in p], 1e39)
    assert torch.equal(g[0], torch.zeros(3, dtype=torch.float64, device=device))


@pytest.mark.parametrize("device", devices())
def test_thresholds_beyond_float32_act_as_its_largest_value(device):
    inf = float("inf")
    x = torch.tensor([1.0, -3e38, inf, -inf], device=device)
    want = torch.tensor([0.0, 0.0, inf, -inf])
    zero = torch.zeros(4, device=device)
    for out in (ops.soft_threshold(x, 1e39), ops.prox_grad_step(x, zero, 10.0, 1e38),
                ops.prox_grad_step(x, zero, 10.0, torch.full((4,), 3e38, device=device))):  # a tensor times lr
        assert torch.equal(out.cpu(), want)
    # finite input whose step overflows to inf, with an overflowing threshold: never NaN
    t = lambda *v: torch.tensor(v, device=device)  # noqa: E731
    assert not ops.prox_grad_step(t(3e38), t(-3e38), 2.0, t(3e38)).isnan().any()
    assert not ops.group_prox_grad_step(t([3e38, 1.0]), t([-3e38, 0.0]), 2.0, 1.0, 1, None, 1e38).isnan().any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_smoothed_gradient_with_eps_below_float32_range(dtype):
    out = ops.smoothed_nuclear_norm_grad(torch.eye(3, dtype=dtype), 1.0, 1e-39)
    assert out.dtype == dtype and rel_err(out, torch.eye(3)) <= TOL[dtype]
    val = ops.smoothed_nuclear_norm(torch.eye(3, dtype=dtype), 1.0, 1e-39)
    assert rel_err(val, torch.tensor(3.0)) <= TOL[dtype]
    with pytest.raises(RuntimeError, match="eps = 1e-310 is too small"):
        ops.smoothed_nuclear_norm_grad(torch.eye(3, dtype=dtype), 1.0, 1e-310)


@pytest.mark.parametrize("device", devices())
def test_consensus_keeps_inf_where_no_weight_reaches_it(device):
    out = ops.irls_consensus(torch.zeros(1, 1, 1, device=device), torch.tensor([[1.0, float("inf")]], device=device),
                             [0, 2])
    assert torch.equal(out.cpu(), torch.tensor([[1.0, float("inf")]]))
    # zero weights next to an inf: the network keeps its own parameters (no 0 * inf)
    params = torch.tensor([[1.0, 2.0], [float("inf"), 5.0]], device=device)
    w = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]], device=device)
    out = ops.irls_consensus(w, params, [0, 2]).cpu()
    assert torch.equal(out[0], torch.tensor([1.0, 2.0])) and out[1, 1] == 2.0
    mix = ops.pairwise_mix(params, [0, 2], torch.tensor([[[0.0, 0.0], [0.0, 1.0]]], device=device))
    assert torch.equal(mix.cpu(), torch.tensor([[0.0, 0.0], [float("inf"), 5.0]]))


# ---- group labels: any values, linear cost, forward and backward ------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("big", [10**7, 2**40, 2**62])
def test_group_labels_far_beyond_the_columns(device, big):
    x = randn(1000, 2, seed=5, device=device)
    dense = ops.group_soft_threshold(x, 0.1, groups=torch.tensor([0, 1], device=device))
    sparse = ops.group_soft_threshold(x, 0.1, groups=torch.tensor([0, big], device=device))
    assert torch.equal(dense, sparse)
    y = x.clone()
    ops.group_prox_grad_step_(y, x, 0.5, 0.1, 0, torch.arange(1000, device=device) * (big // 1000))
    assert rel_err(y, ref.group_prox_grad_step(x, x, 0.5, 0.1, 0, torch.arange(1000, device=device))) <= 1e-12


@pytest.mark.parametrize("device", devices())
def test_group_backward_with_sparse_labels(device):
    x = torch.ones(2, 2, requires_grad=True, device=device, dtype=torch.float64)
    ops.group_soft_threshold(x, 0.1, groups=torch.tensor([0, 5], device=device)).sum().backward()
    xr = torch.ones(2, 2, requires_grad=True, device=device, dtype=torch.float64)
    ref.group_soft_threshold(xr, 0.1, 1, torch.tensor([0, 1], device=device)).sum().backward()
    assert torch.equal(x.grad, xr.grad)
    # per-group thresholds, labels skipping values, along both dims
    y = randn(4, 6, seed=6, device=device).requires_grad_()
    tau = torch.tensor([0.5, 0.1, 9.0, 0.2, 0.3, 0.4, 0.7, 0.05, 0.6], dtype=torch.float64, device=device)
    for dim, labels in [(1, torch.tensor([8, 1, 1, 3, 8, 7], device=device)), (0, torch.tensor([6, 0, 6, 2], device=device))]:
        w = randn(4, 6, seed=7, device=device)
        (g,) = torch.autograd.grad((ops.group_soft_threshold(y, tau, dim, labels) * w).sum(), y)
        yr = y.detach().requires_grad_()
        (gr,) = torch.autograd.grad((ref.group_soft_threshold(yr, tau, dim, labels) * w).sum(), yr)
        assert rel_err(g, gr) <= 1e-12


# ---- fake kernels refuse what eager refuses ----------------------------------------------------


BAD = [  # (raw op call on tensors made by `t`, the message)
    (lambda t: M.soft_threshold(t(3, dtype=torch.int64), s0), "x must be float32 or float64, got Long"),
    (lambda t: M.soft_threshold_(t(3).expand(2, 3), s0), "share one memory location"),
    (lambda t: M.soft_threshold(t(3), t(4)), "does not broadcast"),
    (lambda t: M.prox_grad_step(t(3), t(4), 0.1, s0, 0.0), "grad has shape"),
    (lambda t: M.prox_grad_step(t(3), t(3), 1e39, s0, 0.0), "overflows"),
    (lambda t: M.group_soft_threshold(t(3), s0, 1, None, 0.0), "2-D matrix"),
    (lambda t: M.group_soft_threshold(t(2, 3), s0, 2, None, 0.0), "dim must be 0 or 1"),
    (lambda t: M.group_soft_threshold(t(2, 3), s0, 1, t(3), 0.0), "integer tensor of group labels"),
    (lambda t: M.group_soft_threshold(t(2, 3), t(5), 1, None, 0.0), "tau has 5 values but there are 2 groups"),
    (lambda t: M.svt(t(3), s0), "matrix or a batch of matrices"),
    (lambda t: M.smoothed_nuclear_norm(t(2, 2), 1.0, 0.0), "eps must be finite and positive"),
    (lambda t: M.pairwise_sq_dists(t(3, 4), [0, 3], False), "offsets must end at"),
    (lambda t: M.irls_weights(t(2, 3, 4), s0), "sq_dists must be an"),
    (lambda t: M.robust_consistency(t(3, 4), [0, 4], None, None), "exactly one of sigma"),
    (lambda t: M.amtfl_reconstruction(t(5, 3), t(4, 2), t(2, 3), None, False, False, False, False),
     "W must have shape"),
    (lambda t: M.dwa_penalty([t(3)], [t(4)], [t(3)], 1.0, True), "anchors\\[0\\] has shape"),
]


@pytest.mark.parametrize("i", range(len(BAD)))
def test_fake_kernels_refuse_what_eager_refuses(i):
    call, msg = BAD[i]

    def make(device):
        def t(*shape, dtype=torch.float32):
            return torch.ones(*shape, dtype=dtype, device=device)
        return t

    with pytest.raises(RuntimeError, match=msg):
        call(make("cpu"))
    with pytest.raises(RuntimeError, match=msg):
        call(make("meta"))
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(RuntimeError, match=msg):
        call(make("cpu"))
