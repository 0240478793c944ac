"""What every feature-based multi-task estimator shares: input handling, losses,
prediction and scoring, in scikit-learn's conventions.

Input, to ``fit``, ``predict``, ``decision_function`` and ``score``:
- a shared design ``X`` (n_samples, n_features) with ``Y`` (n_samples, n_tasks) (or a
  1-D ``y`` for one task);
- one ``(X_t, y_t)`` pair per task, as two lists (tasks may have different sample
  counts);
- a :class:`mtlkernels.datasets.MultiTaskDataset` (its training split for ``fit``).

Losses: ``squared`` 0.5 (z - y)^2, ``logistic`` log(1 + exp(-y z)), ``squared_hinge``
max(0, 1 - y z)^2, with classification labels in {0, 1} or {-1, +1}. Task t's loss L_t
is the mean over its samples (``task_weighting="mean"``, the default) or their sum
(``"sum"``: the form of MALSAR and of the AMTFL paper's objectives, so that published
regularisation weights apply as printed); the objective sums L_t over tasks.

Convergence: every estimator stops when the KKT residual of its objective (of each block
for the alternating ones) is at most ``tol``, exposes ``n_iter_``, ``residual_`` and
``converged_``, and emits scikit-learn's ``ConvergenceWarning`` when an iteration limit
comes first, naming the residual reached and the parameter to raise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor

LOSSES = ("squared", "logistic", "squared_hinge")
TASK_WEIGHTINGS = ("mean", "sum")


@dataclass
class TaskData:
    """Training data of T tasks in a task-major layout.

    shared: ``X`` is (n, d) and every task sees every sample; else ``X`` is
    (T, n_max, d), zero-padded, with ``mask`` (T, n_max) marking real samples.
    ``Y`` is (T, n) (targets, or labels in {-1, +1}); ``weight`` (T, n) is
    mask * c_t, so that sum(weight * loss) is task t's loss L_t, with ``task_weight``
    c_t = 1 / n_t (``task_weighting="mean"``) or 1 (``"sum"``); ``n_samples`` (T,) holds n_t.
    """

    X: Tensor
    Y: Tensor
    weight: Tensor
    shared: bool
    task_weight: Tensor | None = None
    n_samples: Tensor | None = None
    _XT: Tensor | None = field(default=None, repr=False)

    @property
    def n_tasks(self) -> int:
        return self.Y.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[-1]

    def features(self) -> Tensor:
        """Every real sample's features, stacked (N, d) (no padding rows)."""
        return self.X if self.shared else self.X[self.weight > 0]

    def predict(self, W: Tensor, b: Tensor | None = None) -> Tensor:
        """Task-major predictions Z (T, n): z_ti = x_ti^T w_t + b_t.

        Computed as W^T X^T (per task: w_t^T X_t^T) with X^T kept contiguous (made at the
        first call): forward and backward are then plain (batched) GEMMs. (X W)^T and
        bmm(X, w) have backward passes on transposed operands, 3-4x slower on CPU."""
        if self._XT is None:
            self._XT = (self.X.T if self.shared else self.X.transpose(1, 2)).contiguous()
        if self.shared:
            Z = W.T @ self._XT
        else:
            Z = torch.bmm(W.T.contiguous().unsqueeze(1), self._XT).squeeze(1)
        return Z if b is None else Z + b[:, None]


def elementwise_loss(kind: str, Z: Tensor, Y: Tensor) -> Tensor:
    if kind == "squared":
        return 0.5 * (Z - Y) ** 2
    if kind == "logistic":
        return torch.nn.functional.softplus(-Y * Z)
    if kind == "squared_hinge":
        return torch.clamp(1 - Y * Z, min=0) ** 2
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")


def task_losses(kind: str, Z: Tensor, data: TaskData) -> Tensor:
    """Per-task mean loss, a (T,) tensor."""
    return (data.weight * elementwise_loss(kind, Z, data.Y)).sum(1)


