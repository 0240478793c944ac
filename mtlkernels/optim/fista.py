"""One accelerated proximal gradient engine (FISTA) for every convex block of the
feature-based methods.

Seed 000 (Adaptive Sharing), eqs. 7-9: with Z the variables, g the smooth loss and h
the non-smooth penalty,

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
    n_trials: int = 0  # proximal steps tried, backtracked ones included


@dataclass
class _Point:
    """An iterate with its smooth value and (when known) gradient; ``aux`` is the
    smooth part's own bookkeeping (the gradient in W for a :class:`Quadratic`)."""

    params: Params
    f: float
    grad: Params | None = None
    aux: Tensor | None = None


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """sum_k <a_k, b_k> as a 0-dim tensor (no host sync)."""
    out = torch.dot(a[0].reshape(-1), b[0].reshape(-1))
    for x, y in zip(a[1:], b[1:]):
        out = out + torch.dot(x.reshape(-1), y.reshape(-1))
    return out


def _floats(*ts: Tensor) -> list[float]:
    """Several 0-dim tensors as floats, in one host transfer."""
    return torch.stack([t.double() for t in ts]).tolist()


def _finite(v: float, where: str) -> float:
    if not math.isfinite(v):
        raise FloatingPointError(f"fista: the smooth objective is {v} {where}; check the inputs and the step size")
    return v


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
        return _Point(params, _finite(float(value.detach()), "at the starting point"), grads)

    def trial(self, y: _Point, params: Params) -> _Point:
        with torch.no_grad():
            return _Point(params, float(self.fn(params)))

    def with_grad(self, p: _Point) -> _Point:
        return p if p.grad is not None else self.point(p.params)

    def extrapolate(self, a: _Point, b: _Point, mom: float) -> _Point:
        return self.point([x + mom * (x - z) for x, z in zip(a.params, b.params)])


def gram_matrix(X: Tensor, block: int = 128) -> Tensor:
    """X^T X, exactly symmetric, from the upper block triangle only: for d >= 3 * block
    the column blocks' products above the diagonal are formed and mirrored, about
    (d + block) / (2 d) of the full product's work (0.56 at d = 1024; 1.6x faster than
    ``X.T @ X`` on one CPU thread there)."""
    d = X.shape[1]
    if d < 3 * block:
        H = X.T @ X
        return (H + H.T) / 2
    H = X.new_empty(d, d)
    for i in range(0, d, block):
        rows = X[:, i:i + block].T @ X[:, i:]  # block rows i.., columns i..
        w = min(block, d - i)
        H[i:i + w, i:i + w] = (rows[:, :w] + rows[:, :w].T) / 2
        H[i:i + w, i + w:] = rows[:, w:]
        H[i + w:, i:i + w] = rows[:, w:].T
    return H


