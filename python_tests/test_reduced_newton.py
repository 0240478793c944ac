"""The finish of ``mtlkernels/linear/_reduced_newton.py`` (proximal Newton on S with L
eliminated): its derivatives against autograd, and Go-MTL and shallow AMTFL (squared loss,
A = 0) at their optimum on raw School-shaped data where the alternation alone stops above it,
checked in numpy."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from mtlkernels.datasets import school_like
from mtlkernels.linear import AMTFL, GoMTL
from mtlkernels.linear import amtfl as amtfl_module
from mtlkernels.linear import latent as latent_module
from mtlkernels.linear._reduced_newton import LatentQuadratic, reduced_newton


def small_quadratic(seed=3, d=4, k=3, T=5, extra=False):
    """A random LatentQuadratic; ``extra``: False, True (one curvature E for every column of
    L, and a linear term) or "columns" (one E a column, AMTFL's centred and uncentred ones)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(T, 9, d, generator=g, dtype=torch.float64) * torch.logspace(-1, 1, d, dtype=torch.float64)
    G = X.mT @ X / 9
    B = torch.randn(d, T, generator=g, dtype=torch.float64)
    E = El = None
    if extra:
        Z = torch.randn(20, d, generator=g, dtype=torch.float64) + 1.0
        E, El = 0.3 * Z.T @ Z, torch.randn(d, k, generator=g, dtype=torch.float64)
        if extra == "columns":
            Zc = Z - Z.mean(0)
            E = torch.stack([0.3 * Zc.T @ Zc if j % 2 else E for j in range(k)])
    return LatentQuadratic(G, B, 1.5, E, El, 0.05, 0.02)


@pytest.mark.parametrize("extra", [False, True, "columns"])
def test_derivatives_match_autograd_of_the_projected_objective(extra):
    q = small_quadratic(extra=extra)
    k, T = 3, q.G.shape[0]
    S = torch.randn(k, T, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def psi(s):  # the smooth part with L at its optimum, through differentiable solves
        Sx = s.reshape(T, k).T
        factor = q.l_system(Sx)
        L = q.l_of(Sx, factor)
        return _smooth(q, L, Sx)

    s = S.T.reshape(-1)
    factor = q.l_system(S)
    L = q.l_of(S, factor)
    g, H = q.gradient(L, S), q.hessian(L, S, factor)
    torch.testing.assert_close(g, torch.autograd.functional.jacobian(psi, s), rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(H, torch.autograd.functional.hessian(psi, s), rtol=1e-8, atol=1e-10)
    # L is the exact minimiser: the gradient in L of the smooth part vanishes there
    Lr = L.clone().requires_grad_(True)
    (gL,) = torch.autograd.grad(_smooth(q, Lr, S), Lr)
    assert float(gL.norm()) < 1e-10 * max(1.0, float(q.B.norm()))


def _smooth(q, L, S):
    """The smooth part, written out column by column (independently of LatentQuadratic)."""
    W = L @ S
    out = 0.5 * (W * torch.einsum("tab,bt->at", q.G, W)).sum() - (q.B * W).sum() + q.lam * (L * L).sum()
    if q.E is not None:
        for j in range(L.shape[1]):
            E = q.E if q.E.dim() == 2 else q.E[j]
            out = out + 0.5 * L[:, j] @ E @ L[:, j] - q.El[:, j] @ L[:, j]
    return out


def test_reduced_newton_stops_at_a_stationary_point():
    q = small_quadratic(seed=5, d=5, k=3, T=8, extra=True)
    S0 = torch.randn(3, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def kkt(L, S):
        Sr = S.clone().requires_grad_(True)
        (gS,) = torch.autograd.grad(_smooth(q, L, Sr), Sr)
        v = S - gS
        return float((S - torch.sign(v) * (v.abs() - q.mu).clamp_min(0)).norm()) / max(1.0, float(q.B.norm()))

    L0 = q.l_of(S0, q.l_system(S0))
    F0 = q.value(L0, S0)
    L, S, r, steps = reduced_newton(q, L0, S0, kkt, 1e-9)
    assert r <= 1e-9 and 0 < steps < 100
    assert q.value(L, S) < F0
    assert bool((S == 0).any())  # the l1 is active: some entries exactly zero


def school_subset(n_tasks=30):
    Xs, ys = school_like(0).split("train")
    return Xs[:n_tasks], ys[:n_tasks]


SETTINGS = dict(n_latent=5, alpha=0.1, mu=1e-2, gamma=1e-2, lam=1e-2)  # issue 11's, 5 bases


def latent_kkt(est, Xs, ys):
    """Every block's KKT residual of AMTFL at A = 0 in numpy (task_weighting "mean": each
    task's 0.5 mean squared error; reconstruction gamma / N ||X L - 1 relu(c)^T||^2), the
    intercepts included: the norm of the distance of each block's gradient to minus its
    penalty's subdifferential, relative to the norm of that gradient at zero (S = 0 or L = 0,
    the intercepts at their optimum there), as the estimators' ``tol`` is documented. With
    ``est`` a GoMTL (no reconstruction), Go-MTL's."""
    L, S, b = est.L_, est.S_, est.intercept_
    c = getattr(est, "recon_bias_", np.zeros(L.shape[1]))
    mu, lam = est.mu, est.lam
    X_all = np.vstack(Xs)
    rw = est.gamma / X_all.shape[0] if isinstance(est, AMTFL) else 0.0
    rc = np.maximum(c, 0)[None, :]
    gL = 2 * lam * L + 2 * rw * X_all.T @ (X_all @ L - rc)
    gL0 = -2 * rw * X_all.T @ np.broadcast_to(rc, (X_all.shape[0], L.shape[1]))
    gS, gS0, gb = np.zeros_like(S), np.zeros_like(S), np.zeros(len(Xs))
    for t, (X, y) in enumerate(zip(Xs, ys)):
        r = (X @ (L @ S[:, t]) + b[t] - y) / len(y)
        r0 = (y.mean() - y) / len(y)  # S = 0 (or L = 0): W = 0, b_t = the task's mean
        gL += np.outer(X.T @ r, S[:, t])
        gL0 += np.outer(X.T @ r0, S[:, t])
        gS[:, t], gS0[:, t] = L.T @ (X.T @ r), L.T @ (X.T @ r0)
        gb[t] = r.sum()
    s_res = np.where(S == 0, np.maximum(np.abs(gS) - mu, 0), gS + mu * np.sign(S))
    r_s = np.sqrt(np.sum(s_res ** 2) + np.sum(gb ** 2)) / max(1.0, np.linalg.norm(gS0))
    # c (AMTFL, A = 0): where c_j > 0 its gradient 2 w (N relu(c_j) - sum_n (X L)_nj) vanishes
    gc = np.where(c > 0, 2 * rw * (X_all.shape[0] * np.maximum(c, 0) - (X_all @ L).sum(0)), 0.0)
    scale_l = max(1.0, np.linalg.norm(gL0))
    return max(r_s, np.linalg.norm(gL) / scale_l, np.linalg.norm(gc) / scale_l)


def amtfl_objective(est, Xs, ys):
    L, S, b, c = est.L_, est.S_, est.intercept_, est.recon_bias_
    X_all = np.vstack(Xs)
    loss = sum(0.5 * np.mean((X @ (L @ S[:, t]) + b[t] - y) ** 2) for t, (X, y) in enumerate(zip(Xs, ys)))
    rec = est.gamma / X_all.shape[0] * np.sum((X_all @ L - np.maximum(c, 0)[None, :]) ** 2)
    return loss + rec + est.mu * np.abs(S).sum() + est.lam * (L ** 2).sum()


def test_amtfl_reaches_its_optimum_on_raw_school_like_data():
    torch.set_num_threads(1)
    Xs, ys = school_subset()
    est = AMTFL(**SETTINGS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(Xs, ys)
    assert est.converged_ and not est.A_.any()
    assert latent_kkt(est, Xs, ys) < 1e-5
    assert abs(amtfl_objective(est, Xs, ys) - est.objective_history_[-1]) <= 1e-9 * abs(est.objective_history_[-1])
    assert int((est.S_ == 0).sum()) > 0


def test_without_the_finish_the_alternation_stops_above_the_optimum(monkeypatch):
    """The reason for the finish: the same fit by the alternation alone warns after its 100
    outer steps, at a higher objective than the finish's."""
    torch.set_num_threads(1)
    Xs, ys = school_subset()
    finished = AMTFL(**SETTINGS).fit(Xs, ys)
    monkeypatch.setattr(amtfl_module, "REDUCED_AFTER", 10**9)
    alone = AMTFL(**SETTINGS)
    with pytest.warns(ConvergenceWarning):
        alone.fit(Xs, ys)
    assert latent_kkt(alone, Xs, ys) > 1e-5
    assert amtfl_objective(finished, Xs, ys) < amtfl_objective(alone, Xs, ys)


def test_gomtl_reaches_its_optimum_on_raw_school_like_data(monkeypatch):
    """Go-MTL at the issue's mu and lam with 6 bases on 60 tasks: the alternation alone warns
    after its 200 outer steps; with the finish (from the 50th) at its optimum, lower."""
    torch.set_num_threads(1)
    Xs, ys = school_subset(60)
    est = GoMTL(n_latent=6, mu=1e-3, lam=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(Xs, ys)
    assert est.converged_ and latent_kkt(est, Xs, ys) < 1e-5
    monkeypatch.setattr(latent_module, "REDUCED_AFTER", 10**9)
    alone = GoMTL(n_latent=6, mu=1e-3, lam=1e-3)
    with pytest.warns(ConvergenceWarning):
        alone.fit(Xs, ys)
    assert latent_kkt(alone, Xs, ys) > 1e-5
    assert est.objective_history_[-1] < alone.objective_history_[-1]


def test_amtfl_reaches_its_optimum_on_raw_diabetes_with_its_bias_eliminated():
    """AMTFL's defaults on raw diabetes in 4 tasks by age (A = 0 at the optimum, relu(c) > 0):
    the finish solves for c with L (the centred reconstruction); holding c, its point moved c's
    optimum and the fit warned after 100 outer steps at 2.8e-6."""
    from test_latent_hessian import diabetes_by_age

    torch.set_num_threads(1)
    Xs, ys = diabetes_by_age()
    est = AMTFL()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(Xs, ys)
    assert est.converged_ and not est.A_.any() and bool((est.recon_bias_ > 0).any())
    assert latent_kkt(est, Xs, ys) < 1e-5
    assert est.n_iter_ <= 50  # the finish, not the alternation, got there
