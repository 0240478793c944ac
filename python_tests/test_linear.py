"""Feature-based estimators (mtlkernels.linear), the FISTA engine and the datasets."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Lasso, MultiTaskLasso
from sklearn.model_selection import GridSearchCV

from mtlkernels import ops
from mtlkernels.testing import devices
from mtlkernels.datasets import amtfl_synthetic, digits_tasks
from mtlkernels.linear import (AMTFL, AMTL, AdaptiveSharing, GoMTL, JointFeatureSelection, LatentTaskMTL,
                               SingleTaskLinear, TraceNormMTL)
from mtlkernels.linear import _solve
from mtlkernels.optim import Quadratic, fista, gram_matrix

# several tests cap the iterations on purpose (max_outer=3, ...): the warning is expected there
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


ONE_THREAD = True  # the whole module on one intra-op thread (conftest.py)


def regression(n=60, d=12, T=4, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((d, 2)) @ rng.standard_normal((2, T))  # low rank
    W[rng.random((d, T)) < 0.3] += 2.0  # plus sparse task-specific parts
    Y = X @ W + noise * rng.standard_normal((n, T))
    return X, Y


def classification(n=80, d=10, T=3, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((d, T))
    Y = (X @ W + 0.3 * rng.standard_normal((n, T)) > 0).astype(float)
    return X, Y


# ---- the solver core ------------------------------------------------------------------


@pytest.mark.parametrize("form", ["autograd", "quadratic"])
def test_fista_reaches_optimum_of_multitask_lasso_like_sklearn(form):
    """Group lasso over the rows of W (features shared by all tasks) is sklearn's MultiTaskLasso:
    1/(2n) ||Y - X W||_F^2 + alpha sum_d ||W_d,:||_2. The smooth part either by autograd or
    as a Quadratic (Gram form); the first step is far too long, so the line search must act."""
    X, Y = regression(n=50, d=10, T=3, seed=3)
    alpha = 0.3
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    n = X.shape[0]

    def smooth(p):
        return ((Xt @ p[0] - Yt) ** 2).sum() / (2 * n)

    res = fista(smooth if form == "autograd" else Quadratic.least_squares(Xt, Yt),
                lambda p, g, lr: [ops.group_prox_grad_step(p[0], g[0], lr, alpha, dim=1)],
                lambda p: float(alpha * p[0].norm(dim=1).sum()), [torch.zeros(10, 3, dtype=torch.float64)],
                lr=100.0, max_iter=5000, tol=1e-10)
    assert res.converged and res.residual <= 1e-10
    sk = MultiTaskLasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100000).fit(X, Y)
    np.testing.assert_allclose(res.params[0].numpy(), sk.coef_.T, atol=1e-6)
    F_sk = float(smooth([torch.tensor(sk.coef_.T)])) + alpha * np.linalg.norm(sk.coef_, axis=0).sum()
    assert abs(res.objective - F_sk) <= 1e-10 * F_sk
    # objective history never increases (restart rejects increasing steps)
    h = np.array(res.history)
    assert np.all(np.diff(h) <= 1e-12 * np.abs(h[:-1]))
    assert res.n_trials >= res.n_iter


@pytest.mark.parametrize("gram", [True, False])
def test_quadratic_values_and_gradients_are_exact(gram):
    """Quadratic.least_squares: value and gradient at a point, and at the trial and
    extrapolated points the engine derives from them, equal a direct evaluation."""
    torch.manual_seed(0)
    X, Y = torch.randn(30, 7, dtype=torch.float64), torch.randn(30, 3, dtype=torch.float64)
    quad = Quadratic.least_squares(X, Y, gram=gram)

    def direct(W):
        W = W.clone().requires_grad_(True)
        f = ((X @ W - Y) ** 2).sum() / 60
        (g,) = torch.autograd.grad(f, W)
        return float(f.detach()), g

    A, B, C = (torch.randn(7, 3, dtype=torch.float64) for _ in range(3))
    pa = quad.point([A])
    f, g = direct(A)
    assert pa.f == pytest.approx(f, rel=1e-12) and float(quad([A])) == pytest.approx(f, rel=1e-12)
    torch.testing.assert_close(pa.grad[0], g)
    pb = quad.trial(pa, [B])
    f, g = direct(B)
    assert pb.f == pytest.approx(f, rel=1e-12)
    torch.testing.assert_close(pb.grad[0], g)
    pc = quad.extrapolate(pb, pa, 0.7)
    f, g = direct(B + 0.7 * (B - A))
    assert pc.f == pytest.approx(f, rel=1e-12)
    torch.testing.assert_close(pc.grad[0], g)
    torch.testing.assert_close(pc.params[0], B + 0.7 * (B - A))
    # two blocks: g depends on their sum, and every block gets its gradient
    p2 = quad.point([A, C])
    assert p2.f == pytest.approx(direct(A + C)[0], rel=1e-12) and len(p2.grad) == 2
    with pytest.raises(ValueError, match="least_squares needs"):
        Quadratic.least_squares(X, Y[:5])


@pytest.mark.parametrize("d, block", [(5, None), (383, None), (384, None), (401, None), (767, None), (900, None),
                                      (900, 128), (1000, 300)])
def test_gram_matrix_blocked_equals_full_product(d, block):
    # by default 128-column blocks from d = 384, 256-column blocks from d = 768 (900: a last block of 132)
    X = torch.randn(37, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    H = gram_matrix(X, block)
    torch.testing.assert_close(H, X.T @ X, rtol=1e-12, atol=1e-12)
    assert torch.equal(H, H.T)
    Xn = X.T.contiguous().T  # column-major
    torch.testing.assert_close(gram_matrix(Xn, block), X.T @ X, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gram_bytes", [_solve.PER_TASK_GRAM_BYTES, 0])
def test_squared_loss_per_task_designs_equal_sklearn_lasso(monkeypatch, gram_bytes):
    """Per-task designs with different sample counts and intercepts (centred per task): both
    Hessian routes (per-task Gram matrices, or through the data) give sklearn's Lasso."""
    monkeypatch.setattr(_solve, "PER_TASK_GRAM_BYTES", gram_bytes)
    rng = np.random.default_rng(21)
    Xs = [rng.standard_normal((n, 6)) + 1.5 for n in (40, 25, 33)]
    ys = [x @ rng.standard_normal(6) + 2.0 + 0.1 * rng.standard_normal(len(x)) for x in Xs]
    est = SingleTaskLinear(penalty="l1", alpha=0.05, tol=1e-11, max_iter=20000).fit(Xs, ys)
    for t, (x, y) in enumerate(zip(Xs, ys)):
        sk = Lasso(alpha=0.05, tol=1e-13, max_iter=100000).fit(x, y)
        np.testing.assert_allclose(est.coef_[:, t], sk.coef_, atol=1e-7)
        np.testing.assert_allclose(est.intercept_[t], sk.intercept_, atol=1e-7)


