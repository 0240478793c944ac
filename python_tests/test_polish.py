"""The projected Newton finish of the alternating estimators (``mtlkernels/linear/_polish.py``),
checked against independent solvers: scipy's NNLS for the bounds, scikit-learn's Lasso for
the l1 written as a bound, and a nonconvex function whose start sits near a saddle."""

import numpy as np
import pytest
import torch
from scipy.optimize import nnls
from sklearn.linear_model import Lasso

from mtlkernels.linear._polish import POLISH_MAX_VARS, POLISH_MAX_VARS_EXACT, _newton_direction, _value_index, \
    autograd_hessian, parts_hessian, polish, projected_newton


def projected_gradient(x, g, lower):
    return float(np.linalg.norm(np.where(lower, x - np.maximum(x - g, 0), g)))


def test_bounds_match_nnls_on_badly_scaled_columns():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((40, 12)) * np.logspace(-3, 3, 12)
    b = rng.standard_normal(40) * 100
    At, bt = torch.tensor(A), torch.tensor(b)

    def fun(ps):
        return 0.5 * ((At @ ps[0] - bt) ** 2).sum()

    def residual(ps):
        x = ps[0]
        return projected_gradient(x.numpy(), (At.T @ (At @ x - bt)).numpy(), np.ones(12, bool)) / np.linalg.norm(A.T @ b)

    (x,), r, steps = projected_newton(fun, [torch.zeros(12, dtype=torch.float64)], [torch.ones(12, dtype=torch.bool)],
                                      residual, 1e-12)
    ref, _ = nnls(A, b)
    assert r <= 1e-12 and steps < 60
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    assert (x.numpy() >= 0).all() and (x.numpy() == 0).sum() == (ref == 0).sum()


