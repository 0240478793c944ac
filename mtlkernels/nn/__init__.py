"""Deep modules (torch.nn) of the papers' methods and their penalties."""

from .amtfl import MTCNN, DeepAMTFL, DeepAMTL, OneVsAllCNN, one_vs_all_losses  # noqa: F401  seed 004
