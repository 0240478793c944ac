"""Latent-basis multi-task models W = L S: Go-MTL (seed 004 eq. 3) and the
multi-task attribute model with groups (seed 003 eq. 2)."""

from __future__ import annotations

import numpy as np
import torch

from .. import ops
from ._base import MultiTaskLinear, lipschitz_guess, spectral_norm_sq, task_losses
from ._solve import latent_init, plain_step, quadratic_step, run_fista, squared_loss_quadratic


class _LatentFactorMTL(MultiTaskLinear):
    """Alternating minimisation over S (with L fixed) and L (with S fixed), each
    block a convex problem solved by FISTA with a fused proximal op (seed 003,
    Algorithm 1; Kumar and Daume III, 2012). L and S start from the SVD of the
    stacked single-task solutions. Subclasses give the two proximal maps."""

    def _prox_S(self, S, g, lr):
        raise NotImplementedError

    def _prox_L(self, L, g, lr):
        raise NotImplementedError

    def _penalty_S(self, S) -> float:
        raise NotImplementedError

    def _penalty_L(self, L) -> float:
        raise NotImplementedError

    def _init_factors(self, data):
        kw = {"dtype": data.X.dtype, "device": data.X.device}
        d, T = data.n_features, data.n_tasks
        if self.warm_start and hasattr(self, "L_") and self.L_.shape == (d, self.n_latent) and self.S_.shape[1] == T:
            return (torch.as_tensor(self.L_, **kw), torch.as_tensor(self.S_, **kw),
                    torch.as_tensor(self.intercept_, **kw))
        return latent_init(self, data, self.n_latent)

    def _fit(self, data, W0, b0):
        if not (isinstance(self.n_latent, (int, np.integer)) and self.n_latent > 0):
            raise ValueError(f"n_latent must be a positive integer, got {self.n_latent!r}")
        L, S, b = self._init_factors(data)
        base_lr = lipschitz_guess(data, self.loss)
        fit_b = self.fit_intercept
        name = type(self).__name__
        # the squared loss is a quadratic in S (L fixed) and in L (S fixed): Gram form, the
        # intercept in closed form; other losses go through autograd with b as a block
        quad, intercept = squared_loss_quadratic(data, fit_b) if self.loss == "squared" else (None, None)

        def objective(L, S, b):
            smooth = quad([L @ S]) if quad is not None else \
                task_losses(self.loss, data.predict(L @ S, b if fit_b else None), data).sum()
            return float(smooth) + self._penalty_S(S) + self._penalty_L(L)

        history = [objective(L, S, b)]
        self.n_iter_ = 0
        for outer in range(self.max_outer):
            # S-step (L fixed): for seed 003, the group lasso within attribute groups
            if quad is not None:
                q = quad.compose(lambda D: L @ D, lambda M: L.T @ M)
                (S,) = run_fista(self, q, lambda p, g, lr: [self._prox_S(p[0], g[0], lr)],
                                 lambda p: self._penalty_S(p[0]), [S], quadratic_step(q, S), f"{name} S-step",
                                 self.max_inner).params
            else:
                S, b = run_fista(
                    self,
                    lambda p: task_losses(self.loss, data.predict(L @ p[0], p[1] if fit_b else None), data).sum(),
                    lambda p, g, lr: [self._prox_S(p[0], g[0], lr), plain_step(p[1], g[1], lr) if fit_b else p[1]],
                    lambda p: self._penalty_S(p[0]),
                    [S, b], base_lr / max(spectral_norm_sq(L), 1e-12), f"{name} S-step", self.max_inner,
                ).params
            # L-step (S fixed): l1 + Frobenius (elastic-net prox)
            if quad is not None:
                q = quad.compose(lambda D: D @ S, lambda M: M @ S.T)
                smooth, lr = q, quadratic_step(q, L)
            else:
                def smooth(p):
                    return task_losses(self.loss, data.predict(p[0] @ S, b if fit_b else None), data).sum()

                lr = base_lr / max(spectral_norm_sq(S.T), 1e-12)
            (L,) = run_fista(self, smooth, lambda p, g, lr: [self._prox_L(p[0], g[0], lr)],
                             lambda p: self._penalty_L(p[0]), [L], lr, f"{name} L-step", self.max_inner).params
            if quad is not None:
                b = intercept(L @ S)
            history.append(objective(L, S, b))
            self.n_iter_ = outer + 1
            if abs(history[-2] - history[-1]) <= self.tol * max(abs(history[-2]), 1e-30):
                break
        self.converged_ = self.n_iter_ < self.max_outer
        self.L_ = L.cpu().numpy()
        self.S_ = S.cpu().numpy()
        self.objective_history_ = history
        return L @ S, b