def _finite_2d(a, name: str) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = np.asarray(a, dtype=np.float64)  # no copy when it already is float64
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} has no samples")
    if a.size and not (np.isfinite(a.min()) and np.isfinite(a.max())):  # NaN propagates to min/max
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _targets(y, name: str) -> np.ndarray:
    if isinstance(y, Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y, dtype=np.float64)
    if not np.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or inf")
    return y


def parse_inputs(X, Y=None, *, split: str = "train"):
    """Normalise the accepted input forms to (list of X_t, list of y_t or None, shared: bool)."""
    from ..datasets import MultiTaskDataset

    if isinstance(X, MultiTaskDataset):
        if Y is not None:
            raise ValueError("pass either a MultiTaskDataset or (X, Y), not both")
        Xs, ys = X.split(split)
        return Xs, ys, X.shared
    if isinstance(X, (list, tuple)):
        Xs = [_finite_2d(x, f"X[{t}]") for t, x in enumerate(X)]
        if not Xs:
            raise ValueError("X is an empty list of tasks")
        d = Xs[0].shape[1]
        for t, x in enumerate(Xs):
            if x.shape[1] != d:
                raise ValueError(f"X[{t}] has {x.shape[1]} features but X[0] has {d}")
        ys = None
        if Y is not None:
            if not isinstance(Y, (list, tuple)) or len(Y) != len(Xs):
                raise ValueError(f"with a list of {len(Xs)} task designs, Y must be a list of as many target vectors")
            ys = []
            for t, (x, y) in enumerate(zip(Xs, Y)):
                y = _targets(y, f"Y[{t}]").reshape(-1)
                if len(y) != len(x):
                    raise ValueError(f"task {t}: X has {len(x)} samples but y has {len(y)}")
                ys.append(y)
        return Xs, ys, False
    X = _finite_2d(X, "X")
    if Y is None:
        return [X], None, True
    Y = _targets(Y, "Y")
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must be (n_samples, n_tasks) with n_samples = {X.shape[0]}, got shape {Y.shape}")
    return [X], [Y[:, t] for t in range(Y.shape[1])], True


