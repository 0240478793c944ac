"""The ADMM engine (mtlkernels.optim.admm) and TaskGram: exact resolvents, the KKT
certificate, blocks summed into W, several smooth parts, warm starts."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso, MultiTaskLasso

from mtlkernels import ops
from mtlkernels.optim import Quadratic, TaskGram, admm

ONE_THREAD = True  # the whole module on one intra-op thread (conftest.py)



def lstsq_quadratic(X, Y):
    return Quadratic.least_squares(torch.tensor(X), torch.tensor(Y))


@pytest.mark.parametrize("shared", [True, False])
def test_taskgram_inverse_and_product(shared):
    g = torch.Generator().manual_seed(0)
    T, d = 5, 7
    X = torch.randn(T, 20, d, generator=g, dtype=torch.float64)
    X[:, :, 3] = 2.0  # a singular direction in every task
    G = X.mT @ X if not shared else X[0].T @ X[0]
    c = torch.rand(T, generator=g, dtype=torch.float64) + 0.5
    tg = TaskGram(G, c, n_tasks=T)
    D = torch.randn(d, T, generator=g, dtype=torch.float64)
    Gt = G if not shared else G.expand(T, d, d)
    ref = torch.stack([c[t] * Gt[t] @ D[:, t] for t in range(T)], 1)
    torch.testing.assert_close(tg(D), ref)
    for r in (1e-3, 1.0, 1e3):
        sol = tg.inverse(D, r)
        torch.testing.assert_close(tg(sol) + r * sol, D, rtol=1e-9, atol=1e-9)
    half = tg.scaled(c / 2)
    torch.testing.assert_close(half(D), ref / 2)
    assert half.mean_eigenvalue() == pytest.approx(tg.mean_eigenvalue() / 2)


def test_admm_lasso_equals_sklearn_and_the_certificate_bounds_the_gap():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 9)) * np.r_[np.ones(5), 100 * np.ones(4)]  # badly scaled columns
    Y = X[:, [0, 6]] @ rng.standard_normal((2, 3)) + rng.standard_normal((40, 3))
    alpha = 0.2
    q = lstsq_quadratic(X, Y)
    res = admm(q, lambda v, t: [ops.soft_threshold(v[0], t * alpha)], lambda p: float(alpha * p[0].abs().sum()),
               [torch.zeros(9, 3, dtype=torch.float64)], tol=1e-10, max_iter=20000)
    assert res.converged and res.residual <= 1e-10
    for t in range(3):
        sk = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=1_000_000).fit(X, Y[:, t])
        np.testing.assert_allclose(res.params[0][:, t].numpy(), sk.coef_, atol=1e-7)
    # the certificate: F(Z) - F* <= residual * scale * ||Z - Z*|| (convexity); check at a loose tol
    loose = admm(q, lambda v, t: [ops.soft_threshold(v[0], t * alpha)], lambda p: float(alpha * p[0].abs().sum()),
                 [torch.zeros(9, 3, dtype=torch.float64)], tol=1e-3)
    scale = max(1.0, float(q.linear.norm()))
    dist = float((loose.params[0] - res.params[0]).norm())
    assert loose.objective - res.objective <= loose.residual * scale * dist * (1 + 1e-9) + 1e-12
    assert loose.objective >= res.objective - 1e-12


def test_admm_two_blocks_and_two_smooth_parts():
    """Blocks summed into W (C + S with nuclear + l1) and a consensus of two quadratics, each
    against the same problem solved another way."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((50, 6))
    Y = X @ rng.standard_normal((6, 4)) + 0.3 * rng.standard_normal((50, 4))
    q = lstsq_quadratic(X, Y)
    # (1) two blocks: lambda_s huge gives S = 0 and the trace-norm problem in C alone
    res2 = admm(q, lambda v, t: [ops.svt(v[0], t * 0.3), ops.soft_threshold(v[1], t * 1e6)],
                lambda p: float(0.3 * ops.nuclear_norm(p[0]) + 1e6 * p[1].abs().sum()),
                [torch.zeros(6, 4, dtype=torch.float64)] * 2, tol=1e-10, max_iter=20000)
    res1 = admm(q, lambda v, t: [ops.svt(v[0], t * 0.3)], lambda p: float(0.3 * ops.nuclear_norm(p[0])),
                [torch.zeros(6, 4, dtype=torch.float64)], tol=1e-10, max_iter=20000)
    assert float(res2.params[1].abs().max()) == 0
    torch.testing.assert_close(res2.params[0], res1.params[0], atol=1e-7, rtol=0)
    # (2) the same quadratic split in two halves (consensus of two smooth parts)
    half = Quadratic(lambda D: 0.5 * q.hess(D), 0.5 * q.linear, 0.5 * q.const,
                     lambda R, r: q.inverse(2 * R, 2 * r), q.curvature / 2)
    res_c = admm([half, half], lambda v, t: [ops.svt(v[0], t * 0.3)], lambda p: float(0.3 * ops.nuclear_norm(p[0])),
                 [torch.zeros(6, 4, dtype=torch.float64)], tol=1e-10, max_iter=20000)
    torch.testing.assert_close(res_c.params[0], res1.params[0], atol=1e-7, rtol=0)
    assert res_c.objective == pytest.approx(res1.objective, rel=1e-10)