class GoMTL(_LatentFactorMTL):
    """Go-MTL (Kumar and Daume III, 2012), as written in seed 004 eq. 3:

        min_{L,S} sum_t mean_i loss(x_ti^T L s_t, y_ti) + mu ||s_t||_1 + lam ||L||_F^2

    with L (n_features, n_latent) the shared bases and S (n_latent, n_tasks) sparse
    combinations. Solved by alternating FISTA on S (``ops.prox_grad_step``, l1) and L
    (``ops.prox_grad_step`` with the ridge as its l2 part).
    Learned: ``L_``, ``S_``, ``coef_`` = L S, ``intercept_``, ``objective_history_`` (per outer step).
    """

    def __init__(self, n_latent=5, mu=0.1, lam=0.1, loss="squared", fit_intercept=True, max_outer=30, max_inner=50,
                 init_alpha=1e-3, max_iter=1000, tol=1e-6, device="cpu", dtype="float64", warm_start=False,
                 verbose=False):
        self.n_latent = n_latent
        self.mu = mu
        self.lam = lam
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.max_outer = max_outer
        self.max_inner = max_inner
        self.init_alpha = init_alpha
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.warm_start = warm_start
        self.verbose = verbose

    def _fit(self, data, W0, b0):
        self._check_nonneg(mu=self.mu, lam=self.lam)
        return super()._fit(data, W0, b0)

    def _prox_S(self, S, g, lr):
        return ops.prox_grad_step(S, g, lr, float(self.mu))

    def _prox_L(self, L, g, lr):
        return ops.prox_grad_step(L, g, lr, 0.0, 2.0 * self.lam)  # lam ||L||^2 = (2 lam)/2 ||L||^2

    def _penalty_S(self, S):
        return float(self.mu * S.abs().sum())

    def _penalty_L(self, L):
        return float(self.lam * (L**2).sum())


class LatentTaskMTL(_LatentFactorMTL):
    """Multi-task attribute learning with a latent task matrix (seed 003, eq. 2):

        min_{L,S} sum_m mean_i max(0, 1 - y_mi (L s_m)^T x_mi)^2
                  + mu sum_k sum_g ||s_k^g||_2 + gamma ||L||_1 + lam ||L||_F^2

    W = L S with L (n_features, n_latent) the latent tasks and S (n_latent, n_tasks).
    ``groups`` labels each task (attribute) with its group; s_k^g is row k of S
    restricted to group g's attributes, so attributes of one group share latent
    dimensions and groups compete for them. ``groups=None`` puts all attributes in one
    group (each row of S is a group: the "M" variant without group information).

    Algorithm 1 of the paper alternates an S-step and an L-step by APG; for the S-step
    it smooths the mixed norm (SPGD). Here the S-step uses the exact proximal map of
    this disjoint-group norm (``ops.group_prox_grad_step`` with the group labels), so
    no smoothing parameter is needed and the solution is exact. The L-step uses the
    l1 + Frobenius prox (``ops.prox_grad_step`` with an l2 part). L starts from the SVD
    of the stacked single-task W as in the paper. The paper sums the hinge terms over
    samples with a factor 1/2; we average per task (a rescaling of mu, gamma, lam).
    """

    def __init__(self, n_latent=5, mu=0.1, gamma=0.01, lam=0.01, groups=None, loss="squared_hinge",
                 fit_intercept=True, max_outer=30, max_inner=50, init_alpha=1e-3, max_iter=1000, tol=1e-6, device="cpu",
                 dtype="float64", warm_start=False, verbose=False):
        self.n_latent = n_latent
        self.mu = mu
        self.gamma = gamma
        self.lam = lam
        self.groups = groups
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.max_outer = max_outer
        self.max_inner = max_inner
        self.init_alpha = init_alpha
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.warm_start = warm_start
        self.verbose = verbose

    def _fit(self, data, W0, b0):
        self._check_nonneg(mu=self.mu, gamma=self.gamma, lam=self.lam)
        if self.groups is None:
            self._labels = None
        else:
            labels = np.asarray(self.groups)
            if labels.ndim != 1 or len(labels) != data.n_tasks:
                raise ValueError(f"groups must give one label per task ({data.n_tasks}), got shape {labels.shape}")
            if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
                raise ValueError("groups must be non-negative integer labels")
            self._labels = torch.as_tensor(labels, dtype=torch.long, device=data.X.device)
        return super()._fit(data, W0, b0)

    def _prox_S(self, S, g, lr):
        return ops.group_prox_grad_step(S, g, lr, float(self.mu), dim=1, groups=self._labels)

    def _prox_L(self, L, g, lr):
        return ops.prox_grad_step(L, g, lr, float(self.gamma), 2.0 * self.lam)

    def _penalty_S(self, S):
        """mu * sum_k sum_g ||s_k^g||_2 (the value of the penalty, for the objective)."""
        if self._labels is None:
            return float(self.mu * S.norm(dim=1).sum())
        G = int(self._labels.max()) + 1
        sq = torch.zeros(S.shape[0], G, dtype=S.dtype, device=S.device).index_add_(1, self._labels, S * S)
        return float(self.mu * sq.sqrt().sum())

    def _penalty_L(self, L):
        return float(self.gamma * L.abs().sum() + self.lam * (L**2).sum())
