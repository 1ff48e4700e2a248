"""Pix2Pix U-Net generator whose up-samplings are searchable mixtures of transposed convolutions (GenSeg).

Reference: Zhang et al., "Generative AI enables medical image segmentation in ultra low-data regimes"
(GenSeg; code ``importZL/semantic_segmentation``) and Liu et al., "DARTS: Differentiable Architecture Search",
ICLR 2019 (the mixed operation).
The generator is Pix2Pix's ``unet_256`` (Isola et al. 2017); every decoder up-sampling is replaced by a
DARTS-style mixed operation ``sum_k softmax(alpha)_k * ConvTranspose_k(x)`` over kernel sizes {4, 6, 8}
(stride 2). The logits ``alpha`` (one vector per level) are the architecture parameters that GenSeg tunes
on the validation segmentation loss; :meth:`SearchablePix2PixUNet.derive` reads off the chosen kernels.

Code names -> paper symbols: ``arch_parameters()`` = alpha (A), ``weight_parameters()`` = W (G's weights).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Dropout, Norm
from monai.utils import ensure_tuple
from torch.autograd.function import once_differentiable

__all__ = ["MixedUpsample", "SearchablePix2PixUNet", "transposed_conv_padding"]

_NORMS = {"batch": Norm.BATCH, "instance": Norm.INSTANCE}


def transposed_conv_padding(kernel_size: int) -> tuple[int, int]:
    """``(padding, output_padding)`` so that a stride-2 transposed convolution exactly doubles every size.

    ``out = 2 (n - 1) - 2 p + k + op = 2 n`` needs ``k + op - 2 p = 2``: ``p = (k - 1) // 2``, ``op = k % 2``
    (even k: ``p = k/2 - 1``, ``op = 0``; odd k: ``p = (k - 1)/2``, ``op = 1``).
    """
    if kernel_size < 2:
        raise ValueError(f"transposed_conv_padding: kernel_size must be >= 2, got {kernel_size}.")
    return (kernel_size - 1) // 2, kernel_size % 2


@contextmanager
def _mkldnn_disabled() -> Iterator[None]:
    """Switch oneDNN off (``torch.backends.mkldnn.flags`` would also reset its TF32 setting, with a warning)."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


class _ConvTranspose3dNoMkldnn(torch.autograd.Function):
    """Stride-2 ``conv_transpose3d`` computed without oneDNN (forward and backward).

    PyTorch's CPU oneDNN path returns garbage weight gradients (values ~1e30, sometimes heap corruption) for
    ``ConvTranspose3d(kernel 8, stride 2, padding 3)`` on inputs of 3-4 voxels per side with few channels
    (seen with torch 2.13.0+cpu); the native kernels are correct. First-order only (GenSeg never needs second
    derivatives of the generator).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, ...],
                output_padding: tuple[int, ...]) -> torch.Tensor:
        ctx.save_for_backward(x, weight, bias)
        ctx.conv_args = (padding, output_padding)
        with _mkldnn_disabled():
            return F.conv_transpose3d(x, weight, bias, stride=2, padding=padding, output_padding=output_padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, bias = ctx.saved_tensors
        padding, output_padding = ctx.conv_args
        leaves = [t.detach().requires_grad_(need) if t is not None else None
                  for t, need in zip((x, weight, bias), ctx.needs_input_grad[:3])]
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        grads = iter(())
        if wanted:
            with _mkldnn_disabled(), torch.enable_grad():
                y = F.conv_transpose3d(*leaves, stride=2, padding=padding, output_padding=output_padding)
                grads = iter(torch.autograd.grad(y, wanted, grad_out))
        out = [next(grads) if t is not None and t.requires_grad else None for t in leaves]
        return (*out, None, None)


class MixedUpsample(nn.Module):
    """Softmax-weighted sum of stride-2 transposed convolutions with different kernel sizes.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_sizes: candidate kernel sizes (GenSeg: 4, 6, 8).
        bias: whether the transposed convolutions have a bias.

    The mixture logits ``arch_logits`` ``(len(kernel_sizes),)`` start at zero (uniform mixture).
    Shapes: ``(B, in_channels, *S)`` -> ``(B, out_channels, *(2 S))``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...] = (4, 6, 8),
                 bias: bool = True) -> None:
        super().__init__()
        tconv = Conv[Conv.CONVTRANS, spatial_dims]
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        ops = []
        for k in self.kernel_sizes:
            padding, output_padding = transposed_conv_padding(k)
            ops.append(tconv(in_channels, out_channels, k, stride=2, padding=padding, output_padding=output_padding, bias=bias))
        self.ops = nn.ModuleList(ops)
        self.arch_logits = nn.Parameter(torch.zeros(len(self.kernel_sizes)))

    def mixture_weights(self) -> torch.Tensor:
        """``softmax(arch_logits)``, shape ``(len(kernel_sizes),)``."""
        return torch.softmax(self.arch_logits, dim=0)

    def _apply_op(self, op: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5 and x.device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled:
            return _ConvTranspose3dNoMkldnn.apply(x, op.weight, op.bias, op.padding, op.output_padding)
        return op(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.mixture_weights()
        return sum(w[i] * self._apply_op(op, x) for i, op in enumerate(self.ops))


class _SearchLevel(nn.Module):
    """One U-Net level ``down -> inner -> mixed up`` with the input concatenated to the output (skip).

    Mirrors ``pix2pix_unet._Level`` with the up-convolution replaced by :class:`MixedUpsample`.
    """

    def __init__(self, spatial_dims: int, outer: int, inner: int, in_channels: int, sub: nn.Module | None, norm: str,
                 dropout: float, outermost: bool, kernel_sizes: tuple[int, ...], out_channels: int | None = None) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        norm_t = Norm[_NORMS[norm], spatial_dims]
        use_bias = norm == "instance"  # BatchNorm has its own affine shift
        down = conv(in_channels, inner, 4, stride=2, padding=1, bias=use_bias)
        innermost = sub is None
        up_in = inner if innermost else inner * 2
        if outermost:
            self.up = MixedUpsample(spatial_dims, up_in, out_channels, kernel_sizes, bias=True)
            layers = [down, sub, nn.ReLU(True), self.up, nn.Tanh()]
        elif innermost:
            self.up = MixedUpsample(spatial_dims, up_in, outer, kernel_sizes, bias=use_bias)
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), self.up, norm_t(outer)]
        else:
            self.up = MixedUpsample(spatial_dims, up_in, outer, kernel_sizes, bias=use_bias)
            layers = [nn.LeakyReLU(0.2, True), down, norm_t(inner), sub, nn.ReLU(True), self.up, norm_t(outer)]
            if dropout > 0:
                layers.append(Dropout[Dropout.DROPOUT, spatial_dims](dropout))
        self.model = nn.Sequential(*layers)
        self.outermost = outermost

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], dim=1)