@pytest.mark.parametrize("given_hessian", [False, True], ids=["autograd", "caller"])
def test_l1_variables_match_sklearn_lasso(given_hessian):
    """Also with the Hessian in the values handed in (``hessian=``), mapped to the free parts
    by index and sign; columns of scales 1e-2..1e2, so that several coefficients sit near
    zero on the way (the epsilon-active set)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 8)) * np.logspace(-2, 2, 8)
    y = X @ (np.array([3.0, 0, 0, -2, 0, 0, 1, 0]) / np.logspace(-2, 2, 8)) + 0.1 * rng.standard_normal(30)
    alpha = 0.2
    Xt, yt = torch.tensor(X), torch.tensor(y)

    def fun(v, a):
        return ((Xt @ v["w"] - yt) ** 2).sum() / (2 * len(y)) + alpha * a["w"].sum()

    def residual(v):
        w = v["w"].numpy()
        g = X.T @ (X @ w - y) / len(y)
        return float(np.linalg.norm(w - np.sign(w - g) * np.maximum(np.abs(w - g) - alpha, 0)))

    H = torch.tensor(X.T @ X / len(y))
    out, r, _ = polish(fun, {"w": torch.zeros(8, dtype=torch.float64)}, {"w": "l1"}, residual, 1e-12,
                       hessian=(lambda v: H) if given_hessian else None)
    ref = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, y).coef_
    assert r <= 1e-12
    np.testing.assert_allclose(out["w"].numpy(), ref, atol=1e-9, rtol=1e-7)
    assert ((out["w"].numpy() == 0) == (ref == 0)).all()


def test_negative_curvature_leads_away_from_a_saddle():
    """f = (x^2 - 1)^2 + (y - x)^2 from (1e-3, 0): the Hessian at the start has a negative
    eigenvalue; the shifted Newton steps must end at a minimiser (x = y = +-1), not the saddle."""
    def fun(v, a):
        x, y = v["p"][0], v["p"][1]
        return (x * x - 1) ** 2 + (y - x) ** 2

    def residual(v):
        with torch.enable_grad():
            p = v["p"].detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fun({"p": p}, {}), p)
        return float(g.norm())

    out, r, _ = polish(fun, {"p": torch.tensor([1e-3, 0.0], dtype=torch.float64)}, {"p": "free"}, residual, 1e-12)
    assert r <= 1e-12
    np.testing.assert_allclose(np.abs(out["p"].numpy()), [1.0, 1.0], rtol=1e-10)


def test_move_is_taken_only_when_it_does_not_raise_the_objective():
    calls = []

    def fun(v, a):
        return ((v["x"] - 3.0) ** 2).sum()

    def move(v):
        calls.append(1)
        return {"x": v["x"] + 100.0}  # always worse: must be refused

    out, r, _ = polish(fun, {"x": torch.zeros(3, dtype=torch.float64)}, {"x": "free"},
                       lambda v: float((v["x"] - 3.0).norm()), 1e-12, move=move)
    assert calls and r <= 1e-12
    np.testing.assert_allclose(out["x"].numpy(), 3.0)


def value_abs_hessian(fun, variables):
    """fun(values, absolute)'s Hessian with the values and the absolute values as independent
    unknowns: (d2 / d values^2, d2 / d values d absolute), the latter indexed like the values."""
    names, shapes = list(variables), [x.shape for x in variables.values()]
    sizes = [s.numel() for s in shapes]
    n = sum(sizes)

    def split(x):
        return dict(zip(names, (c.reshape(s) for c, s in zip(torch.split(x, sizes), shapes))))

    flat = torch.cat([x.detach().reshape(-1) for x in variables.values()])
    H = autograd_hessian(lambda x: fun(split(x[:n]), split(x[n:])), torch.cat([flat, flat.abs()]))
    return H[:n, :n], H[:n, n:]


def test_cross_terms_of_values_and_absolute_values():
    """``hessian=`` returning (H, C), C the cross derivatives of the values and the absolute
    values (weights 1 + |x| on a loss, as AMTL's), mapped to the parts (``parts_hessian``):
    the parts' Hessian by autograd, for a free, an l1 and a non-negative variable; and the
    finish's iterates the same with it as with autograd's."""
    g = torch.Generator().manual_seed(4)
    A, c, M = (torch.randn(*s, dtype=torch.float64, generator=g) for s in ((6, 4), (6,), (4, 5)))

    def fun(v, a):
        loss = torch.nn.functional.softplus(A @ v["w"] - c).sum()
        u = torch.cat([v["x"], v["z"]])
        return (1 + 0.4 * a["x"].sum() + 0.3 * a["z"].sum()) * loss + 0.5 * ((v["w"] - M @ u) ** 2).sum() \
            + 0.1 * a["x"].sum()

    f64 = {"dtype": torch.float64}
    start = {"w": torch.randn(4, **f64, generator=g), "x": torch.tensor([0.5, -0.2, 0.7], **f64),
             "z": torch.tensor([0.3, 0.1], **f64)}
    kinds = {"w": "free", "x": "l1", "z": "nonneg"}
    # parts: w (4), x+ (3), x- (3), z (2)
    parts = torch.cat([start["w"], start["x"].clamp_min(0), (-start["x"]).clamp_min(0), start["z"]])

    def in_parts(q):
        return fun({"w": q[:4], "x": q[4:7] - q[7:10], "z": q[10:]}, {"x": q[4:7] + q[7:10], "z": q[10:]})

    index, sign = _value_index([4, 3, 2], [1, 2, 1], parts)
    has_abs = torch.tensor([0.0] * 4 + [1.0] * 8, dtype=torch.float64)
    torch.testing.assert_close(parts_hessian(value_abs_hessian(fun, start), index, sign, has_abs),
                               autograd_hessian(in_parts, parts), rtol=1e-10, atol=1e-12)
    runs = [polish(fun, start, kinds, lambda v: 1.0, 1e-12, hessian=h)
            for h in (None, lambda v: value_abs_hessian(fun, v))]
    for n in start:
        torch.testing.assert_close(runs[1][0][n], runs[0][0][n], rtol=1e-9, atol=1e-12)


def test_size_cap_and_bad_kind():
    big = {"x": torch.zeros(POLISH_MAX_VARS + 1, dtype=torch.float64)}
    assert polish(lambda v, a: (v["x"] ** 2).sum(), big, {"x": "free"}, lambda v: 1.0, 1e-6) is None
    with pytest.raises(ValueError, match="'box'.*'x'"):
        polish(lambda v, a: v["x"].sum(), {"x": torch.zeros(2)}, {"x": "box"}, lambda v: 1.0, 1e-6)


def test_value_index_is_the_jacobian_of_the_split():
    """(J^T H J)[p, q] = sign[p] sign[q] H[index[p], index[q]] for the parts of a free
    variable of 3 and an l1 variable of 2 (x = x+ - x-)."""
    index, sign = _value_index([3, 2], [1, 2], torch.zeros(1, dtype=torch.float64))
    J = torch.zeros(5, 7, dtype=torch.float64)
    J[index, torch.arange(7)] = sign
    np.testing.assert_array_equal(J.numpy(), np.block([[np.eye(3), np.zeros((3, 4))],
                                                       [np.zeros((2, 3)), np.eye(2), -np.eye(2)]]))
    H = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(H[index][:, index] * sign[:, None] * sign[None, :], J.T @ H @ J)


def test_exact_hessian_cap_counts_values():
    """With ``hessian=`` the cap is on the values (an l1 variable's two parts count once)."""
    n = POLISH_MAX_VARS_EXACT // 2 + 1  # 2n parts > the cap, n values below it
    x = torch.linspace(-1, 1, n, dtype=torch.float64)
    out = polish(lambda v, a: ((v["x"] - x) ** 2).sum() + 0.1 * a["x"].sum(), {"x": torch.zeros(n, dtype=torch.float64)},
                 {"x": "l1"}, lambda v: float((v["x"] - torch.sign(x) * (x.abs() - 0.05).clamp_min(0)).norm()), 1e-12,
                 hessian=lambda v: 2 * torch.eye(n, dtype=torch.float64))
    assert out is not None and out[1] <= 1e-12
    big = {"x": torch.zeros(POLISH_MAX_VARS_EXACT + 1, dtype=torch.float64)}
    assert polish(lambda v, a: (v["x"] ** 2).sum(), big, {"x": "free"}, lambda v: 1.0, 1e-6,
                  hessian=lambda v: torch.eye(POLISH_MAX_VARS_EXACT + 1, dtype=torch.float64)) is None


def test_saddle_free_direction():
    """On an indefinite H the "abs" mode is Newton's step with |eigenvalues| (in the Jacobi
    scaled variables), a descent direction; the "shift" mode damps every direction by the
    most negative eigenvalue. A positive semidefinite H (or ``saddle_free=False``) has the
    "shift" mode alone."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    H = torch.tensor(Q @ np.diag([-2.0, 1e-3, 1.0, 3.0]) @ Q.T)
    g = torch.tensor(rng.standard_normal(4))
    newton = _newton_direction(H, g, saddle_free=True)
    assert newton.modes == ("shift", "abs")
    s = H.diagonal().abs().rsqrt()
    ev, V = torch.linalg.eigh(H * s[:, None] * s[None, :])
    expect = -(V @ ((V.T @ (g * s)) / ev.abs())) * s
    torch.testing.assert_close(newton(0.0, "abs"), expect, rtol=1e-12, atol=0)
    assert float(g @ newton(0.0, "abs")) < 0
    assert _newton_direction(H, g).modes == ("shift",)
    assert _newton_direction(H @ H, g, saddle_free=True).modes == ("shift",)
