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
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from . import _inputs

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
    offset: Tensor | None = None  # (T, n) added to every prediction (a block solve's fixed part)
    _XT: Tensor | None = field(default=None, repr=False)
    _samples: Tensor | None = field(default=None, repr=False)

    @property
    def n_tasks(self) -> int:
        return self.Y.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[-1]

    def features(self) -> Tensor:
        """Every real sample's features, stacked (N, d) (no padding rows; made at the first call)."""
        if self._samples is None:
            self._samples = self.X if self.shared else self.X[self.weight > 0]
        return self._samples

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
        if self.offset is not None:
            Z = Z + self.offset
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


class MultiTaskLinear(BaseEstimator):
    """Base of the feature-based estimators: fitted W (n_features, n_tasks), intercepts.

    Subclasses implement ``_fit(data, W0, b0) -> (W, b)`` (tensors), may set further
    learned attributes, and declare ``_default_loss``.
    """

    _classification_losses = ("logistic", "squared_hinge")

    # -- helpers for subclasses -------------------------------------------------
    def _torch_kwargs(self):
        return {"dtype": torch_dtype(self.dtype), "device": check_device(self.device)}

    def _is_classifier(self) -> bool:
        return self.loss in self._classification_losses

    def _task_data(self, Xs, ys, shared) -> TaskData:
        kw = self._torch_kwargs()
        mean = getattr(self, "task_weighting", "mean") == "mean"
        if shared:
            X = torch.as_tensor(np.require(Xs[0], requirements="W"), **kw)  # read-only input: a copy
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

    def _converged(self, converged: bool, n_iter: int, residual: float, limit: str, detail: str | None = None) -> None:
        """Record ``n_iter_``, ``residual_`` and ``converged_``; warn when ``limit`` (the
        name of the iteration cap that ran out) stopped the solver before ``tol``
        (``detail``: what stopped short, when not the KKT residual)."""
        self.n_iter_, self.residual_, self.converged_ = int(n_iter), float(residual), bool(converged)
        if not converged:
            detail = detail or f"a KKT residual of {residual:.3g} > tol={self.tol:g}"
            warnings.warn(
                f"{type(self).__name__} stopped after {n_iter} iterations ({limit}={getattr(self, limit)}) with "
                f"{detail}: the result is not at the optimum of its "
                f"objective; raise {limit} (or tol){getattr(self, '_convergence_hint', '')}", ConvergenceWarning,
                stacklevel=3)

    def _progress(self, total, desc):
        if not self.verbose:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False)

    # -- scikit-learn API -------------------------------------------------------
    def __sklearn_tags__(self):
        """A classifier for the classification losses (binary per task, one-vs-rest for K
        classes), else a regressor; multi-output (one output per task); dense input only."""
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = False
        if self._is_classifier():
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(multi_class=False, multi_label=False)
        else:
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
        return tags

    def fit(self, X, y=None, tasks=None):
        """Fit on a shared ``X`` with ``Y`` (n_samples, n_tasks) or a 1-D ``y``; on per-task
        lists ``[X_t]``, ``[y_t]``; on the stacked form ``X``, ``y`` (n_samples,) with
        ``tasks`` (the task id of every row; ``tasks_`` holds the ids); or on a
        :class:`mtlkernels.datasets.MultiTaskDataset` (its training split)."""
        self._check_common()
        self._torch_kwargs()  # device and dtype errors before any work
        if y is None and not isinstance(X, _dataset_type()):
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        Xs, ys, form, _ = _inputs.parse(self, X, y, tasks, reset=True)
        if self._is_classifier():
            ys = _inputs.encode_labels(self, ys)
        elif hasattr(self, "classes_"):
            del self.classes_
        _inputs.check_magnitudes(Xs, ys, self._torch_kwargs()["dtype"])
        self._y_1d = form == "stacked" or (form == "shared" and not isinstance(X, _dataset_type())
                                           and np.asarray(y).ndim == 1)
        data = self._task_data(Xs, ys, form == "shared")
        kw = self._torch_kwargs()
        warm = self.warm_start and hasattr(self, "coef_") and self.coef_.shape == (data.n_features, data.n_tasks)
        W0 = torch.as_tensor(self.coef_, **kw) if warm else None
        b0 = torch.as_tensor(self.intercept_, **kw) if warm else None
        W, b = self._fit(data, W0, b0)
        self.coef_ = W.detach().cpu().numpy()
        self.intercept_ = (b if b is not None else torch.zeros(data.n_tasks)).detach().cpu().numpy()
        self.n_tasks_ = data.n_tasks
        return self

    def _check_fitted(self):
        check_is_fitted(self, "coef_")

    def _raw_scores(self, X: np.ndarray) -> np.ndarray:
        """Scores of every task for the rows of X: (n, n_tasks)."""
        return X @ self.coef_ + self.intercept_

    def _decision(self, X, tasks=None):
        self._check_fitted()
        Xs, _, form, idx = _inputs.parse(self, X, None, tasks, reset=False, split="test")
        if form == "list":
            return [self._raw_scores(x)[:, t] for t, x in enumerate(Xs)]
        if form == "stacked":
            out = np.empty(len(idx))
            for t, x in enumerate(Xs):
                out[idx == t] = self._raw_scores(x)[:, t]
            return out
        S = self._raw_scores(Xs[0])
        return S[:, 0] if self._y_1d and S.shape[1] == 1 else S

    @available_if(lambda self: self._is_classifier())
    def decision_function(self, X, tasks=None):
        """Scores (classifiers): (n_samples, n_tasks) for a shared X (1-D after a 1-D y), a
        list of (n_t,) arrays for per-task X, (n_samples,) for the stacked form."""
        return self._decision(X, tasks)

    def _to_labels(self, s):
        return self.classes_[(np.asarray(s) > 0).astype(int)]

    def predict(self, X, tasks=None):
        """Predictions in the training targets' form (the training labels for classifiers):
        (n_samples, n_tasks) for a shared X (1-D after a 1-D y), a list per task for
        per-task X, (n_samples,) for the stacked form (``tasks``: each row's task id)."""
        s = self._decision(X, tasks)
        if not self._is_classifier():
            return s
        return self._to_labels(s) if isinstance(s, np.ndarray) else [self._to_labels(v) for v in s]

    def _columns(self, X, Y, tasks):
        """(prediction, truth) per task, for any input form."""
        if isinstance(X, _dataset_type()):
            Xs, ys = X.split("test")
            X, Y = (Xs[0], np.stack(ys, 1)) if X.shared else (list(Xs), list(ys))
        pred = self.predict(X, tasks)
        if tasks is not None:
            idx = _inputs.task_index(self, tasks, len(pred), reset=False)
            Y = np.asarray(Y).reshape(-1)
            return [(pred[idx == t], Y[idx == t]) for t in np.unique(idx)]
        if isinstance(pred, np.ndarray):
            Y = np.asarray(Y).reshape(pred.shape)
            if pred.ndim == 1:
                return [(pred, Y)]
            return [(pred[:, t], Y[:, t]) for t in range(pred.shape[1])]
        return [(p, np.asarray(y).reshape(-1)) for p, y in zip(pred, Y)]

    def score(self, X, y=None, tasks=None):
        """Mean over tasks of the accuracy (classifiers) or of R^2 (regression); any input
        form (the stacked form scores each task on its own rows)."""
        cols = self._columns(X, y, tasks)
        if self._is_classifier():
            return float(np.mean([np.mean(p == y) for p, y in cols]))
        cols = [(p, np.asarray(y, dtype=np.float64)) for p, y in cols]
        r2 = [1 - np.sum((p - y) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-300) for p, y in cols]
        return float(np.mean(r2))

    def task_rmse(self, X, y=None, tasks=None) -> np.ndarray:
        """Root mean squared error per task (regression)."""
        cols = self._columns(X, y, tasks)
        return np.array([np.sqrt(np.mean((np.asarray(p, dtype=float) - np.asarray(y, dtype=float)) ** 2))
                         for p, y in cols])


