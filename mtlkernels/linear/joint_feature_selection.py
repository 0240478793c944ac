"""Joint feature selection with the l2,1 norm over feature rows: MALSAR's Least_L21 / Logistic_L21."""

from __future__ import annotations

from .. import ops
from ._convex import PenalisedLinear


class JointFeatureSelection(PenalisedLinear):
    """Joint feature selection (JFS; Argyriou, Evgeniou and Pontil, 2007, with the feature
    basis fixed; Obozinski, Taskar and Jordan, 2010; MALSAR's ``Least_L21`` and
    ``Logistic_L21``, Zhou, Chen and Ye, 2011), the JFS baseline of Shen, Sun, Lin, Huang
    and Wu (2015), Table 1:

        min_{W,b} sum_t L_t(w_t, b_t) + alpha sum_j ||W_j,:||_2

    W_j,: is row j of W (n_features, n_tasks): feature j's weights in every task. The
    l2,1 norm zeroes whole rows, so all tasks select the same features. For the squared
    loss with ``task_weighting="sum"`` and no intercept it is exactly MALSAR's
    ``Least_L21(X, Y, rho1=alpha)``: sum_t 0.5 ||y_t - X_t w_t||^2 + rho1 ||W||_{2,1}; with
    a shared design and ``"mean"`` it is scikit-learn's ``MultiTaskLasso(alpha)``.

    Solvers: the squared loss goes to ADMM with exact per-task solves (the prox is
    ``ops.group_soft_threshold`` over rows); other losses to proximal Newton with the same
    ADMM inside (``linear/_newton.py``) while the per-task Gram matrices are small, else to
    FISTA with ``ops.group_prox_grad_step``.

    Parameters
    ----------
    alpha : float, the l2,1 weight (>= 0).
    loss, fit_intercept, task_weighting, solver, max_iter, tol, device, dtype, warm_start, verbose
        As for :class:`~mtlkernels.linear.SingleTaskLinear`.

    Attributes
    ----------
    coef_, intercept_, n_iter_, residual_ (the final KKT residual), converged_, solver_,
    objective_history_, selected_ (indices of the features with a nonzero row).

    Examples
    --------
    >>> from mtlkernels.datasets import school_like
    >>> jfs = JointFeatureSelection(alpha=0.5).fit(school_like(0))
    """

    _label = "JointFeatureSelection"

    def __init__(self, alpha=0.1, loss="squared", fit_intercept=True, task_weighting="mean", solver="auto",
                 max_iter=5000, tol=1e-6, device="cpu", dtype="float64", warm_start=False, verbose=False):
        self.alpha = alpha
        self.loss = loss
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

    def _penalty(self, W):
        return float(self.alpha * W.norm(dim=1).sum())

    def _prox(self, V, t):
        return ops.group_soft_threshold(V, t * float(self.alpha), dim=1)

    def _row_separable(self):
        return "rows"

    def _prox_rows(self, V, t, inv):
        return ops.group_soft_threshold(V, (t * float(self.alpha)) * inv[:, 0], dim=1)

    def _prox_step(self, W, G, lr):
        return ops.group_prox_grad_step(W, G, lr, float(self.alpha), dim=1)

    def _fit(self, data, W0, b0):
        W, b = super()._fit(data, W0, b0)
        self.selected_ = (W.abs().sum(1) > 0).nonzero().flatten().cpu().numpy()
        return W, b
