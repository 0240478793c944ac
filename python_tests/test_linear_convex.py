"""The convex estimators at the optimum of their stated objectives on raw, School-shaped data:
SingleTaskLinear, JointFeatureSelection, TraceNormMTL and AdaptiveSharing against independent
solvers (scikit-learn, cvxpy with Clarabel), task weighting, the warnings and the new options."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, MultiTaskLasso, Ridge

from mtlkernels.datasets import amtfl_synthetic, school_like
from mtlkernels.linear import AdaptiveSharing, JointFeatureSelection, SingleTaskLinear, TraceNormMTL

REL = 1e-6  # the bar: objectives within 1e-6 (relative) of a reference optimum

ONE_THREAD = True  # the whole module on one intra-op thread (conftest.py)



@pytest.fixture(scope="module")
def school():
    """20 School-shaped tasks, raw features (scales up to 91, one-hot blocks, singular Gram matrices)."""
    Xs, ys = school_like(seed=1, n_tasks=20).split("train")
    return Xs, ys


@pytest.fixture(scope="module")
def synthetic():
    """The AMTFL synthetic set (Lee, Yang and Hwang, 2018, sec. 4.1): 12 tasks, the hard ones
    with fewer samples (25) than features (30)."""
    return amtfl_synthetic(seed=0, split=0).split("train")


# ---- independent objective evaluations (numpy) ------------------------------------------------


def losses(W, b, Xs, ys, weighting):
    """sum_t c_t 0.5 ||y_t - X_t w_t - b_t||^2, c_t = 1 / n_t (mean) or 1 (sum)."""
    out = 0.0
    for t, (X, y) in enumerate(zip(Xs, ys)):
        r = y - X @ W[:, t] - b[t]
        out += 0.5 * (r @ r) / (len(y) if weighting == "mean" else 1.0)
    return out


def nuclear(W):
    return np.linalg.svd(W, compute_uv=False).sum()


def objective(est, Xs, ys):
    W, b, w = est.coef_, est.intercept_, est.task_weighting
    f = losses(W, b, Xs, ys, w)
    if isinstance(est, SingleTaskLinear):
        return f + (est.alpha * np.abs(W).sum() if est.penalty == "l1" else 0.5 * est.alpha * (W**2).sum())
    if isinstance(est, JointFeatureSelection):
        return f + est.alpha * np.linalg.norm(W, axis=1).sum()
    if isinstance(est, TraceNormMTL):
        return f + est.alpha * nuclear(W)
    return f + est.lambda_c * nuclear(est.C_) + est.lambda_s * np.abs(est.S_).sum()


def sklearn_lasso_objective(Xs, ys, alpha):
    """The lasso per task (mean weighting, intercept) at scikit-learn's coordinate-descent optimum."""
    F = 0.0
    for X, y in zip(Xs, ys):
        sk = Lasso(alpha=alpha, tol=1e-12, max_iter=1_000_000).fit(X, y)
        r = y - X @ sk.coef_ - sk.intercept_
        F += 0.5 * (r @ r) / len(y) + alpha * np.abs(sk.coef_).sum()
    return F


def close(F, F_ref, rel=REL):
    """F at most rel above the reference (it may be below: a reference is only as good as its solver)."""
    assert F <= F_ref + rel * abs(F_ref), (F, F_ref, (F - F_ref) / abs(F_ref))


def cvxpy_reference(kind, Xs, ys, weighting, fit_intercept, **lam):
    cp = pytest.importorskip("cvxpy")
    d, T = Xs[0].shape[1], len(Xs)
    W = cp.Variable((d, T))
    S = cp.Variable((d, T)) if kind == "as" else None
    b = cp.Variable(T) if fit_intercept else np.zeros(T)
    Wf = W + S if kind == "as" else W
    loss = sum(0.5 * cp.sum_squares(y - X @ Wf[:, t] - b[t]) / (len(y) if weighting == "mean" else 1.0)
               for t, (X, y) in enumerate(zip(Xs, ys)))
    pen = {"trace": lambda: lam["alpha"] * cp.normNuc(W),
           "jfs": lambda: lam["alpha"] * cp.sum(cp.norm(W, 2, axis=1)),
           "as": lambda: lam["lambda_c"] * cp.normNuc(W) + lam["lambda_s"] * cp.sum(cp.abs(S))}[kind]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cp.Problem(cp.Minimize(loss + pen)).solve(solver="CLARABEL")
    Wv = W.value + (S.value if kind == "as" else 0)
    bv = b.value if fit_intercept else b
    F = losses(Wv, bv, Xs, ys, weighting)
    if kind == "trace":
        return F + lam["alpha"] * nuclear(W.value)
    if kind == "jfs":
        return F + lam["alpha"] * np.linalg.norm(W.value, axis=1).sum()
    return F + lam["lambda_c"] * nuclear(W.value) + lam["lambda_s"] * np.abs(S.value).sum()


