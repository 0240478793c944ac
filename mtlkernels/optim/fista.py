"""One accelerated proximal gradient engine (FISTA) for the feature-based methods.

Adaptive Sharing (Shen, Sun, Lin, Huang and Wu, 2015), eqs. 7-9: with Z the variables,
g the smooth loss and h the non-smooth penalty,

    Z_{t+1} = argmin_Z h(Z) + 1/(2 eta_t) ||Z - (U_t - eta_t grad g(U_t))||_F^2     (7)
    U_t     = Z_t + (b_{t-1} - 1) / b_t (Z_t - Z_{t-1}),  b_t = (1 + sqrt(4 b_{t-1}^2 + 1)) / 2   (8)

The proximal map (7) is supplied by the caller as `prox(params, grads, lr)` and is
always one of the fused ops of :mod:`mtlkernels.ops` (prox_grad_step,
group_prox_grad_step, svt, ...); the engine never writes proximal math itself.

The smooth part g is either any differentiable callable (gradients by autograd; one
forward and backward at U_t plus one forward at each trial Z_{t+1}) or a
:class:`Quadratic` (the squared loss, with its Hessian applied in Gram form): g is then
tracked exactly along the iterates from one Hessian product per iteration, since for a
quadratic every value and gradient the engine needs is a linear combination of ones it
already has. That is what makes the squared-loss estimators cheap per iteration.

Additions to eqs. 7-8, all standard (Beck and Teboulle, 2009; O'Donoghue and Candes, 2015):
- backtracking on the step: eta is shrunk until
  g(Z+) <= g(U) + <grad g(U), Z+ - U> + ||Z+ - U||^2 / (2 eta), each time by the factor
  `backtrack` or to 0.9 / (the curvature of g seen along Z+ - U), whichever shrinks less
  (for a :class:`Quadratic` that curvature is exact, so one retry is usually enough);
  after an accepted step eta is tried a little larger (x `grow`, 1.03 by default: faster
  growth made half of the trial steps fail on our benchmarks, and no growth left eta
  stuck at early, too-short steps on the logistic loss);
- restart (O'Donoghue and Candes, 2015): when the objective F = g + h rises beyond
  rounding, the step is rejected and the momentum reset (b = 1, U = Z); if there was no
  momentum, the step is shortened instead, so accepted objectives never rise; and the
  momentum is also dropped when it points against the step, <U - Z+, Z+ - Z> > 0;
- stopping: `residual <= tol`, where the residual is the norm of the gradient mapping
  (U - Z+) / eta divided by max(1, ||grad g(Z_0)||) or the caller's `scale` (zero exactly
  at a minimiser), or the relative objective change |F_{t+1} - F_t| / max(|F_t|, 1e-30)
  <= obj_tol; or max_iter.

Host transfers: every number a trial step needs (the smooth values, <grad, step>,
||step||^2, the restart test) comes back in one transfer; the extrapolated point's value
is kept on the device until then. The penalty's value is the caller's (one more).

For squared-loss problems with small per-task Gram matrices, :func:`mtlkernels.optim.admm`
(exact solves, insensitive to the conditioning) is usually the better engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from ._common import Params, _dot, _finite, _floats, _Point
from .quadratic import Quadratic


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
    n_trials: int = 0  # proximal steps tried, backtracked ones included


class _Autograd:
    """Any differentiable ``smooth(params) -> scalar tensor``: values and gradients by autograd."""

    def __init__(self, fn: Callable[[Params], Tensor]):
        self.fn = fn

    def point(self, params: Params) -> _Point:
        with torch.enable_grad():
            p = [x.detach().requires_grad_(True) for x in params]
            value = self.fn(p)
            grads = torch.autograd.grad(value, p, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(params, grads)]
        return _Point(params, value.detach(), grads)

    def trial(self, y: _Point, params: Params) -> _Point:
        with torch.no_grad():
            return _Point(params, self.fn(params))

    def with_grad(self, p: _Point) -> _Point:
        if p.grad is not None:
            return p
        q = self.point(p.params)
        q.f = float(q.f)
        return q

    def extrapolate(self, a: _Point, b: _Point, mom: float) -> _Point:
        return self.point([x + mom * (x - z) for x, z in zip(a.params, b.params)])


def fista(
    smooth: Callable[[Params], Tensor] | Quadratic,
    prox: Callable[[Params, Params, float], Params],
    penalty: Callable[[Params], float],
    params: Sequence[Tensor],
    *,
    lr: float = 1.0,
    max_iter: int = 1000,
    tol: float = 1e-6,
    obj_tol: float = 0.0,
    backtrack: float = 0.5,
    grow: float = 1.03,
    restart: bool = True,
    scale: float | None = None,
    stall: tuple[int, float] | None = None,
    progress=None,
) -> FistaResult:
    """Minimise smooth(params) + penalty(params) by accelerated proximal gradient.

    Args:
        smooth: the smooth part g: a differentiable callable returning a scalar tensor
            (gradients by autograd), or a :class:`Quadratic` (no autograd, one Hessian
            product per iteration).
        prox: ``prox(U, grads, lr) -> Z+``, the proximal map of ``lr * h`` at
            ``U - lr * grads`` (eq. 7), built from the fused ops.
        penalty: the value of h at a point (a float), for the objective history.
        params: the starting point (tensors; not modified).
        lr: the first step size to try (eta_0); backtracking adapts it.
        max_iter, tol, obj_tol, backtrack, grow, restart: see the module docstring.
        scale: what the residual is divided by (default: max(1, ||grad g(Z_0)||)); pass
            a fixed value to compare residuals across warm-started runs.
        stall: ``(window, rtol)``: also stop (not converged) when the last ``window``
            iterations lowered F by at most ``rtol * |F|`` (a nonsmooth function whose steps
            have shrunk to nothing at its kinks).
        progress: optional tqdm-like object with ``update()`` / ``set_postfix()``.
    Returns:
        A :class:`FistaResult` with the final parameters, objective, history of F,
        the number of iterations, whether ``tol`` (or ``obj_tol``) was met, the final
        residual and step size.
    """
    g = smooth if isinstance(smooth, Quadratic) else _Autograd(smooth)
    x = g.point([p.detach().clone() for p in params])
    f0, gnorm2 = _floats(x.f, _dot(x.grad, x.grad))
    x.f = _finite(f0, "at the starting point")
    F = x.f + penalty(x.params)
    history = [F]
    scale = max(1.0, math.sqrt(gnorm2)) if scale is None else float(scale)
    y = x
    b = 1.0
    slack = 4 * torch.finfo(x.params[0].dtype).eps
    residual = math.inf
    converged = False
    it = n_trials = 0
    for it in range(1, max_iter + 1):
        # backtracking line search on the step (eq. 7 with the quadratic model test); every
        # number one trial needs comes back from the device in one transfer
        while True:
            trial = g.trial(y, prox(y.params, y.grad, lr))
            n_trials += 1
            diff = [a - c for a, c in zip(trial.params, y.params)]
            step = [a - o for a, o in zip(trial.params, x.params)]
            yf, tf, gd, dd, turn = _floats(y.f, trial.f, _dot(y.grad, diff), _dot(diff, diff), _dot(diff, step))
            y.f, trial.f = _finite(yf, f"at iteration {it}"), tf
            excess = trial.f - (y.f + gd + dd / (2 * lr))
            # rounding slack of a few ulps: a larger one lets too-long steps pass once
            # the true decrease is that small, and the iterates then stall
            if excess <= slack * (abs(y.f) + abs(trial.f)) or lr < 1e-20:
                break
            # shrink by at least `backtrack`, or to just under the step the curvature
            # seen along this direction allows (exact for a Quadratic)
            curvature = 2 * (trial.f - y.f - gd) / dd if dd > 0 else math.inf
            lr = max(lr * backtrack, 0.9 / curvature)
        F_new = trial.f + penalty(trial.params)
        if not math.isfinite(F_new):
            raise FloatingPointError(f"fista: the objective became {F_new} at iteration {it}")
        residual = math.sqrt(dd) / lr / scale
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
                x = y = g.with_grad(x)
            history.append(F)
            if progress is not None:
                progress.update()
            if residual <= tol:
                converged = True
                break
            continue
        # gradient-based restart: drop the momentum when it points against the step
        if restart and turn < 0:
            b = 1.0
        b_new = (1 + math.sqrt(4 * b * b + 1)) / 2
        mom = (b - 1) / b_new  # eq. 8
        prev, x, F, b = x, trial, F_new, b_new
        history.append(F)
        if progress is not None:
            progress.update()
            progress.set_postfix(objective=f"{F:.6g}", residual=f"{residual:.2e}")
        if residual <= tol or (obj_tol > 0 and rel_change <= obj_tol):
            converged = True
            break
        if stall is not None and len(history) > stall[0] and \
                history[-1 - stall[0]] - F <= stall[1] * abs(history[-1 - stall[0]]):
            break
        y = g.extrapolate(x, prev, mom)  # its value is read with the next trial's numbers
        # try a longer step next time, but only while the line search can still tell
        # (its quadratic term above the rounding noise of f): once it cannot, keep the
        # last step it validated
        if dd / (2 * lr) > 100 * slack * (2 * abs(x.f)):
            lr *= grow
    return FistaResult(x.params, F, it, converged, residual, lr, history, n_trials)
