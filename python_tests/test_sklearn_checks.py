"""scikit-learn's contract for the estimators of mtlkernels.linear: its own estimator checks
(``parametrize_with_checks``, expected failures listed with the reason), tags by loss,
input messages, the stacked (X, y, tasks) form under GridSearchCV, and device errors."""

import warnings

import numpy as np
import pytest
import sklearn
import torch
from scipy import sparse
from sklearn.base import is_classifier, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.utils.estimator_checks import parametrize_with_checks

from mtlkernels.datasets import amtfl_synthetic
from mtlkernels.linear import (AMTFL, AMTL, AdaptiveSharing, GoMTL, JointFeatureSelection, LatentTaskMTL,
                               SingleTaskLinear, TraceNormMTL)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# The alternating models with capped outer loops: the checks test the API, not the optimum
# (ConvergenceWarning is expected), and the default caps make some checks take minutes.
CAPS = {"max_outer": 5, "max_iter": 300}
# Every class, as a regressor (squared loss) and, for two of them, as a classifier
# (LatentTaskMTL's default squared hinge; logistic STL); AMTFL also with its ReLU hidden layer.
ESTIMATORS = [
    SingleTaskLinear(), SingleTaskLinear(loss="logistic"), AdaptiveSharing(), TraceNormMTL(),
    JointFeatureSelection(), GoMTL(**CAPS), AMTL(**CAPS), AMTFL(**CAPS), AMTFL(hidden="relu", **CAPS),
    LatentTaskMTL(**CAPS),
]

#: Checks expected to fail, per class: {check name: reason}. None today (scikit-learn 1.9):
#: every check passes or skips (the pandas and array-API checks skip without pandas and
#: SCIPY_ARRAY_API=1). A check that starts failing for a reason we accept goes here.
EXPECTED_FAILURES: dict[str, dict[str, str]] = {}


def expected_failed_checks(estimator):
    return EXPECTED_FAILURES.get(type(estimator).__name__, {})


ONE_THREAD = True  # the whole module on one intra-op thread (conftest.py)


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_tags_follow_the_loss():
    assert is_regressor(SingleTaskLinear()) and not is_classifier(SingleTaskLinear())
    assert is_classifier(SingleTaskLinear(loss="logistic")) and is_classifier(LatentTaskMTL())
    assert is_regressor(LatentTaskMTL(loss="squared"))
    assert not hasattr(SingleTaskLinear(), "decision_function")
    assert hasattr(SingleTaskLinear(loss="logistic"), "decision_function")


