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

from ._common import Params, _dot, _floats
from .quadratic import Quadratic


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
    else:
        rho = rho0
        u = [[torch.zeros_like(p) for p in z] for _ in qs]
    residual = math.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
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
        # residual balancing on relative residuals (Boyd et al., 2011, sec. 3.4.1)
        r_p = math.sqrt(rp2) / max(math.sqrt(max(xx, zz * m)), 1e-300)
        r_d = rho * math.sqrt(m * dz2) / max(rho * math.sqrt(uu), 1e-300)
        if r_p > 10 * r_d and rho < rho_hi:
            rho *= 2.0
            u = [[ui / 2.0 for ui in uj] for uj in u]
        elif r_d > 10 * r_p and rho > rho_lo:
            rho /= 2.0
            u = [[ui * 2.0 for ui in uj] for uj in u]
    f = _floats(sum(q.value_from_grad(sz, g) for q, g in zip(qs, gz)))[0]
    F = f + penalty(z)
    state = ([[ui * rho for ui in uj] for uj in u], rho)
    return AdmmResult(z, F, it, converged, residual, rho, [F0, F], state)
