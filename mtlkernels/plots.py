"""Every figure of the experiments, in one place.

Each function returns a :class:`matplotlib.figure.Figure` built without ``pyplot``, so
it never switches the caller's backend or touches pyplot's global figure list; write it
with :func:`save` (or ``fig.savefig``), or show it in a notebook. matplotlib is the
optional extra ``plots``.

The experiments draw through :func:`figure`: at once, or, inside :func:`deferred` (the
command line), queued until the caller has written its JSON results, and skipped with one
note when matplotlib is missing.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["save", "figure", "deferred", "PlotQueue", "have_matplotlib", "similarity_figure", "latent_tasks_figure", "amtfl_per_class_figure", "amtfl_transfer_figure",
           "weight_graph_figure", "joint_irls_curves_figure", "cetl_accuracy_figure", "cetl_curves_figure"]


def _figure(**kw):
    from matplotlib.figure import Figure

    return Figure(**kw)


def save(fig, path, dpi: int = 110) -> str:
    """Write ``fig`` to ``path`` (folders created); returns the path as a string."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return str(path)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


MISSING_NOTE = "matplotlib is not installed: no plots (pip install 'mtlkernels[plots]'); the JSON results are complete"


class PlotQueue:
    """Figures waiting to be drawn: ``(path, make, args, kwargs, dpi)`` entries."""

    def __init__(self):
        self.pending: list = []
        self.enabled = have_matplotlib()

    def draw(self) -> list[str]:
        """Draw and write every queued figure; returns their paths."""
        pending, self.pending = self.pending, []
        return [save(make(*args, **kw), path, dpi) for path, make, args, kw, dpi in pending]


_QUEUE: PlotQueue | None = None


@contextmanager
def deferred():
    """Within it, :func:`figure` queues figures (on the yielded :class:`PlotQueue`, drawn by
    its ``draw()``) and skips them when matplotlib is missing (``queue.enabled`` is False)."""
    global _QUEUE
    previous, _QUEUE = _QUEUE, PlotQueue()
    try:
        yield _QUEUE
    finally:
        _QUEUE = previous


def figure(path, make, *args, dpi: int = 110, **kw) -> list[str]:
    """``save(make(*args, **kw), path)``: at once (returns ``[path]``), or inside
    :func:`deferred` queued (``[path]``) or skipped without matplotlib (``[]``)."""
    if _QUEUE is None:
        return [save(make(*args, **kw), path, dpi)]
    if not _QUEUE.enabled:
        return []
    _QUEUE.pending.append((Path(path), make, args, kw, dpi))
    return [str(path)]


# ---- Adaptive Sharing (Shen et al. 2015) -------------------------------------------------------------


def similarity_figure(sims: dict, title: str = "Class similarity of the last layer (darker = larger)"):
    """Class-similarity matrices side by side (C^T C of the AS layer, the paper's Fig. 3;
    W^T W of a plain layer): ``sims`` maps a label to a (K, K) array."""
    fig = _figure(figsize=(4.2 * len(sims), 3.8), layout="tight")
    axes = np.atleast_1d(fig.subplots(1, len(sims)))
    for ax, (name, M) in zip(axes, sims.items()):
        M = np.asarray(M)
        im = ax.imshow(M, cmap="Greys")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(M.shape[0]))
        ax.set_yticks(range(M.shape[0]))
        ax.set_xlabel("class")
        ax.set_ylabel("class")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    return fig


# ---- attribute MTL (Abdulnabi et al. 2015) -----------------------------------------------------------


def latent_tasks_figure(mats: dict, attribute_names, groups, title: str = "|S| of the latent-task layer"):
    """``|S|`` (K latent tasks x M attributes) per model, with the attribute groups marked."""
    fig = _figure(figsize=(4.6 * len(mats), 3.9), layout="tight")
    axes = np.atleast_1d(fig.subplots(1, len(mats)))
    n_groups = max(groups) + 1
    for ax, (name, S) in zip(axes, mats.items()):
        im = ax.imshow(np.abs(np.asarray(S)), cmap="Greys", aspect="auto")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(attribute_names)))
        ax.set_xticklabels(attribute_names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("latent task k")
        for b in np.cumsum([list(groups).count(g) for g in range(n_groups)])[:-1]:
            ax.axvline(b - 0.5, color="tab:red", lw=1)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title + " (red lines: attribute groups)", fontsize=10)
    return fig


# ---- Deep-AMTFL (Lee et al. 2018) ---------------------------------------------------------------------

