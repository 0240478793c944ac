"""Feature-based multi-task estimators in scikit-learn's conventions.

| estimator | paper, equation |
|---|---|
| :class:`AdaptiveSharing` | seed 000 eq. 3 (W = C + S, nuclear + l1), APG eqs. 7-9 |
| :class:`LatentTaskMTL` | seed 003 eq. 2 (W = L S, squared hinge, group lasso on S, l1 + Frobenius on L) |
| :class:`GoMTL` | seed 004 eq. 3 (Kumar and Daume III, 2012) |
| :class:`AMTL` | seed 004 eq. 4 (Lee et al., 2016) |
| :class:`AMTFL` | seed 004 eq. 6 (shallow asymmetric multi-task feature learning) |
| :class:`SingleTaskLinear` | STL, the independent baseline |

All are solved by :func:`mtlkernels.optim.fista` with the fused proximal ops.
"""

from .adaptive_sharing import AdaptiveSharing
from .amtfl import AMTFL
from .amtl import AMTL
from .latent import GoMTL, LatentTaskMTL
from .stl import SingleTaskLinear

__all__ = ["AdaptiveSharing", "AMTFL", "AMTL", "GoMTL", "LatentTaskMTL", "SingleTaskLinear"]
