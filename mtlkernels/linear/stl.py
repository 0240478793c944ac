"""Single-task learning (STL): the independent baseline of every multi-task method here."""

from __future__ import annotations

from .. import ops
from ._convex import PenalisedLinear


class SingleTaskLinear(PenalisedLinear):
    """Independent linear models, one per task (STL in Lee, Yang and Hwang (2018), sec. 4.1).

    Minimises sum_t L_t(w_t, b_t) + alpha sum_t R(w_t), every task separately (solved
    jointly, no coupling), with R = ||w||_2^2 / 2 (``penalty="l2"``, ridge / l2-logistic)
    or ||w||_1 (``penalty="l1"``, the lasso / l1-logistic regression). L_t is task t's
    loss, averaged over its samples (``task_weighting="mean"``) or summed (``"sum"``).

    With the squared loss and ``penalty="l1"`` this is scikit-learn's ``Lasso(alpha)`` per
    task (objective 1/(2n) ||y - X w||^2 + alpha ||w||_1); with ``penalty="l2"`` it is
    ``Ridge(alpha * n)`` (mean) or ``Ridge(alpha)`` (sum), solved in closed form per task.

    Parameters
    ----------
    loss : {"squared", "logistic", "squared_hinge"}
    alpha : float, the penalty weight (>= 0).
    penalty : {"l2", "l1"}
    fit_intercept : bool, an unpenalised intercept per task.
    task_weighting : {"mean", "sum"}, L_t as the mean or the sum over task t's samples.
    solver : {"auto", "admm", "fista"}; "auto": the closed form (squared loss, l2), ADMM with
        exact per-task solves (squared loss, l1), proximal Newton with ADMM inside (other
        losses, per-task Gram matrices small enough), FISTA otherwise.
    max_iter, tol : iteration cap and KKT-residual tolerance (relative to the gradient at 0).
    device, dtype, warm_start, verbose : as for every estimator here.

    Attributes
    ----------
    coef_ (n_features, n_tasks), intercept_ (n_tasks,), n_iter_, residual_, converged_,
    solver_, objective_history_.

    Examples
    --------
    >>> from mtlkernels.datasets import school_like
    >>> stl = SingleTaskLinear(alpha=1e-2).fit(school_like(0))   # raw features, closed form
    """

    _label = "STL"

    def __init__(self, loss="squared", alpha=1e-2, penalty="l2", fit_intercept=True, task_weighting="mean",
                 solver="auto", max_iter=2000, tol=1e-6, device="cpu", dtype="float64", warm_start=False,
                 verbose=False):
        self.loss = loss
        self.alpha = alpha
        self.penalty = penalty
        self.fit_intercept = fit_intercept
        self.task_weighting = task_weighting
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.warm_start = warm_start
        self.verbose = verbose

    def _check_params(self):
        self._check_nonneg(alpha=self.alpha)
        if self.penalty not in ("l1", "l2"):
            raise ValueError(f"penalty must be 'l1' or 'l2', got {self.penalty!r}")

    def _penalty(self, W):
        if self.penalty == "l1":
            return float(self.alpha * W.abs().sum())
        return float(0.5 * self.alpha * (W**2).sum())

    def _prox(self, V, t):
        if self.penalty == "l1":
            return ops.soft_threshold(V, t * self.alpha)
        return ops.elastic_net_prox(V, 0.0, t * self.alpha)

    def _row_separable(self):
        return "entries" if self.penalty == "l1" else None

    def _prox_rows(self, V, t, inv):
        return ops.soft_threshold(V, (t * float(self.alpha)) * inv)

    def _prox_step(self, W, G, lr):
        l1, l2 = (self.alpha, 0.0) if self.penalty == "l1" else (0.0, self.alpha)
        return ops.prox_grad_step(W, G, lr, float(l1), float(l2))

    def _closed_form(self, loss):
        """Ridge: (H_t + alpha I) w_t = b_t per task, from the cached eigendecomposition."""
        if self.penalty != "l2" or not loss.exact or self.alpha <= 0:
            return None
        W = loss.gram.inverse(loss.linear, float(self.alpha))
        residual = float((loss.gram(W) + self.alpha * W - loss.linear).norm())
        return W, residual
