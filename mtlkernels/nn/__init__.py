"""torch.nn modules and penalties of the deep methods.

- :class:`AdaptiveSharingLinear` (seed 000 sec. 3.2): last layer with W = C + S.
- :class:`AttributeCNN`, :class:`LatentTaskHead` (seed 003): multi-task attribute CNN, W = L S.
- :class:`DeepAMTFL` (seed 004 eq. 7) and its baselines :class:`OneVsAllCNN` (CNN),
  :class:`MTCNN` (MT-CNN), :class:`DeepAMTL`.
- :class:`CETLDecoder` and the GFI pieces (seed 002): the CETL decoder T1, coupling codes,
  diagonal Fisher, relative Fisher (eq. 9), generalized Fisher information (eq. 10).
"""

from .adaptive_sharing import AdaptiveSharingLinear
from .hooks import WithPenalty, add_proximal_hook, apply_proximal_steps, total_penalty
from .attribute import (AttributeCNN, LatentTaskHead, PerAttributeConvTrunks, SingleTaskHead, attribute_accuracy,
                        squared_hinge_loss)
from .amtfl import MTCNN, DeepAMTFL, DeepAMTL, OneVsAllCNN, one_vs_all_losses
from .cetl import (CETLDecoder, coupling_code, diagonal_fisher, generalized_fisher, normalize_importance,
                   per_sample_grads, relative_fisher)
from .cnn import DigitsCNN

__all__ = [
    "DigitsCNN",
    "AdaptiveSharingLinear",
    "WithPenalty",
    "total_penalty",
    "add_proximal_hook",
    "apply_proximal_steps",
    "AttributeCNN",
    "LatentTaskHead",
    "PerAttributeConvTrunks",
    "SingleTaskHead",
    "squared_hinge_loss",
    "attribute_accuracy",
    "DeepAMTFL",
    "DeepAMTL",
    "MTCNN",
    "OneVsAllCNN",
    "one_vs_all_losses",
    "CETLDecoder",
    "coupling_code",
    "per_sample_grads",
    "diagonal_fisher",
    "relative_fisher",
    "generalized_fisher",
    "normalize_importance",
]
