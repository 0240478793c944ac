"""The exact moves along the valley of W = L S (``mtlkernels/linear/_balance.py``): the best
scales of the factors, the exact 1-D minimisers behind the shear steps, and a sweep that
keeps L S and never raises the penalties. References: grids and brute force in numpy."""

import numpy as np
import pytest
import torch

from mtlkernels.linear._balance import _best_angle, _min_convex, _min_piecewise, balance_scales, move_duals, \
    rebalance, rotation_sweep, shear_sweep

GRID = np.linspace(-20, 20, 400001)


def test_balance_scales_minimise_each_component():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 3, 200) * (rng.random(200) < 0.9)
    b = rng.normal(size=200) * 2
    b = np.where(a == 0, np.abs(b), b)  # b < 0 needs a > 0 (else the penalty is unbounded below)
    e = rng.uniform(0, 3, 200) * (rng.random(200) < 0.9)
    c = balance_scales(*(torch.tensor(v) for v in (a, b, e))).numpy()
    grid = np.exp(np.linspace(-12, 12, 200001))
    for ai, bi, ei, ci in zip(a, b, e, c):
        if ei == 0 or (ai == 0 and bi <= 0):
            assert ci == 1.0  # an empty row of S or column of L keeps its scale
            continue
        f = lambda x: ai * x**2 + bi * x + ei / x  # noqa: E731
        assert ci > 0 and f(ci) <= f(grid).min() + 1e-9 * (1 + abs(f(ci))), (ai, bi, ei, ci)


def test_rebalance_keeps_the_product():
    rng = np.random.default_rng(1)
    L, S, c = (torch.tensor(rng.normal(size=s)) for s in [(5, 3), (3, 7), (3,)])
    Ln, Sn = rebalance(L, S, c.abs() + 0.1)
    torch.testing.assert_close(Ln @ Sn, L @ S, rtol=1e-12, atol=1e-12)


def test_piecewise_quadratic_minimiser_against_a_grid():
    rng = np.random.default_rng(2)
    for _ in range(500):
        M = int(rng.integers(0, 8))
        A, B = rng.uniform(0.01, 3), rng.normal()
        tau, c = rng.normal(size=M) * rng.choice([0.1, 1, 5]), rng.uniform(0, 2, M) * (rng.random(M) < 0.8)

        def phi(x):
            return A * x**2 - 2 * B * x + np.abs(np.subtract.outer(np.atleast_1d(x), tau)) @ c

        t = _min_piecewise(A, B, tau, c)
        assert phi(t)[0] <= phi(GRID).min() + 1e-9


def test_convex_minimiser_with_group_norms_against_a_grid():
    rng = np.random.default_rng(3)
    for _ in range(300):
        M, G = int(rng.integers(0, 6)), int(rng.integers(1, 4))
        A, B, mu = rng.uniform(0.01, 3), rng.normal(), rng.uniform(0, 2)
        tau, c = rng.normal(size=M), rng.uniform(0, 2, M)
        U, V = rng.normal(size=(G, 3)), rng.normal(size=(G, 3))
        if rng.random() < 0.3:
            U[0] = -0.7 * V[0]  # a group that vanishes along the line: a kink

        def phi(x):
            x = np.atleast_1d(x)
            return (A * x**2 - 2 * B * x + np.abs(np.subtract.outer(x, tau)) @ c
                    + mu * np.linalg.norm(U[None] + x[:, None, None] * V[None], axis=2).sum(1))

        t = _min_convex(A, B, tau, c, mu, (U * U).sum(1), (U * V).sum(1), (V * V).sum(1))
        # a kink of a group norm is located to ~1e-8 (the norm from its expanded square)
        assert phi(t)[0] <= phi(GRID).min() + 1e-7


def _penalty(L, S, lam, l1_L, mu, groups=None, recon=None):
    L, S = L.numpy(), S.numpy()
    if groups is None:
        pen_s = np.abs(S).sum()
    else:
        pen_s = sum(np.linalg.norm(S[:, groups == g], axis=1).sum() for g in np.unique(groups))
    value = lam * (L**2).sum() + l1_L * np.abs(L).sum() + mu * pen_s
    if recon is not None:
        X, T0, w = recon
        value += w * ((X @ L - T0) ** 2).sum()
    return value


def test_shear_sweep_keeps_the_product_and_lowers_the_penalty():
    rng = np.random.default_rng(4)
    for trial in range(40):
        d, k, T = int(rng.integers(1, 6)), int(rng.integers(1, 5)), int(rng.integers(1, 8))
        L = torch.tensor(rng.normal(size=(d, k)) * 10.0 ** rng.uniform(-2, 2, k))
        S = torch.tensor(rng.normal(size=(k, T)) * (rng.random((k, T)) < 0.7))
        lam, l1_L, mu = rng.uniform(0, 1), rng.uniform(0, 1) * (trial % 2), rng.uniform(0.01, 1)
        groups = rng.integers(0, 3, T) if trial % 3 == 0 else None
        recon = None
        if trial % 4 == 1 and groups is None:
            X = torch.tensor(rng.normal(size=(9, d)))
            recon = (X, torch.tensor(rng.normal(size=(9, k))), rng.uniform(0, 1))
        before = _penalty(L, S, lam, l1_L, mu, groups, recon)
        Ln, Sn, M = shear_sweep(L, S, lam, l1_L, mu, groups=groups,
                             recon=None if recon is None else (recon[0] @ L, recon[1], recon[2]))
        torch.testing.assert_close(Ln @ Sn, L @ S, rtol=1e-9, atol=1e-9 * float((L @ S).abs().max() + 1))
        torch.testing.assert_close(M @ S, Sn, rtol=1e-9, atol=1e-9 * float(S.abs().max() + 1))  # the move itself
        assert _penalty(Ln, Sn, lam, l1_L, mu, groups, recon) <= before * (1 + 1e-12) + 1e-12


