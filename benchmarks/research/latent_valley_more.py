"""Research script (not a benchmark): four more ways to finish Go-MTL on school_like that do
not (findings of 2026-11-27, night; the first nine are in ``latent_valley.py``). Each run
starts from the estimator (n_latent=10, the train split of ``bench_solvers.py --school``, one
thread) and prints its objective F, its KKT residual and the zeros of S.

--continuation  Go-MTL on a path mu = 1e-1, 3e-2, 1e-2, 3e-3, 1e-3 (lam = 1e-3), 100 warm
                outer steps each: the residual is 3.7e-4 at mu = 0.1 already (80 zeros in
                S), 3.6e-4 at the end (F 4747.7528); 200 cold steps at mu = 1e-3 give 5.2e-5
                and F 4747.5641. Many zeros do not pin the valley by themselves.
--kmeans        L and S from k-means of the single-task solutions (S one nonzero a task,
                1251 zeros: a vertex of the penalty), then 200 outer steps: mu = lam = 1e-3
                4.3e-5, F 4750.667; mu = lam = 1e-2 1.8e-4, F 4761.491 (the SVD start:
                5.2e-5 / 4747.564 and 3.4e-4 after 1000 steps / 4758.220). Worse optima.
--face          An active-set Newton on the faces of S's sign pattern from 50 outer steps
                (mu = lam = 1e-3): a Levenberg-Marquardt step on (L, S_free) by a Schur
                complement onto L (280 x 280), a ratio test that adds the first entry of S
                to reach 0 to the zeros, and zeros released (the most violating |g| > mu)
                only once the face is stationary. Every face is left through a new zero
                after a few steps: 300 steps (31 s) end at F 4747.5625, a residual of 1.9e-4
                and 97 zeros in S, the entries released violating |g| <= mu by about 10x.
--varpro        L-BFGS (SciPy, 30 pairs) on psi(L) + lam ||L||^2, psi(L) = min_S f(L S) +
                mu ||S||_1 by the exact lasso of every task (psi is C^1: the lasso's solution
                is unique here, and its gradient R S^T by Danskin's theorem): 600 steps
                (46 s) from 50 outer steps, F 4747.5463 (lower than any alternation),
                residual 2.0e-5, S's zeros coming and going (3 at the start, 23 at the end,
                up to 46 on the way).

--long          Go-MTL at mu = lam = 1e-2 (AMTFL's settings with A = 0), 1000 warm outer steps
                at a time: residual 3.4e-4, 1.6e-4, 1.4e-5, 1.4e-4, 2.6e-6, 1.8e-6, 1.2e-6 after
                1000..7000 (F 4758.2205 -> 4758.17403, 51 -> 87 zeros in S; 14 s a thousand).
                The local optimum is there, some 5000 alternations away; L S moves by 4.7 % of
                its norm after the first 1000, and the factors mix: S_end = M S_1000 with M
                near the identity in 3 of its 10 rows only (the others off-diagonal up to 1.04).

--anderson      Anderson acceleration (memory 10; Walker and Ni, 2011) of the alternation's map
                L -> L(S(L)) (the exact lasso of every task, then the exact ridge for L), at
                mu = lam = 1e-2 from 20 outer steps, an extrapolated point kept only where its
                map lowers F below the plain map's (the memory restarts otherwise): 3000 maps
                (150 s, 2026-11-27, late) end at F 4758.3675 and a residual of 6.0e-5, most
                extrapolations rejected. The estimator's alternation with its valley moves is
                at 1.4e-5 after 3000 (--long). Extrapolation does not cross the valley either.

The per-task S-blocks are not the trouble: L^T G_t L has a condition number of 6-15 at
the 200-step point of mu = lam = 1e-2 (one task of rank 9 < k). The slow mode is the
valley alone, and every method above walks it one face of S's sign pattern at a time: the
objective at these settings keeps falling by about 1e-5 a face past F 4747.53 (item 7 of
``latent_valley.py``), a few hundred faces from the alternation's point.

Usage (from python_tests/, after `make install`; --face and --varpro take under a minute):
    ../.venv/bin/python ../benchmarks/research/latent_valley_more.py \
        --continuation|--kmeans|--face|--varpro|--long|--anderson
(--long about 100 s, --anderson about 150 s)
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import torch
from scipy.optimize import minimize
from sklearn.cluster import KMeans

from mtlkernels.datasets import school_like
from mtlkernels.linear import GoMTL, SingleTaskLinear

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from latent_valley import Problem, solve_s  # noqa: E402


def fit(Xs, ys, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GoMTL(n_latent=10, **kw).fit(Xs, ys)


def report(label, est):
    print(f"{label}: {est.n_iter_} outer steps, residual {est.residual_:.2e}, F {est.objective_history_[-1]:.4f}, "
          f"{int((est.S_ == 0).sum())} zeros in S", flush=True)


def continuation(Xs, ys):
    est = GoMTL(n_latent=10, mu=0.1, lam=1e-3, max_outer=100, warm_start=True)
    for mu in (1e-1, 3e-2, 1e-2, 3e-3, 1e-3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.set_params(mu=mu).fit(Xs, ys)
        report(f"mu = {mu:g}", est)


def kmeans(Xs, ys):
    W = np.asarray(SingleTaskLinear(alpha=1e-3).fit(Xs, ys).coef_)
    km = KMeans(10, n_init=10, random_state=0).fit(W.T)
    L = km.cluster_centers_.T.copy()
    S = np.zeros((10, W.shape[1]))
    for t, c in enumerate(km.labels_):
        S[c, t] = L[:, c] @ W[:, t] / (L[:, c] @ L[:, c])
    for reg in (1e-3, 1e-2):
        est = fit(Xs, ys, mu=reg, lam=reg, max_outer=1, warm_start=True)
        est.L_, est.S_ = L, S
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.set_params(max_outer=200).fit(Xs, ys)
        report(f"k-means start, mu = lam = {reg:g}", est)


def long_run(Xs, ys, rounds=7):
    est = GoMTL(n_latent=10, mu=1e-2, lam=1e-2, max_outer=1000, warm_start=True)
    for r in range(rounds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(Xs, ys)
        report(f"{1000 * (r + 1)} outer steps", est)


def face_newton(p, L, S, steps=300):
    """Active-set Levenberg-Marquardt Newton on the faces of S's sign pattern."""
    G, B, mu, lam = p.G, p.B, p.mu, p.lam
    (T, d, _), k = G.shape, L.shape[1]
    eye_k, eye_dk = torch.eye(k, dtype=L.dtype), torch.eye(d * k, dtype=L.dtype)
    F, lm, sig = p.F(L, S), 1e-8, S.sign()
    for it in range(steps):
        R = torch.einsum("tab,bt->ta", G, L @ S) - B.T
        g_sm = L.T @ R.T
        free = S != 0
        gS, gL = torch.where(free, g_sm + mu * sig, 0.0), R.T @ S.T + 2 * lam * L
        viol = torch.where(free, 0.0, g_sm.abs() - mu)
        if max(float(gS.norm()), float(gL.norm())) <= 1e-3 * float(viol.clamp_min(0).norm()):
            release = viol > 0.5 * float(viol.max())  # the face is stationary: free the worst zeros
            sig = torch.where(release, -g_sm.sign(), sig)
            S = torch.where(release, 1e-300 * sig, S)
            free = S != 0
            gS = torch.where(free, g_sm + mu * sig, 0.0)
        m = free.T.to(L.dtype)
        GL = torch.einsum("tab,bk->tak", G, L)
        Hss = torch.einsum("ak,tal->tkl", L, GL) * m[:, :, None] * m[:, None, :] + torch.diag_embed(1 - m)
        HLs = ((torch.einsum("taj,it->taij", GL, S) + torch.einsum("ta,ij->taij", R, eye_k))
               * m[:, None, None, :]).reshape(T, d * k, k)
        HLL = torch.einsum("it,jt,tab->aibj", S, S, G).reshape(d * k, d * k) + 2 * lam * eye_dk
        h = float(Hss.diagonal(dim1=-2, dim2=-1).abs().max())
        moved = False
        while not moved and lm < 1e6:
            cs, info_s = torch.linalg.cholesky_ex(Hss + lm * h * torch.diag_embed(m))
            HM = torch.cholesky_solve(HLs.mT, cs).mT
            cf, info = torch.linalg.cholesky_ex(HLL + lm * h * eye_dk - (HM @ HLs.mT).sum(0))
            if int(info_s.max()) or int(info):
                lm *= 10
                continue
            rhs = -gL.reshape(-1) + (HM @ gS.T.unsqueeze(-1)).sum(0).squeeze(-1)
            dL = torch.cholesky_solve(rhs.unsqueeze(-1), cf).reshape(d, k)
            dS = -torch.cholesky_solve(gS.T.unsqueeze(-1) + HLs.mT @ dL.reshape(1, -1, 1), cs).squeeze(-1).T * free
            slope = float((gL * dL).sum() + (gS * dS).sum())
            cross = free & (S * dS < 0)
            tmax = float((-S[cross] / dS[cross]).min()) if bool(cross.any()) else float("inf")
            for t in [min(1.0, tmax)] + [0.5**i for i in range(1, 30) if 0.5**i < min(1.0, tmax)]:
                Sn = S + t * dS
                Sn = torch.where(free & (Sn * sig <= 0) | (cross & (t >= tmax) & (Sn * S <= 0)), 0.0, Sn)
                Fn = p.F(L + t * dL, Sn)
                if Fn <= F + 1e-4 * t * slope:
                    L, S, F, moved = L + t * dL, Sn, Fn, True
                    break
            lm = max(lm / 10, 1e-12) if moved else lm * 10
        if not moved:
            break
    return L, S


