"""Latent-basis multi-task models W = L S: their alternating solver, and Go-MTL (Kumar and
Daume III, 2012; Lee, Yang and Hwang, 2018, eq. 3). The multi-task attribute model with
groups (Abdulnabi, Wang, Lu and Jia, 2015, eq. 2) is in ``attribute.py``."""

from __future__ import annotations

import numpy as np
import torch

from .. import ops
from ._base import MultiTaskLinear, lipschitz_guess, spectral_norm_sq, task_losses
from ._blocks import OuterLoop, block_scale, grad_at, latent_l_quadratic, latent_s_quadratic, prox_residual, \
    solve_block
from ._balance import SHEAR_MAX_LATENT, balance_scales, move_duals, rebalance, rotation_sweep, shear_period, \
    shear_sweep, valley_hint
from ._hessian import latent_data_hessian, latent_quadratic_hessian
from ._polish import POLISH_AFTER, autograd_hessian, keep_polished, polish
from ._reduced_newton import REDUCED_AFTER, reduced_finish
from ._newton import l_block_data, l_block_gram, latent_newton_applies, prox_newton, s_block_data
from ._solve import latent_init, plain_step, squared_loss


class _LatentFactorMTL(MultiTaskLinear):
    """Alternating minimisation over S (with L fixed) and L (with S fixed), each block a
    convex problem solved to its optimum (Abdulnabi et al., 2015, Algorithm 1; Kumar and
    Daume III, 2012). For the squared loss both blocks are quadratics with exact solves
    (ADMM with the fused prox, or a closed form for a ridge-only L), so the features'
    scales and singular per-task Gram matrices do not slow them down; the logistic and
    squared-hinge losses solve each block by proximal Newton (``_newton``: the designs X_t L
    and x_ti kron s_t), FISTA when the L-block's design is too large. Between the blocks the
    factors move along the valley of W = L S (``_balance``: the exact best scales, exact
    shear steps and, with an l1 on S, exact Givens rotations), which the alternation alone crosses by tiny steps. L and S start from the
    SVD of the stacked single-task solutions. A small problem (at most
    ``_polish.POLISH_MAX_VARS_EXACT`` unknowns: the data term's Hessian comes from
    (weighted) per-task Gram matrices, ``_hessian``) still unconverged after
    ``_polish.POLISH_AFTER`` outer steps is finished by projected Newton on (L, S, b) at once
    (``_polish``: an l1 term as two non-negative parts, a group norm smooth on its nonzero
    groups, its zero groups held at zero; saddle-free Newton steps tried too, as the
    penalties along the valley's rotations curve the objective downwards), kept where it
    lowers the residual or clearly the objective (``_polish.keep_polished``). The loop
    stops when the KKT residuals of both blocks (with the intercepts' gradient) are at
    most ``tol`` (``block_residuals_``) and the objective has stopped falling (``_blocks.OuterLoop``),
    else warns. Subclasses give the proximal maps and penalties."""

    def _prox_S(self, S, g, lr):
        raise NotImplementedError

    def _prox_S_admm(self, V, t):
        raise NotImplementedError

    def _prox_L(self, L, g, lr):
        raise NotImplementedError

    def _prox_L_admm(self, V, t):
        raise NotImplementedError

    def _penalty_S(self, S) -> float:
        raise NotImplementedError

    def _penalty_L(self, L) -> float:
        raise NotImplementedError

    def _scale_terms(self, L, S):
        """(a, b, e) per latent component: the penalties of column i of L scaled by c are
        a_i c^2 + b_i c, those of row i of S scaled by 1 / c are e_i / c (``_balance``)."""
        raise NotImplementedError

    def _shear(self, L, S):
        """Exact steps along the shears of the valley (``_balance.shear_sweep``) where the
        penalties allow them: (L M^-1, M S, M); by default none."""
        return L, S, torch.eye(S.shape[0], dtype=S.dtype, device=S.device)

    def _ridge_only_L(self) -> float | None:
        """The ridge weight r when the L-penalty is (r / 2) ||L||^2 alone (a closed-form L-step)."""
        return None

    def _block_lr(self, params):
        return self._lr

    def _init_factors(self, data):
        kw = {"dtype": data.X.dtype, "device": data.X.device}
        d, T = data.n_features, data.n_tasks
        if self.warm_start and hasattr(self, "L_") and self.L_.shape == (d, self.n_latent) and self.S_.shape[1] == T:
            return (torch.as_tensor(self.L_, **kw), torch.as_tensor(self.S_, **kw),
                    torch.as_tensor(self.intercept_, **kw))
        return latent_init(self, data, self.n_latent)

    def objective(self, L, S, b, data) -> float:
        """The objective, evaluated directly from the data (independently of the solver)."""
        Lt = task_losses(self.loss, data.predict(L @ S, b if self.fit_intercept else None), data)
        return float(Lt.sum()) + self._penalty_S(S) + self._penalty_L(L)

    def _polish_kinds(self, S):
        """The kinds of L and S for ``_polish.polish`` ("free", "l1"), or None where the
        penalties are not smooth on a box around S (by default)."""
        return None

    def _polish_held(self, S):
        """A boolean mask of the entries of S that ``_polish`` keeps at zero, or None."""
        return None

    def _reduced(self, data, L, S, b, loss, losses, start):
        """The finish of ``_reduced_newton`` (the squared loss, l1 on S, a ridge on L only):
        ((L, S, b), residuals) when kept, else None. Go-MTL's; None by default."""
        return None

    def _smooth_penalty(self, v: dict, a: dict):
        """The penalties as a tensor from the values ``v`` and absolute values ``a`` of
        ``_polish`` (smooth on its box)."""
        raise NotImplementedError

    def _residuals(self, data, L, S, b, loss, losses) -> dict:
        """Both blocks' KKT residuals at (L, S, b), measured as the outer loop measures them."""
        if loss is not None:
            qS, qL = latent_s_quadratic(loss, L), latent_l_quadratic(loss, S)
            return {"S": prox_residual(S, qS.grad(S), None, self._prox_S) / block_scale(qS.linear),
                    "L": prox_residual(L, qL.grad(L), None, self._prox_L) / block_scale(qL.linear)}
        scale_s = block_scale(grad_at(lambda p: losses(L, p[0], b), [torch.zeros_like(S)])[0])
        scale_l = block_scale(grad_at(lambda p: losses(p[0], S, b), [torch.zeros_like(L)])[0])
        gL, gS, gb = grad_at(lambda p: losses(*p), [L, S, b])
        r_s = prox_residual(S, gS, None, self._prox_S) / scale_s
        if self.fit_intercept:
            r_s = (r_s**2 + (float(gb.norm()) / scale_s) ** 2) ** 0.5
        return {"S": r_s, "L": prox_residual(L, gL, None, self._prox_L) / scale_l}

    def _polish(self, data, L, S, b, loss, losses, start):
        """For a small problem, both blocks at once by projected Newton (``_polish``), the
        intercepts free (at their optimum for L S with the squared loss), the entries of S
        that ``_polish_held`` names kept at zero. Returns ((L, S, b), residuals), or None
        (too large, or no better than ``start``)."""
        kinds = self._polish_kinds(S)
        if kinds is None:
            return None
        fit_b = self.fit_intercept and loss is None
        held = self._polish_held(S)
        keep = None if held is None or not bool(held.any()) else ~held  # the entries of S among the unknowns

        def full_S(s):  # S from its entries among the unknowns
            return s if keep is None else torch.zeros(S.shape, dtype=s.dtype, device=s.device).masked_scatter(keep, s)

        def whole(v):  # values (or absolute values) with S whole
            return v | ({"S": full_S(v["S"])} if "S" in v else {})

        def point(v):
            Lx, Sx = v["L"], full_S(v["S"])
            return Lx, Sx, v["b"] if fit_b else (loss.intercept(Lx @ Sx) if loss is not None else b)

        def fun(v, a):
            Lx, Sx, bx = point(v)
            return losses(Lx, Sx, bx) + self._smooth_penalty(whole(v), whole(a))

        def move(v):  # the exact valley moves of the outer loop: best scales, then shears
            Lx, Sx = rebalance(v["L"], full_S(v["S"]), balance_scales(*self._scale_terms(v["L"], full_S(v["S"]))))
            Lx, Sx, _ = self._shear(Lx, Sx)
            return v | {"L": Lx, "S": Sx if keep is None else Sx[keep]}  # (a move off the held zeros: dropped)

        variables = {"L": L, "S": S if keep is None else S[keep]} | ({"b": b} if fit_b else {})
        sizes = [x.numel() for x in variables.values()]
        # the unknowns among (vec L, vec S, b): the data term's Hessian is formed for S whole
        index = None if keep is None else torch.cat([
            torch.arange(L.numel(), device=S.device), L.numel() + keep.reshape(-1).nonzero().squeeze(1),
            L.numel() + S.numel() + torch.arange(b.numel() if fit_b else 0, device=S.device)])

        def hessian(v):  # the data term's exact Hessian from (weighted) Gram matrices (``_hessian``)
            a = whole({n: x.detach().abs() for n, x in v.items()})  # the penalties are linear in these

            def penalty(flat):
                parts = dict(zip(v, (c.reshape(x.shape) for c, x in zip(torch.split(flat, sizes), v.values()))))
                return self._smooth_penalty(whole(parts), a) + 0 * flat.sum()  # a graph even without lam

            Lx, Sx = v["L"], full_S(v["S"])
            data_h = (latent_quadratic_hessian(loss, Lx, Sx) if loss is not None
                      else latent_data_hessian(self.loss, data, Lx, Sx, v["b"] if fit_b else None))
            if index is not None:
                data_h = data_h[index][:, index]
            return data_h + autograd_hessian(penalty, torch.cat([x.reshape(-1) for x in v.values()]))

        out = polish(fun, variables, kinds | {"b": "free"},
                     lambda v: max(self._residuals(data, *point(v), loss, losses).values()), float(self.tol), move=move,
                     hessian=hessian, saddle_free=True)  # the valley's rotations: negative curvature
        if out is None:
            return None
        Ln, Sn, bn = point(out[0])
        if not keep_polished(start, out[1], self.objective(L, S, b, data), self.objective(Ln, Sn, bn, data), self.tol):
            return None
        return (Ln, Sn, bn), self._residuals(data, Ln, Sn, bn, loss, losses)

    def _fit(self, data, W0, b0):
        if not (isinstance(self.n_latent, (int, np.integer)) and self.n_latent > 0):
            raise ValueError(f"n_latent must be a positive integer, got {self.n_latent!r}")
        L, S, b = self._init_factors(data)
        fit_b = self.fit_intercept
        name = type(self).__name__
        loss = squared_loss(data, fit_b) if self.loss == "squared" else None
        if loss is not None and not (loss.exact and loss.gram.G.shape[-1] * self.n_latent <= 1024):
            loss = None  # too large for exact block solves: FISTA through autograd
        self._lr = lipschitz_guess(data, self.loss)

        def losses(L, S, b):
            return task_losses(self.loss, data.predict(L @ S, b if fit_b else None), data).sum()

        newton = loss is None and latent_newton_applies(self.loss, data, self.n_latent)
        history = [self.objective(L, S, b, data)]
        loop = OuterLoop(self, ("S", "L"))
        for outer in range(self.max_outer):
            # S-step (L fixed): the l1 of Go-MTL or the group lasso of Abdulnabi et al.
            if loss is not None:
                qS = latent_s_quadratic(loss, L)
                scale_s = block_scale(qS.linear)
                (S,) = solve_block(self, qS, lambda v, t: [self._prox_S_admm(v[0], t)],
                                   lambda p, g, lr: [self._prox_S(p[0], g[0], lr)], lambda p: self._penalty_S(p[0]),
                                   [S], f"{name} S-step", scale_s, loop.inner_tol, loop.warm).params
            elif newton:  # logistic, squared hinge: proximal Newton on the design X_t L (``_newton``)
                scale_s = block_scale(grad_at(lambda p: losses(L, p[0], b), [torch.zeros_like(S)])[0])
                res = prox_newton(self, s_block_data(data, L), lambda v, t: [self._prox_S_admm(v[0], t)],
                                  lambda p, g, lr: [self._prox_S(p[0], g[0], lr)], lambda p: self._penalty_S(p[0]),
                                  [S], b, f"{name} S-step", fit_b, tol=loop.inner_tol, scale=scale_s)
                S, b = res.params[0], res.b
            else:
                self._lr = lipschitz_guess(data, self.loss) / max(spectral_norm_sq(L), 1e-12)
                scale_s = block_scale(grad_at(lambda p: losses(L, p[0], b), [torch.zeros_like(S)])[0])
                S, b = solve_block(
                    self, lambda p: losses(L, p[0], p[1]), None,
                    lambda p, g, lr: [self._prox_S(p[0], g[0], lr), plain_step(p[1], g[1], lr) if fit_b else p[1]],
                    lambda p: self._penalty_S(p[0]), [S, b], f"{name} S-step", scale_s, loop.inner_tol).params
            # moves along the valley of this L S: the best scales of the factors (closed form)
            # and exact shear steps (``_balance``); the blocks' ADMM duals follow them
            scales = balance_scales(*self._scale_terms(L, S))
            L, S = rebalance(L, S, scales)
            M = torch.diag(1 / scales)
            if outer % shear_period(self.n_latent) == 0:
                L, S, Ms = self._shear(L, S)
                M = Ms.to(M) @ M
            move_duals(loop.warm, M, f"{name} S-step", f"{name} L-step")
            # L-step (S fixed)
            if loss is not None:
                qL = latent_l_quadratic(loss, S)
                scale_l = block_scale(qL.linear)
                ridge = self._ridge_only_L()
                if ridge is not None and ridge > 0:  # (K + ridge I) vec(L) = vec(B S^T)
                    L = qL.inverse(qL.linear, ridge)
                    r_l = float((qL.grad(L) + ridge * L).norm()) / scale_l
                else:
                    res = solve_block(self, qL, lambda v, t: [self._prox_L_admm(v[0], t)],
                                      lambda p, g, lr: [self._prox_L(p[0], g[0], lr)], lambda p: self._penalty_L(p[0]),
                                      [L], f"{name} L-step", scale_l, loop.inner_tol, loop.warm)
                    L, r_l = res.params[0], res.residual
                b = loss.intercept(L @ S)
                ext = loop.extrapolate([L, S], lambda x: self.objective(x[0], x[1], loss.intercept(x[0] @ x[1]), data))
                if ext is not None:  # a move along the outer steps: the L-block residual is measured anew
                    L, S = ext
                    b = loss.intercept(L @ S)
                    gL = latent_l_quadratic(loss, S).grad(L)
                    r_l = prox_residual(L, gL, None, self._prox_L) / scale_l
                gS = latent_s_quadratic(loss, L).grad(S)
            elif newton:  # the L-block as one linear model in vec(L) (features x_ti kron s_t)
                shape = L.shape
                scale_l = block_scale(grad_at(lambda p: losses(p[0], S, b), [torch.zeros_like(L)])[0])
                res = prox_newton(
                    self, l_block_data(data, S, b if fit_b else None),
                    lambda v, t: [self._prox_L_admm(v[0].reshape(shape), t).reshape(-1, 1)],
                    lambda p, g, lr: [self._prox_L(p[0].reshape(shape), g[0].reshape(shape), lr).reshape(-1, 1)],
                    lambda p: self._penalty_L(p[0].reshape(shape)), [L.reshape(-1, 1)], b.new_zeros(1),
                    f"{name} L-step", False, tol=loop.inner_tol, scale=scale_l, gram=l_block_gram(data, S))
                L = res.params[0].reshape(shape)
                r_l = prox_residual(L, grad_at(lambda p: losses(p[0], S, b), [L])[0], None, self._prox_L) / scale_l
                gS, gb = grad_at(lambda p: losses(L, p[0], p[1]), [S, b])
            else:
                self._lr = lipschitz_guess(data, self.loss) / max(spectral_norm_sq(S.T), 1e-12)
                scale_l = block_scale(grad_at(lambda p: losses(p[0], S, b), [torch.zeros_like(L)])[0])
                res = solve_block(self, lambda p: losses(p[0], S, b), None,
                                  lambda p, g, lr: [self._prox_L(p[0], g[0], lr)], lambda p: self._penalty_L(p[0]),
                                  [L], f"{name} L-step", scale_l, loop.inner_tol)
                L, r_l = res.params[0], res.residual
                gS, gb = grad_at(lambda p: losses(L, p[0], p[1]), [S, b])
            r_s = prox_residual(S, gS, None, self._prox_S) / scale_s
            if loss is None and fit_b:  # the intercepts (an S-step's variables with these losses) at their optimum
                r_s = (r_s**2 + (float(gb.norm()) / scale_s) ** 2) ** 0.5
            history.append(loop.objective_here(lambda: self.objective(L, S, b, data)))
            res = {"S": r_s, "L": r_l}
            if max(res.values()) > self.tol and outer + 1 == POLISH_AFTER:
                polished = self._polish(data, L, S, b, loss, losses, max(res.values()))
                if polished is not None:
                    (L, S, b), res = polished
                    history.append(self.objective(L, S, b, data))
            finished = None
            if loss is not None and max(res.values()) > self.tol and outer + 1 == REDUCED_AFTER:
                finished = self._reduced(data, L, S, b, loss, losses, max(res.values()))
                if finished is not None:
                    (L, S, b), res = finished
                    history.append(self.objective(L, S, b, data))
            if loop.update(outer, res, history, joint=finished is not None):
                break
        self.L_ = L.cpu().numpy()
        self.S_ = S.cpu().numpy()
        self.objective_history_ = history
        self._convergence_hint = valley_hint(self.n_latent)
        loop.finish()
        return L @ S, b