class Quadratic:
    """The smooth part g(W) = 0.5 <W, H W> - <W, B> + c, with W the sum of the
    parameter blocks (one block for most methods; C + S for Adaptive Sharing).

    ``hess(D)`` applies H to a direction shaped like W (H symmetric positive
    semi-definite), ``linear`` is B and ``const`` is c. For the squared loss with a shared
    design, ||X W - Y||_F^2 / (2 n) has H = X^T X / n (the Gram matrix, formed once),
    B = X^T Y / n and c = ||Y||_F^2 / (2 n): see :meth:`least_squares`. In :func:`fista`
    it costs one ``hess`` per iteration (two when the line search backtracks): the value
    and gradient at every trial and extrapolated point follow from the exact expansion
    g(W + D) = g(W) + <grad g(W), D> + 0.5 <D, H D>, so the line-search test is free of
    the cancellation a Gram-form value would have. Calling the object returns g(params)
    (a scalar tensor), so it also works wherever a plain smooth callable does.
    """

    def __init__(self, hess: Callable[[Tensor], Tensor], linear: Tensor, const: float = 0.0):
        self.hess = hess
        self.linear = linear
        self.const = float(const)

    @classmethod
    def least_squares(cls, X: Tensor, Y: Tensor, gram: bool | None = None) -> "Quadratic":
        """||X W - Y||_F^2 / (2 n) for X (n, d) and Y (n, T). ``gram`` (default: d <= n)
        forms H = X^T X / n once (O(n d^2)); otherwise H is applied as X^T (X D) / n."""
        if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
            raise ValueError(f"least_squares needs X (n, d) and Y (n, T), got {tuple(X.shape)} and {tuple(Y.shape)}")
        n = max(X.shape[0], 1)
        if gram is None:
            gram = X.shape[1] <= X.shape[0]
        if gram:
            H = gram_matrix(X) / n
            hess = H.__matmul__
        else:
            def hess(D):
                return X.T @ (X @ D) / n
        # (Y^T X)^T: one plain GEMM whether Y is stored (n, T) or as the transpose of (T, n)
        return cls(hess, (Y.mT @ X).mT.contiguous() / n, float((Y.double() ** 2).sum()) / (2 * n))

    def compose(self, A: Callable[[Tensor], Tensor], A_adjoint: Callable[[Tensor], Tensor]) -> "Quadratic":
        """g(A(P)) for a linear map A (with its adjoint): Hessian A* H A, linear term A* B.
        For W = L S: ``compose(lambda D: L @ D, lambda M: L.T @ M)`` is the problem in S
        with L fixed, ``compose(lambda D: D @ S, lambda M: M @ S.T)`` the one in L."""
        return Quadratic(lambda D: A_adjoint(self.hess(A(D))), A_adjoint(self.linear), self.const)

    def _w(self, params: Params) -> Tensor:
        W = params[0]
        for p in params[1:]:
            W = W + p
        return W

    def __call__(self, params: Params) -> Tensor:
        W = self._w(params)
        return 0.5 * (W * self.hess(W)).sum() - (W * self.linear).sum() + self.const

    def point(self, params: Params) -> _Point:
        W = self._w(params)
        HW = self.hess(W)
        whw, wb = _floats(_dot([W], [HW]), _dot([W], [self.linear]))
        f = 0.5 * whw - wb + self.const
        g = HW - self.linear
        return _Point(params, _finite(f, "at the starting point"), [g] * len(params), g)

    def trial(self, y: _Point, params: Params) -> _Point:
        D = self._w(params) - self._w(y.params)
        HD = self.hess(D)
        g = y.aux + HD
        gd, dhd = _floats(_dot([y.aux], [D]), _dot([D], [HD]))
        return _Point(params, y.f + gd + 0.5 * dhd, [g] * len(params), g)

    def with_grad(self, p: _Point) -> _Point:
        return p

    def extrapolate(self, a: _Point, b: _Point, mom: float) -> _Point:
        params = [x + mom * (x - z) for x, z in zip(a.params, b.params)]
        D = self._w(a.params) - self._w(b.params)
        HD = a.aux - b.aux  # H D, from the two gradients
        g = a.aux + mom * HD
        gd, dhd = _floats(_dot([a.aux], [D]), _dot([D], [HD]))
        f = a.f + mom * gd + 0.5 * mom * mom * dhd
        return _Point(params, f, [g] * len(params), g)


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
        progress: optional tqdm-like object with ``update()`` / ``set_postfix()``.
    Returns:
        A :class:`FistaResult` with the final parameters, objective, history of F,
        the number of iterations, whether ``tol`` (or ``obj_tol``) was met, the final
        residual and step size.
    """
    g = smooth if isinstance(smooth, Quadratic) else _Autograd(smooth)
    x = g.point([p.detach().clone() for p in params])
    F = x.f + penalty(x.params)
    history = [F]
    scale = max(1.0, math.sqrt(_floats(_dot(x.grad, x.grad))[0]))
    y = x
    b = 1.0
    slack = 4 * torch.finfo(x.params[0].dtype).eps
    residual = math.inf
    converged = False
    it = n_trials = 0
    for it in range(1, max_iter + 1):
        # backtracking line search on the step (eq. 7 with the quadratic model test)
        while True:
            trial = g.trial(y, prox(y.params, y.grad, lr))
            n_trials += 1
            diff = [a - c for a, c in zip(trial.params, y.params)]
            gd, dd = _floats(_dot(y.grad, diff), _dot(diff, diff))
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
        if restart and _floats(_dot(diff, [a - o for a, o in zip(trial.params, x.params)]))[0] < 0:
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
        y = g.extrapolate(x, prev, mom)
        _finite(y.f, f"at iteration {it}")
        # try a longer step next time, but only while the line search can still tell
        # (its quadratic term above the rounding noise of f): once it cannot, keep the
        # last step it validated
        if dd / (2 * lr) > 100 * slack * (abs(y.f) + abs(x.f)):
            lr *= grow
    return FistaResult(x.params, F, it, converged, residual, lr, history, n_trials)
