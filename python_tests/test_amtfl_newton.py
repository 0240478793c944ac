"""AMTFL's proximal Newton blocks (``linear/_amtfl_newton.py``, logistic and squared-hinge
losses with the linear layer): the reconstruction's Gauss-Newton Hessians against autograd,
``prox_newton`` with the reconstruction as its extra term against an independent KKT check,
and the estimator's objective evaluated independently."""

import numpy as np
import pytest
import torch

from mtlkernels import ops
from mtlkernels.linear import AMTFL
from mtlkernels.linear import _amtfl_newton
from mtlkernels.linear._amtfl_blocks import recon_loss
from mtlkernels.linear._amtfl_newton import _recon_gram_L, _recon_gram_S
from mtlkernels.linear._base import TaskData
from mtlkernels.linear._newton import l_block_data, l_block_gram, prox_newton

ONE_THREAD = True  # the whole module on one intra-op thread (conftest.py)
F64 = torch.float64


def problem(seed=0, N=40, d=4, k=3, T=5):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, d, generator=g, dtype=F64)
    L, S = torch.randn(d, k, generator=g, dtype=F64), torch.randn(k, T, generator=g, dtype=F64)
    A, c = torch.randn(T, k, generator=g, dtype=F64), torch.randn(k, generator=g, dtype=F64)
    return X, L, S, A, c


def gauss_newton(residual, x, rw):
    J = torch.autograd.functional.jacobian(residual, x.reshape(-1))
    return 2 * rw * J.T @ J