def test_fista_objective_matches_long_float64_run():
    X, Y = classification(seed=4)
    est = SingleTaskLinear(loss="logistic", penalty="l1", alpha=0.02, tol=1e-7, max_iter=5000).fit(X, Y)
    long = SingleTaskLinear(loss="logistic", penalty="l1", alpha=0.02, tol=1e-13, max_iter=50000).fit(X, Y)
    assert est.converged_
    rel = abs(est.objective_history_[-1] - long.objective_history_[-1]) / abs(long.objective_history_[-1])
    assert rel < 1e-6


def test_fista_float32_and_nan_objective():
    X, Y = regression(seed=5)
    est = SingleTaskLinear(alpha=0.01, dtype="float32").fit(X, Y)
    ref = SingleTaskLinear(alpha=0.01).fit(X, Y)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=1e-3, atol=1e-3)
    with pytest.raises(FloatingPointError, match="smooth objective is nan"):
        fista(lambda p: p[0].sum() * float("nan"), lambda p, g, lr: p, lambda p: 0.0, [torch.zeros(2)])


def test_fista_stall_stops_where_the_steps_shrink_at_a_kink():
    """``stall=(window, rtol)`` ends a run whose last ``window`` iterations gained at most
    rtol |F|: here a kink at x = 0.3 in the smooth part (|x - 0.3|, with ||x||^2 / 2) keeps the
    steps shrinking (the line search reads the gradient's jump as curvature); without it
    the run uses every step."""
    smooth = lambda p: (p[0] - 0.3).abs().sum() + 0.5 * (p[0] ** 2).sum()  # noqa: E731
    args = (smooth, lambda p, g, lr: [p[0] - lr * g[0]], lambda p: 0.0, [torch.tensor([2.0], dtype=torch.float64)])
    full = fista(*args, max_iter=3000, tol=1e-12)
    stopped = fista(*args, max_iter=3000, tol=1e-12, stall=(50, 1e-9))
    assert full.n_iter == 3000 and not full.converged
    assert stopped.n_iter < 3000 and not stopped.converged
    assert stopped.objective == pytest.approx(full.objective, rel=1e-8)  # it had nothing left to gain
    assert stopped.history[-51] - stopped.objective <= 1e-9 * abs(stopped.history[-51])


