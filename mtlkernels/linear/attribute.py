"""Multi-task attribute learning with a latent task matrix and attribute groups (Abdulnabi,
Wang, Lu and Jia, 2015, eq. 2), on the alternating solver of ``latent.py``."""

from __future__ import annotations

import numpy as np
import torch

from .. import ops
from ._balance import SHEAR_MAX_LATENT, shear_sweep
from .latent import _LatentFactorMTL


class LatentTaskMTL(_LatentFactorMTL):
    """Multi-task attribute learning with a latent task matrix (Abdulnabi, Wang, Lu and Jia,
    2015, eq. 2):

        min_{L,S} sum_m L_m(L s_m) + mu sum_k sum_g ||s_k^g||_2 + gamma ||L||_1 + lam ||L||_F^2

    W = L S with L (n_features, n_latent) the latent tasks and S (n_latent, n_tasks).
    ``groups`` labels each task (attribute) with its group; s_k^g is row k of S
    restricted to group g's attributes, so attributes of one group share latent
    dimensions and groups compete for them. ``groups=None`` puts all attributes in one
    group (each row of S is a group: the "M" variant without group information).

    Algorithm 1 of the paper alternates an S-step and an L-step by APG; for the S-step
    it smooths the mixed norm (SPGD). Here the S-step uses the exact proximal map of
    this disjoint-group norm (``ops.group_soft_threshold`` / ``ops.group_prox_grad_step``
    with the group labels), so no smoothing parameter is needed and the solution is
    exact; the L-step the l1 + Frobenius prox (``ops.elastic_net_prox``). For the squared
    loss both blocks are solved by ADMM with exact solves; for the paper's squared hinge
    loss (the default) by proximal Newton (FISTA when the L-block's design, d x n_latent
    features for every sample, is too large). The paper sums the hinge terms over samples with a factor
    1/2; ``task_weighting="sum"`` sums (our hinge term has no 1/2: a rescaling of mu,
    gamma, lam), ``"mean"`` (default) averages per task.
    """

    def __init__(self, n_latent=5, mu=0.1, gamma=0.01, lam=0.01, groups=None, loss="squared_hinge",
                 fit_intercept=True, task_weighting="mean", max_outer=200, init_alpha=1e-3, max_iter=2000, tol=1e-6,
                 device="cpu", dtype="float64", warm_start=False, verbose=False):
        self.n_latent = n_latent
        self.mu = mu
        self.gamma = gamma
        self.lam = lam
        self.groups = groups
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.task_weighting = task_weighting
        self.max_outer = max_outer
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

    def _prox_S_admm(self, V, t):
        return ops.group_soft_threshold(V, t * float(self.mu), dim=1, groups=self._labels)

    def _prox_L(self, L, g, lr):
        return ops.prox_grad_step(L, g, lr, float(self.gamma), 2.0 * self.lam)

    def _prox_L_admm(self, V, t):
        return ops.elastic_net_prox(V, t * float(self.gamma), t * 2.0 * self.lam)

    def _ridge_only_L(self):
        return 2.0 * float(self.lam) if self.gamma == 0 else None

    def _group_norms(self, S):
        """||s_k^g||_2 for every row k of S and group g, a (n_latent, n_groups) tensor."""
        if self._labels is None:
            return S.norm(dim=1, keepdim=True)
        G = int(self._labels.max()) + 1
        return torch.zeros(S.shape[0], G, dtype=S.dtype, device=S.device).index_add(1, self._labels, S * S).sqrt()

    def _penalty_S(self, S):
        """mu * sum_k sum_g ||s_k^g||_2 (the value of the penalty, for the objective)."""
        return float(self.mu * self._group_norms(S).sum())

    def _polish_kinds(self, S):
        # the group norms are smooth away from 0: S free, its (nearly) zero groups held at 0
        return {"L": "l1" if self.gamma > 0 else "free", "S": "free"}

    def _polish_held(self, S):
        norms = self._group_norms(S)
        zero = norms <= 1e-8 * float(norms.max().clamp_min(1e-300))  # (n_latent, n_groups)
        return zero.expand_as(S) if self._labels is None else zero[:, self._labels]

    def _smooth_penalty(self, v, a):
        l1 = self.gamma * a["L"].sum() if "L" in a else 0.0
        return self.mu * self._group_norms(v["S"]).sum() + self.lam * (v["L"] ** 2).sum() + l1

    def _penalty_L(self, L):
        return float(self.gamma * L.abs().sum() + self.lam * (L**2).sum())

    def _scale_terms(self, L, S):
        return self.lam * (L**2).sum(0), self.gamma * L.abs().sum(0), self.mu * self._group_norms(S).sum(1)

    def _shear(self, L, S):
        if self.n_latent > SHEAR_MAX_LATENT:
            return super()._shear(L, S)
        groups = np.zeros(S.shape[1], dtype=np.int64) if self._labels is None else self._labels.cpu().numpy()
        return shear_sweep(L, S, float(self.lam), float(self.gamma), float(self.mu), groups=groups)
