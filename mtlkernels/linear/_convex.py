"""The convex single-block estimators' solver: min_W sum_t L_t(w_t) + h(W), h with a fused prox."""

from __future__ import annotations

import torch

from ._base import MultiTaskLinear, lipschitz_guess, task_losses
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


class PenalisedLinear(MultiTaskLinear):
    """Base of the convex estimators with one parameter block W (d, T) and a penalty h
    whose proximal map is a fused op. Subclasses implement ``_penalty(W) -> float``,
    ``_prox(V, t)`` (argmin_W t h(W) + 1/2 ||W - V||^2) and ``_prox_step(W, G, lr)``
    (= ``_prox(W - lr G, lr)``, fused where an op does both), and may override
    ``_closed_form(loss)`` (a solution without iterations, or None).

    Solvers: the squared loss with small Gram matrices goes to
    :func:`mtlkernels.optim.admm` (exact per-task solves: the result does not depend on the
    features' scales or on singular per-task Gram matrices), everything else to
    :func:`mtlkernels.optim.fista` (``solver`` forces one).
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
            if use_admm(self, loss):
                res = run_admm(self, quad, lambda p, t: [self._prox(p[0], t)], penalty, [W], self._label, scale=scale)
                self.solver_ = "admm"
            else:
                res = run_fista(self, quad, lambda p, g, lr: [self._prox_step(p[0], g[0], lr)], penalty, [W],
                                quadratic_step(quad, W), self._label, scale=scale)
                self.solver_ = "fista"
            W = res.params[0]
            b = loss.intercept(W)
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
