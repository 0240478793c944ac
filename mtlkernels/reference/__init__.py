"""Pure-torch references of every op in :mod:`mtlkernels.ops`.

They define what each op computes, and are the oracle of the tests and the eager
peer of the benchmarks. Models and trainers never call them: they call the ops.
"""

from .amtfl import amtfl_reconstruction_loss  # noqa: F401
from .dwa import dwa_grad, dwa_penalty  # noqa: F401
from .shrinkage import (  # noqa: F401
    elastic_net_prox,
    group_prox_grad_step,
    group_soft_threshold,
    group_sum,
    group_threshold,
    prox_grad_step,
    soft_threshold,
)
from .nuclear import (  # noqa: F401
    huber,
    nuclear_norm,
    smoothed_nuclear_norm,
    smoothed_nuclear_norm_grad,
    svt,
)
from .irls import (  # noqa: F401
    cdist_sq_dists,
    gram_sq_dists,
    irls_consensus,
    irls_weights,
    layer_pair_sq_dists,
    layer_weights,
    pairwise_mix,
    pairwise_sq_dists,
    robust_consistency,
    sigma_init,
)