class GoMTL(_LatentFactorMTL):
    """Go-MTL (Kumar and Daume III, 2012), as written in Lee, Yang and Hwang (2018), eq. 3:

        min_{L,S} sum_t L_t(L s_t) + mu ||s_t||_1 + lam ||L||_F^2 (+ l1_L ||L||_1)

    with L (n_features, n_latent) the shared bases and S (n_latent, n_tasks) sparse
    combinations; L_t is task t's loss (mean or sum over its samples, ``task_weighting``).
    ``l1_L`` adds the l1 on L that Lee, Yang and Hwang (2018), sec. 4.1, put on every model
    with an L on their synthetic data (0, eq. 3 exactly, by default).
    Alternating exact blocks: S by ADMM with prox ``ops.soft_threshold`` (squared loss;
    proximal Newton, or FISTA with ``ops.prox_grad_step``, otherwise), L in closed form
    (squared loss, no l1: the ridge system (K + 2 lam I) vec(L) = vec(B S^T)), else by ADMM /
    proximal Newton / FISTA with the elastic-net prox; valley moves between them. With the
    squared loss and no l1 on L, a fit still above ``tol`` after 50 outer steps is finished by
    proximal Newton on S with L eliminated (``_reduced_newton``).
    Learned: ``L_``, ``S_``, ``coef_`` = L S, ``intercept_``, ``objective_history_`` (per
    outer step), ``n_iter_`` (outer steps), ``residual_``, ``block_residuals_``, ``converged_``.
    """

    def __init__(self, n_latent=5, mu=0.1, lam=0.1, l1_L=0.0, loss="squared", fit_intercept=True,
                 task_weighting="mean", max_outer=200, init_alpha=1e-3, max_iter=2000, tol=1e-6, device="cpu",
                 dtype="float64", warm_start=False, verbose=False):
        self.n_latent = n_latent
        self.mu = mu
        self.lam = lam
        self.l1_L = l1_L
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
        self._check_nonneg(mu=self.mu, lam=self.lam, l1_L=self.l1_L)
        return super()._fit(data, W0, b0)

    def _prox_S(self, S, g, lr):
        return ops.prox_grad_step(S, g, lr, float(self.mu))

    def _prox_S_admm(self, V, t):
        return ops.soft_threshold(V, t * float(self.mu))

    def _prox_L(self, L, g, lr):
        return ops.prox_grad_step(L, g, lr, float(self.l1_L), 2.0 * self.lam)  # lam ||L||^2 = (2 lam)/2 ||L||^2

    def _prox_L_admm(self, V, t):
        return ops.elastic_net_prox(V, t * float(self.l1_L), t * 2.0 * self.lam)

    def _ridge_only_L(self):
        return 2.0 * float(self.lam) if self.l1_L == 0 else None

    def _penalty_S(self, S):
        return float(self.mu * S.abs().sum())

    def _penalty_L(self, L):
        return float(self.lam * (L**2).sum() + self.l1_L * L.abs().sum())

    def _scale_terms(self, L, S):
        return self.lam * (L**2).sum(0), self.l1_L * L.abs().sum(0), self.mu * S.abs().sum(1)

    def _shear(self, L, S):
        if self.n_latent > SHEAR_MAX_LATENT:
            return super()._shear(L, S)
        L, S, M = shear_sweep(L, S, float(self.lam), float(self.l1_L), float(self.mu))
        L, S, Q = rotation_sweep(L, S, float(self.mu), float(self.l1_L))  # the Frobenius term is invariant
        return L, S, Q.to(M) @ M

    def _polish_kinds(self, S):
        return {"L": "l1" if self.l1_L > 0 else "free", "S": "l1"}

    def _reduced(self, data, L, S, b, loss, losses, start):
        if self.l1_L != 0:
            return None
        out = reduced_finish(loss, L, S, self.lam, self.mu, lambda Lx, Sx: max(
            self._residuals(data, Lx, Sx, b, loss, losses).values()), float(self.tol))
        if out is None:
            return None
        new = (out[0], out[1], loss.intercept(out[0] @ out[1]))
        if not keep_polished(start, out[2], self.objective(L, S, b, data), self.objective(*new, data), self.tol):
            return None
        return new, self._residuals(data, *new, loss, losses)

    def _smooth_penalty(self, v, a):
        l1 = self.l1_L * a["L"].sum() if "L" in a else 0.0
        return self.mu * a["S"].sum() + self.lam * (v["L"] ** 2).sum() + l1
