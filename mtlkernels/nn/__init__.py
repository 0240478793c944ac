"""torch.nn modules and penalties of the deep methods.

- :class:`AdaptiveSharingLinear` (Shen et al. 2015, Adaptive Sharing, sec. 3.2): a last
  layer with W = C + S.
- :class:`AttributeCNN`, :class:`LatentTaskHead` (Abdulnabi et al. 2015, attribute MTL):
  the multi-task attribute CNN, W = L S.
- :class:`DeepAMTFL` (Lee et al. 2018, Deep-AMTFL, eq. 7) and its baselines
  :class:`OneVsAllCNN` (CNN), :class:`MTCNN` (MT-CNN), :class:`DeepAMTL`, the shallow
  NN / :class:`MTNN` on :class:`OneHiddenLayer` (Table 1); built by name
  with :func:`deep_amtfl_model`.
- :class:`CETLNetworks`, :class:`CETLDecoder` (Chen et al. 2018, CETL): the source, target
  and decoder networks and the coupling codes (the Fisher / GFI math is in
  :mod:`mtlkernels.fisher`).
- :class:`DigitsCNN`, :class:`DigitsMLP`, :class:`DigitsAutoEncoder`: small networks for
  the 8 x 8 digits; :class:`LeNetConv`, :class:`LeNetDecoder` for 28 x 28 images (MNIST).
- Penalties and proximal hooks for any loop: :func:`total_penalty`,
  :func:`apply_proximal_steps`, :func:`add_proximal_hook` (and, for Lightning,
  :mod:`mtlkernels.lightning`).
"""

from .adaptive_sharing import AdaptiveSharingLinear
from .amtfl import MTCNN, DeepAMTFL, DeepAMTL, OneVsAllCNN, one_vs_all_losses
from .amtfl_models import METHODS, deep_amtfl_model
from .amtfl_shallow import MTNN, OneHiddenLayer
from .attribute_mtl import (AttributeCNN, LatentTaskHead, PerAttributeConvTrunks, SingleTaskHead, attribute_accuracy,
                            squared_hinge_loss)
from .cetl import CETLDecoder, CETLNetworks, coupling_code
from .digits import DigitsAutoEncoder, DigitsCNN, DigitsMLP
from .lenet import LeNetConv, LeNetDecoder
from .hooks import WithPenalty, add_proximal_hook, apply_proximal_steps, total_penalty

__all__ = [
    "DigitsCNN",
    "DigitsMLP",
    "DigitsAutoEncoder",
    "LeNetConv",
    "LeNetDecoder",
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
    "MTNN",
    "OneHiddenLayer",
    "METHODS",
    "deep_amtfl_model",
    "one_vs_all_losses",
    "CETLNetworks",
    "CETLDecoder",
    "coupling_code",
]