# ---- against independent solvers -------------------------------------------------------------


def test_stl_lasso_on_raw_features_equals_sklearn(school):
    """Raw features (columns of scale 91 next to binary ones, singular per-task Gram matrices):
    the lasso per task reaches scikit-learn's coordinate-descent optimum."""
    Xs, ys = school
    est = SingleTaskLinear(penalty="l1", alpha=0.05).fit(Xs, ys)
    assert est.solver_ == "admm" and est.converged_ and est.residual_ <= 1e-6
    F_ref = sklearn_lasso_objective(Xs, ys, 0.05)
    F = objective(est, Xs, ys)
    assert F == pytest.approx(est.objective_history_[-1], rel=1e-10)
    close(F, F_ref)
    assert F_ref <= F + REL * F_ref  # and sklearn's is no better


def test_stl_ridge_sum_weighting_is_sklearn_ridge_in_closed_form(school):
    Xs, ys = school
    est = SingleTaskLinear(alpha=3.0, task_weighting="sum").fit(Xs, ys)
    assert est.solver_ == "closed form" and est.n_iter_ == 1 and est.residual_ < 1e-12
    for t, (X, y) in enumerate(zip(Xs, ys)):  # sum_i 0.5 r_i^2 + alpha/2 ||w||^2 is Ridge(alpha) / 2
        sk = Ridge(alpha=3.0, solver="cholesky").fit(X, y)
        np.testing.assert_allclose(est.coef_[:, t], sk.coef_, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(est.intercept_[t], sk.intercept_, rtol=1e-7, atol=1e-7)


def test_joint_feature_selection_shared_design_equals_multitask_lasso():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 12)) * np.r_[np.ones(6), 40 * np.ones(6)]  # unequal scales
    Y = X[:, :3] @ rng.standard_normal((3, 4)) + 0.5 * rng.standard_normal((60, 4))
    est = JointFeatureSelection(alpha=0.5).fit(X, Y)
    sk = MultiTaskLasso(alpha=0.5, tol=1e-12, max_iter=1_000_000).fit(X, Y)
    np.testing.assert_allclose(est.coef_, sk.coef_.T, atol=1e-6)
    assert set(est.selected_) == set(np.flatnonzero(np.abs(sk.coef_).sum(0) > 0))


def _wild_scales(seed, shared):
    """Ten tasks, 50 raw features whose scales span 10^-2.5 .. 10^2.5 (with offsets), a
    binary and a constant column: the units of real tables (ratios next to incomes)."""
    rng = np.random.default_rng(seed)
    d, T = 50, 10
    scales = 10.0 ** rng.uniform(-2.5, 2.5, d)
    W = rng.standard_normal((d, 3)) @ rng.standard_normal((3, T)) + 0.1 * rng.standard_normal((d, T))
    W[rng.random(d) < 0.5] = 0.0
    def design(n):
        Z = rng.standard_normal((n, d))
        Z[:, 0], Z[:, 1] = 1.0, rng.integers(0, 2, n)
        return Z, Z * scales + 1000 * scales * (np.arange(d) % 5 == 0)
    if shared:
        Z, X = design(3000)
        return X, Z @ W + rng.standard_normal((3000, T))
    Xs, ys = [], []
    for t in range(T):
        Z, X = design(int(rng.integers(500, 3000)))
        Xs.append(X)
        ys.append(Z @ W[:, t] + rng.standard_normal(len(X)))
    return Xs, ys


