"""The solvers of the feature-based methods: one proximal-gradient engine and one ADMM.

- :func:`fista` (``optim/fista.py``): accelerated proximal gradient with backtracking and
  restart, for any smooth part (autograd) or a :class:`Quadratic`; Adaptive Sharing's
  APG, eqs. 7-9 of Shen, Sun, Lin, Huang and Wu (2015).
- :func:`admm` (``optim/admm.py``): ADMM with exact resolvents of :class:`Quadratic`
  smooth parts; the engine for squared losses with small (per-task) Gram matrices,
  whatever their conditioning.
- :class:`Quadratic`, :class:`TaskGram`, :func:`gram_matrix` (``optim/quadratic.py``):
  the squared loss in Gram form.

Both engines take the proximal maps from :mod:`mtlkernels.ops` and never write proximal
math themselves.
"""

from .admm import AdmmResult, admm
from .fista import FistaResult, fista
from .quadratic import Quadratic, TaskGram, gram_matrix

__all__ = ["AdmmResult", "admm", "FistaResult", "fista", "Quadratic", "TaskGram", "gram_matrix"]
