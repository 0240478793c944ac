"""Checkpoints that cannot be reused by mistake.

A checkpoint holds the trainer's full state (modules, optimisers, GradScaler, epoch,
history, RNG states) together with two fingerprints: the config's (every field except
the epoch budget, progress and paths, :data:`~mtlkernels.train.config.NOT_FINGERPRINTED`)
and the model's (parameter and buffer names, shapes and dtypes, and the module tree's
``repr``, which carries hyper-parameters such as ``lambda_c``). :func:`check_compatible`
refuses a checkpoint whose fingerprints differ from the current run's and names the
fields that differ.

Files are written to a temporary file in the same folder, fsynced, then renamed over
the old one (atomic on POSIX), so a kill leaves either the old or the new checkpoint.
They are read with ``torch.load(..., weights_only=True)``; an unreadable file raises
:class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["CheckpointError", "FORMAT", "save_atomic", "load", "model_fingerprint", "check_compatible",
           "rng_state", "set_rng_state"]

#: Bumped when the layout of the saved dict changes.
FORMAT = 2


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, of another format, or of another run."""


def model_fingerprint(model: nn.Module) -> dict:
    """Names, shapes and dtypes of every parameter and buffer, and a hash of ``repr(model)``."""
    tensors = {name: [list(t.shape), str(t.dtype).replace("torch.", "")]
               for name, t in list(model.named_parameters()) + list(model.named_buffers())}
    return {"tensors": tensors, "repr_sha1": hashlib.sha1(repr(model).encode()).hexdigest()}


def save_atomic(state: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, rename (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_atomic` (``weights_only=True``).

    Raises :class:`CheckpointError` naming the file when it is empty, truncated, not a
    checkpoint, or holds objects other than tensors and plain containers.
    """
    path = Path(path)
    how = f"delete {path} or pass resume=False to start over"
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (corrupt or truncated); {how}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain containers, or is "
                              f"corrupt ({first[:200]}); {how}") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); {how}") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} is not an mtlkernels checkpoint; {how}")
    if state["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']}, this version writes {FORMAT}; {how}")
    return state


def _diff(saved: dict, now: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key, "<absent>"), now.get(key, "<absent>")
        if a != b:
            out.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def check_compatible(state: dict, trainer: str, config_fp: dict, model_fp: dict, path) -> None:
    """Raise :class:`CheckpointError` when the checkpoint was written by another trainer,
    config or model; the message names the differing fields."""
    problems = []
    if state.get("trainer") != trainer:
        problems.append(f"trainer: {state.get('trainer')!r} in the checkpoint, {trainer!r} now")
    problems += _diff(state["config_fingerprint"], config_fp, "config.")
    saved_m = state["model_fingerprint"]
    tensor_diff = _diff(saved_m["tensors"], model_fp["tensors"], "model tensor ")
    problems += tensor_diff
    if not tensor_diff and saved_m["repr_sha1"] != model_fp["repr_sha1"]:
        problems.append("model: the module tree or its hyper-parameters (repr) differ")
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise CheckpointError(f"checkpoint {path} was written by a different run:\n  " + "\n  ".join(shown)
                              + f"\ndelete {path} or pass resume=False to start over")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
