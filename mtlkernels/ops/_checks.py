"""Argument checks shared by the op bridges: one set of rules per op, run on every path.

Each family's bridge validates an op's arguments with these helpers before it calls
``torch.ops.mtlkernels`` (so a bad call fails in Python, before the dispatcher) and in
the op's fake kernel (so ``torch.compile``, FakeTensor and meta tensors fail as eager
does); the C++ entry points (``csrc/common/checks.h`` and each family's entry) apply
the same rules to direct ``torch.ops.mtlkernels`` calls. Only metadata is read here
(device, dtype, shape, Python numbers): no host synchronisation. The checks that read
tensor data (negative thresholds, label ranges, NaN) stay in C++.

Errors about tensors are ``RuntimeError`` (as the C++ entries raise them), errors about
Python arguments ``TypeError`` (wrong kind) or ``ValueError`` / ``RuntimeError`` (bad
value; ``RuntimeError`` where the C++ entry checks the same number); every message
starts with the op's name and names the argument.
"""

from __future__ import annotations

import math
import numbers
import operator
import struct
from typing import Sequence

import torch
from torch import Tensor

FLOATS = (torch.float32, torch.float64)
HALVES = (torch.float16, torch.bfloat16)
_FINFO = {torch.float32: torch.finfo(torch.float32), torch.float64: torch.finfo(torch.float64)}

# The C++ names of the dtypes, so that both paths say the same ("got Long").
_NAMES = {
    torch.float16: "Half", torch.bfloat16: "BFloat16", torch.float32: "Float", torch.float64: "Double",
    torch.int8: "Char", torch.uint8: "Byte", torch.int16: "Short", torch.int32: "Int", torch.int64: "Long",
    torch.bool: "Bool", torch.complex64: "ComplexFloat", torch.complex128: "ComplexDouble",
}


def fail(op: str, msg: str) -> None:
    raise RuntimeError(f"{op}: {msg}")


def dtype_name(dtype: torch.dtype) -> str:
    return _NAMES.get(dtype, str(dtype).replace("torch.", ""))


def _symbolic(v) -> bool:
    return isinstance(v, (torch.SymInt, torch.SymFloat, torch.SymBool))


def tensor(op: str, t, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")
    return t


def autocast_on(device_type: str) -> bool:
    """torch.autocast is on for this device type (never for meta and other types without it)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def effective_dtype(t: Tensor) -> torch.dtype:
    """The dtype an op computes ``t`` in: under ``torch.autocast`` on t's device the ops'
    autocast rules cast float16 / bfloat16 / float32 inputs to float32 (float64 stays)."""
    if t.dtype in HALVES and autocast_on(t.device.type):
        return torch.float32
    return t.dtype


def floating(op: str, t, name: str) -> Tensor:
    """float32 or float64 (float16 / bfloat16 under torch.autocast, which casts them)."""
    tensor(op, t, name)
    dt = effective_dtype(t)
    if dt not in FLOATS:
        hint = "; cast it with .float(), or call the op under torch.autocast" if dt in HALVES else ""
        fail(op, f"{name} must be float32 or float64, got {dtype_name(dt)}{hint}")
    return t


def writable(op: str, t, name: str) -> Tensor:
    """The tensor an in-place op writes: float32 / float64 / float16 / bfloat16 (the last
    two computed in float32), one memory location per element."""
    tensor(op, t, name)
    if t.dtype not in FLOATS + HALVES:
        fail(op, f"{name} must be float32 or float64 (or float16 / bfloat16, computed in float32), "
                 f"got {dtype_name(t.dtype)}")
    overlap = 2  # unknown: as the C++ "too hard", accepted
    if not torch.compiler.is_compiling():  # (Dynamo cannot trace it; the fake kernel checks)
        try:
            overlap = torch._debug_has_internal_overlap(t)
        except Exception:  # noqa: BLE001  (symbolic strides)
            pass
    if overlap == 1:
        fail(op, f"several elements of {name} share one memory location (an expanded or stride-0 view), "
                 f"so it cannot be written in place; pass {name}.clone()")
    return t


def working_dtype(t: Tensor) -> torch.dtype:
    """The precision an in-place op computes ``t`` in (float32 for the half types)."""
    return torch.float32 if t.dtype in HALVES else t.dtype


def real(op: str, t, name: str) -> Tensor:
    """A tensor of real numbers: floating or integer (not bool, not complex)."""
    tensor(op, t, name)
    if t.dtype == torch.bool or t.is_complex():
        fail(op, f"{name} must be a real-valued (floating or integer) tensor, got {dtype_name(t.dtype)}")
    return t


def integer(op: str, t, name: str, what: str) -> Tensor:
    tensor(op, t, name)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        fail(op, f"{name} must be an integer tensor of {what}, got {dtype_name(t.dtype)}")
    return t


def same_device(op: str, a: Tensor, an: str, b: Tensor, bn: str) -> None:
    if a.device != b.device:
        fail(op, f"{an} is on {a.device} but {bn} is on {b.device}; move them to one device")


def same_dtype(op: str, a: Tensor, an: str, b: Tensor, bn: str, autocast: bool = True) -> None:
    """Same dtype; ``autocast``: as the op computes them (see :func:`effective_dtype`)."""
    if a.dtype == b.dtype:
        return
    da, db = (effective_dtype(a), effective_dtype(b)) if autocast else (a.dtype, b.dtype)
    if da != db:
        fail(op, f"{an} is {dtype_name(da)} but {bn} is {dtype_name(db)}")


def same_shape(op: str, a: Tensor, an: str, b: Tensor, bn: str) -> None:
    if a.shape != b.shape:
        fail(op, f"{an} has shape {list(a.shape)} but {bn} has shape {list(b.shape)}")


def scalar_device(op: str, t: Tensor, name: str, x: Tensor, xname: str = "x") -> None:
    """A threshold-like tensor: on x's device, or a 0-dim CPU tensor (read on the host)."""
    if t.dim() == 0 and t.device.type == "cpu":
        return
    if t.device != x.device:
        fail(op, f"{name} is on {t.device} but {xname} is on {x.device} "
                 "(only a 0-dim CPU scalar tensor may stay on the CPU)")


# ---- Python numbers ------------------------------------------------------------------


def number(op: str, v, name: str) -> float:
    """A real Python number (not a bool, a string or a tensor), as a float."""
    if type(v) is float or type(v) is int:  # the common case, first
        return float(v)
    if _symbolic(v):
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type(v).__name__}")
    return float(v)


