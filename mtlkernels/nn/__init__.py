"""torch.nn modules and penalties of the deep methods.

- :class:`CETLDecoder` and the GFI pieces (seed 002): the CETL decoder T1, coupling codes,
  diagonal Fisher, relative Fisher (eq. 9), generalized Fisher information (eq. 10).
"""

from .cetl import (CETLDecoder, coupling_code, diagonal_fisher, generalized_fisher, normalize_importance,
                   per_sample_grads, relative_fisher)
from .cnn import DigitsCNN

__all__ = [
    "DigitsCNN",
    "CETLDecoder",
    "coupling_code",
    "per_sample_grads",
    "diagonal_fisher",
    "relative_fisher",
    "generalized_fisher",
    "normalize_importance",
]