class SearchablePix2PixUNet(nn.Module):
    """Pix2Pix U-Net generator (label map one-hot -> image, ``tanh`` output) with searchable up-samplings.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (one-hot tissue classes).
        out_channels: output channels (image channels).
        num_downs: number of down-samplings; spatial sizes must be divisible by ``2**num_downs``.
        features: channels after the first convolution (ngf); doubled per level up to 8x.
        norm: ``"instance"`` (default) or ``"batch"``.
        dropout: dropout in the innermost decoder levels with 8x channels, as in :class:`Pix2PixUNet` (default 0:
            the finite-difference hypergradient needs a deterministic generator).
        up_kernel_sizes: candidate kernel sizes of every up-sampling (GenSeg: 4, 6, 8).

    Shapes:
        ``(B, in_channels, *S)`` -> ``(B, out_channels, *S)`` in [-1, 1].

    Architecture parameters (alpha) are the ``arch_logits`` of the ``num_downs`` :class:`MixedUpsample` layers; they
    are registered parameters (saved in the state dict) but kept apart from the weights: optimise
    :meth:`weight_parameters` with the image loss and :meth:`arch_parameters` with the upper-level loss.

    Example::

        g = SearchablePix2PixUNet(2, 4, 1, num_downs=5, features=32)
        g(torch.rand(1, 4, 64, 64)).shape  # (1, 1, 64, 64)
        SearchablePix2PixUNet(3, 4, 1, num_downs=3, features=8)(torch.rand(1, 4, 16, 16, 16)).shape
        g.derive()  # [4, 4, 4, 4, 4] (kernel per level, outermost first; ties -> first candidate)
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, num_downs: int, features: int,
                 norm: str = "instance", dropout: float = 0.0, up_kernel_sizes: tuple[int, ...] = (4, 6, 8)) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"SearchablePix2PixUNet: spatial_dims must be 2 or 3, got {spatial_dims}.")
        if norm not in _NORMS:
            raise ValueError(f"SearchablePix2PixUNet: norm must be one of {sorted(_NORMS)}, got {norm!r}.")
        if num_downs < 2:
            raise ValueError(f"SearchablePix2PixUNet: num_downs must be >= 2, got {num_downs}.")
        kernels = tuple(int(k) for k in ensure_tuple(up_kernel_sizes))
        if not kernels or min(kernels) < 2 or len(set(kernels)) != len(kernels):
            raise ValueError(f"SearchablePix2PixUNet: up_kernel_sizes must be distinct ints >= 2, got {up_kernel_sizes}.")
        self.spatial_dims, self.num_downs, self.up_kernel_sizes = spatial_dims, num_downs, kernels
        mult = [min(2**i, 8) for i in range(num_downs)]  # channel multipliers per level, outermost first
        block = None
        for level in range(num_downs - 1, 0, -1):  # innermost first
            outer, inner = features * mult[level - 1], features * mult[level]
            drop = dropout if (block is not None and level >= num_downs - 4 and mult[level] == 8) else 0.0
            block = _SearchLevel(spatial_dims, outer, inner, outer, block, norm, drop, False, kernels)
        self.model = _SearchLevel(spatial_dims, out_channels, features, in_channels, block, norm, 0.0, True, kernels,
                                  out_channels=out_channels)

    def mixed_layers(self) -> list[MixedUpsample]:
        """The searchable up-samplings, outermost (full-resolution output) first."""
        return [m for m in self.modules() if isinstance(m, MixedUpsample)]

    def arch_parameters(self) -> list[nn.Parameter]:
        """Architecture logits alpha, one ``(len(up_kernel_sizes),)`` tensor per level, outermost first."""
        return [m.arch_logits for m in self.mixed_layers()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """All parameters except the architecture logits."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def mixture_weights(self) -> torch.Tensor:
        """``softmax(alpha)`` per level, ``(num_downs, len(up_kernel_sizes))``, outermost first (detached)."""
        return torch.stack([m.mixture_weights().detach() for m in self.mixed_layers()])

    def derive(self) -> list[int]:
        """The kernel size with the largest mixture weight for every level, outermost first."""
        return [self.up_kernel_sizes[int(i)] for i in self.mixture_weights().argmax(dim=1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate ``x`` ``(B, C_in, *S)``; every spatial size must be divisible by ``2**num_downs``."""
        factor = 2**self.num_downs
        if x.dim() != self.spatial_dims + 2 or any(s % factor for s in x.shape[2:]):
            raise ValueError(
                f"SearchablePix2PixUNet: expects (B, C, *S) with S divisible by {factor}, got {tuple(x.shape)}."
            )
        return self.model(x)