# every device and dtype but the reference's own (CPU, float64)
_OTHER_SETTINGS = [(d, t) for d in devices() for t in ("float64", "float32")]
_OTHER_SETTINGS = [pytest.param(d.values[0], t, marks=d.marks) if hasattr(d, "values") else (d, t)
                   for d, t in _OTHER_SETTINGS if not (d == "cpu" and t == "float64")]


@pytest.mark.parametrize("device,dtype", _OTHER_SETTINGS)
def test_estimators_on_each_device_and_dtype(device, dtype):
    """The squared-loss (Quadratic) and logistic (autograd) paths on CUDA and in float32
    give the CPU float64 solution (to float32 accuracy for float32)."""
    X, Y = regression(seed=22)
    Xc, Yc = classification(seed=23)
    atol = 1e-6 if dtype == "float64" else 2e-3
    for make, XX, YY in [
        (lambda **kw: AdaptiveSharing(lambda_c=0.5, lambda_s=0.05, tol=1e-9, max_iter=20000, **kw), X, Y),
        (lambda **kw: SingleTaskLinear(loss="logistic", penalty="l1", alpha=0.02, tol=1e-9, max_iter=20000, **kw),
         Xc, Yc),
    ]:
        ref = make().fit(XX, YY)
        est = make(device=device, dtype=dtype).fit(XX, YY)
        np.testing.assert_allclose(est.coef_, ref.coef_, atol=atol * max(1.0, np.abs(ref.coef_).max()))
        np.testing.assert_allclose(est.intercept_, ref.intercept_, atol=atol * max(1.0, np.abs(ref.intercept_).max()))


# ---- special cases against scikit-learn -----------------------------------------------


def test_stl_l1_equals_sklearn_lasso():
    X, Y = regression(seed=6)
    est = SingleTaskLinear(loss="squared", penalty="l1", alpha=0.05, tol=1e-10, max_iter=20000).fit(X, Y)
    for t in range(Y.shape[1]):
        sk = Lasso(alpha=0.05, tol=1e-12, max_iter=100000).fit(X, Y[:, t])
        np.testing.assert_allclose(est.coef_[:, t], sk.coef_, atol=1e-6)
        np.testing.assert_allclose(est.intercept_[t], sk.intercept_, atol=1e-6)


def test_adaptive_sharing_large_lambda_c_is_per_task_lasso():
    X, Y = regression(seed=7)
    est = AdaptiveSharing(lambda_c=1e6, lambda_s=0.05, tol=1e-10, max_iter=20000).fit(X, Y)
    assert np.abs(est.C_).max() == 0
    for t in range(Y.shape[1]):
        sk = Lasso(alpha=0.05, tol=1e-12, max_iter=100000).fit(X, Y[:, t])
        np.testing.assert_allclose(est.coef_[:, t], sk.coef_, atol=1e-6)


def test_adaptive_sharing_large_lambda_s_is_trace_norm_regression():
    """lambda_s huge: S = 0 and C solves trace-norm regression, checked against an
    independent plain proximal-gradient solver built on torch.linalg.svd."""
    X, Y = regression(seed=8)
    lc = 0.5
    est = AdaptiveSharing(lambda_c=lc, lambda_s=1e6, fit_intercept=False, tol=1e-11, max_iter=20000).fit(X, Y)
    assert np.abs(est.S_).max() == 0
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    n = X.shape[0]
    step = n / float(torch.linalg.matrix_norm(Xt, ord=2)) ** 2
    C = torch.zeros(X.shape[1], Y.shape[1], dtype=torch.float64)
    for _ in range(4000):
        G = Xt.T @ (Xt @ C - Yt) / n
        U, s, Vh = torch.linalg.svd(C - step * G, full_matrices=False)
        C = U @ torch.diag(torch.clamp(s - step * lc, min=0)) @ Vh
    np.testing.assert_allclose(est.C_, C.numpy(), atol=1e-6)
    np.testing.assert_allclose(est.task_similarity_, est.C_.T @ est.C_)


# ---- the latent and asymmetric models ---------------------------------------------------


def _monotone(history, slack=1e-8):
    h = np.asarray(history)
    return np.all(np.diff(h) <= slack * np.abs(h[:-1]))


def test_gomtl_fits_and_decreases_objective():
    X, Y = regression(seed=9)
    est = GoMTL(n_latent=3, mu=0.01, lam=0.01, max_outer=10).fit(X, Y)
    assert est.L_.shape == (12, 3) and est.S_.shape == (3, 4)
    np.testing.assert_allclose(est.coef_, est.L_ @ est.S_, atol=1e-12)
    assert _monotone(est.objective_history_)
    assert est.score(X, Y) > 0.9


