"""Asymmetric Multi-task Learning (AMTL; Lee, Yang and Hwang, 2016), as written in
Lee, Yang and Hwang (2018), eq. 4."""

from __future__ import annotations

from dataclasses import replace

import torch

from .. import ops
from ._base import MultiTaskLinear, lipschitz_guess, task_losses
from ._balance import balance_scales, map_duals
from ._polish import POLISH_AFTER, POLISH_MAX_VARS, keep_polished, polish
from ._blocks import OuterLoop, block_scale, factor_quadratic, prox_residual, right_quadratic, solve_block
from ._hessian import amtl_hessian, task_loss_models
from ._newton import newton_applies, prox_newton
from ._solve import plain_step, squared_loss


class AMTL(MultiTaskLinear):
    """AMTL as written in Lee, Yang and Hwang (2018), eq. 4:

        min_{W,B} sum_t (1 + alpha ||b_t^o||_1) L_t(w_t) + gamma ||W - W B||_F^2 (+ mu ||W||_1),
        B_tt = 0 (and B >= 0 with ``nonneg=True``)

    b_t^o is row t of B, task t's outgoing transfer: its l1 weight grows with task t's
    loss, so hard tasks transfer less. L_t is task t's loss (mean or sum over its
    samples, ``task_weighting``) plus the reliability term delta / sqrt(N_t) of
    Lee, Yang and Hwang (2018), sec. 3.2 (``delta``; 0 by default), which only enters
    through the weights of B. ``mu`` adds an l1 penalty on W (0 recovers eq. 4 exactly).
    The paper drops the non-negativity on its synthetic data; set ``nonneg=False`` for that.

    Optimisation: block coordinate descent, each block solved to its optimum. W-step
    (B fixed, loss weights 1 + alpha ||b_t^o||_1 constants): for the squared loss, ADMM
    with exact solves of the two quadratic parts (per-task Gram matrices; gamma ||W (I -
    B)||^2 through the eigendecomposition of (I - B)(I - B)^T), prox ``ops.soft_threshold``;
    for the logistic and squared-hinge losses proximal Newton (``_newton.prox_newton``: each
    step's model, the per-task curvatures plus gamma ||W (I - B)||^2 as it is, by the same
    ADMM), FISTA where the per-task Gram matrices are too large. B-step (W, hence the losses, fixed):
    a lasso in B with Gram matrix 2 gamma W^T W, by ADMM with prox ``ops.soft_threshold``
    (one threshold alpha L_t per row), the zero diagonal and, if ``nonneg``, B >= 0.
    After the B-step (squared loss) each task's (w_t, b_t^o) takes its exact best scale
    (``_task_scales``: W B is unchanged), a direction the alternation crosses by tiny steps
    when the targets' scale is large. A small problem (at most 512 values, 256 unknowns
    with the squared loss; the Hessian from each task's loss to second order,
    ``_hessian.amtl_hessian``, the squared loss's intercepts at their optimum by a Schur
    complement) still unconverged after 5 outer steps is finished by projected Newton on
    (W, B) at once (``_polish``), kept where it lowers the residual or the objective. Stops
    when the KKT residuals of both blocks are at most ``tol``, else warns. Where a task's
    few samples can be fitted exactly, its row of B carries no penalty at that fit and the
    objective may have no minimiser (it keeps falling as B grows): the warning then names
    those tasks, and ``delta > 0`` penalises their rows whatever the fit. With the residuals at ``tol``, the
    slope of the W-block's objective along the scale of (W, b) (0 at its optimum: the block is
    convex and its l1 homogeneous) must be at most sqrt(tol) of it, else the fit warns: on
    raw columns the residual's scale (the gradient at W = 0) can hide a block far from its
    optimum.

    Learned: ``coef_`` (W), ``B_`` (n_tasks, n_tasks), ``objective_history_`` (per outer
    step), ``n_iter_`` (outer steps), ``residual_`` (the larger block residual),
    ``block_residuals_``, ``converged_``.
    """

    def __init__(self, mu=0.0, gamma=0.1, alpha=0.1, delta=0.0, nonneg=True, loss="squared", fit_intercept=True,
                 task_weighting="mean", max_outer=100, max_iter=2000, tol=1e-6, device="cpu", dtype="float64",
                 warm_start=False, verbose=False):
        self.mu = mu
        self.gamma = gamma
        self.alpha = alpha
        self.delta = delta
        self.nonneg = nonneg
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.task_weighting = task_weighting
        self.max_outer = max_outer
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.warm_start = warm_start
        self.verbose = verbose

    def _block_lr(self, params):
        return self._lr

    def objective(self, W, B, b, data) -> float:
        """The objective of eq. 4 (with the reliability term and mu), evaluated directly from the data."""
        Lt = task_losses(self.loss, data.predict(W, b if self.fit_intercept else None), data)
        Lt = Lt + self.delta / data.n_samples.sqrt()
        return float(((1 + self.alpha * B.abs().sum(1)) * Lt).sum() + self.gamma * ((W - W @ B) ** 2).sum()
                     + self.mu * W.abs().sum())

    def _task_scales(self, W, B, loss_at, warm):
        """(W diag(c), diag(c)^-1 B) for the best c > 0: W B is unchanged, so each task t's
        part of the objective is (1 + beta_t / c) L_t(c w_t) + gamma ||c w_t - v_t||^2
        (+ mu c ||w_t||_1), beta_t = alpha ||b_t^o||_1 and v_t = W b_t, neither changed by the
        other tasks' scales: with the squared loss (intercepts at their optimum) L_t(c w_t) is
        a quadratic in c, read off at c = 0, 1, 2, and the minimiser is
        :func:`_balance.balance_scales`'s. Alternating W- and B-steps move along these
        directions by a factor of about (1 + penalty / curvature) per outer step."""
        T = W.shape[1]
        ones = torch.ones(T, dtype=W.dtype, device=W.device)
        L0, L1, L2 = (loss_at(W * (v * ones)) for v in (0.0, 1.0, 2.0))  # per task, intercepts at their optimum
        a2 = (L2 - 2 * L1 + L0) / 2
        a1 = (a2 + L0 - L1) / 2
        beta = float(self.alpha) * B.abs().sum(1)
        V = W @ B
        gamma = float(self.gamma)
        a = a2 + gamma * (W * W).sum(0)
        bb = -2 * a1 + beta * a2 - 2 * gamma * (W * V).sum(0) + float(self.mu) * W.abs().sum(0)
        c = balance_scales(a.clamp_min(0), bb, (beta * L0).clamp_min(0))
        map_duals(warm, "AMTL W-step", lambda y: y / c)  # the blocks' ADMM duals follow the move
        map_duals(warm, "AMTL B-step", lambda y: y * c[:, None])
        return W * c, B / c[:, None]

    def _polish(self, W, B, b, data, losses, sq, residuals, start):
        """For a small problem, every block at once by projected Newton (``_polish``): B's
        off-diagonal entries >= 0 (or as l1 variables without ``nonneg``), W an l1 variable
        when mu > 0, the intercepts free (at their optimum for W with the squared loss), the
        exact task scales between the steps. Returns (W, B, b), or None when the problem is
        too large or the finish ends neither at a residual below ``start`` (the
        alternation's) nor at a lower objective (``keep_polished``)."""
        T = W.shape[1]
        mu, alpha, gamma = float(self.mu), float(self.alpha), float(self.gamma)
        fit_b = self.fit_intercept and sq is None
        parts = W.numel() * (2 if mu > 0 else 1) + T * (T - 1) * (1 if self.nonneg else 2)
        if sq is not None and parts > POLISH_MAX_VARS:
            # the squared loss's finish, closed-form Hessian or not, at its autograd size: on the
            # synthetic set of Lee et al. 2018 (300-500 parts) it added 2-10 s a fit for no fit
            # more at its optimum and a higher objective on 3 of 12 (2026-11-28)
            return None
        idx = (~torch.eye(T, dtype=torch.bool, device=W.device)).reshape(-1).nonzero().squeeze(1)

        def full(v):  # T x T with v off the diagonal
            return torch.zeros(T * T, dtype=v.dtype, device=v.device).index_add(0, idx, v).reshape(T, T)

        def point(v):
            Bx = full(v["B"])
            bx = v["b"] if fit_b else (sq.intercept(v["W"]) if sq is not None else b)
            return v["W"], Bx, bx

        def fun(v, a):
            Wx, Bx, bx = point(v)
            l1_w = mu * a["W"].sum() if mu > 0 else 0.0
            return (((1 + alpha * full(a["B"]).sum(1)) * losses(Wx, bx)).sum() + gamma * ((Wx - Wx @ Bx) ** 2).sum()
                    + l1_w)

        def hessian(v):  # from each task's loss to second order (``_hessian.amtl_hessian``)
            Wx, Bx, bx = point(v)
            if sq is not None and self.fit_intercept:  # b_t at its optimum for w_t: the Schur complement
                g, H = task_loss_models(self.loss, data, Wx, bx)
                d = Wx.shape[0]
                H = H[:, :d, :d] - H[:, :d, d:] * H[:, d:, :d] / H[:, d:, d:].clamp_min(torch.finfo(H.dtype).tiny)
                return amtl_hessian(g[:, :d], H, Wx, Bx, idx, alpha, gamma)
            g, H = task_loss_models(self.loss, data, Wx, bx if fit_b else None)
            return amtl_hessian(g, H, Wx, Bx, idx, alpha, gamma)

        def move(v):  # the exact best scale of each task's (w_t, row t of B), as between the blocks
            Wx, Bx = self._task_scales(v["W"], full(v["B"]), lambda V: losses(V, sq.intercept(V)), {})
            return {"W": Wx, "B": Bx.reshape(-1)[idx]}

        variables = {"W": W, "B": B.reshape(-1)[idx]} | ({"b": b} if fit_b else {})
        kinds = {"W": "l1" if mu > 0 else "free", "B": "nonneg" if self.nonneg else "l1", "b": "free"}
        out = polish(fun, variables, kinds, lambda v: max(residuals(*point(v)).values()), float(self.tol),
                     move=move if sq is not None and mu == 0 and self.nonneg else None,
                     hessian=hessian)
        if out is None:
            return None
        Wn, Bn, bn = point(out[0])
        # never at a higher objective (an unbounded or degenerate problem): the alternation's point
        if not keep_polished(start, out[1], self.objective(W, B, b, data), self.objective(Wn, Bn, bn, data), self.tol):
            return None
        return Wn, Bn, bn

    def _fit(self, data, W0, b0):
        self._check_nonneg(mu=self.mu, gamma=self.gamma, alpha=self.alpha, delta=self.delta)
        loop = OuterLoop(self, ("W", "B"))
        kw = {"dtype": data.X.dtype, "device": data.X.device}
        d, T = data.n_features, data.n_tasks
        W = W0 if W0 is not None else torch.zeros(d, T, **kw)
        b = b0 if b0 is not None else torch.zeros(T, **kw)
        B = torch.as_tensor(self.B_, **kw) if (W0 is not None and hasattr(self, "B_")) else torch.zeros(T, T, **kw)
        I = torch.eye(T, **kw)
        off_diag = 1 - I  # B_tt = 0
        fit_b, mu, gamma, alpha = self.fit_intercept, float(self.mu), float(self.gamma), float(self.alpha)
        reliability = self.delta / data.n_samples.sqrt()
        sq = squared_loss(data, fit_b) if self.loss == "squared" else None
        if sq is not None and not sq.exact:
            sq = None  # too many features for exact solves: the W-step by FISTA through autograd
        newton = sq is None and newton_applies(self, data)
        self._lr = lipschitz_guess(data, self.loss)

        def losses(W, b):
            return task_losses(self.loss, data.predict(W, b if fit_b else None), data) + reliability

        def prox_B(V, thresholds):
            out = ops.soft_threshold(V, thresholds).mul_(off_diag)
            return out.clamp_(min=0) if self.nonneg else out

        def w_parts(B):
            """The W-block's smooth parts for this B: the weighted losses and gamma ||W (I - B)||^2."""
            f = 1 + alpha * B.abs().sum(1)
            R = I - B
            recon = right_quadratic(2 * gamma * (R @ R.T), torch.zeros(d, T, **kw))
            if sq is not None:
                return f, [sq.quadratic(f), recon], sq.linear * f
            return f, recon, None

        def w_grad(W, b, B, with_b=False):
            """The W-block's gradient in W (and in the intercepts, ``with_b``; 0 for the squared
            loss, whose intercepts are at their optimum for W)."""
            f, parts, _ = w_parts(B)
            if sq is not None:
                g = parts[0].grad(W) + parts[1].grad(W)
                return (g, torch.zeros_like(b)) if with_b else g
            with torch.enable_grad():
                Wg, bg = W.detach().requires_grad_(True), b.detach().requires_grad_(fit_b)
                val = (f * losses(Wg, bg)).sum() + gamma * ((Wg - Wg @ B) ** 2).sum()
                g = torch.autograd.grad(val, [Wg, bg] if fit_b else [Wg])
            return (g[0], g[1] if fit_b else torch.zeros_like(b)) if with_b else g[0]

        def w_residual(W, b, B, scale):
            """The W-block's KKT residual, with the intercepts' gradient (they are its variables too)."""
            g, gb = w_grad(W, b, B, with_b=True)
            r = prox_residual(W, g, None, lambda x, gg, lr: ops.prox_grad_step(x, gg, lr, mu))
            return (r * r + float(gb.norm()) ** 2) ** 0.5 / scale

        def scale_slope(W, b, B):
            """d/dc of the W-block's objective at (c W, c b), c = 1, relative to it: 0 at the
            block's optimum (convex, with an l1 term homogeneous in c)."""
            g, gb = w_grad(W, b, B, with_b=True)
            value = self.objective(W, B, b, data)  # B's penalty is in the weights f: the W-block's
            return (float((g * W).sum() + (gb * b).sum()) + mu * float(W.abs().sum())) / max(abs(value), 1e-300)

        def b_residual(W, B, b):
            K = 2 * gamma * (W.T @ W)
            thr = (alpha * losses(W, b)).detach()[:, None]
            return prox_residual(B, K @ B - K, None, lambda x, g, lr: prox_B(x - lr * g, lr * thr)) / block_scale(K)

        def w_scale(b, B, lin):
            """The W-block's residual scale: its smooth part's gradient at W = 0."""
            return block_scale(lin) if sq is not None else block_scale(w_grad(torch.zeros(d, T, **kw), b, B))

        def residuals(W, B, b):
            f, parts, lin = w_parts(B)
            return {"W": w_residual(W, b, B, w_scale(b, B, lin)), "B": b_residual(W, B, b)}

        def b_step(W, b, B, warm):
            """B to its optimum (W, hence the losses, fixed): gamma ||W - W B||^2 = 0.5 <B, K B> -
            <B, K> + gamma ||W||^2, one l1 threshold alpha L_t per row. Returns (B, residual, scale)."""
            thresholds = (alpha * losses(W, b)).detach()[:, None]
            K = 2 * gamma * (W.T @ W)
            scale = block_scale(K)
            res = solve_block(self, factor_quadratic((2 * gamma) ** 0.5 * W, K, gamma * float((W**2).sum())),
                              lambda v, t: [prox_B(v[0], t * thresholds)],
                              lambda p, g, lr: [prox_B(p[0] - lr * g[0], lr * thresholds)],
                              lambda p: float((thresholds * p[0].abs()).sum()), [B], "AMTL B-step", scale,
                              loop.inner_tol, warm)
            return res.params[0], res.residual, scale

        history = [self.objective(W, B, b, data)]
        for outer in range(self.max_outer):
            # W-step (B fixed)
            f, parts, lin = w_parts(B)
            scale_w = w_scale(b, B, lin)
            if sq is not None:
                res = solve_block(self, parts, lambda v, t: [ops.soft_threshold(v[0], t * mu)],
                                  lambda p, g, lr: [ops.prox_grad_step(p[0], g[0], lr, mu)],
                                  lambda p: float(mu * p[0].abs().sum()), [W], "AMTL W-step", scale_w, loop.inner_tol,
                                  loop.warm)
                W = res.params[0]
                b = sq.intercept(W)
            elif newton:  # logistic, squared hinge: proximal Newton (``_newton``), the weights f in the
                # losses and gamma ||W (I - B)||^2 in every step's model as it is
                res = prox_newton(self, replace(data, weight=data.weight * f[:, None]),
                                  lambda v, t: [ops.soft_threshold(v[0], t * mu)],
                                  lambda p, g, lr: [ops.prox_grad_step(p[0], g[0], lr, mu)],
                                  lambda p: float(mu * p[0].abs().sum()), [W], b, "AMTL W-step", fit_b,
                                  tol=loop.inner_tol, extra=parts, scale=scale_w)
                W, b = res.params[0], res.b
            else:
                res = solve_block(
                    self, lambda p: (f * losses(p[0], p[1])).sum() + gamma * ((p[0] - p[0] @ B) ** 2).sum(),
                    None, lambda p, g, lr: [ops.prox_grad_step(p[0], g[0], lr, mu),
                                            plain_step(p[1], g[1], lr) if fit_b else p[1]],
                    lambda p: float(mu * p[0].abs().sum()), [W, b], "AMTL W-step", scale_w, loop.inner_tol)
                W, b = res.params
            B, r_b, scale_b = b_step(W, b, B, loop.warm)
            if sq is not None:  # the exact best scale of each task's (w_t, row t of B) (``_balance``)
                W, B = self._task_scales(W, B, lambda V: losses(V, sq.intercept(V)), loop.warm)
                b = sq.intercept(W)
                thresholds = (alpha * losses(W, b)).detach()[:, None]
                r_b = prox_residual(B, 2 * gamma * (W.T @ (W @ B - W)), None,
                                    lambda x, g, lr: prox_B(x - lr * g, lr * thresholds)) / scale_b
            if sq is not None:  # extrapolation along the outer steps (b follows W in closed form)
                ext = loop.extrapolate([W, B], lambda x: self.objective(x[0], x[1], sq.intercept(x[0]), data),
                                       lambda x: [x[0], prox_B(x[1], 0.0)])
                if ext is not None:
                    W, B = ext
                    b = sq.intercept(W)
                    thresholds = (alpha * losses(W, b)).detach()[:, None]
                    r_b = prox_residual(B, 2 * gamma * (W.T @ (W @ B - W)), None,
                                        lambda x, g, lr: prox_B(x - lr * g, lr * thresholds)) / scale_b
            history.append(loop.objective_here(lambda: self.objective(W, B, b, data)))
            res = {"W": w_residual(W, b, B, scale_w), "B": r_b}
            if max(res.values()) > self.tol and outer + 1 == POLISH_AFTER:
                polished = self._polish(W, B, b, data, losses, sq, residuals, max(res.values()))
                if polished is not None:
                    W, B, b = polished
                    history.append(self.objective(W, B, b, data))
                    res = residuals(W, B, b)
            if loop.update(outer, res, history):
                break
        self.B_ = B.cpu().numpy()
        self.objective_history_ = history
        # a task whose samples a linear model can fit exactly: its loss can reach 0, and with
        # it the penalty on its row of B (the objective may then fall as B grows, no minimiser)
        exact = (data.n_samples <= d + int(fit_b)).nonzero().flatten().tolist()
        self._convergence_hint = (f"; tasks {exact} have at most n_features{' + 1' if fit_b else ''} samples, so "
                                  f"their losses can reach 0 and with them the penalty on their rows of B: the "
                                  f"objective may have no minimiser (B growing without bound); delta > 0 (the "
                                  f"reliability term) penalises those rows whatever the fit" if exact and self.delta == 0 else "")
        slope = scale_slope(W, b, B) if loop.converged else 0.0
        if abs(slope) > float(self.tol) ** 0.5:  # the residual's scale hid a block far from its optimum
            loop.converged = False
            loop.detail = (f"a KKT residual of {max(loop.residuals.values()):.3g} <= tol={self.tol:g}, but an "
                           f"objective that still changes along the scale of (W, b): d/dc F(c W, c b) at c = 1 is "
                           f"{slope:.2g} of F (raw columns of very different scales make the gradient at W = 0, "
                           f"the residual's scale, large next to the gradient at the fit)")
            self._convergence_hint += "; a lower tol, or standardised columns, would take it further"
        loop.finish()
        return W, b