_AMTFL_COLORS = {"cnn": "0.6", "mt_cnn": "tab:orange", "deep_amtl": "tab:green", "deep_amtfl": "tab:blue"}


def amtfl_per_class_figure(agg: dict, order, labels: dict, task_sizes, reliability, n_seeds: int):
    """Fig. 6a: per-class accuracy of each model and its improvement over the CNN, with
    Deep-AMTFL's task losses L_t + delta / sqrt(N_t)."""
    fig = _figure(figsize=(9, 7.5), layout="tight")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    classes = np.arange(len(task_sizes))
    width = 0.2
    for i, m in enumerate(order):
        ax1.bar(classes + (i - 1.5) * width, 100 * np.array(agg["per_class_accuracy"][m]), width,
                yerr=100 * np.array(agg["per_class_accuracy_std"][m]), color=_AMTFL_COLORS[m], label=labels[m],
                capsize=2)
    ax1.set_ylabel("test accuracy of the class (%)")
    low = min(min(v) for v in agg["per_class_accuracy"].values())
    ax1.set_ylim(max(0.0, 100 * low - 10), 110)
    ax1.legend(ncol=4, fontsize=8, loc="upper center")
    ax1.set_title(f"Per-class accuracy, imbalanced digits (mean ± std over {n_seeds} seeds)")
    for i, m in enumerate(order[1:]):
        ax2.bar(classes + (i - 1) * width, 100 * np.array(agg["improvement_over_cnn"][m]), width,
                yerr=100 * np.array(agg["improvement_over_cnn_std"][m]), color=_AMTFL_COLORS[m], label=labels[m],
                capsize=2)
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_ylabel("accuracy - CNN's (points)")
    ax2.set_xlabel("class (task); training examples per class decrease from 0 to 9")
    ax2.set_xticks(classes)
    ax2.set_xticklabels([f"{c}\n(n={task_sizes[c]})" for c in classes])
    ax3 = ax2.twinx()
    ax3.plot(classes, reliability, "k.-", label="Deep-AMTFL task loss L_t + delta/sqrt(N_t)")
    ax3.set_ylabel("task loss (one-vs-all)")
    h1, l1 = ax2.get_legend_handles_labels()
    h2, l2 = ax3.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower left")
    ax2.set_title("Improvement over the CNN (Fig. 6a)")
    return fig


def amtfl_transfer_figure(mats: dict, asymmetry: dict, n_seeds: int):
    """Fig. 6b: the off-diagonal transfer matrices (``mats``: label -> (T, T) mean ``|matrix|``;
    ``asymmetry``: label -> upper/lower mass ratio)."""
    fig = _figure(figsize=(5.5 * len(mats), 4.8), layout="tight")
    axes = np.atleast_1d(fig.subplots(1, len(mats)))
    for ax, (label, M) in zip(axes, mats.items()):
        M = np.array(M, dtype=float)
        np.fill_diagonal(M, np.nan)
        im = ax.imshow(M, cmap="viridis")
        ax.set_title(f"{label}, off-diagonal\nrow t -> column t' (upper/lower = {asymmetry[label]:.2f})", fontsize=9)
        ax.set_xlabel("receiving task t'")
        ax.set_ylabel("transferring task t")
        ax.set_xticks(range(M.shape[0]))
        ax.set_yticks(range(M.shape[0]))
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"Inter-task transfer on imbalanced digits (mean over {n_seeds} seeds; Fig. 6b)")
    return fig


# ---- joint IRLS (Zhang et al. 2019) -------------------------------------------------------------------


