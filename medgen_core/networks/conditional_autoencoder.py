"""Class-conditional convolutional autoencoder with interchangeable conditioning strategies.

MONAI has no conditional autoencoder, so this one is assembled from MONAI blocks
(:class:`monai.networks.blocks.Convolution`): a strided-convolution encoder to a latent *vector*
``z`` of ``latent_size`` numbers and a transposed-convolution decoder back to the image. The class
enters both halves through one of three strategies (``conditioning``):

* ``"onehot"``: the one-hot class vector is concatenated to the image as constant channels (encoder)
  and to ``z`` (decoder);
* ``"embedding"``: a learned class embedding (``embedding_dim`` numbers) is concatenated in the same
  places;
* ``"film"``: feature-wise linear modulation (Perez et al., AAAI 2018): after every convolution stage
  the features become ``h * (1 + gamma_c) + beta_c`` with learned per-class ``gamma``/``beta``.

Besides classes ``0..K-1`` there is a "null" code ``K`` (class unknown: an all-zero one-hot vector, a
learned null embedding, a learned null modulation), used when ``class_labels`` is None and, with
class dropout during training, learned as an unconditional mode. Every strategy also accepts soft class
weights ``(B, K + 1)`` (rows summing to 1), which interpolates the condition between classes.

Encoder and decoder are separate submodules (:class:`ConditionalEncoder`, :class:`ConditionalDecoder`)
that declare their :meth:`~ConditionalEncoder.signature` (latent shape, conditioning strategy, number
of classes, image size), so an encoder of one model can be combined with the decoder of another when
these agree (:mod:`medgen_core.experiments.lab.mix`).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

__all__ = ["CONDITIONING_STRATEGIES", "ConditionalAutoencoder", "ConditionalDecoder", "ConditionalEncoder", "class_weights"]

#: Names accepted by ``conditioning``.
CONDITIONING_STRATEGIES = ("onehot", "embedding", "film")


def class_weights(class_labels: Optional[torch.Tensor], num_classes: int, batch: int, device: torch.device) -> torch.Tensor:
    """Integer labels ``(B,)`` in ``[0, K]`` (``K`` = null), or None (all null) -> one-hot weights ``(B, K + 1)``."""
    if class_labels is None:
        class_labels = torch.full((batch,), num_classes, dtype=torch.long, device=device)
    return F.one_hot(class_labels.long(), num_classes + 1).float()


class _NoModulation(nn.Module):
    """Identity stand-in for FiLM in the concatenating strategies."""

    def forward(self, h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return h


class _FiLM(nn.Module):
    """``h * (1 + gamma) + beta`` with per-class ``(gamma, beta)`` rows mixed by the class weights ``(B, K + 1)``."""

    def __init__(self, channels: int, num_codes: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(num_codes, 2 * channels) * 0.1)

    def forward(self, h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        gamma, beta = (weights @ self.table).chunk(2, dim=1)
        shape = [h.shape[0], h.shape[1]] + [1] * (h.dim() - 2)
        return h * (1.0 + gamma.reshape(shape)) + beta.reshape(shape)


class _Stage(nn.Module):
    """One MONAI ``Convolution`` followed by the stage's class modulation."""

    def __init__(self, conv: nn.Module, modulation: nn.Module) -> None:
        super().__init__()
        self.conv, self.modulation = conv, modulation

    def forward(self, h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.modulation(self.conv(h), weights)


class _ClassCode(nn.Module):
    """The class vector concatenated by the ``onehot`` / ``embedding`` strategies (``dim`` numbers; 0 for FiLM)."""

    def __init__(self, conditioning: str, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.use_embedding = conditioning == "embedding"
        self.dim = {"onehot": num_classes, "embedding": embedding_dim, "film": 0}[conditioning]
        if self.use_embedding:
            self.embedding = nn.Parameter(torch.randn(num_classes + 1, embedding_dim))
        else:  # a buffer, not a parameter: DDP refuses parameters that never receive a gradient
            self.register_buffer("embedding", torch.zeros(0))

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        if self.use_embedding:
            return weights @ self.embedding
        if self.dim == 0:
            return weights[:, :0]
        return weights[:, : self.num_classes]  # the null code is the all-zero one-hot vector


def _check(owner: str, spatial_dims: int, image_size: int, channels: Sequence[int], latent_size: int, num_classes: int, conditioning: str) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"{owner}: spatial_dims must be 2 or 3, got {spatial_dims}.")
    if conditioning not in CONDITIONING_STRATEGIES:
        raise ValueError(f"{owner}: conditioning must be one of {CONDITIONING_STRATEGIES}, got {conditioning!r}.")
    if len(channels) < 1 or min(channels) < 1:
        raise ValueError(f"{owner}: channels must be a non-empty sequence of positive ints, got {list(channels)}.")
    if image_size % (2 ** len(channels)):
        raise ValueError(f"{owner}: image_size {image_size} must be divisible by 2**len(channels) = {2 ** len(channels)}.")
    if latent_size < 1 or num_classes < 1:
        raise ValueError(f"{owner}: latent_size and num_classes must be >= 1, got {latent_size} and {num_classes}.")


class ConditionalEncoder(nn.Module):
    """``(B, in_channels, S, S[, S])`` image + class -> latent ``(B, latent_size)``.

    Stages: one MONAI ``Convolution`` per entry of ``channels``, stride 2 (so the image shrinks by
    ``2**len(channels)``), PReLU, instance norm; then a linear map of the flattened features to ``z``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        image_size: side of the (square/cubic) input.
        channels: feature channels per stage, e.g. ``(16, 32, 64, 64)``.
        latent_size: length of ``z``.
        num_classes: number of classes ``K`` (a null code ``K`` is added).
        conditioning: one of :data:`CONDITIONING_STRATEGIES`.
        embedding_dim: class embedding length for ``"embedding"``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, image_size: int, channels: Sequence[int], latent_size: int,
                 num_classes: int, conditioning: str = "film", embedding_dim: int = 8) -> None:
        super().__init__()
        _check("ConditionalEncoder", spatial_dims, image_size, channels, latent_size, num_classes, conditioning)
        self.spatial_dims, self.in_channels, self.image_size = spatial_dims, in_channels, image_size
        self.latent_size, self.num_classes, self.conditioning = latent_size, num_classes, conditioning
        self.code = _ClassCode(conditioning, num_classes, embedding_dim)
        film = conditioning == "film"
        stages, cin = [], in_channels + self.code.dim
        for c in channels:
            conv = Convolution(spatial_dims, cin, c, strides=2, kernel_size=3, act="PRELU", norm="INSTANCE")
            stages.append(_Stage(conv, _FiLM(c, num_classes + 1) if film else _NoModulation()))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.bottom = image_size // 2 ** len(channels)
        self.to_latent = nn.Linear(cin * self.bottom**spatial_dims, latent_size)

    def signature(self) -> dict[str, Any]:
        """What a decoder must agree with: latent shape, conditioning, number of classes, image size and channels."""
        return {"latent_shape": [self.latent_size], "conditioning": self.conditioning, "num_classes": self.num_classes,
                "image_size": self.image_size, "channels": self.in_channels, "spatial_dims": self.spatial_dims}

    def encode_weighted(self, image: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Encode with class weights ``(B, K + 1)``; returns ``(B, latent_size)``."""
        h = image
        code = self.code(weights)
        if code.shape[1] > 0:
            shape = [code.shape[0], code.shape[1]] + [1] * (image.dim() - 2)
            h = torch.cat([image, code.reshape(shape).expand([-1, -1] + list(image.shape[2:]))], dim=1)
        for stage in self.stages:
            h = stage(h, weights)
        return self.to_latent(h.flatten(1))

    def forward(self, image: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``image (B, C, S, S[, S])``, ``class_labels (B,)`` int in ``[0, K]`` or None (null) -> ``z (B, latent_size)``."""
        return self.encode_weighted(image, class_weights(class_labels, self.num_classes, image.shape[0], image.device))


class ConditionalDecoder(nn.Module):
    """Latent ``(B, latent_size)`` + class -> image ``(B, out_channels, S, S[, S])`` in [0, 1] (sigmoid).

    Mirror of :class:`ConditionalEncoder`: a linear map to the bottom feature map, then one transposed
    MONAI ``Convolution`` (stride 2) per stage, and a final 3x3 convolution to ``out_channels``.
    Arguments as for the encoder (``out_channels`` in place of ``in_channels``).
    """

    def __init__(self, spatial_dims: int, out_channels: int, image_size: int, channels: Sequence[int], latent_size: int,
                 num_classes: int, conditioning: str = "film", embedding_dim: int = 8) -> None:
        super().__init__()
        _check("ConditionalDecoder", spatial_dims, image_size, channels, latent_size, num_classes, conditioning)
        self.spatial_dims, self.out_channels, self.image_size = spatial_dims, out_channels, image_size
        self.latent_size, self.num_classes, self.conditioning = latent_size, num_classes, conditioning
        self.code = _ClassCode(conditioning, num_classes, embedding_dim)
        film = conditioning == "film"
        rev = list(channels)[::-1]
        self.bottom = image_size // 2 ** len(channels)
        self.bottom_channels = rev[0]
        self.from_latent = nn.Linear(latent_size + self.code.dim, rev[0] * self.bottom**spatial_dims)
        self.bottom_modulation = _FiLM(rev[0], num_classes + 1) if film else _NoModulation()
        stages = []
        for cin, cout in zip(rev, rev[1:] + [rev[-1]]):
            conv = Convolution(spatial_dims, cin, cout, strides=2, kernel_size=3, act="PRELU", norm="INSTANCE", is_transposed=True)
            stages.append(_Stage(conv, _FiLM(cout, num_classes + 1) if film else _NoModulation()))
        self.stages = nn.ModuleList(stages)
        self.head = Convolution(spatial_dims, rev[-1], out_channels, kernel_size=3, conv_only=True)

    def signature(self) -> dict[str, Any]:
        """See :meth:`ConditionalEncoder.signature`."""
        return {"latent_shape": [self.latent_size], "conditioning": self.conditioning, "num_classes": self.num_classes,
                "image_size": self.image_size, "channels": self.out_channels, "spatial_dims": self.spatial_dims}

    def decode_weighted(self, z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Decode ``z (B, latent_size)`` with class weights ``(B, K + 1)``."""
        code = self.code(weights)
        h = self.from_latent(torch.cat([z, code], dim=1) if code.shape[1] > 0 else z)
        h = h.reshape([z.shape[0], self.bottom_channels] + [self.bottom] * self.spatial_dims)
        h = self.bottom_modulation(F.prelu(h, torch.full((1,), 0.25, device=h.device, dtype=h.dtype)), weights)
        for stage in self.stages:
            h = stage(h, weights)
        return torch.sigmoid(self.head(h))

    def forward(self, z: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``z (B, latent_size)``, ``class_labels (B,)`` or None -> ``(B, out_channels, S, S[, S])``."""
        return self.decode_weighted(z, class_weights(class_labels, self.num_classes, z.shape[0], z.device))


class ConditionalAutoencoder(nn.Module):
    """Encoder + decoder; ``forward(image, class_labels=None)`` reconstructs the image.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (also the output channels).
        image_size: side of the square (cubic) image, divisible by ``2**len(channels)``.
        channels: feature channels per encoder stage (the decoder mirrors them).
        latent_size: length of the latent vector ``z``.
        num_classes: number of classes ``K``.
        conditioning: ``"onehot"``, ``"embedding"`` or ``"film"`` (:data:`CONDITIONING_STRATEGIES`).
        embedding_dim: embedding length for ``"embedding"``.

    Example::

        net = ConditionalAutoencoder(2, 1, 64, (16, 32, 64, 64), latent_size=32, num_classes=4, conditioning="film")
        z = net.encode(x, labels)            # (B, 32)
        y = net.decode(z, labels)            # (B, 1, 64, 64) in [0, 1]
    """

    __jit_unused_properties__ = ["latent_shape"]

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, channels: Sequence[int] = (16, 32, 64, 64),
                 latent_size: int = 32, num_classes: int = 4, conditioning: str = "film", embedding_dim: int = 8) -> None:
        super().__init__()
        args = (spatial_dims, in_channels, image_size, tuple(channels), latent_size, num_classes, conditioning, embedding_dim)
        self.encoder = ConditionalEncoder(*args)
        self.decoder = ConditionalDecoder(*args)
        self.spatial_dims, self.in_channels, self.image_size = spatial_dims, in_channels, image_size
        self.latent_size, self.num_classes, self.conditioning = latent_size, num_classes, conditioning

    @classmethod
    def from_parts(cls, encoder: ConditionalEncoder, decoder: ConditionalDecoder) -> "ConditionalAutoencoder":
        """An autoencoder made of an existing encoder and decoder (no compatibility check; see :mod:`medgen_core.experiments.lab.mix`)."""
        net = cls.__new__(cls)
        nn.Module.__init__(net)
        net.encoder, net.decoder = encoder, decoder
        net.spatial_dims, net.in_channels, net.image_size = encoder.spatial_dims, encoder.in_channels, encoder.image_size
        net.latent_size, net.num_classes, net.conditioning = encoder.latent_size, encoder.num_classes, encoder.conditioning
        return net

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent code: ``(latent_size,)``."""
        return (self.latent_size,)

    def encode(self, image: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, C, *S)`` -> ``(B, latent_size)``."""
        return self.encoder(image, class_labels)

    def decode(self, z: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, latent_size)`` -> ``(B, C, *S)`` in [0, 1]."""
        return self.decoder(z, class_labels)

    def forward(self, image: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Reconstruction ``(B, C, *S)`` of ``image (B, C, *S)`` given ``class_labels (B,)`` (None = null class)."""
        return self.decoder(self.encoder(image, class_labels), class_labels)
