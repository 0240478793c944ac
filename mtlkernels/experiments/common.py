"""Small helpers shared by the experiments: one intra-op thread, mean ± std strings, and the
paired comparisons with a verdict against the paper's direction that every deep table reports."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["one_thread", "mean_std", "paired", "verdict", "comparison", "COMPARISON_COLUMNS"]

#: Columns of the comparisons table each deep experiment returns (``result["comparisons"]``).
COMPARISON_COLUMNS = ["setting", "comparison (paired over seeds)", "difference (mean ± std)", "paper's direction",
                      "verdict"]


@contextmanager
def one_thread():
    """Run with one intra-op thread (the networks are tiny; more threads only add
    overhead, and far more so on a shared machine); restores the previous setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def mean_std(values, fmt="{:.3f}") -> str:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return "-"
    if v.size == 1:
        return fmt.format(v[0])
    return f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1))}"


def paired(a, b) -> tuple[float, float]:
    """Mean and sample std (ddof 1; 0 for one seed) of the per-seed differences a - b."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return float(d.mean()), float(d.std(ddof=1)) if d.size > 1 else 0.0


def verdict(mean: float, std: float, direction: int, n: int) -> str:
    """Where a paired difference stands against the paper's direction (+1: the paper has
    it positive, -1: negative): beyond the seed spread (|mean| > std) in the paper's
    direction, within the spread (|mean| <= std), or beyond it against the paper (0: the
    paper gives no direction)."""
    if n < 2:
        return "one seed: no spread to judge"
    if abs(mean) <= std or mean == 0:
        return "within the seed spread"
    if direction == 0:
        return "beyond the seed spread (the paper gives no direction)"
    return "follows the paper, beyond the seed spread" if np.sign(mean) == direction else \
        "against the paper, beyond the seed spread"


def comparison(setting: str, name: str, a, b, direction: int, fmt: str = "{:+.3f}", scale: float = 1.0,
               paper: str | None = None) -> list:
    """One row of the comparisons table: ``name`` (e.g. "AS - plain"), the paired
    difference of per-seed values ``a - b`` (times ``scale``), the paper's direction and
    the :func:`verdict`."""
    m, s = paired(a, b)
    m, s = m * scale, s * scale
    want = paper or ("> 0" if direction > 0 else "< 0" if direction < 0 else "-")
    return [setting, name, f"{fmt.format(m)} ± {fmt.format(s).lstrip('+')}", want, verdict(m, s, direction, len(a))]
