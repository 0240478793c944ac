"""Research script (not a benchmark): proximal Newton on S alone with L eliminated exactly
(``mtlkernels/linear/_reduced_newton.py``), for Go-MTL and AMTFL on raw ``school_like``
(findings of 2026-11-28, third session). In Go-MTL and AMTFL since then (squared loss, no l1
on L, A = 0, from their 50th outer step).

With the squared loss and a ridge on L the objective is quadratic in L for a fixed S, so
L(S) is one Cholesky solve of its d k normal equations and

    psi(S) = min_L  0.5 sum_t (L s_t)^T G_t (L s_t) - b_t^T L s_t + 0.5 <L, E L> - <L, E_l> + lam ||L||^2

is smooth (variable projection, Golub and Pereyra 1973; E, E_l: AMTFL's reconstruction
rw ||X L - 1 relu(c)^T||^2 with A = 0, as on School): its gradient is L(S)^T R (the envelope
theorem), its Hessian the Schur complement H_SS - H_SL H_LL^-1 H_LS. What is left,
min_S psi(S) + mu ||S||_1, is smooth plus l1, for proximal Newton (Lee, Sun and Saunders
2014): each step minimises the l1 plus a quadratic model of psi (ADMM in the model's
eigenbasis), so it can zero many entries of S at once, where ``latent_varpro.py`` (S
eliminated instead, psi(L) only piecewise smooth) and the active-set Newton steps of
``latent_valley.py`` move one face at a time. The Hessian has k (k - 1) / 2 = 45 negative
eigenvalues at every point seen (psi is invariant under rotations S -> Q S): the model
takes them by their absolute value times ``NEG_SCALE`` (saddle-free steps, Dauphin et al.
2014, lengthened; with 0.01 tried first the first row below took 32 steps, with 1.0 alone
60, and 1e-3 / 1e-4 did no better), with a backtracking search on the plain saddle-free step as a
fallback; a plain Newton step on the face of S's signs comes first where that face holds
(the modified model alone converges only linearly at the end); a model's eigendecomposition
serves ``MODEL_AGE`` steps (the eigh of 1390 values is 0.5 s; a fresh one every step: 32
steps and 26 s on the first row, against 57 steps and 19 s with 4).

Measured (one thread, from the estimators' points on the train split of ``bench_solvers.py
--school``; ``python ../benchmarks/research/latent_reduced_newton.py`` from python_tests/):

| problem (n_latent 10) | start | this finish | F | residual | the alternation alone |
|---|---|---|---|---|---|
| Go-MTL, mu = lam = 1e-2 | 100 outer steps (1.4 s), F 4758.3236 | 52 steps, 17.9 s | 4758.16446 | 2.1e-7 | 4758.174, 1.2e-6 after 7000 steps (``latent_valley_more.py --long``) |
| Go-MTL, mu = lam = 1e-3 (the issue's) | 20 outer steps, F 4755.3451 | 100 steps, 47.5 s | 4747.54638 | 4.7e-5 | 4747.564, 5.2e-5 after 200 |
| AMTFL, the issue's settings (A = 0) | 50 outer steps, F 4759.0317 | 100 steps, 35.6 s | 4758.6708 | 1.1e-4 | 4758.859, 2.7e-4 after 100 |

(AMTFL's F is its objective in the Gram form, the reconstruction's constant left out. The
finish wired into the estimator at its 50th outer step, tried and not kept, ended the 100
outer steps at an objective of 4758.6705 and a residual of 2.8e-5, in 45 s.)
With up to 500 steps (the table's settings otherwise: ADMM 200 steps, a model every
4): AMTFL at 8.4e-7 after 152 steps (53.6 s), F 4758.64715; Go-MTL (mu = lam = 1e-3, from 20
outer steps) at 8.9e-7 after 245 steps (123 s with another job running), F 4747.52935, the
lowest objective seen for these settings. In the estimator (ADMM 100 steps, a model every 6,
from the 50th outer step): AMTFL at its optimum in 37 s (142 steps, F 4758.666); Go-MTL 300
steps, 65 s, 3.0e-6, F 4747.5344. Then the Hessian formed only when needed, face steps backing
off, ADMM warm-started in its penalty too, long steps only after a step the model did not cut
short: Go-MTL at its optimum in 34 s (F 4747.53398), AMTFL in 31 s (F 4758.6775; 26 s and
F 4758.6661 before the last rule), the estimators end to end.
The first row is the only way found so far to reach 1e-6 on a School-sized latent problem
in seconds rather than minutes, and at a lower objective; on the other two the finish walks
down the valley by 1e-3 to 5e-3 of F a step for 100 steps (0.35-0.5 s each) and is still
going. Exact valley moves (best scales, shears, Givens rotations) after every step: 78 steps
instead of 57 on the first row (both with the residual of ``latent_valley.Problem``).
Started from 5 outer steps at the issue's settings: 100 steps, F 4750.667, 1.4e-5 (another
basin). Left here for whoever tries next: the cost is the step count (the walk, face by
face), not the linear algebra.

Golub, G. H. and Pereyra, V. (1973). The differentiation of pseudo-inverses and nonlinear
least squares problems whose variables separate. SIAM J. Numer. Anal. 10(2), 413-432.
Lee, J. D., Sun, Y. and Saunders, M. A. (2014). Proximal Newton-type methods for minimizing
composite functions. SIAM J. Optim. 24(3), 1420-1443.
Dauphin, Y. N. et al. (2014). Identifying and attacking the saddle point problem in
high-dimensional non-convex optimization. NIPS 27.

Usage (from python_tests/, after `make install`; 20-50 s each; ``--steps 500`` for the
longer runs, ``--estimator`` for the estimator's ADMM steps and model age instead of the
table's):
    ../.venv/bin/python ../benchmarks/research/latent_reduced_newton.py \
        [gomtl-1e-2|gomtl-1e-3|amtfl] [--steps N] [--estimator]
"""

