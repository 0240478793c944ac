"""Single-task learning (STL): the independent baseline of seeds 000, 003 and 004."""

from __future__ import annotations

import torch

from .. import ops
from ._base import MultiTaskLinear, lipschitz_guess, task_losses
from ._solve import plain_step, quadratic_step, run_fista, squared_loss_quadratic


class SingleTaskLinear(MultiTaskLinear):
    """Independent linear models, one per task (STL in seed 004 sec. 4.1).

    Minimises, for every task t separately (jointly solved, no coupling),
    mean_i loss(x_ti^T w_t + b_t, y_ti) + alpha * R(w_t), with R = ||w||_2^2 / 2
    (``penalty="l2"``, solved as the elastic-net prox with l1 = 0) or ||w||_1
    (``penalty="l1"``, the lasso / l1-logistic regression).

    With the squared loss and ``penalty="l1"`` this is scikit-learn's ``Lasso(alpha)``
    per task (objective 1/(2n) ||y - X w||^2 + alpha ||w||_1).
    """

    def __init__(self, loss="squared", alpha=1e-2, penalty="l2", fit_intercept=True, max_iter=2000, tol=1e-6,
                 device="cpu", dtype="float64", warm_start=False, verbose=False):
        self.loss = loss
        self.alpha = alpha
        self.penalty = penalty
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.warm_start = warm_start
        self.verbose = verbose

    def _fit(self, data, W0, b0):
        self._check_nonneg(alpha=self.alpha)
        if self.penalty not in ("l1", "l2"):
            raise ValueError(f"penalty must be 'l1' or 'l2', got {self.penalty!r}")
        d, T = data.n_features, data.n_tasks
        W = W0 if W0 is not None else torch.zeros(d, T, dtype=data.X.dtype, device=data.X.device)
        b = b0 if b0 is not None else torch.zeros(T, dtype=data.X.dtype, device=data.X.device)
        l1, l2 = (self.alpha, 0.0) if self.penalty == "l1" else (0.0, self.alpha)

        def penalty(p):
            return float(l1 * p[0].abs().sum() + 0.5 * l2 * (p[0] ** 2).sum())

        if self.loss == "squared":  # a quadratic in W: Gram form, the intercept solved in closed form
            quad, intercept = squared_loss_quadratic(data, self.fit_intercept)
            res = run_fista(self, quad, lambda p, g, lr: [ops.prox_grad_step(p[0], g[0], lr, l1, l2)], penalty, [W],
                            quadratic_step(quad, W), "STL")
            W = res.params[0]
            b = intercept(W)
        else:
            def smooth(p):
                Wp, bp = p
                return task_losses(self.loss, data.predict(Wp, bp if self.fit_intercept else None), data).sum()

            def prox(p, g, lr):
                return [ops.prox_grad_step(p[0], g[0], lr, l1, l2),
                        plain_step(p[1], g[1], lr) if self.fit_intercept else p[1]]

            res = run_fista(self, smooth, prox, penalty, [W, b], lipschitz_guess(data, self.loss), "STL")
            W, b = res.params
        self.objective_history_ = res.history
        self.n_iter_, self.converged_ = res.n_iter, res.converged
        return W, b
