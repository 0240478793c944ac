"""Small convolutional networks for the 8 x 8 digits images (the offline stand-in for
the papers' CNNs)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DigitsCNN(nn.Module):
    """conv3x3(1->w) - ReLU - conv3x3(w->2w) - ReLU - maxpool2 - linear(32w -> hidden) - ReLU - head.

    ``features(x)`` returns the penultimate representation (N, hidden); ``head`` is a
    plain ``nn.Linear(hidden, n_out)`` that a method may replace (for example by
    :class:`mtlkernels.nn.AdaptiveSharingLinear`).
    """

    def __init__(self, n_out: int = 10, width: int = 16, hidden: int = 64, in_channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(2 * width * 16, hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, n_out)
        self.hidden = hidden

    def features(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[-2:] != (8, 8):
            raise ValueError(f"DigitsCNN expects (N, C, 8, 8) images, got shape {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
