"""Research script (not a benchmark): why Go-MTL's alternation stalls on school_like, and
what gets it to its optimum. Findings of 2026-11-26, reproduced by this script.

Go-MTL, min_{L,S} f(L S) + mu ||S||_1 + lam ||L||_F^2 (Lee, Yang and Hwang, 2018, eq. 3), at
the issue's settings (n_latent=10, mu=lam=1e-3, mean weighting, intercept): the alternation
of exact blocks ends after its 200 outer steps at F = 4747.6338 with a KKT residual of
9.5e-5 (tol 1e-6), and 4000 steps give only 2.2e-5. The slow mode is the valley of the
factorisation: (L M^-1, M S) has the same W = L S for any invertible M (k^2 = 100
directions) and moves the objective only through the small penalties; along rotations
their smooth curvature is indefinite, and the optimum is pinned by exact zeros of S.

1. A valley step, min over M of lam ||L M^-1||^2 + mu ||M S||_1 at fixed W (here by L-BFGS
   on a smoothed |x| with eps 1e-3 -> 1e-7), from the 200-step point lowers F by 0.0965
   (penalty 1.2854 -> 1.1888), more than all the remaining progress of the alternation,
   and zeroes 68 of the 1390 entries of S.
2. Rounds of 20 alternations + a valley step: residual 5.3e-3, 8.8e-4, 2.5e-4, 1.8e-5, then
   8e-6 to 2e-5 (F 4747.5465), about 2.5 s a round (the L-BFGS valley step takes 2 s).
3. Then an active-set Levenberg-Marquardt Newton step on (L, S) (S's zeros kept unless
   their gradient violates |g| <= mu, sign changes projected to zero, L eliminated by a
   Schur complement: one 280 x 280 Cholesky and 139 10 x 10 solves a step, 0.1 s):
   the residual first meets 1e-6 (8.6e-7 on S, 3.8e-7 on L) after 45 steps, F = 4747.54636
   (the lowest objective seen for these settings; 17 s in all, one thread), and would go
   on oscillating as S's zero pattern changes (54 zeros after the last valley step). Without the valley steps the same Newton iteration oscillates
   between 3e-5 and 1e-3 after 100 steps (S has only ~14 zeros to pin the valley).

4. A cheaper valley step (``valley_step_prox_linear``: L (I + E), (I + E)^-1 S with E from
   the convex model lam ||L (I + E)||^2 + mu ||(I - E) S||_1 + rho/2 ||E||^2, by ADMM with
   closed-form Sylvester solves, 0.4-0.7 s) with 20 alternations a round: residual 5.3e-6
   after 6 rounds, 1.9e-6 after 12 (11 s), F = 4747.54174. Zeroing the entries of S that
   the model's soft-threshold zeroes (which moves W a little) led elsewhere, F = 4747.5293
   after 6 rounds: the problem has several local minima, and the lowest F seen so far is
   that one (`--prox-linear` runs this variant without the zeroing).

5. Variable projection with a trust region (``--trust-region``, 2026-11-27): S = S(L) by the
   exact lasso per task, so the objective is psi(L) + lam ||L||^2 on 280 numbers; its
   Hessian on a fixed support of S is H_LL - H_LP H_PP^-1 H_PL (139 k x k blocks), and the
   trust-region step comes from one 280 x 280 ``eigh`` (More and Sorensen, 1983), which
   copes with the negative curvature (the Hessian's smallest eigenvalue stays near -5e-3).
   From 20 alternations: F = 4747.6147, residual 1.2e-4 after 8 steps (1.6 and 3.0 s in all,
   two runs; 200 alternations give 4747.6339 and 9.5e-5 in 2.1 s); 4747.5902 and 2.7e-5
   after 60 steps (14 and 19 s). It then crawls like the LM Newton of item 3 without valley steps: every
   step that zeroes an entry of S leaves the piece the quadratic model describes, the radius
   collapses, and S gains about one zero every few steps (16 after 60 steps).

6. Exact moves along the valley, in the estimators since 2026-11-27 (``linear/_balance.py``):
   the best scales (L diag(c), diag(c)^-1 S) in closed form (a cubic per component) every
   outer step, and a sweep of exact shear steps (row i of S += t row j, column j of L -= t
   column i; t the minimiser of a convex piecewise quadratic, so it stops on the kinks
   where an entry of S is zero), the ADMM duals carried along. On small raw problems
   they turn most of the crawls into convergence (Go-MTL 23 -> 1 of 30 unconverged,
   LatentTaskMTL 24 -> 6, ``test_linear_alternating_fuzz.py``); on school_like Go-MTL ends
   200 outer steps at F = 4747.5576 and 4.8e-5 (was 4747.6339 and 9.5e-5), and still
   crawls: 1600 outer steps with a sweep every step give 4747.5539 and 2.5e-5. Coordinate
   moves stall where two shears must move together (a symmetric saddle of the penalty is
   one); an exact joint move of a whole row of the move (a LAD-lasso in k - 1 unknowns by
   ADMM, tried on 2026-11-27) did not help either (7.2e-5 after 200 steps, 6.3 s).

7. Why every local method crawls here (2026-11-27, afternoon). On the support of S that the
   alternation has found, the reduced Hessian of item 5 is indefinite: 34 negative
   eigenvalues after 200 outer steps (13 zeros in S), 16 after 800 (37 zeros). The point
   is a saddle of the smooth piece; the optimum is pinned by further zeros of S, found
   about one per step by any method that follows the pieces. An active-set Newton step
   along the negative curvature with a ratio test (stop at the first entry of S that
   crosses zero) cycles: entries leave and re-enter the zero set, steps of 1e-4, residual
   1e-3. SciPy's L-BFGS-B on the bound-constrained form (S = S+ - S-, both >= 0; 2.5 ms a
   step) from the 200-step point keeps lowering F well past every other run: 4747.5456
   after 2000 steps, 4747.5324 after 12000 (32 s), residual 8e-6, 60 zeros, and still
   falling. The stationary point the alternation crawls to is far away in objective
   terms (F about 0.025 lower), not a rounding-level polish away.

8. Small problems (at most 256 unknowns) are another matter: there projected Newton on all
   blocks at once (``linear/_polish.py``, Bertsekas 1982, the Hessian shifted past its
   negative eigenvalues) finishes most of the fits that the alternation leaves crawling
   (``python_tests/test_linear_alternating_fuzz.py``).

9. Exact Givens rotations (``_balance.rotation_sweep``, in Go-MTL and AMTFL since 2026-11-27,
   evening): along a rotation of the pair (i, j) the Frobenius terms do not change and each
   l1 entry is |a cos + b sin|, so the penalty is one sinusoid between consecutive zeros of
   the entries and its global minimum over the circle is at a zero or at an arc's trough
   (two shears moved together, which item 6's coordinate steps cannot do). On school_like,
   after the shear sweeps: Go-MTL 200 outer steps 5.2e-5 (F 4747.5641), 400 steps 4.8e-5
   (4747.5516); AMTFL at the issue's settings 100 steps 9.7e-5 (F 4758.792; without the
   rotations 4.0e-4 and 4759.018, and 1000 steps only reach 7.9e-5 and 4758.734), but on
   the train split of ``bench_solvers.py --school`` 3.4e-4 with and without them (F 4758.799
   and 4759.024): the objective reached is lower, the residual is a matter of luck. Sweeping
   until no rotation helps (up to 20 sweeps a step) lowers AMTFL's F further (4758.674 after
   300 steps) but not its residual (1.6e-4): it jumps between pieces rather than settling.
   Rotations every outer step instead of every fourth: worse for Go-MTL (8.5e-5).

10. Continuation in mu, a k-means start, an active-set Newton on the faces of S's sign
   pattern and L-BFGS on the variable projection psi(L): ``latent_valley_more.py``
   (2026-11-27, night). None reaches 1e-6; they walk the valley one face at a time too.

Not yet in the estimators: a method that reaches 1e-6 on school_like within the 1 s target,
for Go-MTL, LatentTaskMTL (group lasso on S, l1 + ridge on L) and AMTFL.

Usage (from python_tests/, after `make install`; under a minute each):
    ../.venv/bin/python ../benchmarks/research/latent_valley.py [--prox-linear | --trust-region]
"""

