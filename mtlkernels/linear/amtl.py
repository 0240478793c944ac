"""Asymmetric Multi-task Learning (AMTL; Lee et al., 2016), seed 004 eq. 4."""

from __future__ import annotations

import torch

from .. import ops
from ._base import MultiTaskLinear, lipschitz_guess, spectral_norm_sq, task_losses
from ._solve import plain_step, run_fista


class AMTL(MultiTaskLinear):
    """AMTL as written in seed 004, eq. 4:

        min_{W,B} sum_t (1 + alpha ||b_t^o||_1) L_t(w_t) + gamma ||W - W B||_F^2 (+ mu ||W||_1),
        B_tt = 0 (and B >= 0 with ``nonneg=True``)

    b_t^o is row t of B, task t's outgoing transfer: its l1 weight grows with task t's
    loss, so hard tasks transfer less. ``mu`` adds an l1 penalty on W (0 recovers eq. 4
    exactly). Solved by alternating FISTA: the W-step (loss weights 1 + alpha ||b_t^o||_1
    fixed; prox ``ops.prox_grad_step``) and the B-step (losses fixed; prox
    ``ops.prox_grad_step`` with one threshold per row, alpha L_t, then the zero
    diagonal and, if ``nonneg``, the projection onto B >= 0). Seed 004 drops the
    non-negativity on its synthetic data; set ``nonneg=False`` for that.

    Learned: ``coef_`` (W), ``B_`` (n_tasks, n_tasks), ``objective_history_``.
    """

    def __init__(self, mu=0.0, gamma=0.1, alpha=0.1, nonneg=True, loss="squared", fit_intercept=True, max_outer=20, max_inner=50,
                 max_iter=1000, tol=1e-6, device="cpu", dtype="float64", warm_start=False, verbose=False):
        self.mu = mu
        self.gamma = gamma
        self.alpha = alpha
        self.nonneg = nonneg
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.max_outer = max_outer
        self.max_inner = max_inner
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.warm_start = warm_start
        self.verbose = verbose

    def _fit(self, data, W0, b0):
        self._check_nonneg(mu=self.mu, gamma=self.gamma, alpha=self.alpha)
        kw = {"dtype": data.X.dtype, "device": data.X.device}
        d, T = data.n_features, data.n_tasks
        W = W0 if W0 is not None else torch.zeros(d, T, **kw)
        b = b0 if b0 is not None else torch.zeros(T, **kw)
        B = torch.as_tensor(self.B_, **kw) if (W0 is not None and hasattr(self, "B_")) else torch.zeros(T, T, **kw)
        eye = torch.eye(T, dtype=torch.bool, device=data.X.device)
        fit_b, mu, gamma, alpha = self.fit_intercept, float(self.mu), float(self.gamma), float(self.alpha)
        base_lr = lipschitz_guess(data, self.loss)

        def losses(W, b):
            return task_losses(self.loss, data.predict(W, b if fit_b else None), data)

        def recon(W, B):
            return gamma * ((W - W @ B) ** 2).sum()

        def objective(W, B, b):
            Lt = losses(W, b)
            return float(((1 + alpha * B.abs().sum(1)) * Lt).sum() + recon(W, B) + mu * W.abs().sum())

        def prox_B(B, g, lr, thresholds):
            out = ops.prox_grad_step(B, g, lr, thresholds)
            out = out.masked_fill(eye, 0.0)
            return out.clamp(min=0) if self.nonneg else out

        history = [objective(W, B, b)]
        self.n_iter_ = 0
        for outer in range(self.max_outer):
            c = 1 + alpha * B.abs().sum(1)
            res = run_fista(
                self,
                lambda p: (c * losses(p[0], p[1])).sum() + recon(p[0], B),
                lambda p, g, lr: [ops.prox_grad_step(p[0], g[0], lr, mu), plain_step(p[1], g[1], lr) if fit_b else p[1]],
                lambda p: float(mu * p[0].abs().sum()),
                [W, b], base_lr / float(c.max()), "AMTL W-step", self.max_inner,
            )
            W, b = res.params
            thresholds = (alpha * losses(W, b)).detach()[:, None]  # one per row of B
            res = run_fista(
                self,
                lambda p: recon(W, p[0]),
                lambda p, g, lr: [prox_B(p[0], g[0], lr, thresholds)],
                lambda p: float((thresholds * p[0].abs()).sum()),
                [B], 1.0 / max(2 * gamma * spectral_norm_sq(W), 1e-12), "AMTL B-step", self.max_inner,
            )
            (B,) = res.params
            history.append(objective(W, B, b))
            self.n_iter_ = outer + 1
            if abs(history[-2] - history[-1]) <= self.tol * max(abs(history[-2]), 1e-30):
                break
        self.converged_ = self.n_iter_ < self.max_outer
        self.B_ = B.cpu().numpy()
        self.objective_history_ = history
        return W, b
