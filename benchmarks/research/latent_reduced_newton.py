"""Research script (not a benchmark): proximal Newton on S alone with L eliminated exactly,
for Go-MTL and AMTFL on raw ``school_like`` (findings of 2026-11-28, third session). Not in
the estimators: it reaches the stated optimum on one of the three problems below only.

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
The first row is the only way found so far to reach 1e-6 on a School-sized latent problem
in seconds rather than minutes, and at a lower objective; on the other two the finish walks
down the valley by 1e-3 to 5e-3 of F a step for 100 steps (0.35-0.5 s each) and is still
going. Exact valley moves (best scales, shears, Givens rotations) after every step: 78 steps
instead of 57 on the first row (both with the residual of ``latent_valley.Problem``). Started from 5 outer steps at the issue's settings: 100
steps, F 4750.667, 1.4e-5 (another basin). Left here for whoever tries next: the cost is
the step count (the walk), not the linear algebra.

Golub, G. H. and Pereyra, V. (1973). The differentiation of pseudo-inverses and nonlinear
least squares problems whose variables separate. SIAM J. Numer. Anal. 10(2), 413-432.
Lee, J. D., Sun, Y. and Saunders, M. A. (2014). Proximal Newton-type methods for minimizing
composite functions. SIAM J. Optim. 24(3), 1420-1443.
Dauphin, Y. N. et al. (2014). Identifying and attacking the saddle point problem in
high-dimensional non-convex optimization. NIPS 27.

Usage (from python_tests/, after `make install`; 20-50 s each):
    ../.venv/bin/python ../benchmarks/research/latent_reduced_newton.py [gomtl-1e-2|gomtl-1e-3|amtfl]
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from mtlkernels.datasets import school_like
from mtlkernels.linear import AMTFL, GoMTL, _inputs
from mtlkernels.linear._blocks import block_scale
from mtlkernels.linear._solve import squared_loss

REDUCED_STEPS = 100
NEG_SCALE = 0.01  # the model's curvature along the negative eigenvalues, times their absolute value
ADMM_ITER = 200
BACKTRACK = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01)
MODEL_AGE = 4  # steps a model eigendecomposition serves (recomputed early when its step fails)


@dataclass
class LatentQuadratic:
    """The latent model's objective in (L, S) with the squared loss and the intercepts
    eliminated: G (T, d, d) the tasks' Gram matrices times their weights, B (d, T) the linear
    term, ``const``, E (d, d) or None a curvature on every column of L (AMTFL's reconstruction
    with A = 0), El (d, k) or None its linear term, then lam ||L||^2 + mu ||S||_1."""

    G: Tensor
    B: Tensor
    const: float
    E: Tensor | None
    El: Tensor | None
    lam: float
    mu: float

    def value(self, L: Tensor, S: Tensor) -> float:
        W = L @ S
        GW = torch.einsum("tab,bt->at", self.G, W)
        out = 0.5 * (W * GW).sum() - (self.B * W).sum() + self.lam * (L * L).sum() + self.mu * S.abs().sum()
        if self.E is not None:
            out = out + 0.5 * (L * (self.E @ L)).sum() - (self.El * L).sum()
        return float(out) + self.const

    def l_system(self, S: Tensor) -> Tensor | None:
        """The Cholesky factor of the normal equations of L for this S (None if not PD)."""
        d, k = self.G.shape[-1], S.shape[0]
        H = torch.einsum("it,jt,tab->aibj", S, S, self.G).reshape(d * k, d * k)
        if self.E is not None:
            H = H + torch.kron(self.E, torch.eye(k, dtype=H.dtype, device=H.device))
        H = (H + H.T) / 2 + 2 * self.lam * torch.eye(d * k, dtype=H.dtype, device=H.device)
        factor, info = torch.linalg.cholesky_ex(H)
        return None if int(info) != 0 else factor

    def l_of(self, S: Tensor, factor: Tensor) -> Tensor:
        rhs = self.B @ S.T + (self.El if self.El is not None else 0)
        return torch.cholesky_solve(rhs.reshape(-1, 1), factor).reshape(rhs.shape)

    def derivatives(self, L: Tensor, S: Tensor, factor: Tensor) -> tuple[Tensor, Tensor]:
        """psi's gradient (T k,) and Hessian (T k, T k) at S, entries ordered task by task."""
        T, k, d = S.shape[1], S.shape[0], L.shape[0]
        R = torch.einsum("tab,bt->ta", self.G, L @ S) - self.B.T  # (T, d): G_t w_t - b_t
        g = (R @ L).reshape(-1)  # (T k,): L^T r_t task by task
        GL = torch.einsum("tab,bk->tak", self.G, L)
        blocks = L.T @ GL  # (T, k, k): L^T G_t L
        eye = torch.eye(k, dtype=L.dtype, device=L.device)
        # d2 / dL[a, i] ds_t[j] = (G_t L)[a, j] s_t[i] + r_t[a] delta_ij
        cross = torch.einsum("taj,it->aitj", GL, S) + torch.einsum("ta,ij->aitj", R, eye)
        cross = cross.reshape(d * k, T * k)
        H = -cross.T @ torch.cholesky_solve(cross, factor)
        idx = torch.arange(T * k, device=S.device).reshape(T, k)
        H[idx[:, :, None], idx[:, None, :]] += blocks
        return g, (H + H.T) / 2


def _soft(x: Tensor, t: float) -> Tensor:
    return torch.sign(x) * (x.abs() - t).clamp_min(0)