def _data(n=40, d=5, T=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, X @ rng.standard_normal((d, T))


def test_not_fitted_and_input_messages():
    X, Y = _data()
    with pytest.raises(NotFittedError, match="SingleTaskLinear instance is not fitted"):
        SingleTaskLinear().predict(X)
    with pytest.raises(ValueError, match=r"0 feature\(s\)"):
        SingleTaskLinear().fit(X[:, :0], Y)
    with pytest.raises(ValueError, match="Complex data not supported"):
        SingleTaskLinear().fit(X + 1j, Y)
    with pytest.raises(ValueError, match="could not convert"):
        SingleTaskLinear().fit(np.full((4, 2), "a", dtype=object), np.ones(4))
    with pytest.raises(TypeError, match="Sparse data was passed for X.*dense"):
        SingleTaskLinear().fit(sparse.csr_matrix(X), Y)
    with pytest.raises(TypeError, match=r"Sparse data was passed for X\[1\]"):
        SingleTaskLinear().fit([X, sparse.csr_matrix(X)], [Y[:, 0], Y[:, 1]])
    with pytest.raises(ValueError, match="requires y to be passed"):
        SingleTaskLinear().fit(X)
    est = SingleTaskLinear().fit(X, Y)
    with pytest.raises(ValueError, match="Reshape your data"):
        est.predict(X[0])
    with pytest.raises(ValueError, match="X has 4 features, but SingleTaskLinear is expecting 5"):
        est.predict(X[:, :4])
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        SingleTaskLinear(loss="logistic").fit(X, np.arange(40) % 3)
    with pytest.raises(ValueError, match="Unknown label type"):
        SingleTaskLinear(loss="logistic").fit(X, Y[:, 0])


def test_any_two_labels_and_one_dimensional_y():
    X, Y = _data()
    y = np.where(Y[:, 0] > 0, "yes", "no")
    est = SingleTaskLinear(loss="logistic").fit(X, y)
    assert est.classes_.tolist() == ["no", "yes"]
    assert est.predict(X).shape == (40,) and set(est.predict(X)) <= {"no", "yes"}
    assert est.score(X, y) > 0.9
    assert SingleTaskLinear().fit(X, Y[:, 0]).predict(X).shape == (40,)
    assert SingleTaskLinear().fit(X, Y[:, :1]).predict(X).shape == (40, 1)


def test_float32_dtype_and_input():
    X, Y = _data()
    ref = SingleTaskLinear().fit(X, Y)
    for dtype in (np.float32, "float32", torch.float32):
        est = SingleTaskLinear(dtype=dtype).fit(X.astype(np.float32), Y.astype(np.float32))
        np.testing.assert_allclose(est.coef_, ref.coef_, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        SingleTaskLinear(dtype="int8").fit(X, Y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_unusable_device_names_itself_and_what_is_available():
    X, Y = _data()
    with pytest.raises(ValueError, match=r"device='cuda' cannot be used: .*available: cpu"):
        SingleTaskLinear(device="cuda").fit(X, Y)
    with pytest.raises(ValueError, match=r"device='gpu0' is not a device string.*available: cpu"):
        SingleTaskLinear(device="gpu0").fit(X, Y)


def _stacked(ds, split="train"):
    Xs, ys = ds.split(split)
    tasks = np.concatenate([np.full(len(x), t) for t, x in enumerate(Xs)])
    return np.concatenate(Xs), np.concatenate(ys), tasks


def test_stacked_form_equals_the_list_form():
    ds = amtfl_synthetic(seed=0)
    Xs, ys = ds.split("train")
    X, y, tasks = _stacked(ds)
    perm = np.random.default_rng(0).permutation(len(y))  # row order does not matter
    ids = np.array(["t%02d" % t for t in tasks])  # any hashable task ids
    a = AdaptiveSharing(lambda_c=0.1, lambda_s=0.01).fit(Xs, ys)
    b = AdaptiveSharing(lambda_c=0.1, lambda_s=0.01).fit(X[perm], y[perm], tasks=ids[perm])
    np.testing.assert_allclose(b.coef_, a.coef_, atol=1e-8)
    assert b.tasks_.tolist() == sorted(set(ids))
    pred = b.predict(X, tasks=ids)
    np.testing.assert_allclose(pred, np.concatenate(a.predict(Xs)), atol=1e-8)
    assert b.score(X, y, tasks=ids) == pytest.approx(a.score(Xs, ys))
    with pytest.raises(ValueError, match="ids not seen in fit"):
        b.predict(X[:2], tasks=["t00", "zz"])


def test_gridsearch_on_the_stacked_form_gives_finite_scores():
    ds = amtfl_synthetic(seed=0)
    X, y, tasks = _stacked(ds)
    cv = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, tasks))  # samples cut within tasks
    for _, test in cv:
        assert len(np.unique(tasks[test])) == ds.n_tasks
    with sklearn.config_context(enable_metadata_routing=True):
        est = SingleTaskLinear().set_fit_request(tasks=True).set_score_request(tasks=True)
        gs = GridSearchCV(est, {"alpha": [1e-3, 1e-1, 10.0]}, cv=cv).fit(X, y, tasks=tasks)
    scores = gs.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and scores.max() > 0.5
    assert gs.best_params_["alpha"] != 10.0  # the strongest ridge underfits


def test_gridsearch_on_the_list_form_is_not_silent():
    Xs, ys = amtfl_synthetic(seed=0).split("train")
    with pytest.raises(ValueError, match="use the stacked form"):
        GridSearchCV(SingleTaskLinear(), {"alpha": [1e-2]}, cv=3, error_score="raise").fit(Xs, ys)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        GridSearchCV(SingleTaskLinear(), {"alpha": [1e-2]}, cv=3).fit(Xs, ys)
    assert any("use the stacked form" in str(m.message) for m in w)
