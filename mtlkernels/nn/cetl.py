"""The networks of CETL (Chen, Zhang and Dong 2018, coupled end-to-end transfer learning):
the decoder T1, the coupling codes and :class:`CETLNetworks`, the container that
:class:`mtlkernels.train.CETLTrainer` trains.

Sec. 3.1: a frozen source network S and a target network T2 feed a shared decoder T1
("deconvolution and unpooling layers"). T1 decodes a *code* of S or of T2 back into the
input space (eqs. 2 and 5). The information measures of sec. 3.2 (Fisher, relative
Fisher, GFI) are in :mod:`mtlkernels.fisher`; the DWA loss of eq. 11 is the op
:func:`mtlkernels.ops.dwa_penalty`.

Readings chosen where the paper is silent or ambiguous (each is tested):

- **Code.** ``coupling="features"``: the penultimate representation (``net.features(x)``,
  the paper's "features before the last fully connected layer", sec. 4.1.1); S and T2
  must then have the same feature width. ``coupling="soft"``: the soft targets
  ``softmax(net(x) / temperature)`` (sec. 3.4.2, knowledge distillation "takes advantage
  of the soft targets"); S and T2 need the same number of outputs, any architecture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lenet import LeNetConv, LeNetDecoder

__all__ = ["CETLDecoder", "CETLNetworks", "coupling_code", "COUPLINGS"]

COUPLINGS = ("features", "soft")


class CETLDecoder(nn.Module):
    """T1, the shared decoder of CETL (Chen et al. 2018, sec. 3.1, Fig. 1): the reversed layers of a
    :class:`~mtlkernels.nn.digits.DigitsCNN` body, with unpooling and deconvolutions.

    ``code (N, code_dim)`` -> [Linear(code_dim, hidden) - ReLU] -> Linear(-> 2w * 4 * 4) -
    ReLU -> unflatten (2w, 4, 4) -> unpool x2 (nearest) -> deconv3x3(2w -> w) - ReLU ->
    deconv3x3(w -> out_channels) -> sigmoid (images lie in [0, 1]).

    The optional first layer (``hidden``) is used when the code is not the feature
    vector of the mirrored network (the soft outputs of ``coupling="soft"``).
    """

    def __init__(self, code_dim: int, width: int = 16, hidden: int | None = None, out_channels: int = 1):
        super().__init__()
        if code_dim <= 0 or width <= 0:
            raise ValueError(f"CETLDecoder: code_dim and width must be positive, got {code_dim}, {width}")
        self.code_dim = int(code_dim)
        layers: list[nn.Module] = []
        d = code_dim
        if hidden is not None:
            layers += [nn.Linear(code_dim, hidden), nn.ReLU()]
            d = hidden
        layers += [
            nn.Linear(d, 2 * width * 16), nn.ReLU(),
            nn.Unflatten(1, (2 * width, 4, 4)),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.ConvTranspose2d(2 * width, width, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, out_channels, 3, padding=1),
            nn.Sigmoid(),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, code: Tensor) -> Tensor:
        if code.dim() != 2 or code.shape[1] != self.code_dim:
            raise ValueError(f"CETLDecoder expects codes of shape (N, {self.code_dim}), got {tuple(code.shape)}")
        return self.net(code)

    @classmethod
    def mirror(cls, cnn: nn.Module, coupling: str = "features", n_outputs: int | None = None,
               width: int | None = None) -> "CETLDecoder":
        """The reversed layers of ``cnn`` (a DigitsCNN; a :class:`~mtlkernels.nn.LeNetConv` gets a
        :class:`~mtlkernels.nn.LeNetDecoder`): code width = its feature width
        (``coupling="features"``) or its number of outputs (``"soft"``, with one more
        linear layer back to the feature width)."""
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
        if isinstance(cnn, LeNetConv):  # 28 x 28 images: the reversed LeNet
            hidden = int(cnn.hidden)
            if coupling == "features":
                return LeNetDecoder(hidden, cnn.c1, cnn.c2, None, cnn.in_channels)
            return LeNetDecoder(n_outputs or cnn.head.out_features, cnn.c1, cnn.c2, hidden, cnn.in_channels)
        w = width or _first_conv(cnn).out_channels
        in_ch = _first_conv(cnn).in_channels
        hidden = int(cnn.hidden)
        if coupling == "features":
            return cls(hidden, w, None, in_ch)
        n_out = n_outputs or cnn.head.out_features
        return cls(n_out, w, hidden, in_ch)


def _first_conv(cnn: nn.Module) -> nn.Conv2d:
    for m in cnn.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise ValueError("CETLDecoder.mirror needs a network with a Conv2d layer (a DigitsCNN)")


def coupling_code(net: nn.Module, x: Tensor, coupling: str = "features", temperature: float = 1.0) -> Tensor:
    """The representation that T1 decodes (Chen et al. 2018, eqs. 2 and 5): ``net.features(x)`` or
    the soft targets ``softmax(net(x) / temperature)`` (see the module docstring)."""
    if coupling == "features":
        feats = getattr(net, "features", None)
        if not callable(feats):
            raise TypeError(f"coupling='features' needs a network with a .features(x) method, got {type(net).__name__}")
        return feats(x)
    if coupling == "soft":
        return F.softmax(net(x) / temperature, dim=1)
    raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")


class CETLNetworks(nn.Module):
    """The three networks of CETL (sec. 3.1, Fig. 1) as one module, the ``model`` of
    :class:`mtlkernels.train.CETLTrainer`.

    Args:
        source: S, pre-trained (eq. 1), frozen: its parameters are set to
            ``requires_grad=False`` and it stays in eval mode (it is only run forward).
        target: T2, the network to train (a DigitsCNN-like module: ``forward`` gives the
            class scores, ``features`` the code for ``coupling="features"``).
        decoder: T1; None lets the trainer build ``CETLDecoder.mirror(target, coupling)``
            from its config (seeded).

    ``forward(x)`` is T2's class scores, so predictions and scores are T2's.
    """

    def __init__(self, source: nn.Module, target: nn.Module, decoder: nn.Module | None = None):
        super().__init__()
        for name, net in (("source", source), ("target", target)):
            if not isinstance(net, nn.Module):
                raise TypeError(f"CETLNetworks: {name} must be an nn.Module, got {type(net).__name__}")
        if decoder is not None and not isinstance(decoder, nn.Module):
            raise TypeError(f"CETLNetworks: decoder must be an nn.Module or None, got {type(decoder).__name__}")
        self.source = source
        self.target = target
        self.decoder = decoder
        for p in self.source.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "CETLNetworks":
        super().train(mode)
        self.source.eval()  # S is frozen: never in training mode (no batch-norm update, no dropout)
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.target(x)