def nonneg(op: str, v, name: str) -> float:
    """A finite number >= 0 (RuntimeError, as the C++ entries raise it)."""
    v = number(op, v, name)
    if not _symbolic(v) and not (math.isfinite(v) and v >= 0):
        fail(op, f"{name} must be finite and non-negative, got {v}")
    return v


def positive(op: str, v, name: str) -> float:
    v = number(op, v, name)
    if not _symbolic(v) and not (math.isfinite(v) and v > 0):
        fail(op, f"{name} must be finite and positive, got {v}")
    return v


def index(op: str, v, name: str) -> int:
    """A Python integer (operator.index: not a float, not a bool)."""
    if _symbolic(v):
        return v
    if isinstance(v, bool):
        raise TypeError(f"{op}: {name} must be an int, got bool")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}") from None


def round_to(dtype: torch.dtype, v: float) -> float:
    """v rounded to float32 (or kept, float64)."""
    return v if dtype == torch.float64 else struct.unpack("f", struct.pack("f", v))[0]


def step_fits(op: str, dtype: torch.dtype, lr, scale: float = 1.0) -> None:
    """lr and the factor 1 / (1 + lr * l2) of a step are applied in x's dtype (float32 or
    float64): both must be finite and non-zero there (a float32 lr of 1e39 would make
    inf * 0 = NaN)."""
    if type(lr) is float and 0 <= lr <= 1e30 and 1e-30 <= scale <= 1:  # far inside float32's range
        return
    if _symbolic(lr) or _symbolic(scale) or dtype not in _FINFO:
        return
    if lr > _FINFO[dtype].max:
        fail(op, f"lr = {lr} overflows {dtype_name(dtype)}; pass a smaller step or x in float64")
    if round_to(dtype, scale) <= 0:
        fail(op, f"the factor 1 / (1 + lr * l2) = {scale} underflows to 0 in {dtype_name(dtype)}; "
                 "pass a smaller l2 or x in float64")


# ---- layouts ---------------------------------------------------------------------------


def broadcasts_to(t: Tensor, shape: Sequence[int]) -> bool:
    """t broadcasts to ``shape`` without changing it."""
    if t.dim() == 0:
        return True
    if t.dim() > len(shape):
        return False
    return all(a == 1 or a == b for a, b in zip(reversed(t.shape), reversed(tuple(shape))))


