"""Trace-norm (nuclear-norm) regularised multi-task learning: MALSAR's Least_Trace / Logistic_Trace."""

from __future__ import annotations

import torch

from .. import ops
from ._convex import PenalisedLinear


class TraceNormMTL(PenalisedLinear):
    """Low-rank multi-task learning with the trace norm (Ji and Ye, 2009; MALSAR's
    ``Least_Trace`` and ``Logistic_Trace``, Zhou, Chen and Ye, 2011):

        min_{W,b} sum_t L_t(w_t, b_t) + alpha ||W||_*

    ||W||_* is the sum of the singular values of W (n_features, n_tasks): a convex
    surrogate of its rank, so the tasks share a few directions of the feature space. It is
    Adaptive Sharing's C-part alone (Shen, Sun, Lin, Huang and Wu, 2015, eq. 3 with
    S = 0) and, for the squared loss with ``task_weighting="sum"`` and no intercept,
    exactly MALSAR's ``Least_Trace(X, Y, rho1=alpha)``: sum_t 0.5 ||y_t - X_t w_t||^2 +
    rho1 ||W||_*.

    Solvers: the squared loss goes to ADMM with exact per-task solves (the prox is
    ``ops.svt``), robust to raw, ill-conditioned features; the other losses to proximal
    Newton with the same ADMM inside (``linear/_newton.py``) while the per-task Gram matrices
    are small, else (or with ``solver="fista"``) to FISTA with ``ops.svt`` as the proximal
    step (Ji and Ye's accelerated gradient method).

    Parameters
    ----------
    alpha : float, the trace-norm weight (>= 0).
    loss, fit_intercept, task_weighting, solver, max_iter, tol, device, dtype, warm_start, verbose
        As for :class:`~mtlkernels.linear.SingleTaskLinear`.

    Attributes
    ----------
    coef_, intercept_, n_iter_, residual_ (the final KKT residual), converged_, solver_,
    objective_history_, rank_ (singular values of W above 1e-10 times the largest).

    Examples
    --------
    >>> from mtlkernels.datasets import school_like
    >>> tn = TraceNormMTL(alpha=100.0, task_weighting="sum", fit_intercept=False).fit(school_like(0))
    """

    _label = "TraceNormMTL"

    def __init__(self, alpha=1.0, loss="squared", fit_intercept=True, task_weighting="mean", solver="auto",
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
        return float(self.alpha * ops.nuclear_norm(W))

    def _prox(self, V, t):
        return ops.svt(V, t * float(self.alpha))

    def _fit(self, data, W0, b0):
        W, b = super()._fit(data, W0, b0)
        sv = torch.linalg.svdvals(W)  # a diagnostic, once: not the solver's arithmetic
        self.rank_ = int((sv > 1e-10 * sv.max()).sum()) if sv.numel() and float(sv.max()) > 0 else 0
        return W, b