from __future__ import annotations

import sys
import time
import warnings

import torch

from mtlkernels.datasets import school_like
from mtlkernels.linear import AMTFL, GoMTL, _inputs
from mtlkernels.linear._blocks import block_scale
from mtlkernels.linear import _reduced_newton
from mtlkernels.linear._reduced_newton import LatentQuadratic, reduced_newton
from mtlkernels.linear._solve import squared_loss


def problem(est, Xs, ys):
    """The estimator's objective in (L, S) as a LatentQuadratic (the intercepts eliminated)
    and its residual function (each block's, scaled by its gradient at zero as the
    estimators scale it; AMTFL's L-block scale without the reconstruction's linear term)."""
    Xs, ys, form, _ = _inputs.parse(est, Xs, ys, None, reset=False)
    data = est._task_data(Xs, ys, form == "shared")
    loss = squared_loss(data, True)
    G = loss.gram.G * loss.gram.c.view(-1, 1, 1)
    E = El = None
    if isinstance(est, AMTFL):
        assert not est.A_.any(), "A = 0 expected (School)"
        X, rw = data.features(), est._recon_weight(data)
        E = 2 * rw * (X.T @ X)
        El = 2 * rw * torch.outer(X.sum(0), torch.relu(torch.as_tensor(est.recon_bias_)))
    q = LatentQuadratic(G, loss.linear, float(loss.yy.sum()), E, El, float(est.lam), float(est.mu))

    def residual(L, S):
        R = torch.einsum("tab,bt->ta", q.G, L @ S) - q.B.T
        gS = L.T @ R.T
        v = S - gS
        r_s = float((S - torch.sign(v) * (v.abs() - q.mu).clamp_min(0)).norm()) / block_scale(L.T @ q.B)
        gL = R.T @ S.T + 2 * q.lam * L + (0 if E is None else E @ L - El)
        return max(r_s, float(gL.norm()) / block_scale(q.B @ S.T))

    return q, residual


def main():
    torch.set_num_threads(1)
    args = sys.argv[1:]
    which = args[0] if args and not args[0].startswith("--") else "gomtl-1e-2"
    steps = int(args[args.index("--steps") + 1]) if "--steps" in args else 100
    if "--estimator" not in args:  # the table's: more ADMM steps, a fresh model more often
        _reduced_newton.ADMM_ITER, _reduced_newton.MODEL_AGE, _reduced_newton.STALL_STEPS = 200, 4, 10**9
    est, start = {"gomtl-1e-2": (GoMTL(n_latent=10, mu=1e-2, lam=1e-2, max_outer=100), 100),
                  "gomtl-1e-3": (GoMTL(n_latent=10, mu=1e-3, lam=1e-3, max_outer=20), 20),
                  "amtfl": (AMTFL(n_latent=10, alpha=0.1, mu=1e-2, gamma=1e-2, lam=1e-2, max_outer=50), 50)}[which]
    Xs, ys = school_like(0).split("train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(Xs, ys)
    q, residual = problem(est, Xs, ys)
    L, S = torch.as_tensor(est.L_), torch.as_tensor(est.S_)
    print(f"{which}: {start} outer steps, F {q.value(L, S):.8f} (in the Gram form, its constant aside), "
          f"residual {residual(L, S):.2e}", flush=True)
    t0 = time.perf_counter()

    def log(step, F, r, S):
        print(f"  step {step}: F {F:.8f}, residual {r:.2e}, {int((S == 0).sum())} zeros in S, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)

    L, S, r, steps = reduced_newton(q, L, S, residual, 1e-6, max_steps=steps, log=log)
    print(f"{steps} steps, {time.perf_counter() - t0:.1f} s: F {q.value(L, S):.8f}, residual {r:.2e}")


if __name__ == "__main__":
    main()
