"""Asymmetric Multi-task Feature Learning (AMTFL), the shallow model of seed 004 eq. 6."""

from __future__ import annotations

import numpy as np
import torch

from .. import ops
from ._base import MultiTaskLinear, lipschitz_guess, spectral_norm_sq, task_losses
from ._solve import latent_init, plain_step, run_fista


class AMTFL(MultiTaskLinear):
    """Shallow AMTFL (seed 004, eq. 6):

        min_{L,S,A} sum_t (1 + alpha ||a_t^o||_1) L_t(L, s_t) + mu ||s_t||_1
                    + gamma ||Z - relu(Z S A + c)||_F^2 / N + lam ||L||_F^2

    with Z = h(X L) the N x k features (h the identity, ``hidden="linear"``, as the
    paper uses on its synthetic data, or ReLU), S (k, T) the task weights on the
    features, A (T, k) the task-to-feature feedback, a_t^o its row t (task t's outgoing
    transfer, penalised in proportion to task t's loss so that unreliable tasks
    transfer little), and c a bias of the reconstruction (the paper's Fig. 2d).

    Which product is reconstructed: eq. 6 prints sigma(Z S A) and eq. 7 sigma(Z W A):
    both reconstruct the features from the *task outputs* Z S (N x T) through A. That
    is what ``ops.amtfl_reconstruction_loss(Z, S, A, c)`` computes. We divide the
    Frobenius term by N (the losses are means) so gamma does not scale with the data.

    Optimisation: block coordinate descent on the exact objective. Block 1, (L, S, b)
    with A fixed (so the loss weights 1 + alpha ||a_t^o||_1 are constants): FISTA with
    ``ops.prox_grad_step`` (l1 on S; optional l1 ``l1_L`` on L, as the paper adds on
    its synthetic data). Block 2, (A, c) with L, S fixed (so the losses L_t are
    constants): FISTA with ``ops.prox_grad_step`` and one threshold alpha L_t per row
    of A. Gradients of the reconstruction term flow through the op's autograd.
    L and S start from the SVD of single-task solutions (as for Go-MTL), A from the
    least-squares fit of Z by Z S.

    Learned: ``L_``, ``S_``, ``A_``, ``recon_bias_``, ``coef_`` (L S; exact for the
    linear hidden layer), ``transfer_matrix_`` = A S (T x T, the paper's Fig. 4h:
    entry (t, t') is what task t passes to task t' through the features),
    ``objective_history_``.
    """

    def __init__(self, n_latent=6, alpha=0.1, mu=0.01, gamma=0.1, lam=0.01, l1_L=0.0, hidden="linear",
                 loss="squared", fit_intercept=True, max_outer=20, max_inner=50, init_alpha=1e-3, max_iter=500, tol=1e-6,
                 device="cpu", dtype="float64", warm_start=False, verbose=False):
        self.n_latent = n_latent
        self.alpha = alpha
        self.mu = mu
        self.gamma = gamma
        self.lam = lam
        self.l1_L = l1_L
        self.hidden = hidden
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

    # Z for the task-major layout of the data: (n, k) shared or (T, n_max, k) stacked
    def _features(self, X, L):
        Z = X @ L
        return torch.relu(Z) if self.hidden == "relu" else Z

    def _predict(self, data, L, S, b):
        Z = self._features(data.X, L)
        P = (Z @ S).T if data.shared else torch.bmm(Z, S.T.unsqueeze(-1)).squeeze(-1)
        return P + b[:, None] if self.fit_intercept else P

    def _fit(self, data, W0, b0):
        self._check_nonneg(alpha=self.alpha, mu=self.mu, gamma=self.gamma, lam=self.lam, l1_L=self.l1_L)
        if self.hidden not in ("linear", "relu"):
            raise ValueError(f"hidden must be 'linear' or 'relu', got {self.hidden!r}")
        if not (isinstance(self.n_latent, (int, np.integer)) and self.n_latent > 0):
            raise ValueError(f"n_latent must be a positive integer, got {self.n_latent!r}")
        kw = {"dtype": data.X.dtype, "device": data.X.device}
        k, T = self.n_latent, data.n_tasks
        samples = data.features()  # every real sample once, for the reconstruction term
        N = samples.shape[0]
        alpha, mu, gamma, lam, l1_L = (float(v) for v in (self.alpha, self.mu, self.gamma, self.lam, self.l1_L))

        L, S, b = latent_init(self, data, k)
        Z0 = self._features(samples, L)
        A = torch.linalg.lstsq(Z0 @ S, Z0).solution if N >= T else torch.zeros(T, k, **kw)
        c = torch.zeros(k, **kw)

        def losses(L, S, b):
            return task_losses(self.loss, self._predict(data, L, S, b), data)

        def recon(L, S, A, c):
            return gamma / N * ops.amtfl_reconstruction_loss(self._features(samples, L), S, A, c)

        def objective(L, S, A, c, b):
            Lt = losses(L, S, b)
            return float(((1 + alpha * A.abs().sum(1)) * Lt).sum() + mu * S.abs().sum() + recon(L, S, A, c)
                         + lam * (L**2).sum() + l1_L * L.abs().sum())

        base_lr = lipschitz_guess(data, self.loss)
        history = [objective(L, S, A, c, b)]
        self.n_iter_ = 0
        for outer in range(self.max_outer):
            w = 1 + alpha * A.abs().sum(1)
            res = run_fista(
                self,
                lambda p: (w * losses(p[0], p[1], p[2])).sum() + recon(p[0], p[1], A, c),
                lambda p, g, lr: [ops.prox_grad_step(p[0], g[0], lr, l1_L, 2 * lam),
                                  ops.prox_grad_step(p[1], g[1], lr, mu),
                                  plain_step(p[2], g[2], lr) if self.fit_intercept else p[2]],
                lambda p: float(mu * p[1].abs().sum() + lam * (p[0] ** 2).sum() + l1_L * p[0].abs().sum()),
                [L, S, b], base_lr / max(spectral_norm_sq(S.T) * float(w.max()), 1.0), "AMTFL (L, S)", self.max_inner,
            )
            L, S, b = res.params
            thresholds = (alpha * losses(L, S, b)).detach()[:, None]
            Z = self._features(samples, L).detach()
            res = run_fista(
                self,
                lambda p: gamma / N * ops.amtfl_reconstruction_loss(Z, S, p[0], p[1]),
                lambda p, g, lr: [ops.prox_grad_step(p[0], g[0], lr, thresholds), plain_step(p[1], g[1], lr)],
                lambda p: float((thresholds * p[0].abs()).sum()),
                [A, c], 1.0 / max(2 * gamma / N * spectral_norm_sq(Z @ S), 1e-12), "AMTFL (A)", self.max_inner,
            )
            A, c = res.params
            history.append(objective(L, S, A, c, b))
            self.n_iter_ = outer + 1
            if abs(history[-2] - history[-1]) <= self.tol * max(abs(history[-2]), 1e-30):
                break
        self.converged_ = self.n_iter_ < self.max_outer
        self.L_, self.S_, self.A_ = L.cpu().numpy(), S.cpu().numpy(), A.cpu().numpy()
        self.recon_bias_ = c.cpu().numpy()
        self.transfer_matrix_ = (A @ S).cpu().numpy()
        self.objective_history_ = history
        return L @ S, b

    def decision_function(self, X):
        if self.hidden == "linear":
            return super().decision_function(X)
        from ._base import parse_inputs

        self._check_fitted()
        Xs, _, shared = parse_inputs(X, None, split="test")
        relu = lambda a: np.maximum(a, 0)  # noqa: E731
        if shared:
            return relu(Xs[0] @ self.L_) @ self.S_ + self.intercept_
        return [relu(x @ self.L_) @ self.S_[:, t] + self.intercept_[t] for t, x in enumerate(Xs)]
