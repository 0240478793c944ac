"""The small, ill-conditioned problems of bench_solvers.py --school: raw School-shaped data
(:func:`mtlkernels.datasets.school_like`, 139 tasks, 28 unstandardised columns, singular
per-task Gram matrices), every estimator at the issue's settings, one CPU thread.

Rows, each with its target (issue 11) and whether it is met:
- trace-norm MTL (MALSAR's Least_Trace: sum_t 0.5 ||y_t - X_t w_t||^2 + rho ||W||_*,
  task_weighting="sum", no intercept) for rho in {10, 100, 1000}: time to a 1e-6 relative
  objective gap, target <= 1 s and >= 10x a plain PyTorch FISTA (per-task Gram form, fixed
  step 1 / L, torch.linalg.svd for the prox, oracle stop at its first check within the gap,
  given at most `--plain-seconds`);
- joint feature selection (MALSAR's Least_L21) the same way, and the lasso per task
  against scikit-learn's Lasso (coordinate descent, one fit per task);
- SingleTaskLinear (ridge, closed form) against scikit-learn's Ridge per task;
- AdaptiveSharing, GoMTL, AMTL, AMTFL at the issue's settings: fit time and whether the fit
  ends at its optimum (every KKT residual <= tol; the residual reached otherwise); target
  <= 1 s (AMTFL <= 3 s); LatentTaskMTL (squared loss, the settings of the School acceptance
  test) with no time target, whether it ends at its optimum.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, Ridge

from mtlkernels.datasets import school_like
from mtlkernels.linear import (AMTFL, AMTL, AdaptiveSharing, GoMTL, JointFeatureSelection, LatentTaskMTL,
                               SingleTaskLinear, TraceNormMTL)

GAP = 1e-6
TOLS = [10.0**-k for k in range(2, 12)]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def timed_fit(est, Xs, ys, repeat=3):
    """The median time of ``repeat`` fits from scratch when one takes under 5 s (this
    machine's timings vary by +-30% from run to run), else of that one fit."""
    _, t = timed(lambda: quiet_fit(est, Xs, ys))
    if t >= 5.0:
        return t
    ts = [t] + [timed(lambda: quiet_fit(est, Xs, ys))[1] for _ in range(repeat - 1)]
    return sorted(ts)[len(ts) // 2]


def quiet_fit(est, Xs, ys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(Xs, ys)


def plain_fista(Xs, ys, kind, rho, F_star, max_seconds, check=10):
    """FISTA as a PyTorch user would write it for sum_t 0.5 ||y_t - X_t w_t||^2 + rho h(W):
    per-task Gram matrices formed once, fixed step 1 / max_t lambda_max(G_t), the prox by
    torch.linalg.svd (trace norm) or row shrinkage (l2,1), objective checked every `check`
    iterations against F* (an oracle stop that favours it). Returns (objective, iterations)."""
    G = torch.tensor(np.stack([x.T @ x for x in Xs]))
    B = torch.tensor(np.stack([x.T @ y for x, y in zip(Xs, ys)]).T)
    c = 0.5 * sum(float(y @ y) for y in ys)
    step = 1.0 / float(torch.linalg.eigvalsh(G).max())
    d, T = B.shape

    def grad(W):
        return torch.bmm(G, W.T.unsqueeze(-1)).squeeze(-1).T - B

    def prox(V, t):
        if kind == "trace":
            U, s, Vh = torch.linalg.svd(V, full_matrices=False)
            return (U * torch.clamp(s - t, min=0)) @ Vh
        nrm = V.norm(dim=1, keepdim=True)
        return V * torch.clamp(1 - t / nrm.clamp_min(1e-300), min=0)

    def objective(W):
        f = 0.5 * float((W * (grad(W) - B)).sum()) + c  # 0.5 <W, G W> - <W, B> + c
        h = float(torch.linalg.svdvals(W).sum()) if kind == "trace" else float(W.norm(dim=1).sum())
        return f + rho * h

    W = torch.zeros(d, T, dtype=torch.float64)
    Y, t, F, it = W, 1.0, float("inf"), 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_seconds:
        W_new = prox(Y - step * grad(Y), step * rho)
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        Y = W_new + (t - 1) / t_new * (W_new - W)
        W, t = W_new, t_new
        it += 1
        if it % check == 0:
            F = objective(W)
            if F <= F_star * (1 + GAP):
                break
    return objective(W), it


def time_to_gap(make, Xs, ys):
    """(seconds, tol, objective, n_iter) of the loosest tol whose fit is within GAP of the
    best objective any tolerance reached (each a fit from scratch; tol 1e-11 gives F*)."""
    runs = []
    for tol in TOLS:
        est, t = timed(lambda: quiet_fit(make(tol), Xs, ys))
        runs.append((t, tol, est.objective_history_[-1], est.n_iter_))
    F_star = min(r[2] for r in runs)
    for t, tol, F, n in runs:
        if (F - F_star) / abs(F_star) <= GAP:
            return t, tol, F, n, F_star
    return runs[-1] + (F_star,)


def rows(plain_seconds: float = 60.0, log=print) -> list[list]:
    Xs, ys = school_like(0).split("train")
    out = []
    convex = [("trace norm", "trace", rho) for rho in (10.0, 100.0, 1000.0)] + [("l2,1 (JFS)", "jfs", 100.0)]
    for label, kind, rho in convex:
        cls = TraceNormMTL if kind == "trace" else JointFeatureSelection
        t, tol, F, n, F_star = time_to_gap(
            lambda tol: cls(alpha=rho, task_weighting="sum", fit_intercept=False, tol=tol, max_iter=100000), Xs, ys)
        (F_p, it_p), t_p = timed(lambda: plain_fista(Xs, ys, kind, rho, F_star, plain_seconds))
        F_star = min(F_star, F_p)
        gap_p = (F_p - F_star) / F_star
        reached = gap_p <= GAP
        ratio = t_p / t
        met = t <= 1.0 and ratio >= 10  # unreached: the ratio is a lower bound
        note = "met" if met else f"gap: {t:.2f} s, {ratio:.1f}x"
        out.append([f"{label}, rho={rho:g}", "sum, no intercept", t, f"tol {tol:.0e} ({n} it)", (F - F_star) / F_star,
                    "plain FISTA (Gram form)", t_p if reached else f"> {t_p:.0f}", f"{it_p} it",
                    gap_p, f"{ratio:.0f}" if reached else f"> {ratio:.0f}", "<= 1 s, >= 10x", note])
        log(out[-1])
    # the lasso per task against scikit-learn
    t, tol, F, n, F_star = time_to_gap(lambda tol: SingleTaskLinear(penalty="l1", alpha=0.05, tol=tol, max_iter=100000),
                                       Xs, ys)

    def sk_lasso():
        F = 0.0
        for X, y in zip(Xs, ys):
            m = Lasso(alpha=0.05, tol=1e-10, max_iter=1_000_000).fit(X, y)
            r = y - X @ m.coef_ - m.intercept_
            F += 0.5 * (r @ r) / len(y) + 0.05 * np.abs(m.coef_).sum()
        return F

    F_sk, t_sk = timed(sk_lasso)
    F_star = min(F_star, F_sk)
    out.append(["lasso per task, alpha=0.05", "mean, intercept", t, f"tol {tol:.0e} ({n} it)", (F - F_star) / F_star,
                "sklearn Lasso (tol 1e-10)", t_sk, "CD", (F_sk - F_star) / F_star, f"{t_sk / t:.1f}", "<= 1 s",
                "met" if t <= 1.0 else f"gap: {t:.2f} s"])
    log(out[-1])
    # ridge: closed form against scikit-learn's Ridge
    stl, t = timed(lambda: SingleTaskLinear(alpha=1e-2).fit(Xs, ys))
    _, t_sk = timed(lambda: [Ridge(alpha=1e-2 * len(y)).fit(X, y) for X, y in zip(Xs, ys)])
    out.append(["SingleTaskLinear(alpha=1e-2)", "mean, intercept", t, stl.solver_, 0.0, "sklearn Ridge per task",
                t_sk, "cholesky", 0.0, f"{t_sk / t:.1f}", "<= 1 s", "met" if t <= 1.0 else f"gap: {t:.2f} s"])
    log(out[-1])
    # the settings, fit time and optimality
    for est, target in [
        (AdaptiveSharing(lambda_c=1e-2, lambda_s=1e-3), 1.0),
        (GoMTL(n_latent=10, mu=1e-3, lam=1e-3), 1.0),
        (AMTL(mu=1e-3, gamma=1e-3, alpha=1e-2), 1.0),
        (AMTFL(n_latent=10, alpha=0.1, mu=1e-2, gamma=1e-2, lam=1e-2), 3.0),
        # no time target in issue 11; the settings of test_linear_school's squared-loss fit
        (LatentTaskMTL(n_latent=10, mu=1e-3, gamma=1e-4, lam=1e-3, loss="squared"), None),
    ]:
        t = timed_fit(est, Xs, ys)
        at_opt = est.converged_
        name = type(est).__name__
        in_time = target is None or t <= target
        ok = at_opt and in_time
        settings = "mean, intercept (issue's settings)" if target is not None else "mean, intercept (test settings)"
        out.append([name, settings, t, f"{est.n_iter_} it", f"residual {est.residual_:.1e}",
                    "-", "-", "-", "-", "-", "at optimum" if target is None else f"<= {target:g} s at optimum",
                    "met" if ok else ("gap: " + ", ".join(([] if at_opt else [f"residual {est.residual_:.1e} > tol"])
                                                            + ([] if in_time else [f"{t:.1f} s"])))])
        log(out[-1])
    return out
