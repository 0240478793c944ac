"""Mixed precision: every op under torch.autocast (float16 / bfloat16 inputs computed in
float32 through torch.library.register_autocast); the in-place ops take float16 / bfloat16
x and compute it in float32, inside autocast or not."""

import pytest
import torch

from mtlkernels import ops
from mtlkernels import reference as ref
from mtlkernels.testing import devices, rel_err

HALF = {"cpu": [torch.bfloat16, torch.float16], "cuda": [torch.float16, torch.bfloat16]}


def _rand(*shape, seed, dtype, device, positive=False):
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (t.abs() + 0.1 if positive else t).to(dtype).to(device)


def _cases(h, device):
    """(name, op on half inputs, reference on the same values in float64)."""
    x, g = _rand(6, 5, seed=1, dtype=h, device=device), _rand(6, 5, seed=2, dtype=h, device=device)
    col = _rand(5, seed=3, dtype=h, device=device, positive=True)
    labels = torch.tensor([0, 2, 2, 0, 1], device=device)
    P = _rand(4, 7, seed=4, dtype=h, device=device)
    W = _rand(2, 4, 4, seed=5, dtype=h, device=device, positive=True)
    D = ref.pairwise_sq_dists(P.double(), [0, 3, 7]).to(h)
    Z, Wt, A = (_rand(8, 5, seed=6, dtype=h, device=device), _rand(5, 3, seed=7, dtype=h, device=device),
                _rand(3, 5, seed=8, dtype=h, device=device))
    d = lambda t: t.double()  # noqa: E731
    return [
        ("soft_threshold", lambda: ops.soft_threshold(x, col), lambda: ref.soft_threshold(d(x), d(col))),
        ("elastic_net_prox", lambda: ops.elastic_net_prox(x, 0.2, 0.5), lambda: ref.elastic_net_prox(d(x), 0.2, 0.5)),
        ("prox_grad_step", lambda: ops.prox_grad_step(x, g, 0.1, col, 0.2),
         lambda: ref.prox_grad_step(d(x), d(g), 0.1, d(col), 0.2)),
        ("group_soft_threshold", lambda: ops.group_soft_threshold(x, 0.5, 1, labels, 0.1),
         lambda: ref.group_soft_threshold(d(x), 0.5, 1, labels, 0.1)),
        ("group_prox_grad_step", lambda: ops.group_prox_grad_step(x, g, 0.1, col, 0),
         lambda: ref.group_prox_grad_step(d(x), d(g), 0.1, d(col), 0)),
        ("svt", lambda: ops.svt(x, 0.5), lambda: ref.svt(d(x), 0.5)),
        ("nuclear_norm", lambda: ops.nuclear_norm(x), lambda: ref.nuclear_norm(d(x))),
        ("smoothed_nuclear_norm", lambda: ops.smoothed_nuclear_norm(x, 1.0, 0.5),
         lambda: ref.smoothed_nuclear_norm(d(x), 1.0, 0.5)),
        ("smoothed_nuclear_norm_grad", lambda: ops.smoothed_nuclear_norm_grad(x, 1.0, 0.5),
         lambda: ref.smoothed_nuclear_norm_grad(d(x), 1.0, 0.5)),
        ("pairwise_sq_dists", lambda: ops.pairwise_sq_dists(P, [0, 3, 7]), lambda: ref.pairwise_sq_dists(d(P), [0, 3, 7])),
        ("irls_weights", lambda: ops.irls_weights(D, 1.5)[0], lambda: ref.irls_weights(d(D), 1.5)[0]),
        ("robust_consistency", lambda: ops.robust_consistency(P, [0, 3, 7], 1.5),
         lambda: ref.robust_consistency(d(P), [0, 3, 7], 1.5)),
        ("irls_consensus", lambda: ops.irls_consensus(W, P, [0, 3, 7]), lambda: ref.irls_consensus(d(W), d(P), [0, 3, 7])),
        ("pairwise_mix", lambda: ops.pairwise_mix(P, [0, 3, 7], W), lambda: ref.pairwise_mix(d(P), [0, 3, 7], d(W))),
        ("amtfl_reconstruction_loss", lambda: ops.amtfl_reconstruction_loss(Z, Wt, A),
         lambda: ref.amtfl_reconstruction_loss(d(Z), d(Wt), d(A))),
        ("dwa_penalty", lambda: ops.dwa_penalty([x, g], [g, x], [x.abs(), g.abs()], 0.5),
         lambda: ref.dwa_penalty([d(x), d(g)], [d(g), d(x)], [d(x).abs(), d(g).abs()], 0.5)),
    ]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("half", [0, 1])
def test_every_op_under_autocast_computes_in_float32(device, half):
    h = HALF[device][half]
    for name, fn, rfn in _cases(h, device):
        with torch.autocast(device, dtype=h):
            out = fn()
        assert out.dtype == torch.float32, name
        assert rel_err(out, rfn()) <= 1e-5, name  # the half inputs are exact in float32
        with pytest.raises(RuntimeError, match="must be float32 or float64, got (BFloat16|Half); cast it"):
            fn()  # outside autocast a half input is refused, with the fix


@pytest.mark.parametrize("device", devices())
def test_gradients_flow_under_autocast(device):
    x = _rand(6, 5, seed=9, dtype=torch.bfloat16, device=device).requires_grad_()
    with torch.autocast(device, dtype=torch.bfloat16):
        y = ops.svt(ops.group_soft_threshold(ops.soft_threshold(x, 0.1), 0.3), 0.2).sum()
    (g,) = torch.autograd.grad(y, x)
    assert g.dtype == torch.bfloat16 and torch.isfinite(g).all()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("h", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("autocast", [False, True])
def test_inplace_ops_take_half_x(device, h, autocast):
    x0, g = _rand(6, 5, seed=10, dtype=h, device=device), _rand(6, 5, seed=11, dtype=h, device=device)
    d = lambda t: t.double()  # noqa: E731
    cases = [
        (lambda x: ops.soft_threshold_(x, 0.3), ref.soft_threshold(d(x0), 0.3)),
        (lambda x: ops.elastic_net_prox_(x, 0.3, 0.5), ref.elastic_net_prox(d(x0), 0.3, 0.5)),
        (lambda x: ops.prox_grad_step_(x, g, 0.1, 0.2), ref.prox_grad_step(d(x0), d(g), 0.1, 0.2)),
        (lambda x: ops.group_soft_threshold_(x, 0.5, 0), ref.group_soft_threshold(d(x0), 0.5, 0)),
        (lambda x: ops.group_prox_grad_step_(x, g, 0.1, 0.5, 1), ref.group_prox_grad_step(d(x0), d(g), 0.1, 0.5, 1)),
    ]
    for fn, expected in cases:
        x = x0.clone()
        with torch.autocast(device, dtype=h, enabled=autocast):
            assert fn(x) is x
        assert x.dtype == h
        # computed in float32, rounded once to x's dtype: within one of its units in the last place
        ulp = 2.0**-7 if h == torch.bfloat16 else 2.0**-10
        torch.testing.assert_close(x.double(), expected, rtol=ulp, atol=1e-6)
    # float32 parameters and their gradients in a training step under autocast
    p = _rand(6, 5, seed=12, dtype=torch.float32, device=device)
    with torch.autocast(device, dtype=h):
        ops.dwa_grad_([g.float()], [p], [p * 0], [p.abs()], 0.5)
        ops.prox_grad_step_(p, g.float(), 0.1, 0.2)
    assert p.dtype == torch.float32