def test_admm_warm_start_and_errors():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 5))
    Y = rng.standard_normal((30, 3))
    q = lstsq_quadratic(X, Y)
    prox = lambda v, t: [ops.group_soft_threshold(v[0], t * 0.1, dim=1)]  # noqa: E731
    pen = lambda p: float(0.1 * p[0].norm(dim=1).sum())  # noqa: E731
    cold = admm(q, prox, pen, [torch.zeros(5, 3, dtype=torch.float64)], tol=1e-9, max_iter=5000)
    warm = admm(q, prox, pen, cold.params, tol=1e-9, max_iter=5000, warm=cold.state)
    assert warm.n_iter <= 5 and warm.converged
    sk = MultiTaskLasso(alpha=0.1, fit_intercept=False, tol=1e-14, max_iter=1_000_000).fit(X, Y)
    np.testing.assert_allclose(cold.params[0].numpy(), sk.coef_.T, atol=1e-6)
    with pytest.raises(ValueError, match="resolvent"):
        admm(Quadratic(lambda D: D, torch.zeros(5, 3, dtype=torch.float64)), prox, pen,
             [torch.zeros(5, 3, dtype=torch.float64)])
    capped = admm(q, prox, pen, [torch.zeros(5, 3, dtype=torch.float64)], tol=1e-14, max_iter=3)
    assert capped.n_iter == 3 and not capped.converged and math.isfinite(capped.residual)


def test_anderson_accelerates_a_slow_linear_iteration_and_backs_off_when_worse():
    from mtlkernels.optim._anderson import Anderson

    g = torch.Generator().manual_seed(4)
    n = 30
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    M = Q @ torch.diag(torch.linspace(0.0, 0.999, n, dtype=torch.float64)) @ Q.T  # contraction, rate 0.999
    c = torch.randn(n, generator=g, dtype=torch.float64)
    fixed = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - M, c)

    def iterations(memory, limit=20000):
        acc, s = Anderson(memory), torch.zeros(n, dtype=torch.float64)
        for k in range(1, limit + 1):
            s = acc.step(s, M @ s + c)
            if float((s - fixed).norm()) <= 1e-8 * float(fixed.norm()):
                return k
        return limit

    plain, accelerated = iterations(0), iterations(5)
    assert plain > 5000 and 20 * accelerated < plain, (plain, accelerated)
    # the safeguard: an accelerated point whose residual is worse than the last plain one is dropped
    acc, s = Anderson(3), torch.zeros(n, dtype=torch.float64)
    for _ in range(4):
        s = acc.step(s, M @ s + c)
    assert acc.accelerated
    plain_point = acc.plain
    worse = s + 10 * acc.plain_norm * torch.ones(n, dtype=torch.float64)  # pretend the map sent s far away
    assert torch.equal(acc.settle(s, worse), plain_point) and acc.count == 0
    assert torch.equal(Anderson(0).step(s, worse), worse)


def test_admm_started_at_the_optimum_without_duals_stops_at_once():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((25, 6)) * np.r_[1e-2, 1, 1, 1, 1, 1e2]
    Y = rng.standard_normal((25, 4))
    q = lstsq_quadratic(X, Y)
    prox = lambda v, t: [ops.svt(v[0], t * 0.5)]  # noqa: E731
    pen = lambda p: float(0.5 * ops.nuclear_norm(p[0]))  # noqa: E731
    cold = admm(q, prox, pen, [torch.zeros(6, 4, dtype=torch.float64)], tol=1e-10, max_iter=5000)
    assert cold.converged
    again = admm(q, prox, pen, cold.params, tol=1e-8, max_iter=5000)  # no warm state: duals from the gradient
    assert again.converged and again.n_iter <= 5
    no_aa = admm(q, prox, pen, [torch.zeros(6, 4, dtype=torch.float64)], tol=1e-10, max_iter=5000, anderson=0)
    torch.testing.assert_close(no_aa.params[0], cold.params[0], atol=1e-6, rtol=0)
