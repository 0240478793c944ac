"""Quadratic smooth parts: g(W) = 0.5 <W, H W> - <W, B> + c, with H applied in Gram form.

- :class:`Quadratic`: what both engines take for the squared loss. :func:`~mtlkernels.optim.fista`
  tracks its values along the iterates from one Hessian product per iteration;
  :func:`~mtlkernels.optim.admm` uses its resolvent (H + r I)^{-1}, when it has one.
- :class:`TaskGram`: the Hessian of a multi-task squared loss, one Gram matrix per task
  (or one shared by every task) times a weight per task, with its eigendecomposition
  formed once: (H + r I)^{-1} then costs two batched matrix-vector products for any r
  and any task weights, which is what makes ADMM with a changing penalty parameter cheap
  on small, ill-conditioned problems.
- :func:`gram_matrix`: X^T X from the upper block triangle.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ._common import Params, _dot, _finite, _floats, _Point


def gram_matrix(X: Tensor, block: int | None = None) -> Tensor:
    """X^T X, exactly symmetric, from the upper block triangle only: for d >= 3 * block
    the column blocks' products above the diagonal are formed and mirrored, about
    (d + block) / (2 d) of the full product's work. ``block`` defaults to 256 from d = 768
    (else 128), where the block GEMMs are not too thin: ``benchmarks/results/gram_cpu.md``
    (``python benchmarks/bench_gram.py --threads 1``) has the ratios to ``X.T @ X``."""
    d = X.shape[1]
    if block is None:
        block = 256 if d >= 768 else 128
    if d < 3 * block:
        H = X.T @ X
        return (H + H.T) / 2
    H = X.new_empty(d, d)
    for i in range(0, d, block):
        rows = X[:, i:i + block].T @ X[:, i:]  # block rows i.., columns i..
        w = min(block, d - i)
        H[i:i + w, i:i + w] = (rows[:, :w] + rows[:, :w].T) / 2
        H[i:i + w, i + w:] = rows[:, w:]
        H[i + w:, i:i + w] = rows[:, w:].T
    return H


class TaskGram:
    """H acting on W (d, T) column by column: (H W)_t = c_t G_t w_t.

    ``G`` is one (d, d) Gram matrix shared by every task or a batch (T, d, d), symmetric
    positive semi-definite; ``weights`` (T,) are the task weights c_t (default 1). The
    eigendecomposition G_t = Q_t diag(lambda_t) Q_t^T is formed at the first
    :meth:`inverse` and shared by every :meth:`scaled` copy.
    """

    def __init__(self, G: Tensor, weights: Tensor | None = None, n_tasks: int | None = None):
        self.G = G
        self.shared = G.dim() == 2
        T = n_tasks if self.shared else G.shape[0]
        if weights is None and T is None:
            raise ValueError("TaskGram: a shared Gram matrix needs n_tasks or weights")
        self.c = weights if weights is not None else torch.ones(T, dtype=G.dtype, device=G.device)
        self._unit = weights is None  # every weight 1: no scaling in the products
        self._eig: list = [None]  # shared between scaled copies
        self._den = None

    def scaled(self, weights: Tensor) -> "TaskGram":
        """The same Gram matrices with task weights ``weights`` (no new factorisation)."""
        out = TaskGram(self.G, weights)
        out._eig = self._eig
        return out

    def _denominator(self, r: float) -> Tensor:
        """1 / (c_t lambda_ti + r), cached for the last r (ADMM changes r rarely)."""
        if self._den is None or self._den[0] != r:
            lam = self._eig[0][0]
            lamc = lam[:, None] * self.c if self.shared else lam * self.c[:, None]
            self._den = (r, 1.0 / (lamc + r))
        return self._den[1]

    def __call__(self, D: Tensor) -> Tensor:
        # per task as the row vector d_t^T G_t (G_t symmetric), the rows contiguous: the
        # fastest batched GEMM on CPU (a transposed view as the batch is 10x slower)
        HD = self.G @ D if self.shared else torch.bmm(D.T.contiguous().unsqueeze(1), self.G).squeeze(1).T
        return HD if self._unit else HD * self.c

    def eig(self) -> tuple[Tensor, Tensor]:
        if self._eig[0] is None:
            lam, Q = torch.linalg.eigh(self.G)
            self._eig[0] = (lam.clamp_min(0), Q, Q.mT.contiguous())
        lam, Q, _ = self._eig[0]
        return lam, Q

    def inverse(self, R: Tensor, r: float) -> Tensor:
        """(H + r I)^{-1} R for R shaped like W, r > 0."""
        self.eig()
        _, Q, Qt = self._eig[0]
        den = self._denominator(r)
        if self.shared:
            return Q @ ((Qt @ R) * den)
        q = torch.bmm(R.T.contiguous().unsqueeze(1), Q).squeeze(1) * den  # rows: (Q_t^T r_t)^T
        return torch.bmm(q.unsqueeze(1), Qt).squeeze(1).T

    def mean_eigenvalue(self) -> float:
        """trace(H) / (d T): a typical curvature (ADMM's first penalty parameter)."""
        tr = self.G.diagonal(0, -2, -1).sum(-1)
        T = self.c.numel()
        return float((tr * self.c).sum() / (self.G.shape[-1] * T)) if not self.shared else \
            float(tr * self.c.sum() / (self.G.shape[-1] * T))


class Quadratic:
    """The smooth part g(W) = 0.5 <W, H W> - <W, B> + c, with W the sum of the
    parameter blocks (one block for most methods; C + S for Adaptive Sharing).

    ``hess(D)`` applies H to a direction shaped like W (H symmetric positive
    semi-definite), ``linear`` is B and ``const`` is c. ``inverse(R, r)``, when given,
    returns (H + r I)^{-1} R (what :func:`~mtlkernels.optim.admm` needs); ``curvature``
    is a typical eigenvalue of H (ADMM's first penalty parameter).

    For the squared loss with a shared design, ||X W - Y||_F^2 / (2 n) has H = X^T X / n
    (the Gram matrix, formed once), B = X^T Y / n and c = ||Y||_F^2 / (2 n): see
    :meth:`least_squares`. In :func:`~mtlkernels.optim.fista` it costs one ``hess`` per
    iteration (two when the line search backtracks): the value and gradient at every
    trial and extrapolated point follow from the exact expansion
    g(W + D) = g(W) + <grad g(W), D> + 0.5 <D, H D>, so the line-search test is free of
    the cancellation a Gram-form value would have. Calling the object returns g(params)
    (a scalar tensor), so it also works wherever a plain smooth callable does.
    """

    def __init__(self, hess: Callable[[Tensor], Tensor], linear: Tensor, const: float = 0.0,
                 inverse: Callable[[Tensor, float], Tensor] | None = None, curvature: float | None = None):
        self.hess = hess
        self.linear = linear
        self.const = float(const)
        self.inverse = inverse
        self.curvature = curvature

    @classmethod
    def least_squares(cls, X: Tensor, Y: Tensor, gram: bool | None = None) -> "Quadratic":
        """||X W - Y||_F^2 / (2 n) for X (n, d) and Y (n, T). ``gram`` (default: d <= n)
        forms H = X^T X / n once (O(n d^2)), with a resolvent from its eigendecomposition
        (formed at first use); otherwise H is applied as X^T (X D) / n."""
        if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
            raise ValueError(f"least_squares needs X (n, d) and Y (n, T), got {tuple(X.shape)} and {tuple(Y.shape)}")
        n = max(X.shape[0], 1)
        if gram is None:
            gram = X.shape[1] <= X.shape[0]
        # (Y^T X)^T: one plain GEMM whether Y is stored (n, T) or as the transpose of (T, n)
        linear = (Y.mT @ X).mT.contiguous() / n
        const = float((Y.double() ** 2).sum()) / (2 * n)
        if gram:
            H = TaskGram(gram_matrix(X) / n, n_tasks=Y.shape[1])
            return cls(H, linear, const, H.inverse, H.mean_eigenvalue())

        def hess(D):
            return X.T @ (X @ D) / n
        return cls(hess, linear, const)

    def compose(self, A: Callable[[Tensor], Tensor], A_adjoint: Callable[[Tensor], Tensor]) -> "Quadratic":
        """g(A(P)) for a linear map A (with its adjoint): Hessian A* H A, linear term A* B.
        For W = L S: ``compose(lambda D: L @ D, lambda M: L.T @ M)`` is the problem in S
        with L fixed, ``compose(lambda D: D @ S, lambda M: M @ S.T)`` the one in L."""
        return Quadratic(lambda D: A_adjoint(self.hess(A(D))), A_adjoint(self.linear), self.const)

    def _w(self, params: Params) -> Tensor:
        W = params[0]
        for p in params[1:]:
            W = W + p
        return W

    def __call__(self, params: Params) -> Tensor:
        W = self._w(params)
        return 0.5 * (W * self.hess(W)).sum() - (W * self.linear).sum() + self.const

    def grad(self, W: Tensor) -> Tensor:
        """grad g at W (a matrix shaped like W, not a list of blocks)."""
        return self.hess(W) - self.linear

    def value_from_grad(self, W: Tensor, G: Tensor) -> Tensor:
        """g(W) from G = grad g(W) without another Hessian product: 0.5 <W, G - B> + c."""
        return 0.5 * _dot([W], [G - self.linear]) + self.const

    def resolvent(self, V: Params, r: float) -> tuple[Params, Tensor]:
        """argmin_X g(sum_i X_i) + r/2 sum_i ||X_i - V_i||^2 over the m blocks, and the
        gradient of g at the minimiser's sum. With s = sum_i X_i: (H + (r/m) I) s = B +
        (r/m) sum_i V_i, and X_i = V_i - grad g(s) / r (every block sees the same gradient)."""
        if self.inverse is None:
            raise ValueError("this Quadratic has no resolvent (inverse); use fista")
        m = len(V)
        sv = self._w(V)
        s = self.inverse(self.linear + (r / m) * sv, r / m)
        g = (r / m) * (sv - s)
        return [v - g / r for v in V], g

    # -- the protocol of fista: values and gradients along the iterates ---------------------
    def point(self, params: Params) -> _Point:
        W = self._w(params)
        HW = self.hess(W)
        whw, wb = _floats(_dot([W], [HW]), _dot([W], [self.linear]))
        f = 0.5 * whw - wb + self.const
        g = HW - self.linear
        return _Point(params, _finite(f, "at the starting point"), [g] * len(params), g)

    def trial(self, y: _Point, params: Params) -> _Point:
        D = self._w(params) - self._w(y.params)
        HD = self.hess(D)
        g = y.aux + HD
        f = y.f + _dot([y.aux], [D]) + 0.5 * _dot([D], [HD])  # a 0-dim tensor, read by the engine
        return _Point(params, f, [g] * len(params), g)

    def with_grad(self, p: _Point) -> _Point:
        return p

    def extrapolate(self, a: _Point, b: _Point, mom: float) -> _Point:
        params = [x + mom * (x - z) for x, z in zip(a.params, b.params)]
        D = self._w(a.params) - self._w(b.params)
        HD = a.aux - b.aux  # H D, from the two gradients
        g = a.aux + mom * HD
        f = a.f + mom * _dot([a.aux], [D]) + (0.5 * mom * mom) * _dot([D], [HD])
        return _Point(params, f, [g] * len(params), g)