def test_latent_task_mtl_groups_are_zeroed_together():
    X, Y = classification(T=4, seed=10)
    groups = [0, 0, 1, 1]
    est = LatentTaskMTL(n_latent=3, mu=0.2, gamma=0.01, lam=0.01, groups=groups, max_outer=5).fit(X, Y)
    S = est.S_
    for k in range(S.shape[0]):
        for g in (0, 1):
            block = S[k, np.array(groups) == g]
            assert np.all(block == 0) or np.all(block != 0)
    assert _monotone(est.objective_history_)
    assert 0.0 <= est.score(X, Y) <= 1.0


def test_latent_task_mtl_accepts_pm1_labels_and_predicts_them():
    X, Y = classification(seed=11)
    est = LatentTaskMTL(n_latent=2, max_outer=3).fit(X, 2 * Y - 1)
    assert set(np.unique(est.predict(X))) <= {-1.0, 1.0}


def test_amtl_zero_diagonal_nonneg_and_monotone():
    X, Y = regression(seed=12)
    est = AMTL(gamma=0.05, alpha=0.1, max_outer=5).fit(X, Y)
    assert np.all(np.diag(est.B_) == 0) and np.all(est.B_ >= 0)
    assert _monotone(est.objective_history_)
    free = AMTL(gamma=0.05, alpha=0.01, nonneg=False, max_outer=3).fit(X, Y)
    assert np.all(np.diag(free.B_) == 0)


def test_amtfl_fits_with_transfer_matrix():
    ds = amtfl_synthetic(seed=0, split=0)
    est = AMTFL(n_latent=6, alpha=0.1, mu=0.01, gamma=0.1, lam=0.01, max_outer=2).fit(ds)
    assert est.A_.shape == (12, 6) and est.transfer_matrix_.shape == (12, 12)
    assert _monotone(est.objective_history_)
    rmse = est.task_rmse(ds)
    assert rmse.shape == (12,) and np.all(np.isfinite(rmse))
    relu = AMTFL(n_latent=4, hidden="relu", max_outer=1).fit(ds)
    assert len(relu.predict(ds.split("test")[0])) == 12


# ---- conventions and inputs ----------------------------------------------------------------


@pytest.mark.parametrize("cls", [SingleTaskLinear, AdaptiveSharing, GoMTL, LatentTaskMTL, AMTL, AMTFL, TraceNormMTL,
                                 JointFeatureSelection])
def test_clone_and_get_params_round_trip(cls):
    est = cls()
    params = est.get_params()
    again = clone(est).set_params(**params)
    assert again.get_params() == params


def test_grid_search_cv():
    X, Y = regression(n=40, d=6, T=2, seed=13)
    gs = GridSearchCV(SingleTaskLinear(max_iter=300), {"alpha": [1e-3, 1e-1]}, cv=2).fit(X, Y)
    assert gs.best_params_["alpha"] in (1e-3, 1e-1)


def test_per_task_lists_with_different_sample_counts():
    ds = amtfl_synthetic(seed=1, split=2)
    Xs, ys = ds.split("train")
    assert {len(x) for x in Xs} == {50, 25}
    est = SingleTaskLinear(alpha=0.01).fit(Xs, ys)
    pred = est.predict(ds.split("test")[0])
    assert isinstance(pred, list) and len(pred) == 12 and pred[0].shape == (100,)
    assert est.score(ds) > 0.5


def test_warm_start_continues_from_previous_fit():
    X, Y = regression(seed=14)
    est = SingleTaskLinear(alpha=0.01, penalty="l1", warm_start=True, tol=1e-9, max_iter=5000).fit(X, Y)
    n_cold = est.n_iter_
    est.fit(X, Y)
    assert est.n_iter_ < n_cold


def test_fit_leaves_the_inputs_alone():
    X, Y = regression(seed=24)
    X0, Y0 = X.copy(), Y.copy()
    for est in (AdaptiveSharing(lambda_c=0.5, lambda_s=0.05), GoMTL(n_latent=2, max_outer=3),
                SingleTaskLinear(penalty="l1", alpha=0.05)):
        est.fit(X, Y)
        est.score(X, Y)
        np.testing.assert_array_equal(X, X0)
        np.testing.assert_array_equal(Y, Y0)


