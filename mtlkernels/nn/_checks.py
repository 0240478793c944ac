"""Argument checks shared by the modules of :mod:`mtlkernels.nn` (errors name the argument)."""

from __future__ import annotations

import math


def check_weight(name: str, value: float, positive: bool = False) -> float:
    """A finite non-negative (or positive) number, as float; TypeError / ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(f"{name} must be finite and {'positive' if positive else 'non-negative'}, got {value}")
    return value


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
