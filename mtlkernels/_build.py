"""Loading the native extension `_C` and describing how it was built."""

from __future__ import annotations

import torch

from importlib.util import find_spec
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _unbuilt_checkout() -> bool:
    """True when this is the source folder of a checkout and no compiled _C can be found."""
    return (_HERE.parent / "pyproject.toml").exists() and find_spec(f"{__package__}._C") is None


try:
    from . import _C  # noqa: F401  (importing registers torch.ops.mtlkernels.*)
except ImportError as exc:
    if _unbuilt_checkout():
        raise ImportError(
            f"mtlkernels: imported from the source checkout {_HERE.parent}, which has no compiled "
            "extension (mtlkernels._C). Build it for this Python with `make install` (an editable "
            "install into .venv: then `import mtlkernels` works from the checkout too) or "
            "`pip install --no-build-isolation -e .`; or run Python outside the checkout, "
            "where an installed mtlkernels is found."
        ) from exc
    raise ImportError(  # present but not loadable: linked against another torch, most likely
        "mtlkernels: the native extension mtlkernels._C could not be loaded "
        f"({exc}). It must be built against the torch in use (torch {torch.__version__}): "
        "run `make install` (or `pip install --no-build-isolation .`) in this environment."
    ) from exc


def _base(version: str) -> str:
    return version.split("+")[0]


def build_info() -> dict:
    """How the native extension was built.

    Returns a dict with ``version`` (package), ``torch_version`` (the torch it was
    compiled against), ``cuda`` (whether CUDA kernels were compiled),
    ``cuda_version``, ``cuda_archs``, ``openmp`` and ``cxx_standard``.
    """
    return dict(_C.build_info())


_info = build_info()
if _base(_info["torch_version"]) != _base(torch.__version__):
    raise ImportError(
        f"mtlkernels: the native extension was built against torch {_info['torch_version']} "
        f"but torch {torch.__version__} is imported; rebuild it in this environment "
        "(`make install` or `pip install --no-build-isolation .`)."
    )
