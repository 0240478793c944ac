"""Asymmetric Multi-task Feature Learning (AMTFL), the shallow model of Lee, Yang and Hwang (2018), eq. 6."""

from __future__ import annotations

import numpy as np
import torch

from .. import ops, reference
from ._base import MultiTaskLinear, task_losses
from ._blocks import OuterLoop, block_scale, grad_at, latent_l_quadratic, latent_s_quadratic, prox_residual, \
    solve_block, solve_block_mm
from ._amtfl_blocks import feedback_residual, feedback_step, recon_loss
from ._amtfl_newton import newton_ls_blocks
from ._newton import latent_newton_applies
from ._polish import POLISH_AFTER, keep_polished, polish
from ._reduced_newton import REDUCED_AFTER, amtfl_reduced_finish
from ._balance import SHEAR_MAX_LATENT, balance_scales, move_duals, rebalance, rotation_sweep, shear_period, \
    shear_sweep, valley_hint
from ..optim import Quadratic
from ._solve import latent_init, plain_step, squared_loss

# AMTFL's nonconvex (L, S, b) block (a classification loss, or the ReLU layer) by FISTA. With
# the linear layer at most LS_BLOCK_ITER steps an outer step: more of them crawl along the
# valley of W = L S, where the outer loop's exact valley moves and its next visit do better
# (the 24 small raw fits of benchmarks/research/amtfl_raw_classification.py: the same
# objectives and the same 14 fits at their optimum as with 2000 steps, 67 s instead of 517 s).
# With the ReLU layer up to max_iter steps, stopped once LS_BLOCK_ITER of them have lowered
# the objective by at most LS_STALL (relative): near a kink of the ReLU its steps shrink to
# ~1e-12 and 2000 of them gain ~1e-9 (3 tasks of 10-20 samples), while on school_like one
# long run still gains percents (5 outer steps: F 4575.50 with this rule; 4638.48 with a cap
# of 100 a visit, 4650 with restarts every 100 steps: a long run's momentum crosses kinks)
LS_BLOCK_ITER = 100
LS_STALL = 1e-9
# With proximal Newton blocks (the linear layer), this many FISTA steps on (L, S, b) together
# after them: moves of W = L S that exact blocks make by tiny steps (the 8 fits of
# benchmarks/research/amtfl_real_classification.py against the Newton blocks alone, 2026-11-27:
# 0.3-6 % lower on 5, 0.7 % higher on 1, in about the same time; school_like 69.5475 against 69.5585)
LS_JOINT_ITER = 20


