"""A LeNet-style CNN for 28 x 28 images: the base network of the deep experiments' MNIST
settings (Lee et al. 2018 (Deep-AMTFL) sec. 4.2 name "Lenet-Conv" as the base network of
their MNIST-Imbalanced experiment).

Same interface as :class:`mtlkernels.nn.DigitsCNN`: ``features(x)`` is the penultimate
representation (N, hidden), ``head`` a plain ``nn.Linear(hidden, n_out)`` that a method
may replace, ``hidden`` its width.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["LeNetConv", "LeNetDecoder"]


class LeNetConv(nn.Module):
    """conv5x5(in -> c1) - ReLU - maxpool2 - conv5x5(c1 -> c2) - ReLU - maxpool2 -
    linear(16 c2 -> hidden) - ReLU - head.

    The defaults (20, 50, 500) are Caffe's LeNet; the experiments use a narrower one on
    their 2-core CPU budget (their tables say which)."""

    def __init__(self, n_out: int = 10, c1: int = 20, c2: int = 50, hidden: int = 500, in_channels: int = 1):
        super().__init__()
        for name, v in (("n_out", n_out), ("c1", c1), ("c2", c2), ("hidden", hidden), ("in_channels", in_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"LeNetConv: {name} must be a positive integer, got {v!r}")
        self.c1, self.c2, self.in_channels = c1, c2, in_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(c2 * 16, hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, n_out)
        self.hidden = hidden

    def features(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (28, 28):
            raise ValueError(f"LeNetConv expects (N, {self.in_channels}, 28, 28) images, got shape {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class LeNetDecoder(nn.Module):
    """The reversed layers of a :class:`LeNetConv` (CETL's decoder T1, Chen et al. 2018 sec. 3.1:
    "deconvolution and unpooling layers"): code (N, code_dim) -> [Linear(code_dim, hidden)
    - ReLU] -> Linear(-> 16 c2) - ReLU -> (c2, 4, 4) -> unpool x2 -> deconv5x5(c2 -> c1) -
    ReLU -> unpool x2 -> deconv5x5(c1 -> out) -> sigmoid: (N, out, 28, 28) in [0, 1]."""

    def __init__(self, code_dim: int, c1: int = 20, c2: int = 50, hidden: int | None = None, out_channels: int = 1):
        super().__init__()
        if code_dim <= 0:
            raise ValueError(f"LeNetDecoder: code_dim must be positive, got {code_dim}")
        self.code_dim = int(code_dim)
        layers: list[nn.Module] = []
        d = code_dim
        if hidden is not None:
            layers += [nn.Linear(code_dim, hidden), nn.ReLU()]
            d = hidden
        layers += [nn.Linear(d, 16 * c2), nn.ReLU(), nn.Unflatten(1, (c2, 4, 4)),
                   nn.Upsample(scale_factor=2, mode="nearest"), nn.ConvTranspose2d(c2, c1, 5), nn.ReLU(),
                   nn.Upsample(scale_factor=2, mode="nearest"), nn.ConvTranspose2d(c1, out_channels, 5), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, code: Tensor) -> Tensor:
        if code.dim() != 2 or code.shape[1] != self.code_dim:
            raise ValueError(f"LeNetDecoder expects codes of shape (N, {self.code_dim}), got {tuple(code.shape)}")
        return self.net(code)