def weight_graph_figure(graph: dict, title: str | None = None):
    """Fig. 2 from :meth:`mtlkernels.train.JointIRLSTrainer.weight_graph` data: per layer
    pair, the datasets on a circle with an edge of width proportional to w_ij (mutual
    top-k edges drawn dark), and below it the (n, n) weight matrix."""
    W = np.asarray(graph["weights"], dtype=float)
    names = list(graph["datasets"])
    L, n = W.shape[0], W.shape[1]
    fig = _figure(figsize=(3.2 * L, 6.4))
    axes = fig.subplots(2, L, squeeze=False)
    ang = np.pi / 2 - 2 * np.pi * np.arange(n) / n
    xy = np.stack([np.cos(ang), np.sin(ang)], 1)
    im = None
    for l in range(L):
        ax = axes[0, l]
        strong = {tuple(e) for e in graph["edges"][l]}
        for i in range(n):
            for j in range(i + 1, n):
                mutual = (i, j) in strong
                ax.plot(*xy[[i, j]].T, color="tab:blue" if mutual else "0.75", lw=0.5 + 5 * W[l, i, j],
                        alpha=0.9 if mutual else 0.6, zorder=1)
        ax.scatter(*xy.T, s=260, color="tab:orange", zorder=2)
        for i in range(n):
            ax.annotate(str(i), xy[i], ha="center", va="center", fontsize=9, zorder=3)
            ax.annotate(names[i], 1.28 * xy[i], ha="center", va="center", fontsize=8)
        ax.set_xlim(-1.7, 1.7)
        ax.set_ylim(-1.5, 1.5)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"{graph['layer_pairs'][l]}\nsigma={graph['sigma'][l]:.3g}", fontsize=9)
        hm = axes[1, l]
        im = hm.imshow(W[l], vmin=0, vmax=1, cmap="viridis")
        hm.set_xticks(range(n))
        hm.set_yticks(range(n))
        hm.set_xticklabels([s[:4] for s in names], fontsize=7, rotation=90)
        hm.set_yticklabels([s[:4] for s in names], fontsize=7)
        for i in range(n):
            for j in range(n):
                if i != j:
                    hm.text(j, i, f"{W[l, i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="w" if W[l, i, j] < 0.6 else "k")
    fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.8, label="w_ij (eq. 7)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def joint_irls_curves_figure(curves: dict, methods, joint: str = "Joint (IRLS)"):
    """Fig. 3 / Fig. 5 analogue: the validation metric per sweep of every method and the
    joint method's consistency loss. ``curves[task][method]``: a list of {"epoch", "val",
    "closs"} records, for task in ("classification", "autoencoder")."""
    fig = _figure(figsize=(11, 3.8), layout="tight")
    axes = fig.subplots(1, 2)
    for ax, task, label in ((axes[0], "classification", "mean val accuracy"),
                            (axes[1], "autoencoder", "mean val completion error")):
        for m in methods:
            curve = curves[task][m]
            is_joint = m == joint
            ax.plot([c["epoch"] for c in curve], [c["val"] for c in curve], label=m, lw=2.0 if is_joint else 1.0,
                    zorder=3 if is_joint else 2, color="k" if is_joint else None)
        jc = curves[task][joint]
        ax2 = ax.twinx()
        ax2.plot([c["epoch"] for c in jc], [c["closs"] for c in jc], "k:", lw=1)
        ax2.set_ylabel("Joint closs (dotted): eq. 3, the L2 sum during init", fontsize=7)
        ax.set_xlabel("sweep (one epoch of every domain)")
        ax.set_ylabel(label)
        ax.set_title(f"Task {'I' if task == 'classification' else 'II'}: {task}", fontsize=10)
        ax.legend(fontsize=7, loc="center right")
    return fig


# ---- CETL (Chen et al. 2018) --------------------------------------------------------------------------


def cetl_accuracy_figure(per_setting: dict):
    """Test accuracy of every method per setting (mean ± std over seeds; CETL in red)."""
    n = len(per_setting)
    fig = _figure(figsize=(4.2 * n, 3.6), layout="tight")
    axes = fig.subplots(1, n, squeeze=False)
    for ax, (name, methods) in zip(axes[0], per_setting.items()):
        labels = list(methods)
        means = [np.mean(methods[m]) for m in labels]
        sds = [np.std(methods[m], ddof=1) if len(methods[m]) > 1 else 0 for m in labels]
        colors = ["tab:red" if m.startswith("CETL") else "tab:gray" for m in labels]
        ax.bar(range(len(labels)), means, yerr=sds, color=colors, capsize=3)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=7)
        ax.set_ylim(max(0.0, min(means) - 0.1), 1.0)
        ax.set_title(name, fontsize=8)
        ax.set_ylabel("test accuracy")
    return fig


def cetl_curves_figure(history: list, title: str):
    """Learning curves like the paper's Fig. 2: the classification loss and the DWA
    losses (normalised to a maximum of 1) per round of Algorithm 1."""
    fig = _figure(figsize=(5, 3.6), layout="tight")
    ax = fig.subplots()
    rounds = [r["round"] for r in history]
    for key, label in (("loss3", "classification loss (stage 3)"), ("dwa1", "DWA1"), ("dwa2", "DWA2"),
                       ("dwa3", "DWA3")):
        v = np.array([r[key] for r in history], dtype=float)
        if key != "loss3" and v.max() > 0:
            v = v / v.max()
        ax.plot(rounds, v, marker="o", label=label)
    ax.set_xlabel("round of Algorithm 1")
    ax.set_ylabel("loss (DWA normalised to max 1)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    return fig
