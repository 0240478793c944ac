"""scikit-build-core metadata plugin: the wheel carries the torch it is built for.

Used from pyproject.toml (``[tool.scikit-build.metadata.*]``, provider-path ``tools``):

- ``version``: ``<base>+pt<major><minor><cpu|cuXYZ>``, e.g. ``0.1.0+pt213cpu`` or
  ``0.1.0+pt211cu130``: a wheel says which torch build it was compiled against.
- ``dependencies``: the ``requires`` list plus ``torch>=M.m,<M.(m+1)``: the extension
  links against one torch minor version and does not load in another.

The extension is built against the torch of the building Python, so torch must be
importable there. Under pip's default build isolation it is not (and pip would fetch
some other torch into the isolated environment, a mismatched build at best); this
plugin then stops the build at once with the fix, before CMake starts.
"""

from __future__ import annotations

import re

NO_TORCH = (
    "mtlkernels is compiled against the torch you will run it with, so torch must be "
    "importable by the building Python. Install torch first (for example "
    "`pip install torch`), then build without pip's build isolation:\n"
    "    pip install scikit-build-core pybind11 cmake ninja\n"
    "    pip install --no-build-isolation .\n"
    "(pip's default isolated build environment cannot see your torch.)"
)


def _torch():
    try:
        import torch
    except ImportError as exc:  # isolated build, or no torch at all
        raise RuntimeError(f"mtlkernels: cannot import torch ({exc}).\n{NO_TORCH}") from None
    return torch


def torch_tag() -> tuple[str, str]:
    """(``'2.13'``, ``'pt213cpu'``) for the importable torch."""
    torch = _torch()
    m = re.match(r"(\d+)\.(\d+)", torch.__version__)
    if m is None:
        raise RuntimeError(f"mtlkernels: cannot parse the torch version {torch.__version__!r}")
    cuda = torch.version.cuda
    flavour = "cu" + cuda.replace(".", "") if cuda else "cpu"
    return f"{m[1]}.{m[2]}", f"pt{m[1]}{m[2]}{flavour}"


def dynamic_metadata(field, settings, project=None):
    """The scikit-build-core plugin hook (both its 2- and 3-argument forms)."""
    minor, tag = torch_tag()
    if field == "version":
        base = settings.get("base")
        if not base:
            raise RuntimeError("torch_build_meta: the version provider needs a 'base' setting")
        return f"{base}+{tag}"
    if field == "dependencies":
        major, mnr = (int(p) for p in minor.split("."))
        return [*settings.get("requires", []), f"torch>={major}.{mnr},<{major}.{mnr + 1}"]
    raise RuntimeError(f"torch_build_meta: cannot provide the field {field!r}")
