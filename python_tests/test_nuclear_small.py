"""The CPU scalar path of the nuclear-norm ops (csrc/ops/nuclear_rule.cpp: small batches)
gives what the batched path gives: a batch past the scalar path's size limit against its
matrices one at a time, every op, both dtypes, thresholds that send matrices to every route."""

import pytest
import torch

from mtlkernels import ops

GRAM, GRAM64, EXACT = 1, 2, 3


def _batch(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200, 30, 25, generator=g, dtype=torch.float64)  # 200 * 25 > 4096: batched path
    x[::7] *= 1e-3  # mixed scales
    x[3, :, 0] = x[3, :, 1]  # rank deficient
    x[5] = 0.0  # a zero matrix
    x[11, :, :20] *= 1e-7  # ill-conditioned: the float32 Gram route rejects it
    s_max = torch.linalg.matrix_norm(x, ord=2)
    tau = s_max * torch.linspace(0.0, 1.2, 200, dtype=torch.float64)  # from the identity to all zero
    tau[11] = 1e-4 * s_max[11]  # a threshold among the tiny singular values: beyond float32's Gram route
    return x.to(dtype), tau


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_scalar_rule_matches_the_batched_form(dtype):
    x, tau = _batch(dtype)
    # float32: the two paths round differently (batched and one-matrix BLAS kernels); on an
    # AVX-512 CPU (AMD EPYC, 2026-11-27) the batched smoothed gradient of the rank-deficient
    # x[3] is 6.4e-5 from its float64 value, relative to its largest entry, and the two paths
    # 3.8e-5 apart (2e-5 had passed on the earlier machines)
    tol = {torch.float64: 1e-10, torch.float32: 1e-4}[dtype]
    outs = {
        "svt": (ops.svt(x, tau), [ops.svt(x[i], tau[i]) for i in range(200)]),
        "nuclear_norm": (ops.nuclear_norm(x), [ops.nuclear_norm(x[i]) for i in range(200)]),
        "smoothed": (ops.smoothed_nuclear_norm(x, 0.3, 0.2), [ops.smoothed_nuclear_norm(x[i], 0.3, 0.2) for i in range(200)]),
        "grad": (ops.smoothed_nuclear_norm_grad(x, 0.3, 0.2),
                 [ops.smoothed_nuclear_norm_grad(x[i], 0.3, 0.2) for i in range(200)]),
    }
    for name, (batched, single) in outs.items():
        single = torch.stack(single)
        scale = batched.abs().amax().clamp_min(1e-30)
        assert float((batched - single).abs().max() / scale) <= tol, name
    routes_b = ops.spectral_route(x, "svt", tau)
    routes_s = torch.stack([ops.spectral_route(x[i], "svt", tau[i]) for i in range(200)])
    assert torch.equal(routes_b, routes_s)
    assert {GRAM} <= set(routes_b.tolist())
    if dtype == torch.float32:
        assert GRAM64 in routes_b.tolist() or EXACT in routes_b.tolist()
