"""torch.nn modules and penalties of the deep methods.

- :class:`AdaptiveSharingLinear` (seed 000 sec. 3.2): last layer with W = C + S.
- :class:`AttributeCNN`, :class:`LatentTaskHead` (seed 003): multi-task attribute CNN, W = L S.
"""

from .adaptive_sharing import AdaptiveSharingLinear
from .hooks import WithPenalty, add_proximal_hook, apply_proximal_steps, total_penalty
from .attribute import (AttributeCNN, LatentTaskHead, PerAttributeConvTrunks, SingleTaskHead, attribute_accuracy,
                        squared_hinge_loss)
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
]