def test_recon_gauss_newton_hessians_match_autograd(monkeypatch):
    """2 w J^T J of the residual Z - relu(Z S A + c), Z = X L, in vec(L) and vec(S) (row-major):
    the ReLU's pattern mixed (c of both signs), the S-block dense and as per-task blocks."""
    X, L, S, A, c = problem()
    (d, k), T, rw = L.shape, S.shape[1], 0.3
    assert 0 < int((X @ L @ S @ A + c > 0).sum()) < X.shape[0] * k  # both sides of the kink

    def r_L(v):
        Z = X @ v.reshape(d, k)
        return (Z - torch.relu(Z @ S @ A + c)).reshape(-1)

    H = gauss_newton(r_L, L, rw)
    assert torch.allclose(_recon_gram_L(X, L, S, A, c, rw)[0], H, rtol=1e-12, atol=1e-12 * float(H.abs().max()))
    Z = X @ L

    def r_S(v):
        return (Z - torch.relu(Z @ v.reshape(k, T) @ A + c)).reshape(-1)

    H = gauss_newton(r_S, S, rw)
    assert torch.allclose(_recon_gram_S(Z, S, A, c, rw), H, rtol=1e-12, atol=1e-12 * float(H.abs().max()))
    # beyond DENSE_S_MAX: the bound 2 w (Z^T Z) D (A A^T) (no ReLU pattern), with its resolvent
    monkeypatch.setattr(_amtfl_newton, "DENSE_S_MAX", 0)
    q = _recon_gram_S(Z, S, A, c, rw)
    D = torch.randn(k, T, generator=torch.Generator().manual_seed(2), dtype=F64)
    assert torch.allclose(q.hess(D), 2 * rw * (Z.T @ Z) @ D @ (A @ A.T), rtol=1e-12)
    assert float((D * q.hess(D)).sum()) >= float(D.reshape(-1) @ H @ D.reshape(-1)) > 0
    assert torch.allclose(q.inverse(q.hess(D) + 0.7 * D, 0.7), D, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shared", [True, False])
def test_l_block_gram_is_the_expanded_designs_gram(shared):
    """The L-block's curvature matrix from per-task Gram matrices (``l_block_gram``) is the
    one the expanded design x_ti kron s_t gives (Go-MTL's and AMTFL's proximal Newton L-step)."""
    g = torch.Generator().manual_seed(3)
    T, n, d, k = 4, 7, 3, 2
    X = torch.randn(n, d, generator=g, dtype=F64) if shared else torch.randn(T, n, d, generator=g, dtype=F64)
    data = TaskData(X, torch.ones(T, n, dtype=F64), torch.rand(T, n, generator=g, dtype=F64), shared)
    S = torch.randn(k, T, generator=g, dtype=F64)
    h = torch.rand(1, T * n, generator=g, dtype=F64)
    K = l_block_data(data, S, None).X  # (1, T n, d k)
    assert torch.allclose(l_block_gram(data, S)(h), torch.einsum("tnd,tn,tne->tde", K, h, K), rtol=1e-12)


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("loss", ["logistic", "squared_hinge"])
def test_prox_newton_with_the_reconstruction_ends_at_a_kkt_point(dense, loss, monkeypatch):
    """The S-block of AMTFL on raw features (scales 1e-2..1e2): per-task losses on X S + b,
    the reconstruction w ||Z - relu(Z S A + c)||^2 as prox_newton's extra term, mu ||S||_1,
    its model with all of the Gauss-Newton Hessian (dense) or with the Kronecker bound (the
    fallback for a large S). At its exit the KKT residual, from a plain torch formula (not
    the fused op), is at most its tolerance; in tens of steps (per-task blocks of the
    Hessian alone, the tasks' coupling through A left out, took 2000 without converging)."""
    if not dense:
        monkeypatch.setattr(_amtfl_newton, "DENSE_S_MAX", 0)
    g = torch.Generator().manual_seed(1)
    n, k, T, mu, rw = 60, 3, 4, 0.05, 0.05
    X = torch.randn(n, k, generator=g, dtype=F64) * torch.tensor([1e-2, 1.0, 1e2], dtype=F64)
    Y = torch.where(torch.randn(T, n, generator=g, dtype=F64) > 0, 1.0, -1.0).to(F64)
    data = TaskData(X, Y, torch.full((T, n), 1.0 / n, dtype=F64), True, torch.full((T,), 1.0 / n, dtype=F64),
                    torch.full((T,), float(n), dtype=F64))
    Z = torch.randn(80, k, generator=g, dtype=F64).abs()
    A, c = 0.5 * torch.randn(T, k, generator=g, dtype=F64), 0.1 * torch.randn(k, generator=g, dtype=F64)
    res = prox_newton(AMTFL(loss=loss, tol=1e-9), data, lambda v, t: [ops.soft_threshold(v[0], t * mu)],
                      lambda p, gr, lr: [ops.prox_grad_step(p[0], gr[0], lr, mu)],
                      lambda p: float(mu * p[0].abs().sum()), [torch.zeros(k, T, dtype=F64)],
                      torch.zeros(T, dtype=F64), "S", True, extra=lambda s: rw * recon_loss(Z, s, A, c),
                      extra_gram=lambda s: _recon_gram_S(Z, s, A, c, rw))
    assert res.converged and res.n_iter < 50, (res.n_iter, res.residual)
    def kkt_parts(S, b):  # the smooth part's gradients in S and b, from a plain formula
        S, b = S.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
        z = (X @ S + b).T  # (T, n)
        m = (1 - Y * z).clamp_min(0)
        per = torch.nn.functional.softplus(-Y * z) if loss == "logistic" else m * m
        return torch.autograd.grad(per.mean(1).sum() + rw * ((Z - torch.relu(Z @ S @ A + c)) ** 2).sum(), [S, b])

    S = res.params[0]
    gS, gb = kkt_parts(S, res.b)
    r = torch.where(S != 0, gS + mu * S.sign(), (gS.abs() - mu).clamp_min(0))
    scale = max(1.0, float(torch.cat([g.reshape(-1) for g in kkt_parts(0 * S, 0 * res.b)]).norm()))
    assert float(torch.hypot(r.norm(), gb.norm())) <= 1e-9 * scale
    assert int((S == 0).sum()) > 0  # the l1 is active somewhere


def test_amtfl_logistic_objective_on_raw_correlated_features():
    """The estimator on raw correlated columns (a column and its square, scales up to 1e3),
    its blocks by proximal Newton: the objective (eq. 6) evaluated here in numpy is the one
    it reports, and no step raised it."""
    rng = np.random.default_rng(4)
    Xs, ys = [], []
    for n in (40, 60, 90):
        r = rng.uniform(5, 30, n)
        X = np.c_[r, r**2, rng.normal(size=(n, 3)) * [1e-2, 1.0, 10.0]]
        Xs.append(X)
        ys.append((r + rng.normal(size=n) * 4 > 15).astype(int))
    est = AMTFL(n_latent=3, loss="logistic", max_outer=4)
    with pytest.warns(Warning):  # four outer steps: not at its optimum
        est.fit(Xs, ys)
    L, S, A, c, b = est.L_, est.S_, est.A_, est.recon_bias_, est.intercept_
    Lt = np.array([np.logaddexp(0, -(2 * y - 1) * (X @ L @ S[:, t] + b[t])).mean()
                   for t, (X, y) in enumerate(zip(Xs, ys))])
    Z = np.concatenate(Xs) @ L
    rec = ((Z - np.maximum(Z @ S @ A + c, 0)) ** 2).sum() * est.gamma / len(Z)
    F = ((1 + est.alpha * np.abs(A).sum(1)) * Lt).sum() + est.mu * np.abs(S).sum() + rec + est.lam * (L**2).sum()
    h = np.asarray(est.objective_history_)
    assert h[-1] == pytest.approx(F, rel=1e-10)
    assert np.all(np.diff(h) <= 1e-10 * np.abs(h[:-1]))