def _dataset_type():
    from ..datasets import MultiTaskDataset

    return MultiTaskDataset


def torch_dtype(dtype) -> torch.dtype:
    """The compute dtype from "float32" / "float64", numpy or torch dtypes."""
    if isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.float64):
        return dtype
    try:
        kind = np.dtype(dtype)
    except TypeError:
        kind = None
    if kind == np.float32:
        return torch.float32
    if kind == np.float64:
        return torch.float64
    raise ValueError(f"dtype must be float32 or float64 (a string, numpy or torch dtype), got {dtype!r}")


def available_devices() -> list[str]:
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(device) -> torch.device:
    """``torch.device(device)``, refused with the devices at hand when it cannot be used."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not a device string ({e}); available: "
                         f"{', '.join(available_devices())}") from None
    if dev.type == "cpu":
        return dev
    avail = available_devices()
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index is not None and dev.index >= n):
            why = (f"this torch {torch.__version__} has no CUDA support" if torch.version.cuda is None else
                   f"{n} CUDA device(s) are visible")
            raise ValueError(f"device={device!r} cannot be used: {why}; available: {', '.join(avail)}")
        return dev
    if str(dev) not in avail and dev.type not in avail:
        raise ValueError(f"device={device!r} cannot be used here; available: {', '.join(avail)}")
    return dev


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
