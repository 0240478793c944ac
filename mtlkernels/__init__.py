"""mtlkernels: multi-task and transfer learning with structured sharing between tasks.

Native ops (CPU and CUDA) live in ``torch.ops.mtlkernels`` and are wrapped,
typed and documented in :mod:`mtlkernels.ops`; :mod:`mtlkernels.reference` holds
a pure-torch version of each op (the oracle of the tests and benchmarks, imported
only when asked for: ``from mtlkernels import reference``).
"""

from ._build import build_info
from . import ops

__version__ = build_info()["version"]

__all__ = ["build_info", "ops", "__version__"]
