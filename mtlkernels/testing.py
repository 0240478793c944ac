"""Helpers for the test suite and benchmarks: devices, seeds, tolerances, inputs."""

from __future__ import annotations

import torch
from torch import Tensor

CUDA = torch.cuda.is_available()


def devices() -> list:
    """pytest parameters for every device: CPU always, CUDA skipped (with the reason) without a GPU."""
    import pytest

    return [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="CUDA not available (no GPU here)")),
    ]


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded with `seed` (tests draw all randomness from one)."""
    return torch.Generator(device=device).manual_seed(seed)


def randn(*shape, seed: int, dtype=torch.float64, device="cpu") -> Tensor:
    """Seeded standard normal tensor (drawn on the CPU so values match across devices)."""
    return torch.randn(*shape, generator=generator(seed), dtype=torch.float64).to(dtype=dtype, device=device)


def non_contiguous(t: Tensor) -> Tensor:
    """The same values as `t` in a non-contiguous layout (every other element of a wider buffer)."""
    if t.dim() == 0:
        return t
    buf = torch.empty(*t.shape[:-1], t.shape[-1] * 2, dtype=t.dtype, device=t.device)
    view = buf[..., ::2]
    view.copy_(t)
    assert t.numel() <= 1 or not view.is_contiguous()
    return view


def rel_err(out: Tensor, ref: Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (0 when both are zero); NaN never passes a `<` check."""
    out = out.detach().to("cpu", torch.float64)
    ref = ref.detach().to("cpu", torch.float64)
    den = ref.norm()
    num = (out - ref).norm()
    if den == 0:
        return float(num)
    return float(num / den)


# Relative-error tolerances against a float64 reference, by dtype of the op's input.
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
