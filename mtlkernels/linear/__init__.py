"""Feature-based multi-task estimators in scikit-learn's conventions.

- :class:`AdaptiveSharing`: Shen, Sun, Lin, Huang and Wu (2015), eq. 3 (W = C + S, nuclear + l1), APG eqs. 7-9
- :class:`LatentTaskMTL`: Abdulnabi, Wang, Lu and Jia (2015), eq. 2 (W = L S, group lasso on S, l1 + Frobenius on L)
- :class:`GoMTL`: Kumar and Daume III (2012), as written in Lee, Yang and Hwang (2018), eq. 3
- :class:`AMTL`: Lee, Yang and Hwang (2016), as written in Lee, Yang and Hwang (2018), eq. 4
- :class:`AMTFL`: Lee, Yang and Hwang (2018), eq. 6 (shallow asymmetric multi-task feature learning)
- :class:`TraceNormMTL`: Ji and Ye (2009); MALSAR's Least_Trace / Logistic_Trace
- :class:`JointFeatureSelection`: Argyriou, Evgeniou and Pontil (2007), JFS; MALSAR's Least_L21 / Logistic_L21
- :class:`SingleTaskLinear`: STL, the independent baseline

Solvers (:mod:`mtlkernels.optim`): the squared loss with small Gram matrices goes to ADMM
with exact per-task solves (or a closed form), whatever the scale and conditioning of the
raw features; the logistic and squared-hinge losses to proximal Newton (``_newton.py``: the
same ADMM on each step's second-order model) while the per-task Gram matrices are small, else to
FISTA with the fused proximal ops. The alternating models
solve each block to its optimum and stop when every block's KKT residual is at most
``tol``; otherwise they warn (scikit-learn's ``ConvergenceWarning``). Full references:
``docs/papers.md``.
"""

from .adaptive_sharing import AdaptiveSharing
from .amtfl import AMTFL
from .amtl import AMTL
from .attribute import LatentTaskMTL
from .joint_feature_selection import JointFeatureSelection
from .latent import GoMTL
from .stl import SingleTaskLinear
from .trace_norm import TraceNormMTL

__all__ = ["AdaptiveSharing", "AMTFL", "AMTL", "GoMTL", "JointFeatureSelection", "LatentTaskMTL",
           "SingleTaskLinear", "TraceNormMTL"]
