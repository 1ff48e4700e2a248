"""Resolution simulation for synthetic SR pairs: exact, grid-centred operators for any factor >= 1.

Grid convention (:mod:`medgen_core.transforms.degradation`'s, generalised to non-integer factors): along
an axis, high-resolution (HR) voxel ``i`` covers ``[i - 1/2, i + 1/2]`` in HR index units; with factor
``s`` low-resolution (LR) voxel ``k`` covers ``[k s - 1/2, (k + 1) s - 1/2]`` and is centred at

    ``c_k = (k + 1/2) s - 1/2``   (``= k s + (s - 1) / 2`` for integer ``s``).

An HR axis is first cropped at its end to :func:`exact_lengths` ``n_hr = n_lr * s`` (an integer: for
``s = 2.5``, ``n_lr`` is even), so the LR field covers the HR field exactly. Operators along one axis
(:func:`axis_operator` gives the ``(n_lr, n_hr)`` matrix; every row sums to 1):

* ``gaussian``: point-sampled Gaussian ``exp(-(i - c_k)^2 / 2 sigma^2)``, cut beyond ``4 sigma + 1/2``,
  renormalised (borders keep their brightness). Frequency response ``exp(-2 pi^2 sigma^2 nu^2)``.
* ``box``: exact average of the piecewise-constant HR signal over the slab ``[c_k - T/2, c_k + T/2]``
  (renormalised where it leaves the field). Block averaging is ``T = s``; a slice profile ``T < s`` has
  gaps, ``T > s`` overlapping slices.
* ``kspace``: keep the ``n_lr`` lowest DFT frequencies of the HR axis, sampled at the centres ``c_k``.

For integer factors the matrices / FFT of :mod:`~medgen_core.transforms.degradation` are used as they
are (tests check that the general code agrees with them). The random kinds drawn by
:class:`RandResolutionDegraded` map to these operators: ``gaussian`` (sigma = U[0.42, 0.75] x s, SynthSR
0.42 = a Gaussian whose FWHM is the spacing, SynthSeg 0.75), ``block`` (box, T = s), ``kspace``,
``slice_box`` (box, T = U[0.5, 1.5] x s) and ``slice_gaussian`` (Gaussian of FWHM T = U[0.5, 1.5] x s).
:func:`bandlimit` (zero-filled k-space truncation to a fraction of Nyquist, same size) simulates an HR
target that was acquired at a coarser matrix than it is stored at; :func:`interpolate_to_hr` is the cubic
B-spline baseline on the same grid convention.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from medgen_core.transforms.degradation import degradation_matrix, degrade

__all__ = [
    "AxisDegradation",
    "DEGRADATION_KINDS",
    "FWHM_PER_SIGMA",
    "INPLANE_KINDS",
    "THROUGH_KINDS",
    "RandHRBandwidthd",
    "RandMRNoised",
    "RandResolutionDegraded",
    "apply_axis_degradation",
    "axis_operator",
    "bandlimit",
    "exact_lengths",
    "interpolate_to_hr",
    "lr_centres",
]

#: Kinds drawn by :class:`RandResolutionDegraded`, mapped to the operator they use.
DEGRADATION_KINDS = {"gaussian": "gaussian", "block": "box", "kspace": "kspace", "slice_box": "box", "slice_gaussian": "gaussian"}
#: Default kinds in-plane (how MR in-plane resolution is lost) and through-plane (slice profiles of 2D
#: multi-slice acquisitions, plus k-space for 3D acquisitions' partition direction).
INPLANE_KINDS = ("gaussian", "block", "kspace")
THROUGH_KINDS = ("slice_box", "slice_gaussian", "gaussian", "block", "kspace")
#: FWHM of a Gaussian in units of its sigma, ``2 sqrt(2 ln 2)``.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_TOL = 1e-6


def _is_integer(x: float) -> bool:
    return abs(x - round(x)) < _TOL


def exact_lengths(n: int, factor: float) -> tuple[int, int]:
    """``(n_hr, n_lr)``: the longest ``n_hr <= n`` that is an integer multiple ``n_lr * factor`` (``n_lr >= 1``)."""
    if factor < 1:
        raise ValueError(f"exact_lengths: factor must be >= 1, got {factor}.")
    for n_lr in range(int(math.floor(n / factor + _TOL)), 0, -1):
        if _is_integer(n_lr * factor):
            return int(round(n_lr * factor)), n_lr
    raise ValueError(f"exact_lengths: an axis of {n} voxels holds no whole low-resolution voxel at factor {factor}.")


def lr_centres(n_lr: int, factor: float) -> np.ndarray:
    """HR index coordinates ``(k + 1/2) * factor - 1/2`` of the ``n_lr`` LR voxel centres."""
    return (np.arange(n_lr, dtype=np.float64) + 0.5) * float(factor) - 0.5


def _gaussian_matrix(n_hr: int, factor: float, sigma: float) -> np.ndarray:
    """Point-sampled Gaussian rows centred on :func:`lr_centres` (any factor; see :func:`axis_operator`)."""
    idx = np.arange(n_hr, dtype=np.float64)[None, :]
    offset = idx - lr_centres(int(round(n_hr / factor)), factor)[:, None]
    d = np.exp(-0.5 * (offset / sigma) ** 2)
    d[np.abs(offset) > 4.0 * sigma + 0.5] = 0.0
    return d / d.sum(axis=1, keepdims=True)


def _box_matrix(n_hr: int, factor: float, thickness: float) -> np.ndarray:
    """Exact slab averages ``[c_k - T/2, c_k + T/2]`` of the piecewise-constant HR signal (any factor)."""
    c = lr_centres(int(round(n_hr / factor)), factor)[:, None]
    idx = np.arange(n_hr, dtype=np.float64)[None, :]
    d = np.clip(np.minimum(idx + 0.5, c + thickness / 2) - np.maximum(idx - 0.5, c - thickness / 2), 0.0, None)
    return d / d.sum(axis=1, keepdims=True)


def axis_operator(n_hr: int, factor: float, kind: str, width: float | None = None) -> np.ndarray:
    """Matrix ``(n_lr, n_hr)``, ``lr = D @ hr`` along one axis, for ``kind`` ``"gaussian"`` (``width`` = sigma)
    or ``"box"`` (``width`` = slab thickness, default ``factor``), both in HR voxels; ``n_hr = n_lr * factor``
    must hold (see :func:`exact_lengths`). Integer factors use
    :func:`~medgen_core.transforms.degradation.degradation_matrix` where it applies."""
    n_used, _ = exact_lengths(n_hr, factor)
    if n_used != n_hr:
        raise ValueError(f"axis_operator: {n_hr} voxels is not a whole multiple of factor {factor}; crop to {n_used} first.")
    if kind == "gaussian":
        if width is None or width <= 0:
            raise ValueError(f"axis_operator: the gaussian needs a sigma > 0, got {width}.")
        if _is_integer(factor):
            return degradation_matrix(n_hr, int(round(factor)), "gaussian", sigma=width)
        return _gaussian_matrix(n_hr, factor, width)
    if kind == "box":
        thickness = float(factor) if width is None else float(width)
        if thickness <= 0:
            raise ValueError(f"axis_operator: the box needs a thickness > 0, got {width}.")
        if _is_integer(factor) and abs(thickness - factor) < _TOL:
            return degradation_matrix(n_hr, int(round(factor)), "block")
        return _box_matrix(n_hr, factor, thickness)
    raise ValueError(f"axis_operator: kind must be 'gaussian' or 'box', got {kind!r}.")


def _kspace_general(x: torch.Tensor, factor: float, dim: int) -> torch.Tensor:
    """The ``n_lr`` lowest frequencies of ``x`` along ``dim``, sampled at the centres ``c_k`` (``n = n_lr * factor``):
    with ``n / n_lr = factor`` the shifted inverse DFT on the LR grid is exact for non-integer factors too."""
    n_hr = x.shape[dim]
    n_lr = int(round(n_hr / factor))
    spectrum = torch.fft.fft(x.to(torch.float64), dim=dim)
    freqs = torch.round(torch.fft.fftfreq(n_hr, dtype=torch.float64) * n_hr)
    shape = [1] * x.dim()
    shape[dim] = n_hr
    spectrum = spectrum * torch.exp(2j * math.pi * freqs * ((factor - 1) / 2.0) / n_hr).reshape(shape)
    keep = torch.cat([torch.arange(0, (n_lr + 1) // 2), torch.arange(-(n_lr // 2), 0)])
    truncated = torch.index_select(spectrum, dim, torch.remainder(keep, n_hr))
    return (torch.fft.ifft(truncated, dim=dim).real * (n_lr / n_hr)).to(x.dtype)


def _kspace_axis(x: torch.Tensor, factor: float, dim: int) -> torch.Tensor:
    if _is_integer(factor):
        return degrade(x, int(round(factor)), "kspace", axes=(dim,))
    return _kspace_general(x, factor, dim)


@dataclass(frozen=True)
class AxisDegradation:
    """One axis of a degradation: spatial ``axis``, ``factor``, drawn ``kind`` (a key of :data:`DEGRADATION_KINDS`),
    ``width`` (sigma for Gaussians, thickness for boxes, in HR voxels; None for k-space) and, for slice
    profiles, ``thickness_ratio`` = thickness / spacing."""

    axis: int
    factor: float
    kind: str
    width: float | None = None
    thickness_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in DEGRADATION_KINDS:
            raise ValueError(f"AxisDegradation: kind must be one of {sorted(DEGRADATION_KINDS)}, got {self.kind!r}.")
        if self.factor < 1:
            raise ValueError(f"AxisDegradation: factor must be >= 1, got {self.factor}.")

    @property
    def operator(self) -> str:
        return DEGRADATION_KINDS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "operator": self.operator}


def apply_axis_degradation(x: torch.Tensor, spec: AxisDegradation, dim: int) -> torch.Tensor:
    """Degrade ``x`` along tensor dimension ``dim`` (its length must be ``n_lr * spec.factor``)."""
    if spec.factor == 1 and spec.operator == "kspace":
        return x
    if spec.operator == "kspace":
        n_used, _ = exact_lengths(x.shape[dim], spec.factor)
        if n_used != x.shape[dim]:
            raise ValueError(f"apply_axis_degradation: {x.shape[dim]} voxels is not a whole multiple of factor {spec.factor}.")
        return _kspace_axis(x, spec.factor, dim)
    d = torch.as_tensor(axis_operator(x.shape[dim], spec.factor, spec.operator, spec.width), dtype=x.dtype, device=x.device)
    return torch.movedim(torch.tensordot(x, d, dims=([dim], [1])), -1, dim)


def bandlimit(x: torch.Tensor, fractions: Sequence[float], dims: Sequence[int]) -> torch.Tensor:
    """Zero every DFT frequency ``|m| / n > fraction / 2`` along each of ``dims`` (``fraction`` of Nyquist kept),
    same size (zero-filled back); ``fraction = 1`` is the identity."""
    out = x.to(torch.float64)
    for f, dim in zip(fractions, dims):
        if not 0 < f <= 1:
            raise ValueError(f"bandlimit: fractions must be in (0, 1], got {f}.")
        if f >= 1:
            continue
        n = out.shape[dim]
        shape = [1] * out.dim()
        shape[dim] = n
        keep = (torch.fft.fftfreq(n, dtype=torch.float64).abs() <= f / 2 + 1e-12).reshape(shape)
        out = torch.fft.ifft(torch.fft.fft(out, dim=dim) * keep, dim=dim).real
    return out.to(x.dtype)


def interpolate_to_hr(lr: torch.Tensor, factors: Sequence[float], order: int = 3) -> torch.Tensor:
    """Cubic B-spline (``order``) interpolation of ``lr`` ``(C, *spatial)`` to the HR grid of ``factors`` (one per
    spatial axis) on the centred convention (scipy ``zoom(grid_mode=True)``); shape ``round(n_lr * factor)``."""
    from scipy.ndimage import zoom

    arr = lr.detach().cpu().numpy().astype(np.float64)
    out = np.stack([zoom(c, tuple(float(f) for f in factors), order=order, mode="reflect", grid_mode=True) for c in arr])
    return torch.from_numpy(out.astype(np.float32))


def _params(d: Mapping[Hashable, Any]) -> dict[str, Any]:
    return dict(d.get("params", {}))


class RandHRBandwidthd(Randomizable, MapTransform):
    """With probability ``prob``, band-limit ``keys`` ``(C, *spatial)`` to a fraction U``fraction_range`` of
    Nyquist along every spatial axis (one fraction for all axes, or per axis with ``anisotropic_prob``),
    then clip to ``[0, clip_max]``; records ``params["hr_bandwidth"]`` (``None`` = full bandwidth)."""

    def __init__(self, keys: KeysCollection = "hr", prob: float = 0.3, fraction_range: tuple[float, float] = (0.5, 1.0),
                 anisotropic_prob: float = 0.5, clip_max: float = 1.2) -> None:
        MapTransform.__init__(self, keys)
        if not 0 < fraction_range[0] <= fraction_range[1] <= 1:
            raise ValueError(f"RandHRBandwidthd: fraction_range must lie in (0, 1], got {fraction_range}.")
        self.prob, self.fraction_range, self.anisotropic_prob, self.clip_max = prob, fraction_range, anisotropic_prob, clip_max

    def randomize(self, spatial_dims: int) -> None:
        self._fractions = None
        if self.R.rand() < self.prob:
            per_axis = self.R.rand() < self.anisotropic_prob
            f = [float(self.R.uniform(*self.fraction_range)) for _ in range(spatial_dims if per_axis else 1)]
            self._fractions = f if per_axis else f * spatial_dims

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        self.randomize(len(d[keys[0]].shape) - 1)
        for key in keys:
            x = torch.as_tensor(d[key], dtype=torch.float32)
            if self._fractions is not None:
                x = bandlimit(x, self._fractions, dims=range(1, x.dim()))
            d[key] = x.clamp(0.0, self.clip_max)
        params = _params(d)
        params["hr_bandwidth"] = self._fractions
        d["params"] = params
        return d


class RandResolutionDegraded(Randomizable, MapTransform):
    """Draw a random, exactly defined degradation and write ``d[lr_key]`` from ``d[hr_key]`` ``(C, *spatial)``.

    The HR image is cropped at the end of each degraded axis to :func:`exact_lengths`, so that
    ``hr.shape[axis] == lr.shape[axis] * factor`` exactly. ``params["degradation"]`` lists one
    :meth:`AxisDegradation.to_dict` per degraded axis.

    Args:
        hr_key / lr_key: input HR image and output LR image keys.
        axes_mode: ``"inplane"`` (the last two spatial axes, one factor unless ``anisotropic_prob``),
            ``"through"`` (one axis, ``slice_axis`` or a random one) or ``"all"`` (every spatial axis).
        factors: factors drawn uniformly (integers or not, e.g. ``(1.5, 2, 2.5, 3, 4, 5)``).
        kinds / kind_weights: kinds of :data:`DEGRADATION_KINDS` and their probabilities (one kind per draw,
            the same on all degraded axes); None = :data:`THROUGH_KINDS` in ``"through"`` mode, else :data:`INPLANE_KINDS`.
        sigma_range: Gaussian sigma / factor (SynthSR 0.42, SynthSeg 0.75).
        thickness_ratio_range: slice thickness / spacing for ``slice_box`` and ``slice_gaussian`` (< 1: gaps).
        anisotropic_prob: chance that each further in-plane axis draws its own factor.
        slice_axis: spatial axis degraded in ``"through"`` mode; None = random each draw.
    """

    def __init__(self, hr_key: str = "hr", lr_key: str = "lr", axes_mode: str = "inplane", factors: Sequence[float] = (2,),
                 kinds: Sequence[str] | None = None, kind_weights: Sequence[float] | None = None,
                 sigma_range: tuple[float, float] = (0.42, 0.75), thickness_ratio_range: tuple[float, float] = (0.5, 1.5),
                 anisotropic_prob: float = 0.0, slice_axis: int | None = None) -> None:
        MapTransform.__init__(self, hr_key)
        if axes_mode not in ("inplane", "through", "all"):
            raise ValueError(f"RandResolutionDegraded: axes_mode must be 'inplane', 'through' or 'all', got {axes_mode!r}.")
        kinds = (THROUGH_KINDS if axes_mode == "through" else INPLANE_KINDS) if kinds is None else tuple(kinds)
        bad = [k for k in kinds if k not in DEGRADATION_KINDS]
        if bad or not kinds:
            raise ValueError(f"RandResolutionDegraded: kinds must be among {sorted(DEGRADATION_KINDS)}, got {list(kinds)}.")
        if not factors or min(factors) < 1:
            raise ValueError(f"RandResolutionDegraded: factors must be >= 1, got {list(factors)}.")
        w = np.ones(len(kinds)) if kind_weights is None else np.asarray(kind_weights, dtype=np.float64)
        if w.shape != (len(kinds),) or w.min() < 0 or w.sum() <= 0:
            raise ValueError(f"RandResolutionDegraded: kind_weights must be {len(kinds)} non-negative numbers, got {kind_weights}.")
        self.hr_key, self.lr_key, self.axes_mode, self.slice_axis = hr_key, lr_key, axes_mode, slice_axis
        self.factors, self.kinds, self.kind_p = tuple(float(f) for f in factors), tuple(kinds), w / w.sum()
        self.sigma_range, self.thickness_ratio_range, self.anisotropic_prob = sigma_range, thickness_ratio_range, anisotropic_prob

    def draw(self, spatial_dims: int) -> list[AxisDegradation]:
        """Draw the per-axis degradations for an image with ``spatial_dims`` spatial axes."""
        if self.axes_mode == "through":
            axes = [self.slice_axis if self.slice_axis is not None else int(self.R.randint(spatial_dims))]
        elif self.axes_mode == "all":
            axes = list(range(spatial_dims))
        else:
            axes = list(range(max(0, spatial_dims - 2), spatial_dims))
        kind = self.kinds[int(self.R.choice(len(self.kinds), p=self.kind_p))]
        factor = self.factors[int(self.R.randint(len(self.factors)))]
        specs = []
        for i, axis in enumerate(axes):
            if i > 0 and self.R.rand() < self.anisotropic_prob:
                factor = self.factors[int(self.R.randint(len(self.factors)))]
            width = ratio = None
            if kind == "gaussian":
                width = float(self.R.uniform(*self.sigma_range)) * factor
            elif kind == "block":
                width = factor
            elif kind in ("slice_box", "slice_gaussian"):
                ratio = float(self.R.uniform(*self.thickness_ratio_range))
                width = ratio * factor if kind == "slice_box" else ratio * factor / FWHM_PER_SIGMA
            specs.append(AxisDegradation(axis, factor, kind, width, ratio))
        return specs

    def randomize(self, spatial_dims: int) -> None:
        self._specs = self.draw(spatial_dims)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        hr = torch.as_tensor(d[self.hr_key], dtype=torch.float32)
        self.randomize(hr.dim() - 1)
        specs = self._specs
        crop = [slice(None)] * hr.dim()
        for s in specs:
            crop[s.axis + 1] = slice(0, exact_lengths(hr.shape[s.axis + 1], s.factor)[0])
        hr = hr[tuple(crop)]
        lr = hr
        for s in specs:
            lr = apply_axis_degradation(lr, s, s.axis + 1)
        params = _params(d)
        params["degradation"] = [s.to_dict() for s in specs]
        d[self.hr_key], d[self.lr_key], d["params"] = hr.contiguous(), lr.contiguous(), params
        return d


class RandMRNoised(Randomizable, MapTransform):
    """With probability ``prob`` add noise of std U``std_range`` (relative to the [0, 1] image) to ``keys``:
    Rician (magnitude of a complex Gaussian, ``rician_prob``) or Gaussian; then clip to ``[0, clip_max]``.
    Records ``params["noise"] = {"kind", "std"}``."""

    def __init__(self, keys: KeysCollection = "lr", prob: float = 0.9, std_range: tuple[float, float] = (0.0, 0.05),
                 rician_prob: float = 0.5, clip_max: float = 1.2) -> None:
        MapTransform.__init__(self, keys)
        self.prob, self.std_range, self.rician_prob, self.clip_max = prob, std_range, rician_prob, clip_max

    def randomize(self, data: Any = None) -> None:
        self._kind, self._std = "none", 0.0
        if self.R.rand() < self.prob:
            self._kind = "rician" if self.R.rand() < self.rician_prob else "gaussian"
            self._std = float(self.R.uniform(*self.std_range))
        self._seed = int(self.R.randint(2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        kind, std = self._kind, self._std
        g = torch.Generator().manual_seed(self._seed)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key], dtype=torch.float32)
            if kind == "gaussian":
                x = x + std * torch.randn(x.shape, generator=g)
            elif kind == "rician":
                x = torch.sqrt((x + std * torch.randn(x.shape, generator=g)) ** 2 + (std * torch.randn(x.shape, generator=g)) ** 2)
            d[key] = x.clamp(0.0, self.clip_max)
        params = _params(d)
        params["noise"] = {"kind": kind, "std": std}
        d["params"] = params
        return d