def offsets(op: str, offs, P) -> list[int]:
    """Layer boundaries 0 = o_0 < ... < o_L = P, as ints (a sequence of ints or a 1-D
    integer tensor; floats and bools are refused, not truncated)."""
    if isinstance(offs, Tensor):
        if offs.dim() != 1 or offs.is_floating_point() or offs.is_complex() or offs.dtype == torch.bool:
            raise TypeError(f"{op}: offsets must be a 1-D integer tensor or a sequence of ints, "
                            f"got a {offs.dim()}-D {dtype_name(offs.dtype)} tensor")
        offs = offs.tolist()
    elif isinstance(offs, (str, bytes)) or not isinstance(offs, Sequence):
        raise TypeError(f"{op}: offsets must be a sequence of ints or a 1-D integer tensor, "
                        f"got {type(offs).__name__}")
    out = [index(op, v, f"offsets[{i}]") for i, v in enumerate(offs)]
    layout(op, out, P)
    return out


def layout(op: str, offs: Sequence, P) -> None:
    """The C++ rules on the layer boundaries (ints or SymInts)."""
    if len(offs) < 2:
        fail(op, "offsets must list the layer boundaries 0 = o_0 < o_1 < ... < o_L = P "
                 f"(at least 2 entries), got {len(offs)}")
    if offs[0] != 0:
        fail(op, f"offsets must start at 0, got offsets[0] = {offs[0]}")
    if offs[-1] != P:
        fail(op, f"offsets must end at the number of parameters P = {P} (params.size(1)), got offsets[-1] = {offs[-1]}")
    for i in range(len(offs) - 1):
        if offs[i + 1] == offs[i]:
            fail(op, f"layer {i} is empty (offsets[{i}] = offsets[{i + 1}] = {offs[i]}); "
                     "every layer needs at least one parameter")
        if offs[i + 1] < offs[i]:
            fail(op, f"offsets must be increasing, got offsets[{i}] = {offs[i]} > offsets[{i + 1}] = {offs[i + 1]}")


# ---- autograd --------------------------------------------------------------------------


def constant(op: str, t, name: str):
    """A tensor argument the op treats as a constant: refused when it requires grad."""
    if isinstance(t, Tensor) and t.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(f"{op}: {name} is treated as a constant (no derivative is defined for it); "
                           f"pass {name}.detach()")
    return t


def no_derivative(op: str, inputs, names: dict[int, str]) -> None:
    """In an autograd setup_context (grad mode on, some input requiring grad): refuse an
    input (a tensor or a list of them) that requires grad but has no derivative, instead
    of a silent None gradient."""
    for i, name in names.items():
        v = inputs[i]
        ts = v if isinstance(v, (list, tuple)) else (v,)
        if any(isinstance(t, Tensor) and t.requires_grad for t in ts):
            raise RuntimeError(f"{op}: no derivative is defined for {name} (a constant); pass {name}.detach()")


def no_grad_step(op: str, *tensors) -> None:
    """In-place solver steps: refused with grad mode on when an argument requires grad
    (the C++ Autograd kernel of csrc/ops/autograd.cpp says the same for direct calls)."""
    if not torch.is_grad_enabled():
        return
    for t in tensors:
        if isinstance(t, Tensor) and t.requires_grad:
            raise RuntimeError(
                f"{op} is a proximal solver step and is not differentiable; "
                "call it under torch.no_grad() or on detached tensors"
            )


_BELOW_AUTOGRAD = torch._C._AutoDispatchBelowAutograd


def call(op, *args, differentiable: Sequence = ()):
    """``op(*args)`` for an out-of-place op with a Python autograd formula. When no
    differentiable argument requires grad (or grad mode is off), the call goes below
    autograd straight to the op's kernel, which is what torch.library's autograd layer
    would do, without its Python round trip (about 10 us a call). Not for in-place ops:
    their Autograd kernel (csrc/ops/autograd.cpp) bumps the version counter."""
    if torch.compiler.is_compiling() or (
        torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in differentiable)
    ):
        return op(*args)
    with _BELOW_AUTOGRAD():
        return op(*args)


def register_autocast(names: Sequence[str]) -> None:
    """Mixed precision: under torch.autocast (CPU and CUDA) the floating inputs of these
    out-of-place ops are cast to float32 (float64 stays), the ops run in float32."""
    for name in names:
        for device in ("cpu", "cuda"):
            if torch.amp.is_autocast_available(device):
                torch.library.register_autocast(f"mtlkernels::{name}", device, torch.float32)