def test_bad_input():
    X, Y = regression(n=20, d=4, T=2)
    est = SingleTaskLinear()
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.fit(np.where(np.eye(20, 4) > 0, np.nan, X), Y)
    with pytest.raises(ValueError, match="n_samples = 20"):
        est.fit(X, Y[:10])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        est.fit(X[:, 0], Y)
    with pytest.raises(ValueError, match="0 sample"):
        est.fit(X[:0], Y[:0])
    with pytest.raises(ValueError, match="task 0 has one class"):
        SingleTaskLinear(loss="logistic").fit(X, np.ones((20, 2)))
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        SingleTaskLinear(loss="logistic").fit(X, np.tile([[0.0, 1.0], [2.0, 0.0]], (10, 1)))
    # finite, but their squares overflow (the Gram matrices): named, with what fits
    for bad_X, bad_Y, name in ((X * 1e300, Y, "X"), (X, Y * 1e200, "Y")):
        with pytest.raises(ValueError, match=f"^{name} has entries up to .* overflow float64"):
            est.fit(bad_X, bad_Y)
    with pytest.raises(ValueError, match="overflow float32"):
        SingleTaskLinear(dtype="float32").fit(X * 1e19, Y)
    SingleTaskLinear(dtype="float32").fit(X * 1e6, Y)  # large, but fits
    with pytest.raises(ValueError, match="loss must be one of"):
        SingleTaskLinear(loss="hinge").fit(X, Y)
    with pytest.raises(ValueError, match="lambda_c must be finite and non-negative"):
        AdaptiveSharing(lambda_c=-1).fit(X, Y)
    with pytest.raises(ValueError, match="one label per task"):
        LatentTaskMTL(groups=[0, 1, 2]).fit(X, (Y > 0).astype(float))
    with pytest.raises(NotFittedError, match="not fitted"):
        SingleTaskLinear().predict(X)
    est.fit(X, Y)
    with pytest.raises(ValueError, match="expecting 4 features"):
        est.predict(X[:, :3])
    with pytest.raises(ValueError, match="X\\[1\\] has 3 features"):
        est.fit([X, X[:, :3]], [Y[:, 0], Y[:, 1]])
    # per-task lists are checked in one call, but an error still names the task
    bad = X.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="Input X\\[1\\] contains infinity"):
        est.fit([X, bad], [Y[:, 0], Y[:, 1]])
    with pytest.raises(ValueError, match="Input Y\\[0\\] contains NaN"):
        est.fit([X, X], [np.where(np.arange(20) == 3, np.nan, Y[:, 0]), Y[:, 1]])
    with pytest.raises(ValueError, match="X\\[1\\].*0 sample"):
        est.fit([X, X[:0]], [Y[:, 0], Y[:0, 1]])
    est.fit([X, X[:7]], [Y[:, 0], Y[:7, 1]])  # unequal task sizes: the split gives each task its rows
    ref = SingleTaskLinear().fit(X[:7], Y[:7, 1])
    np.testing.assert_allclose(est.coef_[:, 1], ref.coef_[:, 0], rtol=1e-10, atol=1e-12)


# ---- datasets ------------------------------------------------------------------------------


def test_amtfl_synthetic_matches_the_paper_setting():
    ds = amtfl_synthetic(seed=0, split=0)
    assert ds.n_tasks == 12 and ds.n_features == 30
    sizes = [(len(ds.X["train"][t]), len(ds.X["val"][t]), len(ds.X["test"][t])) for t in range(12)]
    assert sizes[:6] == [(50, 50, 100)] * 6 and sizes[6:] == [(25, 25, 100)] * 6
    S = ds.info["S_true"]
    assert np.all((S[:, :6] != 0).sum(0) == 2) and np.all(S[4:, :6] == 0)  # easy: two of l1..l4
    assert np.all((S[:, 6:] != 0).sum(0) == 2) and np.all(S[:2, 6:] == 0)  # hard: two of l3..l6
    other = amtfl_synthetic(seed=0, split=1)
    np.testing.assert_array_equal(other.info["W_true"], ds.info["W_true"])
    assert not np.array_equal(other.X["train"][0], ds.X["train"][0])
    with pytest.raises(ValueError, match="split must be in 0..4"):
        amtfl_synthetic(split=5)


def test_digits_tasks_balanced_and_imbalanced():
    bal = digits_tasks()
    X, Y = bal.stacked("train")
    assert X.shape[1] == 64 and Y.shape[1] == 10 and np.all(Y.sum(1) == 1)
    imb = digits_tasks(imbalanced=True)
    counts = imb.info["train_counts"]
    assert np.all(np.diff(counts) < 0)
    _, Yi = imb.stacked("train")
    np.testing.assert_array_equal(Yi.sum(0).astype(int), counts)
