"""Small networks for the 8 x 8 digits images (the offline stand-in for the papers'
networks): a CNN, an MLP classifier and an MLP auto-encoder."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

__all__ = ["DigitsCNN", "DigitsMLP", "DigitsAutoEncoder"]


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


class DigitsMLP(nn.Module):
    """A small classifier for (N, 1, 8, 8) digits: flatten - [linear - ReLU] * k - linear."""

    def __init__(self, n_out: int = 10, hidden: Sequence[int] = (64, 32), in_features: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DigitsAutoEncoder(nn.Module):
    """A small auto-encoder for (N, 1, 8, 8) images in [0, 1] (the joint-IRLS paper's
    Task II, Zhang et al. 2019 sec. 5.3, at small scale).

    Encoder 64 - hidden - code, decoder code - hidden - 64 (ReLU inside, a sigmoid on the
    output), four linear layers in all, so four layer pairs for the consistency term;
    the output has the input's shape.
    """

    def __init__(self, code: int = 16, hidden: int = 48, side: int = 8):
        super().__init__()
        d = side * side
        self.side = side
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, code), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, d), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x)).view(x.shape[0], 1, self.side, self.side)
