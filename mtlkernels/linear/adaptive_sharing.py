"""Adaptive Sharing (Shen, Sun, Lin, Huang and Wu, 2015): W = C + S, nuclear norm on C, l1 on S."""

from __future__ import annotations

import torch

from .. import ops
from ._base import MultiTaskLinear, lipschitz_guess, task_losses
from ._convex import check_solver, use_admm
from ._newton import newton_applies, prox_newton
from ._solve import plain_step, quadratic_step, run_admm, run_fista, squared_loss


class AdaptiveSharing(MultiTaskLinear):
    """Adaptive Sharing on pre-computed features (Shen, Sun, Lin, Huang and Wu, 2015, eq. 3):

        min_{C,S}  sum_k L_k(c_k + s_k, b_k) + lambda_c ||C||_* + lambda_s ||S||_1

    The low-rank C couples related tasks; the sparse S keeps what is specific to each.
    L_k is task k's loss, averaged over its samples (``task_weighting="mean"``: the
    paper's 1/N sum when all tasks share the samples) or summed (``"sum"``); ``b`` is an
    unpenalised intercept (``fit_intercept``).

    Solvers. The squared loss goes to ADMM with exact per-task solves
    (:func:`mtlkernels.optim.admm`; the proximal maps C <- svt(C_hat, eta lambda_c) and
    S <- soft_threshold(S_hat, eta lambda_s) of the paper's eq. 9, both fused ops), whose
    iteration count does not grow with the conditioning of the features: raw,
    unstandardised data reach the optimum as fast as standardised data. The logistic and
    squared-hinge losses go to proximal Newton (``linear/_newton.py``: each step the loss's
    second-order model plus the penalty, solved by the same ADMM) while the per-task Gram
    matrices are small, else to the paper's accelerated proximal gradient (eqs. 7-8,
    :func:`mtlkernels.optim.fista`). ``solver="fista"`` forces the latter.

    Learned attributes: ``C_``, ``S_`` (n_features, n_tasks), ``coef_`` = C + S,
    ``intercept_``, ``task_similarity_`` = C^T C (the matrix of the paper's Fig. 3),
    ``objective_history_``, ``n_iter_``, ``residual_`` (the final KKT residual),
    ``converged_``, ``solver_``.
    """

    def __init__(self, lambda_c=0.1, lambda_s=0.01, loss="squared", fit_intercept=True, task_weighting="mean",
                 solver="auto", max_iter=5000, tol=1e-6, device="cpu", dtype="float64", warm_start=False,
                 verbose=False):
        self.lambda_c = lambda_c
        self.lambda_s = lambda_s
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

    def _fit(self, data, W0, b0):
        self._check_nonneg(lambda_c=self.lambda_c, lambda_s=self.lambda_s)
        check_solver(self)
        d, T = data.n_features, data.n_tasks
        kw = {"dtype": data.X.dtype, "device": data.X.device}
        if W0 is not None and hasattr(self, "C_") and self.C_.shape == (d, T):
            C, S = torch.as_tensor(self.C_, **kw), torch.as_tensor(self.S_, **kw)
        else:
            C, S = torch.zeros(d, T, **kw), torch.zeros(d, T, **kw)
        b = b0 if b0 is not None else torch.zeros(T, **kw)
        lc, ls = float(self.lambda_c), float(self.lambda_s)

        def penalty(p):
            return float(lc * ops.nuclear_norm(p[0]) + ls * p[1].abs().sum())

        def prox_cs(p, g, lr):  # eq. 9: the two blocks separate
            return [ops.svt(p[0] - lr * g[0], lr * lc), ops.prox_grad_step(p[1], g[1], lr, ls)]

        def prox_admm(v, t):  # the same two proximal maps, of t * h
            return [ops.svt(v[0], t * lc), ops.soft_threshold(v[1], t * ls)]

        if self.loss == "squared":  # a quadratic in C + S: Gram form, the intercept in closed form
            loss = squared_loss(data, self.fit_intercept)
            quad = loss.quadratic()
            scale = max(1.0, float(quad.linear.norm())) * 2 ** 0.5  # ||grad at 0|| over both blocks
            if use_admm(self, loss):
                res = run_admm(self, quad, prox_admm, penalty, [C, S], "AdaptiveSharing", scale=scale)
                self.solver_ = "admm"
            else:
                # the gradient is the same for C and S: the step must fit the sum of both (the 0.5)
                res = run_fista(self, quad, prox_cs, penalty, [C, S], 0.5 * quadratic_step(quad, C),
                                "AdaptiveSharing", scale=scale)
                self.solver_ = "fista"
            C, S = res.params
            b = loss.intercept(C + S)
        elif newton_applies(self, data):  # logistic, squared hinge: second-order steps, ADMM inside
            res = prox_newton(self, data, prox_admm, prox_cs, penalty, [C, S], b, "AdaptiveSharing", self.fit_intercept)
            (C, S), b = res.params, res.b
            self.solver_ = "prox-newton"
        else:
            def smooth(p):
                C, S, b = p
                return task_losses(self.loss, data.predict(C + S, b if self.fit_intercept else None), data).sum()

            def prox(p, g, lr):
                return prox_cs(p, g, lr) + [plain_step(p[2], g[2], lr) if self.fit_intercept else p[2]]

            res = run_fista(self, smooth, prox, penalty, [C, S, b], 0.5 * lipschitz_guess(data, self.loss),
                            "AdaptiveSharing")
            C, S, b = res.params
            self.solver_ = "fista"
        self.C_ = C.cpu().numpy()
        self.S_ = S.cpu().numpy()
        self.task_similarity_ = (C.T @ C).cpu().numpy()
        self.objective_history_ = res.history
        self._converged(res.converged, res.n_iter, res.residual, "max_iter")
        return C + S, b
