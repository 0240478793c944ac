"""Datasets: school_like (the School data's shape), load_malsar (MALSAR's .mat format), the
AMTFL synthetic set with parameter noise, per-task splits."""

import numpy as np
import pytest
import torch

from mtlkernels.datasets import SCHOOL_COLUMNS, amtfl_synthetic, load_malsar, school_like, split_tasks
from mtlkernels.linear import SingleTaskLinear, TraceNormMTL

ONE_THREAD = True  # the whole module on one intra-op thread (conftest.py)



def test_school_like_has_the_school_data_shape():
    ds = school_like(seed=0)
    Xs, ys = ds.split("train")
    n = np.array([len(y) for y in ys])
    assert ds.n_tasks == 139 and ds.n_features == 28 == len(SCHOOL_COLUMNS)
    assert n.min() == 22 and n.max() == 251 and 80 <= np.median(n) <= 120
    X = np.concatenate(Xs)
    y = np.concatenate(ys)
    assert np.all(y == np.round(y)) and y.min() >= 1 and y.max() <= 70
    assert np.all(X[:, 27] == 1)  # the constant column
    assert 8 <= X[:, 3].min() and X[:, 3].max() <= 91 and 3 <= X[:, 4].min() and X[:, 4].max() <= 43
    binary = [j for j in range(28) if j not in (3, 4, 27)]
    assert set(np.unique(X[:, binary])) == {0.0, 1.0} and len(binary) == 25  # 3 year + 22 categorical
    for t, x in enumerate(Xs):
        assert np.ptp(x[:, 3]) == 0 and np.ptp(x[:, 4]) == 0  # school-level: constant within a task
        for group in ((0, 3), (5, 8), (8, 11), (11, 13), (13, 16), (16, 27)):  # one-hot groups sum to 1
            np.testing.assert_array_equal(x[:, group[0]:group[1]].sum(1), 1.0)
        assert np.linalg.matrix_rank(x.T @ x) < 28  # singular per-task Gram matrices
    again = school_like(seed=0)
    np.testing.assert_array_equal(again.split("train")[1][5], ys[5])
    assert not np.array_equal(school_like(seed=1).split("train")[1][0][:5], ys[0][:5])


def test_school_like_splits_and_a_fit_on_raw_features():
    ds = school_like(seed=2, fractions=(0.5, 0.25, 0.25), n_tasks=30)
    sizes = {k: sum(len(y) for y in v) for k, v in ds.y.items()}
    assert sizes["train"] > sizes["val"] > 0 and sizes["test"] > 0
    for t in range(30):
        assert len(ds.y["val"][t]) >= 1 and len(ds.y["test"][t]) >= 1
    est = SingleTaskLinear(alpha=1e-2).fit(ds)
    assert est.converged_ and est.score(*ds.split("train")) > 0.0 and np.isfinite(est.score(ds))
    with pytest.raises(ValueError, match="fractions must be"):
        school_like(fractions=(0.5, 0.6, 0.1))


def test_split_tasks_keeps_every_sample_once():
    rng = np.random.default_rng(0)
    Xs = [rng.standard_normal((n, 3)) for n in (10, 7, 23)]
    ys = [x[:, 0] for x in Xs]
    X, y = split_tasks(Xs, ys, (0.6, 0.2, 0.2), seed=1)
    for t in range(3):
        rows = np.concatenate([X[k][t] for k in ("train", "val", "test")])
        assert sorted(map(tuple, rows)) == sorted(map(tuple, Xs[t]))
        np.testing.assert_array_equal(X["train"][t][:, 0], y["train"][t])
    X, y = split_tasks(Xs, ys, None, seed=1)
    assert list(X) == ["train"] and X["train"][1] is Xs[1]


def test_load_malsar_reads_cell_arrays(tmp_path):
    sio = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(3)
    Xs = [np.hstack([rng.standard_normal((n, 4)), np.ones((n, 1))]) for n in (12, 30, 7)]
    ys = [rng.standard_normal((len(x), 1)) for x in Xs]
    cells_x = np.empty((1, 3), dtype=object)
    cells_y = np.empty((1, 3), dtype=object)
    for t in range(3):
        cells_x[0, t], cells_y[0, t] = Xs[t], ys[t]
    path = tmp_path / "school_small.mat"
    sio.savemat(path, {"X": cells_x, "Y": cells_y})
    ds = load_malsar(path)
    assert ds.name == "school_small" and ds.n_tasks == 3 and ds.n_features == 5 and ds.task == "regression"
    for t in range(3):
        np.testing.assert_array_equal(ds.X["train"][t], Xs[t])
        np.testing.assert_array_equal(ds.y["train"][t], ys[t].ravel())
    # a MALSAR objective on the loaded data: Least_Trace with task_weighting="sum", no intercept
    est = TraceNormMTL(alpha=0.5, task_weighting="sum", fit_intercept=False).fit(ds)
    assert est.converged_ and est.coef_.shape == (5, 3)
    split = load_malsar(path, fractions=(0.5, 0.25, 0.25), seed=1)
    assert set(split.X) == {"train", "val", "test"}
    # column-cell layout (139 x 1 in some files) and other variable names
    sio.savemat(tmp_path / "col.mat", {"Xc": cells_x.T, "Yc": cells_y.T})
    assert load_malsar(tmp_path / "col.mat", x_key="Xc", y_key="Yc").n_tasks == 3


