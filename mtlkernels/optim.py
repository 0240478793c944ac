"""One accelerated proximal gradient engine (FISTA) for every convex block of the
feature-based methods.

Seed 000 (Adaptive Sharing), eqs. 7-9: with Z the variables, g the smooth loss and h
the non-smooth penalty,

    Z_{t+1} = argmin_Z h(Z) + 1/(2 eta_t) ||Z - (U_t - eta_t grad g(U_t))||_F^2     (7)
    U_t     = Z_t + (b_{t-1} - 1) / b_t (Z_t - Z_{t-1}),  b_t = (1 + sqrt(4 b_{t-1}^2 + 1)) / 2   (8)

The proximal map (7) is supplied by the caller as `prox(params, grads, lr)` and is
always one of the fused ops of :mod:`mtlkernels.ops` (prox_grad_step,
group_prox_grad_step, svt, ...); the engine never writes proximal math itself.

Additions to eqs. 7-8, all standard (Beck and Teboulle, 2009; O'Donoghue and Candes, 2015):
- backtracking on the step: eta is shrunk by `backtrack` until
  g(Z+) <= g(U) + <grad g(U), Z+ - U> + ||Z+ - U||^2 / (2 eta), and tried a little
  larger (x 1/backtrack**0.5) at the next iteration;
- restart (O'Donoghue and Candes, 2015): when the objective F = g + h rises beyond
  rounding, the step is rejected and the momentum reset (b = 1, U = Z); if there was no
  momentum, the step is shortened instead, so accepted objectives never rise; and the
  momentum is also dropped when it points against the step, <U - Z+, Z+ - Z> > 0;
- stopping: `residual <= tol`, where the residual is the norm of the gradient mapping
  (U - Z+) / eta divided by max(1, ||grad g(Z_0)||) (zero exactly at a minimiser), or the
  relative objective change |F_{t+1} - F_t| / max(|F_t|, 1e-30) <= obj_tol; or max_iter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

Params = list[Tensor]


@dataclass
class FistaResult:
    """What :func:`fista` returns."""

    params: Params
    objective: float
    n_iter: int
    converged: bool
    residual: float
    lr: float
    history: list[float] = field(default_factory=list)


def _value_and_grad(smooth: Callable[[Params], Tensor], params: Params) -> tuple[float, Params]:
    with torch.enable_grad():
        p = [x.detach().requires_grad_(True) for x in params]
        value = smooth(p)
        grads = torch.autograd.grad(value, p, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(params, grads)]
    v = float(value.detach())
    if not math.isfinite(v):
        raise FloatingPointError(f"fista: the smooth objective is {v}; check the inputs and the step size")
    return v, grads


def _sqnorm(ts: Sequence[Tensor]) -> float:
    return float(sum((t.double() ** 2).sum() for t in ts))


def fista(
    smooth: Callable[[Params], Tensor],
    prox: Callable[[Params, Params, float], Params],
    penalty: Callable[[Params], float],
    params: Sequence[Tensor],
    *,
    lr: float = 1.0,
    max_iter: int = 1000,
    tol: float = 1e-6,
    obj_tol: float = 0.0,
    backtrack: float = 0.5,
    restart: bool = True,
    progress=None,
) -> FistaResult:
    """Minimise smooth(params) + penalty(params) by accelerated proximal gradient.

    Args:
        smooth: differentiable objective g (a scalar tensor); gradients by autograd.
        prox: ``prox(U, grads, lr) -> Z+``, the proximal map of ``lr * h`` at
            ``U - lr * grads`` (eq. 7), built from the fused ops.
        penalty: the value of h at a point (a float), for the objective history.
        params: the starting point (tensors; not modified).
        lr: the first step size to try (eta_0); backtracking adapts it.
        max_iter, tol, obj_tol, backtrack, restart: see the module docstring.
        progress: optional tqdm-like object with ``update()`` / ``set_postfix()``.
    Returns:
        A :class:`FistaResult` with the final parameters, objective, history of F,
        the number of iterations, whether ``tol`` (or ``obj_tol``) was met, the final
        residual and step size.
    """
    x = [p.detach().clone() for p in params]
    fy, gy = _value_and_grad(smooth, x)
    F = fy + penalty(x)
    history = [F]
    scale = max(1.0, math.sqrt(_sqnorm(gy)))
    y = x
    b = 1.0
    slack = 4 * torch.finfo(x[0].dtype).eps
    residual = math.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        # backtracking line search on the step (eq. 7 with the quadratic model test)
        while True:
            x_new = prox(y, gy, lr)
            diff = [a - c for a, c in zip(x_new, y)]
            with torch.no_grad():
                f_new = float(smooth(x_new))
            quad = fy + float(sum((g * d).sum() for g, d in zip(gy, diff))) + _sqnorm(diff) / (2 * lr)
            # rounding slack of a few ulps: a larger one lets too-long steps pass once
            # the true decrease is that small, and the iterates then stall
            if f_new <= quad + slack * (abs(fy) + abs(f_new)) or lr < 1e-20:
                break
            lr *= backtrack
        F_new = f_new + penalty(x_new)
        if not math.isfinite(F_new):
            raise FloatingPointError(f"fista: the objective became {F_new} at iteration {it}")
        residual = math.sqrt(_sqnorm(diff)) / lr / scale
        rel_change = abs(F_new - F) / max(abs(F), 1e-30)
        if restart and F_new - F > slack * (abs(F) + abs(F_new)):  # a rise beyond rounding
            # the objective went up: drop the momentum and restart from the last iterate;
            # if there was no momentum to drop, the step itself was too long (rounding
            # passed the line search test): shorten it
            if y is x:
                lr *= backtrack
                if lr < 1e-20:  # no step decreases F: x is as good as this precision allows
                    break
            else:
                b = 1.0
                y = x
                fy, gy = _value_and_grad(smooth, x)
            history.append(F)
            if progress is not None:
                progress.update()
            if residual <= tol:
                converged = True
                break
            continue
        # gradient-based restart: drop the momentum when it points against the step
        if restart and float(sum(((c - a) * (a - o)).sum() for a, c, o in zip(x_new, y, x))) > 0:
            b = 1.0
        b_new = (1 + math.sqrt(4 * b * b + 1)) / 2
        mom = (b - 1) / b_new  # eq. 8
        y = [a + mom * (a - c) for a, c in zip(x_new, x)]
        x, F, b = x_new, F_new, b_new
        history.append(F)
        if progress is not None:
            progress.update()
            progress.set_postfix(objective=f"{F:.6g}", residual=f"{residual:.2e}")
        if residual <= tol or (obj_tol > 0 and rel_change <= obj_tol):
            converged = True
            break
        fy, gy = _value_and_grad(smooth, y)
        # try a longer step next time, but only while the line search can still tell
        # (its quadratic term above the rounding noise of f): once it cannot, keep the
        # last step it validated
        if _sqnorm(diff) / (2 * lr) > 100 * slack * (abs(fy) + abs(f_new)):
            lr /= backtrack**0.5
    return FistaResult(x, F, it, converged, residual, lr, history)