class AMTFL(MultiTaskLinear):
    """Shallow AMTFL (Lee, Yang and Hwang, 2018, eq. 6):

        min_{L,S,A} sum_t (1 + alpha ||a_t^o||_1) L_t(L, s_t) + mu ||s_t||_1
                    + gamma ||Z - relu(Z S A + c)||_F^2 + lam ||L||_F^2 (+ l1_L ||L||_1)

    with Z = h(X L) the N x k features (h the identity, ``hidden="linear"``, as the
    paper uses on its synthetic data, or ReLU), S (k, T) the task weights on the
    features, A (T, k) the task-to-feature feedback, a_t^o its row t (task t's outgoing
    transfer, penalised in proportion to task t's loss so that unreliable tasks
    transfer little), and c a bias of the reconstruction (the paper's Fig. 2d). L_t is
    task t's loss (mean or sum over its samples, ``task_weighting``) plus the reliability
    term delta / sqrt(N_t) of sec. 3.2 (``delta``; it only enters through the weights of
    A). With ``task_weighting="mean"`` the Frobenius term is divided by N (every sample's
    reconstruction averaged, like the losses); with ``"sum"`` it is as printed. ``l1_L``
    adds the l1 on L the paper uses on its synthetic data (sec. 4.1).

    Which product is reconstructed: eq. 6 prints sigma(Z S A) and eq. 7 sigma(Z W A):
    both reconstruct the features from the *task outputs* Z S (N x T) through A. That
    is what ``ops.amtfl_reconstruction_loss(Z, S, A, c)`` computes. With T tasks and k << T
    features it is called as ``(Z, S A, I_k, c)``: the same value and (through autograd)
    gradients, with Z (S A) an N x k product instead of (Z S) A through N x T (``recon_loss``).

    Optimisation: block coordinate descent on the exact objective, each block to its
    optimum, until every block's KKT residual is at most ``tol`` (else a
    ``ConvergenceWarning``). For the squared loss and the linear hidden layer, the S-block
    and the L-block (A fixed, so the weights 1 + alpha ||a_t^o||_1 are constants) are the
    loss, a quadratic solved exactly, plus the reconstruction term, majorised at each
    step (``_blocks.solve_block_mm``: ADMM with the fused prox, ``ops.soft_threshold`` on
    S, ``ops.elastic_net_prox`` on L), so raw, ill-conditioned features do not slow
    them down; with A = 0 the reconstruction is free of S and a quadratic in L, solved with
    the loss exactly. With the logistic or squared-hinge loss and the linear layer, an S-step
    (with the intercepts) and an L-step by proximal Newton, the reconstruction in each step's
    model by its Gauss-Newton Hessian (``_amtfl_newton``), while their designs are small
    enough, then ``LS_JOINT_ITER`` FISTA steps on (L, S, b) together. Otherwise (L, S, b) is
    one block solved by FISTA (``ops.prox_grad_step``) in variables scaled by the diagonal of
    its Hessian (``_ls_block``), at most ``LS_BLOCK_ITER`` steps an outer step with the linear
    layer, with the ReLU layer until they stall (``LS_STALL``).
    Each outer step starts with moves along the valley of W = L S (``_valley_steps``).
    The (A, c) block (L, S fixed, so the losses L_t are constants; ``_amtfl_blocks``) is
    solved by Gauss-Newton on the ReLU's pattern, one Levenberg-Marquardt damping per
    feature, with one threshold alpha L_t per row of A; its residual takes a sample on the
    ReLU's kink as a corner (``feedback_residual``). A small problem (at most 256 unknowns)
    still unconverged after 5 outer steps is finished by projected Newton on every block at
    once (``_polish``; S and A as two non-negative parts each), kept where it lowers the
    residual (the linear hidden layer only); a larger one with the squared loss and A = 0
    after 50, by proximal Newton on S with L eliminated (``_reduced_newton``). L and S start
    from the SVD of single-task solutions (as for Go-MTL), A from the least-squares fit
    of Z by Z S; with ``warm_start=True`` every factor starts from the previous fit's.

    Learned: ``L_``, ``S_``, ``A_``, ``recon_bias_``, ``coef_`` (L S; exact for the
    linear hidden layer), ``transfer_matrix_`` = A S (T x T, the paper's Fig. 4h:
    entry (t, t') is what task t passes to task t' through the features),
    ``objective_history_``, ``n_iter_``, ``residual_``, ``block_residuals_``, ``converged_``.
    """

    def __init__(self, n_latent=6, alpha=0.1, mu=0.01, gamma=0.1, lam=0.01, l1_L=0.0, delta=0.0, hidden="linear",
                 loss="squared", fit_intercept=True, task_weighting="mean", max_outer=100, init_alpha=1e-3,
                 max_iter=2000, tol=1e-6, device="cpu", dtype="float64", warm_start=False, verbose=False):
        self.n_latent = n_latent
        self.alpha = alpha
        self.mu = mu
        self.gamma = gamma
        self.lam = lam
        self.l1_L = l1_L
        self.delta = delta
        self.hidden = hidden
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

    # Z for the task-major layout of the data: (n, k) shared or (T, n_max, k) stacked
    def _features(self, X, L):
        Z = X @ L
        return torch.relu(Z) if self.hidden == "relu" else Z

    def _predict(self, data, L, S, b):
        Z = self._features(data.X, L)
        P = (Z @ S).T if data.shared else torch.bmm(Z, S.T.unsqueeze(-1)).squeeze(-1)
        return P + b[:, None] if self.fit_intercept else P

    def _block_lr(self, params):
        return self._lr

    def _recon_weight(self, data) -> float:
        N = data.features().shape[0]
        return float(self.gamma) / N if getattr(self, "task_weighting", "mean") == "mean" else float(self.gamma)

    def objective(self, L, S, A, c, b, data) -> float:
        """The objective of eq. 6 (with the reliability term, l1_L and the chosen scaling),
        evaluated directly from the data (independently of the solver)."""
        Lt = task_losses(self.loss, self._predict(data, L, S, b), data) + self.delta / data.n_samples.sqrt()
        rec = self._recon_weight(data) * recon_loss(self._features(data.features(), L), S, A, c)
        return float(((1 + self.alpha * A.abs().sum(1)) * Lt).sum() + self.mu * S.abs().sum() + rec
                     + self.lam * (L**2).sum() + self.l1_L * L.abs().sum())

    def _fit(self, data, W0, b0):
        self._check_nonneg(alpha=self.alpha, mu=self.mu, gamma=self.gamma, lam=self.lam, l1_L=self.l1_L,
                           delta=self.delta)
        if self.hidden not in ("linear", "relu"):
            raise ValueError(f"hidden must be 'linear' or 'relu', got {self.hidden!r}")
        if not (isinstance(self.n_latent, (int, np.integer)) and self.n_latent > 0):
            raise ValueError(f"n_latent must be a positive integer, got {self.n_latent!r}")
        kw = {"dtype": data.X.dtype, "device": data.X.device}
        k, T, d = self.n_latent, data.n_tasks, data.n_features
        samples = data.features()  # every real sample once, for the reconstruction term
        N = samples.shape[0]
        alpha, mu, lam, l1_L = (float(v) for v in (self.alpha, self.mu, self.lam, self.l1_L))
        rw = self._recon_weight(data)
        reliability = self.delta / data.n_samples.sqrt()
        fit_b = self.fit_intercept
        sq = squared_loss(data, fit_b) if (self.loss == "squared" and self.hidden == "linear") else None
        if sq is not None and not (sq.exact and d * k <= 1024):
            sq = None
        newton = sq is None and self.hidden == "linear" and latent_newton_applies(self.loss, data, k)

        if self.warm_start and getattr(self, "A_", np.empty(0)).shape == (T, k) and self.L_.shape == (d, k):
            L, S, A, c, b = (torch.as_tensor(v, **kw) for v in (self.L_, self.S_, self.A_, self.recon_bias_,
                                                                  self.intercept_))
        else:
            L, S, b = latent_init(self, data, k)
            Z0 = self._features(samples, L)
            c, A = torch.zeros(k, **kw), torch.zeros(T, k, **kw)
            if N >= T:  # the least-squares fit of Z by Z S, unless it starts worse than A = 0 (Z S
                # near singular, e.g. dead ReLU features: entries of 1e14 and an objective to match)
                # gelsd (SVD): gelsy, the CPU default, gives results 1 ulp apart from one call to
                # the next (its buffers' alignment), which an unconverged fit amplifies
                A_ls = torch.linalg.lstsq(Z0 @ S, Z0, driver="gelsd" if Z0.device.type == "cpu" else None).solution
                if bool(torch.isfinite(A_ls).all()) and \
                        self.objective(L, S, A_ls, c, b, data) <= self.objective(L, S, A, c, b, data):
                    A = A_ls

        def task_L(L, S, b):
            return task_losses(self.loss, self._predict(data, L, S, b), data) + reliability

        def recon(L, S, A, c):
            return rw * recon_loss(self._features(samples, L), S, A, c)

        def smooth_total(L, S, A, c, b, f):
            return (f * task_L(L, S, b)).sum() + recon(L, S, A, c)  # the ridge on L is in prox_L

        def prox_S(x, g, lr):
            return ops.prox_grad_step(x, g, lr, mu)

        def prox_L(x, g, lr):
            return ops.prox_grad_step(x, g, lr, l1_L, 2 * lam)

        D = samples.pow(2).mean(0).sqrt()  # the columns' RMS, for the scaled (L, S, b) block
        D = torch.where(torch.isfinite(D) & (D > 0), D, torch.ones_like(D))[:, None]

        pen_S = lambda p: float(mu * p[0].abs().sum())  # noqa: E731
        pen_L = lambda p: float(lam * (p[0] ** 2).sum() + l1_L * p[0].abs().sum())  # noqa: E731
        def residuals(L, S, A, c, b):
            """Every block's KKT residual at this point (gradients by one autograd pass)."""
            f = 1 + alpha * A.abs().sum(1)
            with torch.enable_grad():
                P = [t.detach().requires_grad_(True) for t in (L, S, A, c, b)]
                gL, gS, gA, gc, gb = torch.autograd.grad(smooth_total(*P, f), P, allow_unused=True)
            gb = torch.zeros_like(b) if gb is None or sq is not None or not fit_b else gb
            thr = (alpha * task_L(L, S, b)).detach().reshape(-1)
            r_A = feedback_residual(self._features(samples, L).detach(), S, torch.cat([A, c[None, :]], 0), rw,
                                    torch.cat([thr, thr.new_zeros(1)])[:, None], scales["A"], float(self.tol))
            r_L = prox_residual(L, gL, None, prox_L)
            r_S = prox_residual(S, gS, None, prox_S)
            if sq is not None or newton:  # the intercepts are the S-block's variables (0 gradient: squared loss)
                r_S = (r_S**2 + float(gb.norm()) ** 2) ** 0.5
                return {"S": r_S / scales["S"], "L": r_L / scales["L"], "A": r_A}
            return {"LS": (r_L ** 2 + r_S ** 2 + float(gb.norm()) ** 2) ** 0.5 / scales["LS"], "A": r_A}

        history = [self.objective(L, S, A, c, b, data)]
        loop = OuterLoop(self, ("S", "L", "A") if sq is not None or newton else ("LS", "A"))
        scales = {}
        for outer in range(self.max_outer):
            # the transfer weights alpha L_t, for the ReLU layer's joint scales of (L, S, A, c) only
            weights = (alpha * task_L(L, S, b)).detach() if self.hidden == "relu" and bool(A.any()) else None
            L, S, A, c, M = self._valley_steps(samples, L, S, A, c, rw, weights, loop.warm,
                                               shear=outer % shear_period(k) == 0)
            move_duals(loop.warm, M, "AMTFL S-step", "AMTFL L-step")
            f = 1 + alpha * A.abs().sum(1)
            if sq is not None:
                qS = latent_s_quadratic(sq, L, f)
                scales.setdefault("S", block_scale(qS.linear))
                Z = self._features(samples, L)  # fixed while S moves
                prox_S_admm = lambda v, t: [ops.soft_threshold(v[0], t * mu)]  # noqa: E731
                prox_L_admm = lambda v, t: [ops.elastic_net_prox(v[0], t * l1_L, t * 2 * lam)]  # noqa: E731
                if bool(A.any()):
                    S, _, _ = solve_block_mm(self, qS, lambda s: rw * recon_loss(Z, s, A, c), prox_S_admm, prox_S,
                                             pen_S, S, "AMTFL S-step", scales["S"], loop.inner_tol, loop.warm)
                    qL = latent_l_quadratic(sq, S, f)
                    scales.setdefault("L", block_scale(qL.linear))
                    L, _, _ = solve_block_mm(self, qL, lambda m: recon(m, S, A, c), prox_L_admm, prox_L, pen_L, L,
                                             "AMTFL L-step", scales["L"], loop.inner_tol, loop.warm)
                else:  # A = 0: the reconstruction is w ||X L - 1 relu(c)^T||^2, free of S and quadratic in L
                    (S,) = solve_block(self, qS, prox_S_admm, lambda p, g, lr: [prox_S(p[0], g[0], lr)],
                                       lambda p: pen_S(p), [S], "AMTFL S-step", scales["S"], loop.inner_tol,
                                       loop.warm).params
                    qL = latent_l_quadratic(sq, S, f, extra=2 * rw * (samples.T @ samples))
                    scales.setdefault("L", block_scale(qL.linear))
                    rc = torch.relu(c)
                    qL = Quadratic(qL.hess, qL.linear + 2 * rw * torch.outer(samples.sum(0), rc),
                                   qL.const + rw * samples.shape[0] * float(rc @ rc), qL.inverse, qL.curvature)
                    if l1_L == 0 and lam > 0:  # a ridge only: the exact solve
                        L = qL.inverse(qL.linear, 2 * lam)
                    else:
                        (L,) = solve_block(self, qL, prox_L_admm, lambda p, g, lr: [prox_L(p[0], g[0], lr)],
                                           lambda p: pen_L(p), [L], "AMTFL L-step", scales["L"], loop.inner_tol,
                                           loop.warm).params
                b = sq.intercept(L @ S)
            elif newton:  # logistic, squared hinge, the linear layer: S then L by proximal Newton
                L, S, b = newton_ls_blocks(self, data, samples, L, S, A, c, b, f, rw, loop.inner_tol, scales,
                                           smooth_total)
                L, S, b = self._ls_block(data, samples, L, S, A, c, b, f, rw, smooth_total, D, loop.inner_tol, 1.0,
                                         cap=LS_JOINT_ITER)
            else:
                scales.setdefault("LS", 1.0)
                L, S, b = self._ls_block(data, samples, L, S, A, c, b, f, rw, smooth_total, D, loop.inner_tol,
                                         scales["LS"])
            # (A, c) with L, S fixed: the losses are constants, one l1 threshold alpha L_t per row of A
            thresholds = (alpha * task_L(L, S, b)).detach()[:, None]
            Z = self._features(samples, L).detach()
            if "A" not in scales:  # the gradient at A = 0, c = 0 with the ReLU's slope 1 (autograd's 0 there
                # would give no scale at all): 2 w [Z S, 1]^T Z
                P = torch.cat([Z @ S, torch.ones(Z.shape[0], 1, dtype=Z.dtype, device=Z.device)], 1)
                scales["A"] = block_scale(2 * rw * (P.T @ Z))
            A, c, _ = feedback_step(self, Z, S, A, c, rw, thresholds, scales["A"], loop.inner_tol, loop.warm)
            if sq is not None:  # extrapolation along the outer steps (b follows L S in closed form)
                ext = loop.extrapolate([L, S, A, c], lambda x: self.objective(*x, sq.intercept(x[0] @ x[1]), data))
                if ext is not None:
                    L, S, A, c = ext
                    b = sq.intercept(L @ S)
                    thresholds = (alpha * task_L(L, S, b)).detach()[:, None]
            history.append(loop.objective_here(lambda: self.objective(L, S, A, c, b, data)))
            res = residuals(L, S, A, c, b)
            if max(res.values()) > self.tol and outer + 1 == POLISH_AFTER:
                polished = self._polish(data, (L, S, A, c, b), task_L, residuals, sq, max(res.values()))
                if polished is not None:
                    (L, S, A, c, b), res = polished
                    history.append(self.objective(L, S, A, c, b, data))
            finished = None
            if max(res.values()) > self.tol and outer + 1 == REDUCED_AFTER and sq is not None:
                finished = amtfl_reduced_finish(self, sq, samples, rw, (L, S, A, c, b), residuals,
                                                lambda *p: self.objective(*p, data))
                if finished is not None:
                    (L, S, A, c, b), res = finished
                    history.append(self.objective(L, S, A, c, b, data))
            if loop.update(outer, res, history, joint=finished is not None):
                break
        self.L_, self.S_, self.A_ = L.cpu().numpy(), S.cpu().numpy(), A.cpu().numpy()
        self.recon_bias_ = c.cpu().numpy()
        self.transfer_matrix_ = (A @ S).cpu().numpy()
        self.objective_history_ = history
        self._convergence_hint = valley_hint(k)
        loop.finish()
        return L @ S, b

    def _polish(self, data, point, task_L, residuals, sq, start):
        """For a small problem, every block at once by projected Newton (``_polish``): S and A
        as l1 variables (L too with ``l1_L``), c free, the intercepts free (at their optimum for
        L S with the squared loss and the linear layer); the reconstruction through
        ``reference.amtfl_reconstruction_loss``, which has second derivatives (the fused op
        has first ones only). Returns ((L, S, A, c, b), residuals), or None (too large, or no
        better than ``start``, the alternation's residual)."""
        if self.hidden != "linear":  # relu(X L): kinks in every feature, no Hessian to trust
            return None
        L, S, A, c, b = point
        samples = data.features()
        rw, alpha, fit_b = self._recon_weight(data), float(self.alpha), self.fit_intercept and sq is None

        def unpack(v):
            bx = v["b"] if fit_b else (sq.intercept(v["L"] @ v["S"]) if sq is not None else b)
            return v["L"], v["S"], v["A"], v["c"], bx

        def fun(v, a):
            Lx, Sx, Ax, cx, bx = unpack(v)
            rec = reference.amtfl_reconstruction_loss(self._features(samples, Lx), Sx, Ax, cx)
            l1_L = self.l1_L * a["L"].sum() if self.l1_L > 0 else 0.0
            return (((1 + alpha * a["A"].sum(1)) * task_L(Lx, Sx, bx)).sum() + self.mu * a["S"].sum() + rw * rec
                    + self.lam * (Lx**2).sum() + l1_L)

        variables = {"L": L, "S": S, "A": A, "c": c} | ({"b": b} if fit_b else {})
        kinds = {"L": "l1" if self.l1_L > 0 else "free", "S": "l1", "A": "l1", "c": "free", "b": "free"}
        out = polish(fun, variables, kinds, lambda v: max(residuals(*unpack(v)).values()), float(self.tol))
        if out is None:
            return None
        new = unpack(out[0])
        if not keep_polished(start, out[1], self.objective(*point, data), self.objective(*new, data), self.tol):
            return None
        return new, residuals(*new)

    def _valley_steps(self, samples, L, S, A, c, rw, weights, warm, shear=True):
        """Moves along the valley of W = L S (the losses do not change). With the ReLU layer
        first the scales of the features with their reconstruction, (L diag(s), diag(s)^-1 S,
        A diag(s), c s): Z S is unchanged and relu is positively homogeneous, so the
        reconstruction term of feature i scales by s_i^2, the transfer weights' l1 (``weights``
        alpha L_t per row of A, None to skip this move) by s_i, exactly
        (``_balance.balance_scales``; with raw features of 1e6 the start put all the weight in
        A: an objective 20x the intercept-only one; with the linear layer the same move
        changed which local minimum 4 of the 24 small raw fits of amtfl_raw_classification.py
        reach, 2 lower and 2 higher, so not there). Then, A and c fixed (the reconstruction's target relu(Z S A + c) fixed, Z S being fixed), the exact
        best scales of the factors (relu(Z s) = relu(Z) s for s > 0, so also with the ReLU
        layer) and, for the linear layer, a sweep of exact shear steps
        (``_balance.shear_sweep``) and one of exact Givens rotations
        (``_balance.rotation_sweep``). Returns (L M^-1, M S, A, c, M)."""
        lam, l1_L, mu = float(self.lam), float(self.l1_L), float(self.mu)
        Z = self._features(samples, L)
        if weights is not None:
            a = lam * (L**2).sum(0) + rw * ((Z - torch.relu(Z @ (S @ A) + c)) ** 2).sum(0)
            s3 = balance_scales(a, l1_L * L.abs().sum(0) + (weights[:, None] * A.abs()).sum(0), mu * S.abs().sum(1))
            if bool((s3 != 1).any()):
                (L, S), A, c, Z = rebalance(L, S, s3), A * s3, c * s3, Z * s3  # relu(X L s) = relu(X L) s
                move_duals(warm, torch.diag(1 / s3), "AMTFL S-step", "AMTFL L-step")
                warm.pop("feedback", None)  # the (A, c) block's ADMM duals do not follow this move
        T0 = torch.relu(Z @ (S @ A) + c)
        a = lam * (L**2).sum(0) + rw * (Z**2).sum(0)
        b = l1_L * L.abs().sum(0) - 2 * rw * (Z * T0).sum(0)
        scales = balance_scales(a, b, mu * S.abs().sum(1))
        L, S = rebalance(L, S, scales)
        M = torch.diag(1 / scales)
        if shear and self.hidden == "linear" and self.n_latent <= SHEAR_MAX_LATENT:
            L, S, Ms = shear_sweep(L, S, lam, l1_L, mu, recon=(Z * scales, T0, rw))
            L, S, Q = rotation_sweep(L, S, mu, l1_L, recon=(self._features(samples, L), T0, rw))
            M = Q.to(M) @ Ms.to(M) @ M
        return L, S, A, c, M

    def _ls_block(self, data, samples, L, S, A, c, b, f, rw, smooth_total, D, tol, scale, cap=None):
        """(L, S, b) together by FISTA (``ops.prox_grad_step``), A and c fixed, in variables
        scaled to about unit curvature of the losses each: L = P_L U, S = P_S V, b = p_b beta
        (entrywise, from the diagonal of the Hessian at the ReLU's slope 1: P_L from the
        columns' RMS D, S and A, P_S from the features Z and A, p_b from the task weights),
        the penalties reweighted to match, so that raw features
        and factors out of balance do not hold every variable to the step of the stiffest."""
        lam, l1_L, mu = float(self.lam), float(self.l1_L), float(self.mu)
        w = f * data.task_weight * data.n_samples  # a task's loss curvature per unit of its predictions

        def inv_root(curv):  # 1 / sqrt(curvature), empty directions at the others' scale
            top = float(curv.max())
            return 1 / curv.clamp_min(1e-12 * top).sqrt() if top > 0 else torch.ones_like(curv)

        # the reconstruction's curvature too: 2 rw ||Z_i||^2 ||a_t||^2 for s_it, and for L_ji
        # 2 rw ||x_j||^2 ||e_i - (S A)_i||^2 (Z S A through L and S, the ReLU's slope as 1)
        N, k = samples.shape[0], S.shape[0]
        R = torch.eye(k, dtype=S.dtype, device=S.device) - S @ A
        msq = (self._features(samples, L) ** 2).mean(0)
        P_S = inv_root(msq[:, None] * (w + 2 * rw * N * (A**2).sum(1))[None, :])  # (k, T)
        P_L = inv_root(D**2 * ((S**2 * w).sum(1) + 2 * rw * N * (R**2).sum(1))[None, :])  # (d, k)
        p_b = inv_root(w)

        def prox_U(x, g, lr):  # the prox of l1_L |P_L x| + lam (P_L x)^2, entrywise
            return ops.prox_grad_step(x, g, lr, l1_L * P_L) / (1 + lr * 2 * lam * P_L**2)

        fit_b = self.fit_intercept
        self._lr = 1.0 / (3 + S.shape[0])  # FISTA's first step; its backtracking finds the right one
        U, V, beta = solve_block(
            self, lambda p: smooth_total(P_L * p[0], P_S * p[1], A, c, p_b * p[2], f), None,
            lambda p, g, lr: [prox_U(p[0], g[0], lr), ops.prox_grad_step(p[1], g[1], lr, mu * P_S),
                              plain_step(p[2], g[2], lr) if fit_b else p[2]],
            lambda p: float(lam * ((P_L * p[0]) ** 2).sum() + l1_L * (P_L * p[0]).abs().sum()
                            + mu * (P_S * p[1]).abs().sum()),
            [L / P_L, S / P_S, b / p_b], "AMTFL (L, S)", scale, tol,
            max_iter=self.max_iter if self.hidden == "relu" else min(self.max_iter, cap or LS_BLOCK_ITER),
            stall=(LS_BLOCK_ITER, LS_STALL)).params
        return P_L * U, P_S * V, p_b * beta

    def _raw_scores(self, X):
        """relu(X L) S + b with the ReLU hidden layer (Lee et al. 2018, eq. 6), else X W + b."""
        if self.hidden == "linear":
            return super()._raw_scores(X)
        return np.maximum(X @ self.L_, 0) @ self.S_ + self.intercept_