def varpro(p, L0, S0, steps=600):
    """L-BFGS on psi(L) + lam ||L||^2, S = S(L) by the exact lasso of every task."""
    state = {"S": S0}

    def fg(x):
        L = torch.as_tensor(x).reshape(L0.shape)
        state["S"] = S = solve_s(p, L, state["S"])
        R = torch.einsum("tab,bt->at", p.G, L @ S) - p.B
        return p.F(L, S), (R @ S.T + 2 * p.lam * L).reshape(-1).numpy()

    res = minimize(fg, L0.reshape(-1).numpy(), jac=True, method="L-BFGS-B",
                   options={"maxiter": steps, "maxcor": 30, "gtol": 1e-14, "ftol": 1e-16})
    return torch.as_tensor(res.x).reshape(L0.shape), state["S"]


def anderson(Xs, ys, steps=3000, memory=10):
    est = fit(Xs, ys, mu=1e-2, lam=1e-2, max_outer=20)
    p, t0 = Problem(est, Xs, ys), time.perf_counter()
    L, S = torch.as_tensor(est.L_), torch.as_tensor(est.S_)
    (d, k), lam = L.shape, est.lam
    eye = torch.eye(d * k, dtype=L.dtype)

    def step(L, S0):  # one alternation: S = S(L) exactly, then L by its ridge system
        S = solve_s(p, L, S0)
        H = torch.einsum("it,jt,tab->aibj", S, S, p.G).reshape(d * k, d * k) + 2 * lam * eye
        return torch.linalg.solve(H, (p.B @ S.T).reshape(-1)).reshape(d, k), S

    x = step(L, S)[0]
    gx, Sx = step(x, S)
    xs, gs = [], []
    for it in range(steps):
        xs, gs = (xs + [x.reshape(-1)])[-(memory + 1):], (gs + [gx.reshape(-1)])[-(memory + 1):]
        cand = gx
        if len(xs) > 1:  # type II: min ||f_last - dF gamma||, f = g(x) - x
            f = torch.stack([g - v for g, v in zip(gs, xs)], 1)
            dF, dG = f[:, 1:] - f[:, :-1], torch.diff(torch.stack(gs, 1), dim=1)
            M = dF.T @ dF
            gamma = torch.linalg.solve(M + 1e-12 * torch.trace(M) * torch.eye(M.shape[0], dtype=M.dtype),
                                       dF.T @ f[:, -1:])
            cand = (gs[-1] - (dG @ gamma).squeeze(-1)).reshape(d, k)
        gc, Sc = step(cand, Sx)
        if p.F(gc, Sc) < p.F(gx, Sx):
            x, gx, Sx = cand, gc, Sc
        else:
            x, (gx, Sx), xs, gs = gx, step(gx, Sx), [], []
        if it % 500 == 0 or it == steps - 1:
            print(f"{it + 1} maps: F {p.F(gx, Sx):.4f}, residual {max(p.residuals(gx, Sx)):.2e}, "
                  f"{int((Sx == 0).sum())} zeros in S, {time.perf_counter() - t0:.0f} s", flush=True)


def main():
    torch.set_num_threads(1)
    Xs, ys = school_like(0).split("train")
    mode = next((a for a in sys.argv[1:] if a.startswith("--")), "--varpro")
    if mode in ("--continuation", "--kmeans", "--long", "--anderson"):
        runs = {"--continuation": continuation, "--kmeans": kmeans, "--long": long_run, "--anderson": anderson}
        return runs[mode](Xs, ys)
    est = fit(Xs, ys, mu=1e-3, lam=1e-3, max_outer=50)
    report("start", est)
    p, t0 = Problem(est, Xs, ys), time.perf_counter()
    L, S = {"--face": face_newton, "--varpro": varpro}[mode](p, torch.as_tensor(est.L_), torch.as_tensor(est.S_))
    print(f"F {p.F(L, S):.4f}, residuals (S, L) {p.residuals(L, S)}, {int((S == 0).sum())} zeros in S, "
          f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
