"""Helpers for the test suite and benchmarks: devices, seeds, tolerances, inputs."""

from __future__ import annotations

import torch
from torch import Tensor

CUDA = torch.cuda.is_available()


_NO_CUDA = "CUDA not available (no GPU here)"


def devices() -> list:
    """pytest parameters for every device: CPU always; CUDA marked ``cuda`` (so that
    ``pytest -m cuda`` selects it) and skipped, with the reason, without a GPU."""
    import pytest

    return [
        "cpu",
        pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason=_NO_CUDA)]),
    ]


def cuda_only(fn):
    """Decorator for a test that runs only on CUDA: marked ``cuda`` (selected by
    ``pytest -m cuda``) and skipped without a GPU."""
    import pytest

    return pytest.mark.cuda(pytest.mark.skipif(not CUDA, reason=_NO_CUDA)(fn))


def multi_gpu(fn):
    """Decorator for a CUDA test that needs two GPUs (e.g. inputs on cuda:0 while
    cuda:1 is the current device): :func:`cuda_only`, and skipped with fewer GPUs."""
    import pytest

    few = torch.cuda.device_count() < 2
    return cuda_only(pytest.mark.skipif(few, reason="needs at least two CUDA devices")(fn))


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


def _to_cpu(out):
    """Tensors in a (nested) result copied to the CPU (other values as they are)."""
    if isinstance(out, Tensor):
        return out.detach().cpu()
    if isinstance(out, (list, tuple)):
        return type(out)(_to_cpu(o) for o in out)
    return out


def on_side_stream(fn):
    """Run ``fn()`` on a new, non-default CUDA stream and return its result copied to the CPU.

    The default stream is first made busy (``torch.cuda._sleep``) and the result is read
    back on the side stream, before the default stream finishes: a kernel launched on
    the default stream instead of the current one would run late, so its output would be
    read unfinished and the comparison of the caller would fail. The inputs of ``fn``
    must be ready: everything queued before is synchronised first.
    """
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is not None:
        sleep(100_000_000)  # ~50 ms of GPU clock cycles on the default stream
    with torch.cuda.stream(side):
        out = _to_cpu(fn())  # copies queued on `side`; .cpu() waits for `side` only
    torch.cuda.synchronize()
    return out


def on_other_device(fn):
    """Run ``fn()`` (whose inputs live on cuda:0) while cuda:1 is the current device;
    return its result (on the device the op chose) after synchronising both devices."""
    with torch.cuda.device(1):
        out = fn()
    for d in range(2):
        torch.cuda.synchronize(d)
    return out


# CUDA runtime calls that make the host wait for the device: a read-back (``.item()``,
# ``.cpu()``, ``nonzero``) is a cudaMemcpyAsync followed by one of these.
_SYNC_CALLS = ("cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemcpy", "cudaMemcpy2D")


def host_syncs(fn) -> int:
    """How many times fn() makes the host wait for the GPU, counted from the CUDA runtime
    calls that torch.profiler records (cudaStreamSynchronize and the like).

    Not torch.cuda.set_sync_debug_mode: on torch 2.11 (H200, 2026-11-26) its first use
    emits a "prototype feature" UserWarning, and the warning of a sync inside a
    ``torch.ops`` call goes to the C++ log, not to Python's warnings, so counting warnings
    gave 1 for a call without a sync and 0 for one with a sync."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
    return sum(e.name in _SYNC_CALLS for e in prof.events())
