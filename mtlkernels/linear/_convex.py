"""The convex single-block estimators' solver: min_W sum_t L_t(w_t) + h(W), h with a fused prox."""

from __future__ import annotations

import torch
from torch import Tensor

from ..optim import Quadratic, TaskGram
from ._base import MultiTaskLinear, lipschitz_guess, task_losses
from ._newton import newton_applies, prox_newton
from ._solve import plain_step, quadratic_step, run_admm, run_fista, squared_loss

SOLVERS = ("auto", "admm", "fista")


def check_solver(est) -> None:
    if est.solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {est.solver!r}")


def use_admm(est, loss) -> bool:
    """ADMM (exact solves) for the squared loss when its Gram matrices are small enough;
    FISTA otherwise or when asked for."""
    if est.solver == "fista" or est.loss != "squared":
        return False
    if not loss.exact:
        if est.solver == "admm":
            raise ValueError("solver='admm' needs the squared loss with at most "
                             "mtlkernels.linear._solve.ADMM_MAX_FEATURES features; use solver='fista'")
        return False
    return True


SCALE_SPREAD = 1e3  # rescale when the features' scales span more than this ratio


def feature_scales(gram: TaskGram, per_task: bool = False) -> Tensor | None:
    """The features' scales s_j = sqrt(sum_t c_t (G_t)_jj / sum_t c_t) (their weighted root
    mean square; after centring with an intercept) as a (d, 1) column, or with ``per_task``
    (and a Gram matrix per task) s_tj = sqrt((G_t)_jj) as a (d, T) matrix; divided by the
    geometric mean of the non-constant ones (per task), 1 for a constant feature (below
    1e-8 of the largest). None when they span at most ``SCALE_SPREAD``: then a rescaling
    buys nothing (Jacobi scaling can also slow ADMM down where the correlations, not the
    scales, set the conditioning: one-hot blocks next to a constant column)."""
    diag = gram.G.diagonal(0, -2, -1)  # (d,) or (T, d)
    if gram.shared:
        diag = diag[None, :]
    elif not per_task:
        diag = (diag * gram.c[:, None]).sum(0, keepdim=True) / gram.c.sum()
    s = diag.clamp_min(0).sqrt()
    pos = s > 1e-8 * s.amax(1, keepdim=True)
    if not bool(pos.any()):
        return None
    one = torch.ones_like(s)
    spread = s.amax(1) / torch.where(pos, s, one * float("inf")).amin(1)  # per task; nan for an all-constant task
    if not float(spread.nan_to_num(1.0).max()) > SCALE_SPREAD:
        return None
    logs = torch.where(pos, s, one).log()
    gmean = (logs.sum(1, keepdim=True) / pos.sum(1, keepdim=True).clamp_min(1)).exp()
    return torch.where(pos, s / gmean, one).T.contiguous()


def rescaled_quadratic(gram: TaskGram, quad: Quadratic, inv: Tensor) -> Quadratic:
    """``quad`` (with Hessian ``gram``) in the variable W' = W / inv (``inv`` (d, 1), or
    (d, T) with a Gram matrix per task): Gram matrices diag(inv_t) G_t diag(inv_t), linear
    term inv * B, with their own exact resolvent."""
    if gram.shared:
        G = gram.G * inv * inv.T
    else:
        v = inv.T if inv.shape[1] > 1 else inv.T.expand(gram.G.shape[0], -1)  # (T, d)
        G = gram.G * v[:, :, None] * v[:, None, :]
    tg = TaskGram(G, None if gram._unit else gram.c, n_tasks=gram.c.numel())
    return Quadratic(tg, quad.linear * inv, quad.const, tg.inverse, tg.mean_eigenvalue())