def _model_step(s: Tensor, g: Tensor, ev: Tensor, V: Tensor, mu: float, dual: Tensor, tol: float):
    """argmin_x g^T (x - s) + 0.5 (x - s)^T V diag(ev) V^T (x - s) + mu ||x||_1 by ADMM
    (x = z, the x-update in the eigenbasis, rho balanced every 25 steps); ``dual`` (the
    scaled-free multiplier of the last step) warm-starts it. Returns (z, multiplier)."""
    rho = float(ev.median().clamp_min(1e-300))
    Vs = V.T @ s
    z, y = s.clone(), dual.clone()
    base = ev * Vs - V.T @ g
    for it in range(ADMM_ITER):
        x = V @ ((base + V.T @ (rho * z - y)) / (ev + rho))
        z_old = z
        z = _soft(x + y / rho, mu / rho)
        y = y + rho * (x - z)
        primal, dual_r = float((x - z).norm()), rho * float((z - z_old).norm())
        if primal <= tol * max(1.0, float(z.norm())) and dual_r <= tol * max(1.0, float(y.norm())):
            break
        if it % 25 == 24:
            if primal > 10 * dual_r:
                rho *= 2
            elif dual_r > 10 * primal:
                rho /= 2
    return z, y


def _face_step(s: Tensor, g: Tensor, H: Tensor, mu: float) -> Tensor | None:
    """Newton on the face of S's sign pattern, where it holds: every zero's gradient within
    mu and the Hessian on the nonzeros positive definite; the step stops where an entry
    first reaches zero (that entry set to zero). None where the face does not hold."""
    free = s != 0
    if not bool(free.any()) or bool((g[~free].abs() > mu).any()):
        return None
    idx = free.nonzero().squeeze(1)
    factor, info = torch.linalg.cholesky_ex(H[idx][:, idx])
    if int(info) != 0:
        return None
    sign = torch.sign(s[idx])
    d = -torch.cholesky_solve((g[idx] + mu * sign)[:, None], factor).squeeze(1)
    new = s[idx] + d
    cross = torch.sign(new) != sign
    t = 1.0
    if bool(cross.any()):
        t = float((s[idx][cross] / (s[idx][cross] - new[cross])).min())
    out = s.clone()
    out[idx] = s[idx] + t * d
    out[idx] = torch.where(torch.sign(out[idx]) != sign, torch.zeros_like(d), out[idx])
    return out


def reduced_newton(q: LatentQuadratic, L: Tensor, S: Tensor, residual, tol: float, max_steps: int = REDUCED_STEPS,
                   move=None, log=None):
    """Proximal Newton on psi(S) + mu ||S||_1 from S, each step kept only if it lowers the
    objective; stops once ``residual(L, S)`` is at most ``tol`` or no step lowers it.
    Returns (L, S, residual, steps), or None when the problem is too large."""
    k, T = S.shape
    factor = q.l_system(S)
    if factor is None:
        return None
    L = q.l_of(S, factor)
    F, r = q.value(L, S), residual(L, S)
    s = S.T.reshape(-1).clone()  # task by task
    dual = torch.zeros_like(s)
    model, age, steps = None, 0, 0
    for steps in range(1, max_steps + 1):
        if r <= tol:
            return L, S, r, steps - 1
        g, H = q.derivatives(L, S, factor)
        face = _face_step(s, g, H, q.mu)
        accepted = None if face is None else _try(q, face, T, k, F)
        fresh = False
        for attempt in range(2):  # the last model first (if young enough), then this point's
            if accepted is not None or (attempt == 1 and fresh):
                break
            if model is None or age >= MODEL_AGE or attempt == 1:
                model, age, fresh = torch.linalg.eigh(H), 0, True
            ev, V = model
            age += 1 if attempt == 0 else 0
            top = float(ev.abs().max().clamp_min(1e-300))
            for scale in (NEG_SCALE, 1.0):
                em = torch.where(ev < 0, -ev * scale, ev).clamp_min(1e-10 * top)
                x, y = _model_step(s, g, em, V, q.mu, dual, 1e-8)
                # the full step, and for the plain saddle-free model a backtracking search
                # along it (a descent direction of the objective: Lee, Sun and Saunders 2014)
                for t in (1.0,) if scale != 1.0 else BACKTRACK:
                    accepted = _try(q, s + t * (x - s), T, k, F)
                    if accepted is not None:
                        break
                if accepted is not None:
                    dual = y
                    break
        if accepted is None:
            return L, S, r, steps - 1
        s, F, L, S, factor = accepted
        if move is not None:
            moved = _try(q, move(L, S).T.reshape(-1), T, k, F)
            if moved is not None:
                s, F, L, S, factor = moved
        r = residual(L, S)
        if log is not None:
            log(steps, F, r, S)
    return L, S, r, steps


def _try(q: LatentQuadratic, x: Tensor, T: int, k: int, F: float):
    """(x, F, L, S, factor) at the trial point x when it lowers the objective, else None."""
    Sx = x.reshape(T, k).T.contiguous()
    factor = q.l_system(Sx)
    if factor is None:
        return None
    Lx = q.l_of(Sx, factor)
    Fx = q.value(Lx, Sx)
    if not (math.isfinite(Fx) and Fx < F):
        return None
    return x, Fx, Lx, Sx, factor



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
    which = sys.argv[1] if len(sys.argv) > 1 else "gomtl-1e-2"
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

    L, S, r, steps = reduced_newton(q, L, S, residual, 1e-6, log=log)
    print(f"{steps} steps, {time.perf_counter() - t0:.1f} s: F {q.value(L, S):.8f}, residual {r:.2e}")


if __name__ == "__main__":
    main()