def test_row_separable_penalties_converge_on_features_of_wild_scales():
    """The lasso per task and the l2,1 norm reach scikit-learn's coordinate-descent optimum
    in at most 200 ADMM iterations whatever the features' units (ADMM in the variable
    diag(scales) W; with one penalty parameter on W itself this took thousands, and its
    residual could meet tol with the objective still 3e-5 above the optimum)."""
    Xs, ys = _wild_scales(0, shared=False)
    est = SingleTaskLinear(penalty="l1", alpha=0.01, max_iter=200).fit(Xs, ys)
    assert est.solver_ == "admm" and est.converged_
    F_ref = sklearn_lasso_objective(Xs, ys, 0.01)
    F = objective(est, Xs, ys)
    assert F == pytest.approx(est.objective_history_[-1], rel=1e-10)
    close(F, F_ref, rel=1e-10)
    X, Y = _wild_scales(1, shared=True)
    jfs = JointFeatureSelection(alpha=0.05, max_iter=200).fit(X, Y)
    assert jfs.converged_
    sk = MultiTaskLasso(alpha=0.05, tol=1e-10, max_iter=100_000).fit(X, Y)
    F_sk = losses(sk.coef_.T, sk.intercept_, [X] * Y.shape[1], list(Y.T), "mean") \
        + 0.05 * np.linalg.norm(sk.coef_, axis=0).sum()
    close(objective(jfs, [X] * Y.shape[1], list(Y.T)), F_sk, rel=1e-10)


@pytest.mark.parametrize("kind,make,weighting,fit_intercept", [
    ("trace", lambda: TraceNormMTL(alpha=100.0, task_weighting="sum", fit_intercept=False), "sum", False),
    ("trace", lambda: TraceNormMTL(alpha=0.5, task_weighting="mean", fit_intercept=True), "mean", True),
    ("jfs", lambda: JointFeatureSelection(alpha=50.0, task_weighting="sum", fit_intercept=False), "sum", False),
    ("as", lambda: AdaptiveSharing(lambda_c=0.05, lambda_s=0.01), "mean", True),
])
def test_convex_estimators_reach_the_cvxpy_optimum_on_raw_data(school, kind, make, weighting, fit_intercept):
    Xs, ys = school
    est = make().fit(Xs, ys)
    assert est.converged_ and est.residual_ <= est.tol and est.n_iter_ < est.max_iter
    F = objective(est, Xs, ys)
    assert F == pytest.approx(est.objective_history_[-1], rel=1e-10)  # the estimator's own value is right
    lam = {"lambda_c": 0.5, "lambda_s": 0.02} if kind == "as" else {"alpha": est.alpha}
    close(F, cvxpy_reference(kind, Xs, ys, weighting, fit_intercept, **lam))
    if kind == "as":  # both parts active: a low-rank C and a sparse, nonzero S
        s = np.linalg.svd(est.C_, compute_uv=False)
        assert 0 < (s > 1e-8 * s[0]).sum() < min(est.C_.shape)
        assert 0 < (est.S_ != 0).mean() < 0.5


@pytest.mark.parametrize("kind,make,weighting", [
    ("trace", lambda: TraceNormMTL(alpha=0.5), "mean"),
    ("jfs", lambda: JointFeatureSelection(alpha=2.0, task_weighting="sum"), "sum"),
    ("as", lambda: AdaptiveSharing(lambda_c=0.5, lambda_s=0.1), "mean"),
])
def test_convex_estimators_reach_the_cvxpy_optimum_on_the_amtfl_synthetic_set(synthetic, kind, make, weighting):
    Xs, ys = synthetic
    est = make().fit(Xs, ys)
    assert est.converged_
    F = objective(est, Xs, ys)
    assert F == pytest.approx(est.objective_history_[-1], rel=1e-10)
    lam = {"lambda_c": est.lambda_c, "lambda_s": est.lambda_s} if kind == "as" else {"alpha": est.alpha}
    close(F, cvxpy_reference(kind, Xs, ys, weighting, True, **lam))


