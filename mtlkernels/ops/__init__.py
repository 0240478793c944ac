"""The one bridge to the native ops in ``torch.ops.mtlkernels``.

One module per op family; each holds the typed, documented wrappers, their argument
checks (``_checks.py``: the same rules as the C++ entries, run before the dispatcher and
in the fake kernels) and registers the fake (shape) kernels; the autograd formulas and
autocast rules are registered there too, or in ``<family>_autograd.py`` for the larger
families:

- :mod:`.shrinkage`: soft_threshold, elastic_net_prox, group_soft_threshold and the
  fused proximal-gradient steps (in-place variants end in ``_``).
- :mod:`.nuclear`: svt, nuclear_norm, smoothed_nuclear_norm and its gradient
  (singular value soft-thresholding and the nuclear norm, batched).
- :mod:`.irls`: pairwise_sq_dists, irls_weights, robust_consistency, irls_consensus,
  pairwise_mix and the layer-pair helpers of Zhang et al. 2019 (joint IRLS).
- :mod:`.amtfl`: amtfl_reconstruction_loss (Lee et al. 2018 (Deep-AMTFL), eqs. 6-7), fused
  forward+backward.
- :mod:`.dwa`: dwa_penalty and the in-place ``dwa_grad_`` (Chen et al. 2018 (CETL), eq. 11),
  multi-tensor.
"""

from .shrinkage import *  # noqa: F401,F403
from .shrinkage import __all__ as _shrinkage_all
from .nuclear import *  # noqa: F401,F403
from .nuclear import __all__ as _nuclear_all
from .irls import *  # noqa: F401,F403
from .irls import __all__ as _irls_all
from .amtfl import *  # noqa: F401,F403
from .amtfl import __all__ as _amtfl_all
from .dwa import *  # noqa: F401,F403
from .dwa import __all__ as _dwa_all

__all__ = [*_shrinkage_all, *_nuclear_all, *_irls_all, *_amtfl_all, *_dwa_all]