from __future__ import annotations

import sys
import time
import warnings

import torch

from mtlkernels import ops
from mtlkernels.datasets import school_like
from mtlkernels.linear import GoMTL, _inputs
from mtlkernels.linear._blocks import block_scale, latent_l_quadratic, latent_s_quadratic, prox_residual, \
    solve_block
from mtlkernels.linear._solve import squared_loss


def valley_step(L, S, mu, lam, eps_list=(1e-3, 1e-5, 1e-7), iters=200):
    """(L M^-1, M S) for the M that minimises lam ||L M^-1||^2 + mu ||M S||_1 (smoothed)."""
    M = torch.eye(L.shape[1], dtype=L.dtype, requires_grad=True)
    for eps in eps_list:
        opt = torch.optim.LBFGS([M], max_iter=iters, tolerance_grad=1e-14, tolerance_change=1e-16,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            Li, SS = torch.linalg.solve(M.T, L.T).T, M @ S
            v = lam * (Li * Li).sum() + mu * torch.sqrt(SS * SS + eps * eps).sum()
            v.backward()
            return v

        opt.step(closure)
    with torch.no_grad():
        return torch.linalg.solve(M.T, L.T).T, M @ S


def valley_step_prox_linear(L, S, mu, lam, steps=20, admm_iter=300):
    """Prox-linear valley steps: E from the convex model, accepted when the penalty falls."""
    eye = torch.eye(L.shape[1], dtype=L.dtype)

    def penalty(L, S):
        return float(lam * (L * L).sum() + mu * S.abs().sum())

    p0, rho = penalty(L, S), lam * float(torch.linalg.matrix_norm(L.T @ L, 2))
    for _ in range(steps):
        P = L.T @ L
        a, Q1 = torch.linalg.eigh(2 * lam * P + rho * eye)
        b, Q2 = torch.linalg.eigh(S @ S.T)
        den = a[:, None] + rho * b.clamp_min(0)[None, :]
        U, Lam = S.clone(), torch.zeros_like(S)
        for _ in range(admm_iter):  # split U = S - E S (penalty parameter rho)
            R = -2 * lam * P + rho * (S - U + Lam) @ S.T  # (2 lam P + rho I) E + rho E S S^T = R
            E = Q1 @ ((Q1.T @ R @ Q2) / den) @ Q2.T
            V = S - E @ S
            U = ops.soft_threshold(V + Lam, mu / rho)
            Lam = Lam + V - U
        Ln, Sn = L @ (eye + E), torch.linalg.solve(eye + E, S)
        if penalty(Ln, Sn) < p0:
            L, S, p0, rho = Ln, Sn, penalty(Ln, Sn), rho / 2
        else:
            rho *= 4
    return L, S


class Problem:
    """Go-MTL's objective and block residuals in the estimator's Gram form."""

    def __init__(self, est, Xs, ys):
        Xs, ys, form, _ = _inputs.parse(est, Xs, ys, None, reset=False)
        self.loss = squared_loss(est._task_data(Xs, ys, form == "shared"), True)
        self.G = self.loss.gram.G * self.loss.gram.c.view(-1, 1, 1)  # (T, d, d), task weights in
        self.B = self.loss.linear  # (d, T)
        self.mu, self.lam, self.est, self.warm = est.mu, est.lam, est, {}

    def F(self, L, S):
        W = L @ S
        GW = torch.einsum("tab,bt->at", self.G, W)
        return float(0.5 * (W * GW).sum() - (self.B * W).sum() + self.loss.yy.sum()
                     + self.mu * S.abs().sum() + self.lam * (L * L).sum())

    def residuals(self, L, S):
        qS, qL = latent_s_quadratic(self.loss, L), latent_l_quadratic(self.loss, S)
        r_s = prox_residual(S, qS.grad(S), None, lambda x, g, lr: ops.prox_grad_step(x, g, lr, self.mu))
        return r_s / block_scale(qS.linear), float((qL.grad(L) + 2 * self.lam * L).norm()) / block_scale(qL.linear)


def newton(p, L, S, iters=100, tol=1e-6, lm=1e-6):
    """Active-set Levenberg-Marquardt Newton on (L, S); stops at the first residual <= tol."""
    G, B, mu, lam = p.G, p.B, p.mu, p.lam
    T, d, k = G.shape[0], G.shape[1], L.shape[1]
    eye_k, eye_dk = torch.eye(k, dtype=L.dtype), torch.eye(d * k, dtype=L.dtype)
    Fc = p.F(L, S)
    for it in range(iters):
        R = torch.einsum("tab,bt->ta", G, L @ S) - B.T  # (T, d): G_t w_t - b_t
        g_smooth = torch.einsum("ak,ta->kt", L, R)
        act = (S != 0) | (g_smooth.abs() > mu)
        sgn = torch.where(S != 0, S.sign(), -g_smooth.sign())
        gS = torch.where(act, g_smooth + mu * sgn, torch.zeros_like(S))
        gL = R.T @ S.T + 2 * lam * L
        GL = torch.einsum("tab,bk->tak", G, L)
        m = act.T.to(L.dtype)
        Hss = torch.einsum("ak,tal->tkl", L, GL) * m[:, :, None] * m[:, None, :] + torch.diag_embed(1 - m)
        HLs = (torch.einsum("taj,it->taij", GL, S) + torch.einsum("ta,ij->taij", R, eye_k)) * m[:, None, None, :]
        HLs = HLs.reshape(T, d * k, k)
        HLL = torch.einsum("it,jt,tab->aibj", S, S, G).reshape(d * k, d * k) + 2 * lam * eye_dk
        while lm < 1e12:
            Mi = torch.linalg.inv(Hss + lm * torch.diag_embed(m))
            HM = HLs @ Mi
            cf, info = torch.linalg.cholesky_ex(HLL + lm * eye_dk - (HM @ HLs.mT).sum(0))
            if info != 0:
                lm *= 10
                continue
            rhs = -gL.reshape(-1) + (HM @ gS.T.unsqueeze(-1)).sum(0).squeeze(-1)
            dL = torch.cholesky_solve(rhs.unsqueeze(-1), cf).reshape(d, k)
            dS = -(Mi @ (gS.T.unsqueeze(-1) + HLs.mT @ dL.reshape(1, -1, 1))).squeeze(-1).T * act
            Sn = S + dS
            Sn = torch.where(act & (Sn.sign() != sgn), torch.zeros_like(Sn), Sn)  # stay in the orthant
            Fn = p.F(L + dL, Sn)
            if Fn <= Fc:
                L, S, Fc, lm = L + dL, Sn, Fn, max(lm / 3, 1e-12)
                break
            lm *= 10
        r = p.residuals(L, S)
        if max(r) <= tol:
            return L, S, it + 1, r
    return L, S, iters, r


def main_prox_linear(Xs, ys, rounds=12):
    est, p, t0 = GoMTL(n_latent=10, mu=1e-3, lam=1e-3, max_outer=20), None, time.perf_counter()
    for rnd in range(rounds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(Xs, ys)
        L, S = torch.as_tensor(est.L_), torch.as_tensor(est.S_)
        p = p or Problem(est, Xs, ys)
        print(f"round {rnd}: F = {p.F(L, S):.8f}, residuals {p.residuals(L, S)}, {time.perf_counter() - t0:.1f} s",
              flush=True)
        L, S = valley_step_prox_linear(L, S, est.mu, est.lam)
        est.L_, est.S_, est.warm_start = L.numpy(), S.numpy(), True


def solve_s(p, L, S0):
    """S(L): the l1 block to a residual of 1e-10 (the S-step's ADMM, warm between calls)."""
    q = latent_s_quadratic(p.loss, L)
    res = solve_block(p.est, q, lambda v, t: [ops.soft_threshold(v[0], t * p.mu)],
                      lambda x, g, lr: [ops.prox_grad_step(x[0], g[0], lr, p.mu)],
                      lambda x: p.mu * float(x[0].abs().sum()), [S0], "S", block_scale(q.linear), 1e-10, p.warm)
    return res.params[0]


def reduced_grad_hess(p, L, S):
    """Gradient and Hessian of psi(L) + lam ||L||^2 at S = S(L), S's support held."""
    (d, k), T = L.shape, S.shape[1]
    g = torch.einsum("tab,bt->at", p.G, L @ S) - p.B  # (d, T): the loss gradient in W
    GL = p.G @ L  # (T, d, k)
    H_ll = torch.einsum("it,jt,tab->aibj", S, S, p.G).reshape(d * k, d * k) + 2 * p.lam * torch.eye(d * k,
                                                                                                    dtype=L.dtype)
    H_lp = (torch.einsum("taj,it->taij", GL, S)
            + torch.einsum("at,ij->taij", g, torch.eye(k, dtype=L.dtype))).reshape(T, d * k, k)
    on = (S != 0).T.to(L.dtype)  # (T, k): the support
    H_lp = H_lp * on[:, None, :]
    H_pp = (L.T @ GL) * on[:, :, None] * on[:, None, :] + torch.diag_embed(1 - on)
    hess = H_ll - torch.einsum("tak,tkb->ab", H_lp, torch.linalg.solve(H_pp, H_lp.mT))
    return (g @ S.T + 2 * p.lam * L).reshape(-1), (hess + hess.T) / 2


def trust_region_step(grad, hess, radius):
    """argmin g.x + x.H x / 2 over ||x|| <= radius (H possibly indefinite), from one eigh."""
    ev, V = torch.linalg.eigh(hess)
    gt = V.T @ grad

    def step(tau):
        return -(V @ (gt / (ev + tau)))

    if float(ev[0]) > 0 and float(step(0.0).norm()) <= radius:
        return step(0.0)
    lo = max(0.0, -float(ev[0])) * (1 + 1e-12) + 1e-14 * float(ev.abs().max())
    hi = lo + float(grad.norm()) / radius + 1.0
    for _ in range(200):  # ||step(tau)|| falls as tau grows: bisect for the boundary
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(step(mid).norm()) > radius else (lo, mid)
        if hi - lo <= 1e-10 * hi:
            break
    return step(hi)


def main_trust_region(Xs, ys, steps=60):
    t0 = time.perf_counter()
    est = GoMTL(n_latent=10, mu=1e-3, lam=1e-3, max_outer=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(Xs, ys)
    p = Problem(est, Xs, ys)
    L = torch.as_tensor(est.L_)
    S = solve_s(p, L, torch.as_tensor(est.S_))
    F, radius = p.F(L, S), 0.1 * float(L.norm())
    for it in range(steps):
        grad, hess = reduced_grad_hess(p, L, S)
        x = trust_region_step(grad, hess, radius)
        predicted = float(grad @ x + 0.5 * x @ (hess @ x))
        Ln = L + x.reshape(L.shape)
        Sn = solve_s(p, Ln, S)
        Fn = p.F(Ln, Sn)
        ratio = (Fn - F) / predicted if predicted < 0 else -1.0
        if ratio > 0.1:
            L, S, F = Ln, Sn, Fn
        if ratio < 0.25:
            radius = 0.25 * float(x.norm())
        elif ratio > 0.75 and float(x.norm()) > 0.99 * radius:
            radius *= 2
        print(f"step {it + 1}: F = {F:.8f}, residuals {p.residuals(L, S)}, {int((S == 0).sum())} zeros in S, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)


def main():
    torch.set_num_threads(1)
    Xs, ys = school_like(0).split("train")
    if "--prox-linear" in sys.argv:
        return main_prox_linear(Xs, ys)
    if "--trust-region" in sys.argv:
        return main_trust_region(Xs, ys)
    est = GoMTL(n_latent=10, mu=1e-3, lam=1e-3, max_outer=20)
    p = None
    t0 = time.perf_counter()
    for rnd in range(4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(Xs, ys)
        L, S = torch.as_tensor(est.L_), torch.as_tensor(est.S_)
        p = p or Problem(est, Xs, ys)
        print(f"round {rnd}: 20 alternations, F = {p.F(L, S):.8f}, residuals {p.residuals(L, S)}, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        L, S = valley_step(L, S, est.mu, est.lam)
        est.L_, est.S_, est.warm_start = L.numpy(), S.numpy(), True
    S = torch.where(S.abs() < 1e-7 * S.abs().max(), torch.zeros_like(S), S)
    print(f"after a valley step: F = {p.F(L, S):.8f}, {int((S == 0).sum())} zeros in S", flush=True)
    L, S, n, r = newton(p, L, S)
    print(f"Newton: {n} steps, F = {p.F(L, S):.8f}, residuals {r}, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