def test_best_angle_is_the_global_minimiser_on_the_circle():
    rng = np.random.default_rng(5)
    circle = np.linspace(-np.pi, np.pi, 200001)
    for trial in range(300):
        M = int(rng.integers(0, 9))
        a, b, w = rng.normal(size=M), rng.normal(size=M), rng.uniform(0, 2, M) * (rng.random(M) < 0.9)
        if trial % 3 == 0:
            a[: M // 2] = 0.0  # terms |b sin|: breakpoints at 0 and pi
        p0, q0 = rng.normal(size=2) * rng.choice([0.0, 0.1, 3.0])

        def g(t):
            t = np.atleast_1d(t)
            return p0 * np.cos(t) + q0 * np.sin(t) + np.abs(np.outer(np.cos(t), a) + np.outer(np.sin(t), b)) @ w

        theta, gain, zero = _best_angle(a, b, w, p0, q0)
        assert abs(g(theta)[0] - g(0.0)[0] - gain) <= 1e-9 * (1 + abs(g(0.0)[0]))
        assert g(theta)[0] <= g(circle).min() + 1e-9
        if zero >= 0:  # the term it reports is zero there
            assert abs(a[zero] * np.cos(theta) + b[zero] * np.sin(theta)) <= 1e-12 * (abs(a[zero]) + abs(b[zero]))


def test_rotation_sweep_keeps_the_product_and_lowers_the_penalty():
    rng = np.random.default_rng(6)
    moved = 0
    for trial in range(40):
        d, k, T = int(rng.integers(1, 6)), int(rng.integers(1, 5)), int(rng.integers(1, 8))
        L = torch.tensor(rng.normal(size=(d, k)) * 10.0 ** rng.uniform(-1, 1, k))
        S = torch.tensor(rng.normal(size=(k, T)) * (rng.random((k, T)) < 0.7))
        lam, l1_L, mu = rng.uniform(0, 1), rng.uniform(0, 1) * (trial % 2), rng.uniform(0.01, 1)
        recon = None
        if trial % 4 == 1:
            X = torch.tensor(rng.normal(size=(9, d)))
            recon = (X, torch.tensor(rng.normal(size=(9, k))), rng.uniform(0, 1))
        before = _penalty(L, S, lam, l1_L, mu, None, recon)
        Ln, Sn, M = rotation_sweep(L, S, mu, l1_L, recon=None if recon is None else (recon[0] @ L, recon[1], recon[2]))
        scale = float((L @ S).abs().max() + 1)
        torch.testing.assert_close(Ln @ Sn, L @ S, rtol=1e-9, atol=1e-9 * scale)  # zeroed entries: ~1e-16
        torch.testing.assert_close(M @ M.T, torch.eye(k, dtype=M.dtype), rtol=0, atol=1e-12)
        torch.testing.assert_close(M @ S, Sn, rtol=1e-9, atol=1e-9 * float(S.abs().max() + 1))
        after = _penalty(Ln, Sn, lam, l1_L, mu, None, recon)
        assert after <= before * (1 + 1e-12) + 1e-12
        moved += int(after < before * (1 - 1e-6))
    assert moved >= 10  # the sweep does move (random factors are far from the valley's best basis)


def test_balance_scales_in_float32_stay_finite_and_positive():
    """A column of L near 0 in float32 (a = 1e-40, a denormal; or a = b = 1e-38 against e = 1e30)
    gave a scale of nan (c^3 overflowing float32): computed in float64 and kept within
    max^(1/4) of the dtype, they stay finite, and an ordinary component keeps its exact optimum."""
    a = torch.tensor([1e-40, 1e-38, 0.26], dtype=torch.float32)
    b = torch.tensor([0.0, 1e-38, 0.0], dtype=torch.float32)
    e = torch.tensor([1.0, 1e30, 0.54], dtype=torch.float32)
    c = balance_scales(a, b, e)
    assert c.dtype == torch.float32 and bool(torch.isfinite(c).all()) and bool((c > 0).all())
    assert float(c[2]) == pytest.approx((0.54 / 0.52) ** (1 / 3), rel=1e-6)


def test_move_duals_drops_the_duals_of_a_move_singular_to_the_dtype():
    """A valley move singular to float32's precision (shears between components with an empty
    row of S and a column of L near 0: Go-MTL, logistic, float32 on raw_problem([13, 11]) of
    test_linear_raw_fuzz raised in linalg.inv) drops the blocks' ADMM duals, which then start
    cold; a well-conditioned move maps them (M^-T G for S, G M^T for L)."""
    M = torch.tensor([[0.99482, 0.856, -0.36755], [-1.2299e-07, 6.9237e6, -2.9729e6],
                      [-1.0019e-14, -6.9237e6, 2.9729e6]], dtype=torch.float32)

    def warm():
        return {"S": ([[torch.ones(3, 2)]], 1.0), "L": ([[torch.ones(4, 3)]], 1.0), "other": 1}

    w = warm()
    move_duals(w, M, "S", "L")
    assert set(w) == {"other"}
    w, M = warm(), torch.diag(torch.tensor([2.0, 1.0, 0.5]))
    move_duals(w, M, "S", "L")
    assert torch.allclose(w["S"][0][0][0], torch.linalg.inv(M).T @ torch.ones(3, 2))
    assert torch.allclose(w["L"][0][0][0], torch.ones(4, 3) @ M.T) and w["S"][1] == 1.0