class PenalisedLinear(MultiTaskLinear):
    """Base of the convex estimators with one parameter block W (d, T) and a penalty h
    whose proximal map is a fused op. Subclasses implement ``_penalty(W) -> float``,
    ``_prox(V, t)`` (argmin_W t h(W) + 1/2 ||W - V||^2) and ``_prox_step(W, G, lr)``
    (= ``_prox(W - lr G, lr)``, fused where an op does both), and may override
    ``_closed_form(loss)`` (a solution without iterations, or None).

    Solvers: the squared loss with small Gram matrices goes to
    :func:`mtlkernels.optim.admm` (exact per-task solves: the result does not depend on the
    features' scales or on singular per-task Gram matrices); the logistic and squared-hinge
    losses to proximal Newton with that ADMM inside (``_newton.py``) while the per-task Gram
    matrices are small; everything else to :func:`mtlkernels.optim.fista` (``solver="fista"``
    forces it). For a penalty separable over
    the entries or the feature rows of W (the lasso, the l2,1 norm: ``_row_separable``),
    ADMM runs in the variable W' = W / inv, inv the features' inverse scales
    (:func:`feature_scales`; per task for an entry-separable penalty), with per-row
    thresholds, when those scales span more than three orders of magnitude: one penalty
    parameter then suits every feature, and such raw features converge in as few
    iterations as standardised ones (thousands of iterations fewer). ``residual_`` is then
    W''s KKT residual, invariant to the units of each feature.
    """

    _label = "estimator"

    def _penalty(self, W) -> float:
        raise NotImplementedError

    def _prox(self, V, t):
        raise NotImplementedError

    def _prox_step(self, W, G, lr):
        return self._prox(W - lr * G, lr)

    def _closed_form(self, loss):
        return None

    def _row_separable(self) -> str | None:
        """"entries" when h is separable over the entries of W, "rows" when over its feature
        rows (with a prox for per-row or per-entry weights, :meth:`_prox_rows`), else None
        (the nuclear norm)."""
        return None

    def _prox_rows(self, V, t, inv):
        """The prox of t h(inv * V): h in the rescaled variable W' = W / inv, ``inv`` (d, 1)
        (or (d, T) for an entry-separable h)."""
        raise NotImplementedError

    def _check_params(self):
        pass

    def _fit(self, data, W0, b0):
        self._check_params()
        check_solver(self)
        d, T = data.n_features, data.n_tasks
        kw = {"dtype": data.X.dtype, "device": data.X.device}
        W = W0 if W0 is not None else torch.zeros(d, T, **kw)
        b = b0 if b0 is not None else torch.zeros(T, **kw)

        def penalty(p):
            return self._penalty(p[0])

        if self.loss == "squared":  # a quadratic in W: Gram form, the intercept in closed form
            loss = squared_loss(data, self.fit_intercept)
            quad = loss.quadratic()
            scale = max(1.0, float(quad.linear.norm()))  # ||grad at W = 0||: fixed across warm starts
            closed = self._closed_form(loss) if self.solver == "auto" else None
            if closed is not None:
                W, residual = closed
                F = float(quad([W])) + self._penalty(W)
                self.objective_history_ = [F]
                self.solver_ = "closed form"
                self._converged(residual / scale <= self.tol, 1, residual / scale, "max_iter")
                return W, loss.intercept(W)
            admm = use_admm(self, loss)
            kind = self._row_separable() if admm else None
            scales = None if kind is None else feature_scales(loss.gram, per_task=kind == "entries")
            inv = None if scales is None else 1.0 / scales
            if inv is not None:
                # a row-separable penalty: ADMM on W' = diag(s) W, s the features' scales, so that
                # raw features of very different scales converge as fast as standardised ones
                # (h(W) = h(diag(inv) W'): per-row thresholds); the residual is W''s, relative
                # to ||grad at W' = 0||, so invariant to the units of each feature
                q2 = rescaled_quadratic(loss.gram, quad, inv)
                res = run_admm(self, q2, lambda p, t: [self._prox_rows(p[0], t, inv)],
                               lambda p: self._penalty(inv * p[0]), [W / inv], self._label,
                               scale=max(1.0, float(q2.linear.norm())))
                res.params = [res.params[0] * inv]
                self.solver_ = "admm"
            elif admm:
                res = run_admm(self, quad, lambda p, t: [self._prox(p[0], t)], penalty, [W], self._label, scale=scale)
                self.solver_ = "admm"
            else:
                res = run_fista(self, quad, lambda p, g, lr: [self._prox_step(p[0], g[0], lr)], penalty, [W],
                                quadratic_step(quad, W), self._label, scale=scale)
                self.solver_ = "fista"
            W = res.params[0]
            b = loss.intercept(W)
        elif newton_applies(self, data):  # logistic, squared hinge: second-order steps, ADMM inside
            res = prox_newton(self, data, lambda p, t: [self._prox(p[0], t)],
                              lambda p, g, lr: [self._prox_step(p[0], g[0], lr)], penalty, [W], b, self._label,
                              self.fit_intercept)
            W, b = res.params[0], res.b
            self.solver_ = "prox-newton"
        else:
            def smooth(p):
                return task_losses(self.loss, data.predict(p[0], p[1] if self.fit_intercept else None), data).sum()

            def prox(p, g, lr):
                return [self._prox_step(p[0], g[0], lr), plain_step(p[1], g[1], lr) if self.fit_intercept else p[1]]

            res = run_fista(self, smooth, prox, penalty, [W, b], lipschitz_guess(data, self.loss), self._label)
            W, b = res.params
            self.solver_ = "fista"
        self.objective_history_ = res.history
        self._converged(res.converged, res.n_iter, res.residual, "max_iter")
        return W, b