def test_load_malsar_sparse_cells_and_labels(tmp_path):
    """Sparse designs (text data) come back dense; labels in {-1, +1} make a classification
    data set (MALSAR's Logistic_* convention) unless the caller says otherwise."""
    sio = pytest.importorskip("scipy.io")
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(5)
    dense = [np.where(rng.random((n, 6)) < 0.3, rng.integers(1, 5, (n, 6)), 0).astype(float) for n in (9, 14)]
    cells_x, cells_y = np.empty((2, 1), dtype=object), np.empty((2, 1), dtype=object)
    for t, x in enumerate(dense):
        cells_x[t, 0] = sparse.csc_matrix(x)
        cells_y[t, 0] = np.where(np.arange(len(x)) % 3 == 0, 1.0, -1.0)[:, None]
    sio.savemat(tmp_path / "text.mat", {"X": cells_x, "Y": cells_y})
    ds = load_malsar(tmp_path / "text.mat")
    assert ds.task == "classification"
    for t in range(2):
        np.testing.assert_array_equal(ds.X["train"][t], dense[t])
    assert load_malsar(tmp_path / "text.mat", task="regression").task == "regression"
    cells_y[1, 0] = np.ones((14, 1))  # one class in one task only: still {-1, +1} overall
    sio.savemat(tmp_path / "one.mat", {"X": cells_x, "Y": cells_y})
    assert load_malsar(tmp_path / "one.mat").task == "classification"
    cells_y[0, 0] = np.ones((9, 1))  # every label +1: nothing says classification
    sio.savemat(tmp_path / "ones.mat", {"X": cells_x, "Y": cells_y})
    assert load_malsar(tmp_path / "ones.mat").task == "regression"
    with pytest.raises(ValueError, match="task must be"):
        load_malsar(tmp_path / "ones.mat", task="binary")
    cells_y[0, 0] = np.full((9, 1), np.nan)
    sio.savemat(tmp_path / "nan.mat", {"X": cells_x, "Y": cells_y})
    with pytest.raises(ValueError, match=r"Y\{1\} has NaN"):
        load_malsar(tmp_path / "nan.mat")


def test_load_malsar_errors(tmp_path):
    sio = pytest.importorskip("scipy.io")
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0], cells[0, 1] = np.ones((4, 3)), np.ones((5, 2))
    ys = np.empty((1, 2), dtype=object)
    ys[0, 0], ys[0, 1] = np.ones((4, 1)), np.ones((5, 1))
    sio.savemat(tmp_path / "bad_cols.mat", {"X": cells, "Y": ys})
    with pytest.raises(ValueError, match=r"X\{2\} has 2 columns but X\{1\} has 3"):
        load_malsar(tmp_path / "bad_cols.mat")
    cells[0, 1] = np.ones((6, 3))
    sio.savemat(tmp_path / "bad_n.mat", {"X": cells, "Y": ys})
    with pytest.raises(ValueError, match="task 2 has 6 samples in X but 5 targets in Y"):
        load_malsar(tmp_path / "bad_n.mat")
    sio.savemat(tmp_path / "no_y.mat", {"X": cells})
    with pytest.raises(ValueError, match="has no variable 'Y'"):
        load_malsar(tmp_path / "no_y.mat")
    sio.savemat(tmp_path / "not_cell.mat", {"X": np.ones((4, 3)), "Y": np.ones((4, 1))})
    with pytest.raises(ValueError, match="must be a cell array"):
        load_malsar(tmp_path / "not_cell.mat")


def test_amtfl_synthetic_parameters_carry_the_paper_noise():
    ds = amtfl_synthetic(seed=0, split=0)
    W, W_clean, easy = ds.info["W_true"], ds.info["W_clean"], ds.info["easy"]
    noise = W - W_clean
    assert noise[:, easy].std() == pytest.approx(1.0, rel=0.25)  # sigma = 1 for easy tasks
    assert noise[:, ~easy].std() == pytest.approx(2.0, rel=0.25)  # sigma = 2 for hard tasks
    np.testing.assert_allclose(W_clean, ds.info["L_true"] @ ds.info["S_true"])
    clean = amtfl_synthetic(seed=0, split=0, param_noise=(0.0, 0.0))
    np.testing.assert_allclose(clean.info["W_true"], clean.info["W_clean"])