def test_trace_norm_fista_and_admm_agree(school):
    """The two engines on the same objective (FISTA is slow on raw data: a longer budget)."""
    Xs, ys = school
    a = TraceNormMTL(alpha=100.0, task_weighting="sum", fit_intercept=False).fit(Xs, ys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f = TraceNormMTL(alpha=100.0, task_weighting="sum", fit_intercept=False, solver="fista",
                         max_iter=30000).fit(Xs, ys)
    assert f.solver_ == "fista" and a.solver_ == "admm"
    close(a.objective_history_[-1], f.objective_history_[-1], rel=1e-9)
    close(f.objective_history_[-1], a.objective_history_[-1], rel=1e-5)
    assert 0 < a.rank_ < 20


# ---- task weighting ---------------------------------------------------------------------------


def test_task_weighting_sum_is_mean_with_weights_times_n_on_a_shared_design():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 8))
    Y = X @ rng.standard_normal((8, 5)) + rng.standard_normal((50, 5))
    for cls, key in [(TraceNormMTL, "alpha"), (JointFeatureSelection, "alpha")]:
        mean = cls(**{key: 0.3}).fit(X, Y)
        summ = cls(**{key: 0.3 * 50}, task_weighting="sum").fit(X, Y)
        np.testing.assert_allclose(summ.coef_, mean.coef_, atol=1e-6)
        assert summ.objective_history_[-1] == pytest.approx(50 * mean.objective_history_[-1], rel=1e-8)


def test_task_weighting_differs_when_tasks_differ_in_size(school):
    Xs, ys = school
    mean = SingleTaskLinear(alpha=1.0).fit(Xs, ys)
    summ = SingleTaskLinear(alpha=1.0, task_weighting="sum").fit(Xs, ys)
    assert not np.allclose(mean.coef_, summ.coef_)
    with pytest.raises(ValueError, match="task_weighting must be one of"):
        SingleTaskLinear(task_weighting="median").fit(Xs, ys)


# ---- iteration limits, warnings, options ------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: SingleTaskLinear(penalty="l1", alpha=0.05, max_iter=3),
    lambda: TraceNormMTL(alpha=10.0, max_iter=3),
    lambda: JointFeatureSelection(alpha=0.1, max_iter=3),
    lambda: AdaptiveSharing(lambda_c=0.5, lambda_s=0.02, max_iter=3),
    lambda: AdaptiveSharing(lambda_c=0.5, lambda_s=0.02, max_iter=3, solver="fista"),
])
def test_convergence_warning_names_the_residual_and_the_limit(school, make):
    Xs, ys = school
    est = make()
    with pytest.warns(ConvergenceWarning, match=r"stopped after 3 iterations \(max_iter=3\) with a KKT residual of "
                                                r"[0-9.e+-]+ > tol=1e-06.*raise max_iter"):
        est.fit(Xs, ys)
    assert est.n_iter_ == 3 and not est.converged_ and est.residual_ > est.tol


def test_no_warning_at_the_defaults_on_raw_data(school):
    Xs, ys = school
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        for est in (SingleTaskLinear(alpha=1e-2), SingleTaskLinear(alpha=1e-2, penalty="l1"),
                    TraceNormMTL(alpha=1.0), JointFeatureSelection(alpha=0.1),
                    AdaptiveSharing(lambda_c=1e-2, lambda_s=1e-3)):
            est.fit(Xs, ys)
            assert est.converged_


def test_solver_option_and_bad_values(school):
    Xs, ys = school
    with pytest.raises(ValueError, match="solver must be one of"):
        TraceNormMTL(solver="newton").fit(Xs, ys)
    with pytest.raises(ValueError, match="alpha must be finite and non-negative"):
        JointFeatureSelection(alpha=-1.0).fit(Xs, ys)
    with pytest.raises(ValueError, match="alpha must be finite and non-negative"):
        TraceNormMTL(alpha=float("nan")).fit(Xs, ys)
    est = TraceNormMTL(alpha=1.0, loss="logistic", max_iter=50)
    y01 = [(y > np.median(y)).astype(float) for y in ys]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(Xs, y01)
    assert est.solver_ == "prox-newton" and set(np.unique(np.concatenate(est.predict(Xs)))) <= {0.0, 1.0}
    forced = TraceNormMTL(alpha=1.0, loss="logistic", max_iter=50, solver="fista")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        forced.fit(Xs, y01)
    assert forced.solver_ == "fista"