class MultiTaskLinear(BaseEstimator):
    """Base of the feature-based estimators: fitted W (n_features, n_tasks), intercepts.

    Subclasses implement ``_fit(data, W0, b0) -> (W, b)`` (tensors), may set further
    learned attributes, and declare ``_default_loss``.
    """

    _classification_losses = ("logistic", "squared_hinge")

    # -- helpers for subclasses -------------------------------------------------
    def _torch_kwargs(self):
        dtype = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32,
                 torch.float64: torch.float64}.get(self.dtype)
        if dtype is None:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return {"dtype": dtype, "device": torch.device(self.device)}

    def _is_classifier(self) -> bool:
        return self.loss in self._classification_losses

    def _encode_labels(self, ys: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        self.label_encoding_ = None
        for t, y in enumerate(ys):
            values = set(np.unique(y).tolist())
            if len(values) < 2:
                raise ValueError(f"task {t} has a single class {sorted(values)}: a classifier needs both")
            if values <= {0.0, 1.0}:
                enc = "01"
            elif values <= {-1.0, 1.0}:
                enc = "pm1"
            else:
                raise ValueError(f"task {t}: labels must be in {{0, 1}} or {{-1, +1}}, got {sorted(values)[:5]}")
            if self.label_encoding_ not in (None, enc):
                raise ValueError("mix of {0, 1} and {-1, +1} labels across tasks")
            self.label_encoding_ = enc
            out.append(2 * y - 1 if enc == "01" else y)
        return out

    def _task_data(self, Xs, ys, shared) -> TaskData:
        kw = self._torch_kwargs()
        mean = getattr(self, "task_weighting", "mean") == "mean"
        if shared:
            X = torch.as_tensor(Xs[0], **kw)
            Y = torch.as_tensor(np.stack(ys), **kw)
            n = torch.full((Y.shape[0],), float(X.shape[0]), **kw)
        else:
            T, d = len(Xs), Xs[0].shape[1]
            n_max = max(len(x) for x in Xs)
            X = torch.zeros(T, n_max, d, **kw)
            Y = torch.zeros(T, n_max, **kw)
            mask = torch.zeros(T, n_max, **kw)
            for t, (x, y) in enumerate(zip(Xs, ys)):
                X[t, : len(x)] = torch.as_tensor(x, **kw)
                Y[t, : len(y)] = torch.as_tensor(y, **kw)
                mask[t, : len(y)] = 1.0
            n = torch.tensor([float(len(y)) for y in ys], **kw)
        c = 1.0 / n if mean else torch.ones_like(n)
        weight = c[:, None].expand_as(Y).clone() if shared else mask * c[:, None]
        return TaskData(X, Y, weight, shared, c, n)

    def _check_common(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter > 0):
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        if not self.tol > 0:
            raise ValueError(f"tol must be positive, got {self.tol!r}")
        if getattr(self, "task_weighting", "mean") not in TASK_WEIGHTINGS:
            raise ValueError(f"task_weighting must be one of {TASK_WEIGHTINGS}, got {self.task_weighting!r}")

    def _check_nonneg(self, **values):
        for name, v in values.items():
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and non-negative, got {v!r}")

    def _converged(self, converged: bool, n_iter: int, residual: float, limit: str) -> None:
        """Record ``n_iter_``, ``residual_`` and ``converged_``; warn when ``limit`` (the
        name of the iteration cap that ran out) stopped the solver before ``tol``."""
        self.n_iter_, self.residual_, self.converged_ = int(n_iter), float(residual), bool(converged)
        if not converged:
            warnings.warn(
                f"{type(self).__name__} stopped after {n_iter} iterations ({limit}={getattr(self, limit)}) with a "
                f"KKT residual of {residual:.3g} > tol={self.tol:g}: the result is not at the optimum of its "
                f"objective; raise {limit} (or tol)", ConvergenceWarning, stacklevel=3)

    def _progress(self, total, desc):
        if not self.verbose:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False)

    # -- scikit-learn API -------------------------------------------------------
    def fit(self, X, Y=None):
        """Fit on a shared X with Y (n_samples, n_tasks), per-task lists, or a MultiTaskDataset."""
        self._check_common()
        Xs, ys, shared = parse_inputs(X, Y)
        if ys is None:
            raise ValueError("fit needs targets Y (or a MultiTaskDataset)")
        if self._is_classifier():
            ys = self._encode_labels(ys)
        data = self._task_data(Xs, ys, shared)
        kw = self._torch_kwargs()
        warm = self.warm_start and hasattr(self, "coef_") and self.coef_.shape == (data.n_features, data.n_tasks)
        W0 = torch.as_tensor(self.coef_, **kw) if warm else None
        b0 = torch.as_tensor(self.intercept_, **kw) if warm else None
        W, b = self._fit(data, W0, b0)
        self.coef_ = W.detach().cpu().numpy()
        self.intercept_ = (b if b is not None else torch.zeros(data.n_tasks)).detach().cpu().numpy()
        self.n_features_in_ = data.n_features
        self.n_tasks_ = data.n_tasks
        return self

    def _check_fitted(self):
        if not hasattr(self, "coef_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def decision_function(self, X):
        """Scores: (n_samples, n_tasks) for a shared X, or a list of (n_t,) arrays for per-task X."""
        self._check_fitted()
        Xs, _, shared = parse_inputs(X, None, split="test")
        for x in Xs:
            if x.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {x.shape[1]} features but the model was fitted with {self.n_features_in_}")
        if shared:
            return Xs[0] @ self.coef_ + self.intercept_
        if len(Xs) != self.n_tasks_:
            raise ValueError(f"got {len(Xs)} task designs but the model has {self.n_tasks_} tasks")
        return [x @ self.coef_[:, t] + self.intercept_[t] for t, x in enumerate(Xs)]

    def _to_labels(self, s):
        pos = s > 0
        if self.label_encoding_ == "01":
            return pos.astype(np.float64)
        return np.where(pos, 1.0, -1.0)

    def predict(self, X):
        """Predictions in the training targets' form (labels in the same encoding for classifiers)."""
        s = self.decision_function(X)
        if not self._is_classifier():
            return s
        return self._to_labels(s) if isinstance(s, np.ndarray) else [self._to_labels(v) for v in s]

    def score(self, X, Y=None):
        """Mean over tasks of the accuracy (classifiers) or of R^2 (regression)."""
        from ..datasets import MultiTaskDataset

        if isinstance(X, MultiTaskDataset):
            Xs, ys = X.split("test")
            X, Y = (Xs[0], np.stack(ys, 1)) if X.shared else (Xs, ys)
        pred = self.predict(X)
        if isinstance(pred, np.ndarray):
            Y = np.asarray(Y, dtype=np.float64).reshape(pred.shape)
            cols = [(pred[:, t], Y[:, t]) for t in range(pred.shape[1])]
        else:
            cols = [(p, np.asarray(y, dtype=np.float64).reshape(-1)) for p, y in zip(pred, Y)]
        if self._is_classifier():
            return float(np.mean([np.mean(p == y) for p, y in cols]))
        r2 = [1 - np.sum((p - y) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-300) for p, y in cols]
        return float(np.mean(r2))

    def task_rmse(self, X, Y=None) -> np.ndarray:
        """Root mean squared error per task (regression)."""
        from ..datasets import MultiTaskDataset

        if isinstance(X, MultiTaskDataset):
            Xs, ys = X.split("test")
            X, Y = (Xs[0], np.stack(ys, 1)) if X.shared else (Xs, ys)
        pred = self.decision_function(X)
        if isinstance(pred, np.ndarray):
            return np.sqrt(np.mean((pred - np.asarray(Y).reshape(pred.shape)) ** 2, axis=0))
        return np.array([np.sqrt(np.mean((p - np.asarray(y).reshape(-1)) ** 2)) for p, y in zip(pred, Y)])


def lipschitz_guess(data: TaskData, loss: str) -> float:
    """A step size 1/L to start backtracking from: L ~ curvature * max_t c_t ||X_t||_2^2."""
    curv = {"squared": 1.0, "logistic": 0.25, "squared_hinge": 2.0}[loss]
    if data.shared:
        L = spectral_norm_sq(data.X) * float(data.task_weight.max())
    else:
        L = float((task_spectral_norms_sq(data.X) * data.task_weight).max())
    return 1.0 / max(curv * L, 1e-12)


def task_spectral_norms_sq(X: Tensor, iters: int = 30) -> Tensor:
    """||X_t||_2^2 for a batch X (T, n, d), by batched power iteration (from below, within a few %)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(X.shape[0], X.shape[2], 1, generator=g, dtype=torch.float64).to(X.device, X.dtype)
    val = torch.ones(X.shape[0], dtype=X.dtype, device=X.device)
    for _ in range(iters):
        w = torch.bmm(X.transpose(1, 2), torch.bmm(X, v))
        val = w.norm(dim=(1, 2))
        v = w / val.clamp_min(1e-300)[:, None, None]
    return val


def spectral_norm_sq(X: Tensor, iters: int = 30) -> float:
    """||X||_2^2 by power iteration on X^T X (an estimate from below, within a few %)."""
    if X.numel() == 0:
        return 1.0
    g = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(X.shape[1], 1, generator=g, dtype=torch.float64).to(X.device, X.dtype)
    val = 0.0
    for _ in range(iters):
        w = X.T @ (X @ v)
        val = float(w.norm())
        if val == 0:
            return 1.0
        v = w / val
    return val
