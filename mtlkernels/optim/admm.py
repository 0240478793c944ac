"""ADMM with exact solves of the quadratic parts: the engine for squared-loss problems
whose Hessians have a cheap resolvent (small per-task Gram matrices, however ill-conditioned).

Problem: min_Z sum_j g_j(Z) + h(Z), each g_j a :class:`~mtlkernels.optim.Quadratic`
with a resolvent (H_j + r I)^{-1}, h a penalty with a proximal map (one of the fused
ops of :mod:`mtlkernels.ops`). Z is a list of blocks; each g_j depends on their sum (one
block for most methods, C + S for Adaptive Sharing) and h is separable over blocks.
Consensus ADMM in scaled form (Boyd, Parikh, Chu, Peleato and Eckstein, 2011, sec. 7.1),
one copy X_j of Z per smooth part:

    X_j <- argmin_X g_j(X) + rho/2 ||X - Z + U_j||^2          (exact: the resolvent of g_j)
    Z   <- prox_{h / (m rho)}(mean_j (X_j + U_j))               (the fused op)
    U_j <- U_j + X_j - Z

Why this and not FISTA for such problems: FISTA's iteration count grows with the square
root of the condition number of H, which raw features make huge (columns of scale 100
next to binary ones, one-hot blocks summing to a constant column, per-task Gram matrices
that are singular). The X-step here is exact whatever the conditioning, and the penalty
parameter rho is adapted by residual balancing (Boyd et al., 2011, sec. 3.4.1: rho x 2
when the relative primal residual exceeds 10 times the relative dual one, / 2 in the
opposite case, checked every `check_every` iterations), free with an eigendecomposed H.

Robustness on raw data (features whose scales span 10^3 and more, tasks with fewer samples
than features; found by fuzzing the convex estimators):
- every reversal of rho's direction doubles the number of iterations before the next
  change, so that balancing cannot oscillate for ever;
- after ``ANDERSON_START`` iterations, if a residual check has been more than ``FAR`` times
  tol, safeguarded Anderson acceleration of the iteration on (Z, U) (``optim/_anderson.py``;
  Walker and Ni, 2011; Zhang, O'Donoghue and Boyd, 2020), memory ``anderson``: it turns the
  slow linear convergence of a badly scaled problem into tens of iterations (a solve that
  is nearly done does not pay its O(memory n) a step);
- after ``STALL_CHECKS`` checks without the residual halving, a restart from Z (rho0, the
  duals from Z's gradients): the first without acceleration, later ones with rho0 kept
  for good and the acceleration back (relative residual balancing can drive rho a
  thousand times below the curvature on raw data, where the residual grows); at the end
  without convergence, the best point seen (ADMM is not monotone).
On the first 100 problems of the generator of ``python_tests/test_linear_raw_fuzz.py``
this took the unconverged lasso, l2,1, trace-norm and Adaptive Sharing fits from 8 of 400
to 1, and their ADMM iterations from 92143 to 31338 in all; Adaptive Sharing on
``benchmarks/research/raw_scales.py``'s tall case converges (3335 iterations; it ran out
at 5000 with a residual of 8e-3).
A start point with no ``warm`` state gets the duals its gradients imply, -grad g_j(Z_0) /
rho: a minimiser is then a fixed point, and a warm start from the optimum stops at once.

Stopping, a certificate: after a Z-step, E_i = sum_j (grad g_j(Z) - grad g_j(X_j)) +
m rho (Z_old_i - Z_i) belongs to the subdifferential of F = sum_j g_j + h at Z (for block
i), so ||E|| bounds the distance from 0 to dF(Z): the KKT residual. We stop when ||E|| /
scale <= tol, scale = max(1, ||sum_j grad g_j(Z_0)||) by default (a caller solving a
block repeatedly passes a fixed scale). Z always satisfies h's constraints exactly
(zeros, diagonals), being a prox output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from ._anderson import Anderson, flatten, unflatten
from ._common import Params, _dot, _floats
from .quadratic import Quadratic

# Anderson acceleration starts after this many iterations, once a residual check has been
# more than FAR times tol: most solves (warm-started blocks, well-scaled data) are done or
# nearly done by then, and need not pay for it
ANDERSON_START = 20
FAR = 100.0
# residual checks without the residual halving before a plain restart
STALL_CHECKS = 40


@dataclass
class AdmmResult:
    """What :func:`admm` returns (the fields of :class:`~mtlkernels.optim.FistaResult` that apply)."""

    params: Params
    objective: float
    n_iter: int
    converged: bool
    residual: float
    rho: float
    history: list[float] = field(default_factory=list)
    state: tuple | None = None  # (unscaled duals, rho): pass as ``warm`` to continue


def admm(
    smooth: Quadratic | Sequence[Quadratic],
    prox: Callable[[Params, float], Params],
    penalty: Callable[[Params], float],
    params: Sequence[Tensor],
    *,
    rho: float | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    scale: float | None = None,
    check_every: int = 5,
    warm: tuple | None = None,
    anderson: int = 5,
    progress=None,
) -> AdmmResult:
    """Minimise sum_j smooth_j(Z) + penalty(Z) by ADMM with exact resolvents.

    Args:
        smooth: one :class:`Quadratic` or several (summed); each needs ``inverse``.
        prox: ``prox(V, t) -> Z``, argmin_Z t h(Z) + 1/2 ||Z - V||^2 blockwise (a fused op).
        penalty: h's value at a point (a float), for the objective.
        params: the starting point Z_0 (a list of blocks; not modified).
        rho: the first penalty parameter (default: the smooth parts' typical curvature).
        max_iter: iterations at most.
        tol: stop when the KKT residual (see the module docstring) is at most ``tol``.
        scale: the residual's divisor (default max(1, ||grad at Z_0||)).
        check_every: iterations between residual checks (the certificate costs one more
            Hessian product) and residual-balancing updates of rho; the first iteration
            is always checked.
        warm: the ``state`` of an earlier result (duals and rho) to start from, for a
            sequence of related problems (the blocks of an alternating method): with a
            good dual the first iterations are already close.
        anderson: the memory of the Anderson acceleration of the iteration (0: none; see
            the module docstring).
        progress: optional tqdm-like object.
    Returns:
        An :class:`AdmmResult`; ``history`` holds the objective at Z_0 and at the end.
    """
    qs = [smooth] if isinstance(smooth, Quadratic) else list(smooth)
    for q in qs:
        if q.inverse is None:
            raise ValueError("admm needs every smooth part to have a resolvent (Quadratic.inverse)")
    m = len(qs)
    z = [p.detach().clone() for p in params]
    nb = len(z)

    def wsum(blocks):
        out = blocks[0]
        for b in blocks[1:]:
            out = out + b
        return out

    def total_grad(Z):
        sz = wsum(Z)
        gs = [q.grad(sz) for q in qs]
        return sz, gs

    sz, gz = total_grad(z)
    gsum = wsum(gz)
    f0 = sum(q.value_from_grad(sz, g) for q, g in zip(qs, gz))
    f0, g2 = _floats(f0, _dot([gsum], [gsum]))
    F0 = f0 + penalty(z)
    scale = max(1.0, math.sqrt(nb * g2)) if scale is None else float(scale)
    curv = [q.curvature for q in qs if q.curvature and math.isfinite(q.curvature)]
    rho0 = rho if rho is not None else (max(sum(curv), 1e-12) if curv else 1.0)
    rho_lo, rho_hi = rho0 * 1e-10, rho0 * 1e10  # residual balancing (and a warm rho) stay within these
    if warm is not None and len(warm[0]) == m and all(len(y) == nb for y in warm[0]):
        duals, rho = warm
        rho = min(max(rho, rho_lo), rho_hi)
        u = [[yi / rho for yi in y] for y in duals]
    elif any(bool(p.any()) for p in z):
        # a start point given: the duals its gradients imply (-grad g_j(Z_0) / rho), which make
        # a minimiser a fixed point of the iteration (a warm start then stops at once)
        rho = rho0
        u = [[-g / rho for _ in z] for g in gz]
    else:
        rho = rho0
        u = [[torch.zeros_like(p) for p in z] for _ in qs]
    residual = math.inf
    converged = False
    it = 0
    last_change, last_dir, gap = 0, 0, check_every  # residual balancing: when and which way rho last moved
    accel = Anderson(anderson)
    best, stalled = math.inf, 0  # checks since the residual last halved
    kept: tuple = (math.inf,)
    far = False
    restarts, anderson0 = 0, anderson
    for it in range(1, max_iter + 1):
        aa = anderson and it > ANDERSON_START and far
        state = flatten([z] + u) if aa else None
        # X-steps: the resolvent of each g_j at V = Z - U_j; with s = sum_i X_i,
        # (H + (rho / nb) I) s = B + (rho / nb) sum_i V_i and X_i = V_i - (sum_i V_i - s) / nb
        xs, svs, ss = [], [], []
        for q, uj in zip(qs, u):
            V = [zi - ui for zi, ui in zip(z, uj)]
            sv = wsum(V)
            s_j = q.inverse(torch.add(q.linear, sv, alpha=rho / nb), rho / nb)
            if nb == 1:
                xs.append([s_j])
            else:
                corr = (sv - s_j) / nb
                xs.append([vi - corr for vi in V])
            svs.append(sv)
            ss.append(s_j)
        v = [wsum([xs[j][i] + u[j][i] for j in range(m)]) / m for i in range(nb)] if m > 1 else \
            [a + b for a, b in zip(xs[0], u[0])]
        z_old = z
        z = prox(v, 1.0 / (m * rho))
        for j in range(m):
            u[j] = [ui + xi - zi for ui, xi, zi in zip(u[j], xs[j], z)]
        if it % check_every and it not in (1, max_iter):
            if aa:
                z, *u = unflatten(accel.step(state, flatten([z] + u)), [z] + u)
            continue
        # the certificate (one more Hessian product) and the residuals, in one transfer
        dz = [a - b for a, b in zip(z_old, z)]
        sz, gz = total_grad(z)
        gx = [(rho / nb) * (sv - s_j) for sv, s_j in zip(svs, ss)]  # grad g_j at sum_i X_ji
        gdiff = wsum([a - b for a, b in zip(gz, gx)])
        cert = [gdiff + (m * rho) * d for d in dz]
        xflat = [x for xj in xs for x in xj]
        prim = [xs[j][i] - z[i] for j in range(m) for i in range(nb)]
        uflat = [a for uj in u for a in uj]
        kkt2, rp2, dz2, zz, xx, uu = _floats(_dot(cert, cert), _dot(prim, prim), _dot(dz, dz), _dot(z, z),
                                             _dot(xflat, xflat), _dot(uflat, uflat))
        residual = math.sqrt(max(kkt2, 0.0)) / scale
        if not math.isfinite(residual):
            raise FloatingPointError(f"admm: the iterates became non-finite at iteration {it}; check the inputs")
        if progress is not None:
            progress.update(1 if it == 1 else check_every)
            progress.set_postfix(residual=f"{residual:.2e}", rho=f"{rho:.3g}")
        if residual <= tol:
            converged = True
            break
        if it == max_iter:
            break
        far = far or residual > FAR * tol  # sticky: once far from tol, accelerate until the end
        if residual < kept[0]:  # the best point so far (a prox output, its certificate known)
            kept = (residual, z, [list(uj) for uj in u], rho, sz, gz)  # (u's lists change in place)
        best, stalled = (residual, 0) if residual < 0.5 * best else (best, stalled + 1)
        if stalled >= STALL_CHECKS:
            # no progress for a while: restart from Z with rho0 and the duals from its gradients
            # (a runaway rho or extrapolation cannot persist); the first time plainly (no
            # acceleration), later with rho0 kept for good (balancing is what failed) and
            # the acceleration back
            restarts += 1
            rho, last_change, last_dir = rho0, it, 0
            gap = check_every if restarts == 1 else math.inf
            anderson = 0 if restarts == 1 else anderson0
            accel = Anderson(anderson)
            u = [[-g / rho for _ in z] for g in gz]
            best, stalled = math.inf, 0
            continue
        # residual balancing on relative residuals (Boyd et al., 2011, sec. 3.4.1)
        r_p = math.sqrt(rp2) / max(math.sqrt(max(xx, zz * m)), 1e-300)
        r_d = rho * math.sqrt(m * dz2) / max(rho * math.sqrt(uu), 1e-300)
        direction = 1 if (r_p > 10 * r_d and rho < rho_hi) else -1 if (r_d > 10 * r_p and rho > rho_lo) else 0
        if direction and it - last_change >= gap:
            if direction == -last_dir:  # a reversal: rho oscillates, so let it change half as often
                gap *= 2
            factor = 2.0 if direction > 0 else 0.5
            if aa:  # a new rho is a new fixed-point map: settle the current point first
                z, *u = unflatten(accel.settle(state, flatten([z] + u)), [z] + u)
            rho *= factor
            u = [[ui / factor for ui in uj] for uj in u]
            last_change, last_dir = it, direction
        elif aa:
            z, *u = unflatten(accel.step(state, flatten([z] + u)), [z] + u)
    if not converged and kept[0] < residual:  # ADMM is not monotone: return the best point it reached
        residual, z, u, rho, sz, gz = kept
    f = _floats(sum(q.value_from_grad(sz, g) for q, g in zip(qs, gz)))[0]
    F = f + penalty(z)
    state = ([[ui * rho for ui in uj] for uj in u], rho)
    return AdmmResult(z, F, it, converged, residual, rho, [F0, F], state)
