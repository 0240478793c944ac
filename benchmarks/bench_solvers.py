"""Solvers: time to reach a 1e-6 relative objective gap, against the peers a user would pick.

Usage: python benchmarks/bench_solvers.py [--device cpu|cuda] [--quick]

Problems (squared loss, shared X of N x D, T tasks):
- Lasso per task: mtlkernels SingleTaskLinear(penalty="l1") vs scikit-learn Lasso (CPU).
- Multi-task lasso (l2,1 over the rows of W): mtlkernels.optim.fista + group_prox_grad_step
  vs scikit-learn MultiTaskLasso (CPU).
- Adaptive Sharing (nuclear + l1): mtlkernels AdaptiveSharing vs a plain PyTorch FISTA
  with torch.linalg.svd and eager shrinkage (what a PyTorch user would write).
F* is each problem's best objective found by any solver run to a tight tolerance; a
solver's time counts until its objective is within 1e-6 relative of F*.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import bench_parser, bench_setup, sync, write_table
from sklearn.linear_model import Lasso, MultiTaskLasso

from mtlkernels import ops
from mtlkernels.linear import AdaptiveSharing, SingleTaskLinear
from mtlkernels.optim import fista

GAP = 1e-6


def problem(N, D, T, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D)) / np.sqrt(D)
    W = (rng.standard_normal((D, 5)) @ rng.standard_normal((5, T))) * (rng.random((D, 1)) < 0.2)
    W += 3 * (rng.random((D, T)) < 0.01) * rng.standard_normal((D, T))
    Y = X @ W + 0.1 * rng.standard_normal((N, T))
    return X, Y


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def plain_torch_fista_as(X, Y, lc, ls, F_star, max_iter=20000):
    """FISTA for Adaptive Sharing as a PyTorch user would write it: fixed step 1/L,
    torch.linalg.svd for the nuclear prox, eager sign * clamp for the l1 prox."""
    N = X.shape[0]
    step = N / float(torch.linalg.matrix_norm(X, ord=2)) ** 2 / 2
    C = torch.zeros(X.shape[1], Y.shape[1], dtype=X.dtype, device=X.device)
    S = torch.zeros_like(C)
    Cy, Sy, t = C, S, 1.0
    F = float("inf")
    for it in range(max_iter):
        G = X.T @ (X @ (Cy + Sy) - Y) / N
        U, s, Vh = torch.linalg.svd(Cy - step * G, full_matrices=False)
        C_new = (U * torch.clamp(s - step * lc, min=0)) @ Vh
        Z = Sy - step * G
        S_new = torch.sign(Z) * torch.clamp(Z.abs() - step * ls, min=0)
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        Cy = C_new + (t - 1) / t_new * (C_new - C)
        Sy = S_new + (t - 1) / t_new * (S_new - S)
        C, S, t = C_new, S_new, t_new
        if it % 10 == 0:
            R = X @ (C + S) - Y
            F = float((R**2).sum() / (2 * N) + lc * torch.linalg.svdvals(C).sum() + ls * S.abs().sum())
            if F_star is not None and F <= F_star * (1 + GAP):
                break
    return F, it + 1


def main():
    p = bench_parser(__doc__)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    device = bench_setup(args)
    cuda = device.startswith("cuda")
    if args.quick:
        sizes = [(2000, 256, 20)]
    elif cuda:
        sizes = [(50000, 1024, 100), (50000, 4096, 100)]
    else:
        sizes = [(5000, 256, 20), (20000, 512, 50)]
    rows = []
    for N, D, T in sizes:
        X, Y = problem(N, D, T)
        Xt = torch.tensor(X, device=device)
        Yt = torch.tensor(Y, device=device)
        tag = f"N={N} D={D} T={T}"

        # ---- Lasso per task (no intercept, objective summed over tasks)
        alpha = 1e-3
        if not cuda:
            sk, t_sk = timed(lambda: [Lasso(alpha=alpha, fit_intercept=False, tol=1e-8, max_iter=10000).fit(X, Y[:, t]) for t in range(T)])
            W_sk = np.stack([m.coef_ for m in sk], 1)
            F_sk = ((Y - X @ W_sk) ** 2).sum() / (2 * N) + alpha * np.abs(W_sk).sum()
        ours = SingleTaskLinear(penalty="l1", alpha=alpha, fit_intercept=False, tol=1e-7, max_iter=20000, device=device)
        _, t_ours = timed(lambda: (ours.fit(X, Y), sync(device)))
        F_ours = ours.objective_history_[-1] * 1.0
        # our loss is sum over tasks of 0.5 * mean: the same objective
        F_star = min(F_ours, F_sk) if not cuda else F_ours
        rows.append([tag, "lasso per task", t_ours, (F_ours - F_star) / F_star,
                     "sklearn Lasso" if not cuda else "-", t_sk if not cuda else float("nan"),
                     (F_sk - F_star) / F_star if not cuda else float("nan"), (t_sk / t_ours) if not cuda else float("nan")])

        # ---- multi-task lasso (rows of W)
        alpha2 = 5e-3
        def smooth(q):
            return ((Xt @ q[0] - Yt) ** 2).sum() / (2 * N)

        def run_ours():
            r = fista(smooth, lambda q, g, lr: [ops.group_prox_grad_step(q[0], g[0], lr, alpha2, dim=1)],
                      lambda q: float(alpha2 * q[0].norm(dim=1).sum()),
                      [torch.zeros(D, T, dtype=torch.float64, device=device)], lr=1.0, max_iter=20000, tol=1e-7)
            sync(device)
            return r
        res, t_ours = timed(run_ours)
        F_ours = res.objective
        if not cuda:
            mt, t_sk = timed(lambda: MultiTaskLasso(alpha=alpha2, fit_intercept=False, tol=1e-8, max_iter=10000).fit(X, Y))
            W_sk = mt.coef_.T
            F_sk = ((Y - X @ W_sk) ** 2).sum() / (2 * N) + alpha2 * np.linalg.norm(W_sk, axis=1).sum()
        F_star = min(F_ours, F_sk) if not cuda else F_ours
        rows.append([tag, "multi-task lasso", t_ours, (F_ours - F_star) / F_star,
                     "sklearn MultiTaskLasso" if not cuda else "-", t_sk if not cuda else float("nan"),
                     (F_sk - F_star) / F_star if not cuda else float("nan"), (t_sk / t_ours) if not cuda else float("nan")])

        # ---- Adaptive Sharing vs plain PyTorch FISTA
        lc, ls = 0.05, 1e-3
        ref_run = AdaptiveSharing(lambda_c=lc, lambda_s=ls, fit_intercept=False, tol=1e-9, max_iter=20000, device=device).fit(X, Y)
        F_ref = ref_run.objective_history_[-1]
        est = AdaptiveSharing(lambda_c=lc, lambda_s=ls, fit_intercept=False, tol=1e-7, max_iter=20000, device=device)
        _, t_ours = timed(lambda: (est.fit(X, Y), sync(device)))
        F_ours = est.objective_history_[-1]
        (F_plain, n_plain), t_plain = timed(lambda: (plain_torch_fista_as(Xt, Yt, lc, ls, F_ref), sync(device))[0])
        F_star = min(F_ref, F_ours, F_plain)
        rows.append([tag, "adaptive sharing", t_ours, (F_ours - F_star) / F_star, "plain torch FISTA (svd)",
                     t_plain, (F_plain - F_star) / F_star, t_plain / t_ours])
        print(rows[-3:], flush=True)
    write_table("solvers", device, ["problem", "solver task", "ours s", "ours gap", "peer", "peer s", "peer gap",
                                    "peer/ours"], rows,
                f"python benchmarks/bench_solvers.py --device {device}" + (" --quick" if args.quick else ""),
                notes="float64; gap = (F - F*) / F*, F* the best objective any run reached; each solver stops at its own tolerance")


if __name__ == "__main__":
    main()
