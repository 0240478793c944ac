"""Small helpers shared by the experiments: one intra-op thread, mean ± std strings."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["one_thread", "mean_std"]


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
