"""Generated multi-task regression data: the AMTFL synthetic experiment and a problem
shaped like the School data.

- :func:`amtfl_synthetic`: the synthetic setting of Lee, Yang and Hwang (2018), sec. 4.1.
- :func:`school_like`: 139 tasks of raw, unstandardised features shaped like the School
  data of Argyriou, Evgeniou and Pontil (2008) (also MALSAR's ``school.mat``): one-hot
  blocks, integer school-level percentages, a constant column, singular per-task Gram
  matrices. The real file is not shipped; :func:`mtlkernels.datasets.load_malsar` reads it.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from ._tasks import MultiTaskDataset


def split_tasks(Xs, ys, fractions, seed) -> tuple[dict, dict]:
    """Per-task random train / val / test splits by ``fractions`` (train, val, test).

    Every task keeps at least one sample in each split whose fraction is positive.
    ``fractions=None`` puts every sample in "train".
    """
    if fractions is None:
        return {"train": list(Xs)}, {"train": list(ys)}
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0) or fr[0] <= 0:
        raise ValueError(f"fractions must be (train, val, test), non-negative, summing to 1, got {fractions}")
    rng = np.random.default_rng([seed, 7])
    X = {"train": [], "val": [], "test": []}
    y = {"train": [], "val": [], "test": []}
    for x, v in zip(Xs, ys):
        n = len(v)
        perm = rng.permutation(n)
        n_val = max(1, int(round(fr[1] * n))) if fr[1] > 0 else 0
        n_test = max(1, int(round(fr[2] * n))) if fr[2] > 0 else 0
        if n - n_val - n_test < 1:
            raise ValueError(f"a task with {n} samples cannot be split by {tuple(fractions)}")
        parts = {"val": perm[:n_val], "test": perm[n_val:n_val + n_test], "train": perm[n_val + n_test:]}
        for name, idx in parts.items():
            X[name].append(x[np.sort(idx)])
            y[name].append(v[np.sort(idx)])
    for name in ("val", "test"):
        if fr[("train", "val", "test").index(name)] == 0:
            del X[name], y[name]
    return X, y


def amtfl_synthetic(
    seed: int = 0,
    split: int = 0,
    n_features: int = 30,
    param_noise: tuple[float, float] = (1.0, 2.0),
    obs_noise: float = 1.0,
    coef_scale: float = 3.0,
    sizes: tuple[tuple[int, int, int], tuple[int, int, int]] = ((50, 50, 100), (25, 25, 100)),
) -> MultiTaskDataset:
    """The synthetic experiment of Lee, Yang and Hwang (2018), sec. 4.1 (Deep AMTFL), regression.

    As the paper states it: six ``n_features``-dimensional true bases l_1..l_6 (fixed by
    ``seed``); twelve tasks whose parameters are generated from them *with noise*,
    w_t = l_a c_a + l_b c_b + eps_t, eps_t ~ N(0, sigma^2 I), sigma = 1 for the 6 *easy*
    tasks and 2 for the 6 *hard* ones (``param_noise``). Each easy task combines two of
    {l_1..l_4}, each hard task two of {l_3..l_6}, so {l_3, l_4} are shared by both
    groups. Train/val/test sizes 50/50/100 (easy) and 25/25/100 (hard). ``split`` in 0..4
    draws one of the paper's five random splits (new samples, same parameters).

    Readings we chose (the paper does not say): bases N(0, 1) and combination coefficients
    N(0, ``coef_scale``^2) (3 by default, so the shared part of each parameter, about 4.2 per
    coordinate, stands above the noise of the easy tasks and the hard tasks' noise is half
    of it); inputs x ~ N(0, I); targets y = x^T w_t + e with observation noise
    e ~ N(0, ``obs_noise``^2), the same for every task (the hard tasks are hard because
    their parameters leave the span of the shared bases, which is what makes them
    transfer noise to the bases in a shared-basis model, the paper's Fig. 2a).
    ``info`` holds ``L_true`` (d, 6), ``S_true`` (6, 12), ``W_true`` (the noisy
    parameters), ``W_clean`` = L S and ``easy`` (a boolean mask over tasks).
    """
    if not 0 <= split < 5:
        raise ValueError(f"split must be in 0..4 (the paper's five random splits), got {split}")
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((n_features, 6))
    pairs_easy = list(combinations(range(0, 4), 2))
    pairs_hard = list(combinations(range(2, 6), 2))
    S = np.zeros((6, 12))
    for t, (a, b) in enumerate(pairs_easy + pairs_hard):
        S[[a, b], t] = coef_scale * rng.standard_normal(2)
    easy = np.array([True] * 6 + [False] * 6)
    sigma = np.where(easy, param_noise[0], param_noise[1])
    W_clean = L @ S
    W = W_clean + sigma * rng.standard_normal(W_clean.shape)
    data_rng = np.random.default_rng([seed, split + 1])
    X = {"train": [], "val": [], "test": []}
    y = {"train": [], "val": [], "test": []}
    for t in range(12):
        for name, n in zip(("train", "val", "test"), sizes[0] if easy[t] else sizes[1]):
            x = data_rng.standard_normal((n, n_features))
            X[name].append(x)
            y[name].append(x @ W[:, t] + obs_noise * data_rng.standard_normal(n))
    names = [f"easy{t}" for t in range(6)] + [f"hard{t}" for t in range(6)]
    return MultiTaskDataset(
        "amtfl_synthetic", X, y, "regression", False, names,
        {"L_true": L, "S_true": S, "W_true": W, "W_clean": W_clean, "easy": easy, "seed": seed, "split": split},
    )


#: Column layout of :func:`school_like` (and of the School data's 28 columns as we read them).
SCHOOL_COLUMNS = (
    ["year_1985", "year_1986", "year_1987", "pct_fsm", "pct_vr1"]
    + [f"school_gender_{g}" for g in ("mixed", "boys", "girls")]
    + [f"school_denomination_{k}" for k in range(3)]
    + ["student_male", "student_female"]
    + [f"vr_band_{b}" for b in (1, 2, 3)]
    + [f"ethnic_{e}" for e in range(11)]
    + ["bias"]
)


def school_like(seed: int = 0, fractions=None, n_tasks: int = 139, noise: float = 9.0) -> MultiTaskDataset:
    """A multi-task regression problem shaped like the School data (exam scores of the
    students of 139 schools; one task per school), raw and unstandardised.

    Per task (school) 22 to 251 samples (median about 100; the first two tasks have 22 and
    251). 28 columns (:data:`SCHOOL_COLUMNS`): 3 one-hot columns (year); 2 integer columns
    constant within a task (school-level percentages, ranges 8..91 and 3..43); 22 binary
    columns from one-hot groups: school gender (3) and denomination (3), constant within
    a task, student gender (2; constant in single-sex schools), VR band (3) and ethnic
    group (11); and a constant-1 column. Each one-hot group sums to the constant column
    and the school-level columns are constant within a task, so every per-task Gram
    matrix is singular: only the penalty makes a per-task problem well posed.

    Targets: integers in 1..70, y = round(x^T w_t + e) clipped, e ~ N(0, ``noise``^2),
    with W = a common part (intercept 30, -0.1 per point of pct_fsm, +0.1 per point of
    pct_vr1, each perturbed per school) + a rank-3 part + 5% sparse task-specific
    entries. ``fractions`` = (train, val, test) splits each task at random (seeded);
    ``None`` (default) puts every sample in "train". ``info``: ``W_true``, ``columns``.
    """
    rng = np.random.default_rng(seed)
    n = np.clip(np.round(rng.lognormal(np.log(100.0), 0.45, n_tasks)), 22, 251).astype(int)
    n[:2] = (22, 251)
    fsm = rng.integers(8, 92, n_tasks)
    vr1 = rng.integers(3, 44, n_tasks)
    school_gender = rng.choice(3, n_tasks, p=[0.7, 0.15, 0.15])
    denomination = rng.choice(3, n_tasks, p=[0.6, 0.25, 0.15])
    d = len(SCHOOL_COLUMNS)
    W = 1.5 * rng.standard_normal((d, 3)) @ rng.standard_normal((3, n_tasks))
    W += 4.0 * (rng.random((d, n_tasks)) < 0.05) * rng.standard_normal((d, n_tasks))
    W[3] = -0.1 * (1 + 0.3 * rng.standard_normal(n_tasks))
    W[4] = 0.1 * (1 + 0.3 * rng.standard_normal(n_tasks))
    W[27] += 30.0
    eth_p = np.r_[0.5, np.full(10, 0.05)]
    Xs, ys = [], []
    for t in range(n_tasks):
        m, rows = n[t], np.arange(n[t])
        x = np.zeros((m, d))
        x[rows, rng.integers(0, 3, m)] = 1.0
        x[:, 3], x[:, 4] = fsm[t], vr1[t]
        x[:, 5 + school_gender[t]] = 1.0
        x[:, 8 + denomination[t]] = 1.0
        gender = rng.integers(0, 2, m) if school_gender[t] == 0 else np.full(m, school_gender[t] - 1)
        x[rows, 11 + gender] = 1.0
        x[rows, 13 + rng.choice(3, m, p=[0.25, 0.5, 0.25])] = 1.0
        x[rows, 16 + rng.choice(11, m, p=eth_p)] = 1.0
        x[:, 27] = 1.0
        Xs.append(x)
        ys.append(np.clip(np.round(x @ W[:, t] + noise * rng.standard_normal(m)), 1, 70))
    X, y = split_tasks(Xs, ys, fractions, seed)
    return MultiTaskDataset("school_like", X, y, "regression", False, [f"school{t}" for t in range(n_tasks)],
                            {"W_true": W, "columns": list(SCHOOL_COLUMNS), "seed": seed})
