"""An invisible, public, tiled spread-spectrum mark in the voxels of generated volumes.

The mark is what is left to find a generated image by once its header and sidecar are gone. It is a
zero-mean pseudo-random pattern drawn from a fixed **public** seed (anyone with medgen can detect
it, and for the same reason anyone who wants to can estimate and subtract it: it marks honest use,
it does not stop a forger), band-limited to 0.2-0.5 cycles/voxel (measured to survive resampling
and blur better than a low-mid band at the same PSNR, see ``docs/watermark.md``) and **tiled** with
a period of :data:`TILE_PERIOD` voxels along every axis, so a crop at any offset keeps whole periods.
It is added in proportion to the intensity above the background (``x + a * max(x - p1, 0) * w``),
so background stays unchanged, with ``a`` set so that the RMS change is ``strength`` times the data
range: ``PSNR = -20 log10(strength)`` dB (50.5 dB by default).

Detection is blind (no original needed): the image is high-passed and locally normalised, folded
modulo the tile period (which adds the tiles of the mark coherently and the image incoherently),
and correlated cyclically with the tile through FFTs, which finds any crop offset. The fold is
repeated over a grid of scale factors (resampling by ``s`` changes the period to ``s * P``; the fold
uses fractional periods, so the image is never resampled) and, at scale 1, over the 48 axis
flips/permutations (format conversions can reverse or reorder axes). The score is the highest peak
z-score of the correlation against the correlation's own spread over all offsets; see
:data:`DEFAULT_THRESHOLD` for how the threshold was chosen.

What it survives and what it does not is measured in ``docs/watermark.md``
(``scripts/evaluate_watermark.py``).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MAX_MODULATION",
    "DEFAULT_STRENGTH",
    "DEFAULT_THRESHOLD",
    "MIN_VOXELS",
    "SCHEME",
    "SCHEME_VERSION",
    "TILE_PERIOD",
    "WatermarkResult",
    "detect_watermark",
    "detect_watermark_keys",
    "embed_watermark",
    "watermark_tile",
]

SCHEME = "medgen-tiled-spread-spectrum"
SCHEME_VERSION = 1
#: Tile period in voxels along each axis.
TILE_PERIOD = 32
#: RMS of the mark relative to the data range (max - min): PSNR = -20 log10(strength) = 50.5 dB.
DEFAULT_STRENGTH = 0.003
#: Largest RMS modulation of the local intensity (dim images would otherwise get a strong relative mark).
DEFAULT_MAX_MODULATION = 0.03
#: Score (peak z) at or above which the mark counts as present. Null scores (unmarked real volumes,
#: keys nobody embedded) measured by ``scripts/evaluate_watermark.py`` have mean 5.0, SD 0.25 and a
#: maximum of 6.1 in about 1400 trials (see ``docs/watermark.md``).
DEFAULT_THRESHOLD = 7.0
#: Fewest object voxels the detector decides on (fewer: "not found", score 0); smaller volumes are not marked.
MIN_VOXELS = 4096
#: Scale factors searched by :func:`detect_watermark` (resampling by 0.85 .. 1.18).
SCALE_RANGE = (0.85, 1.18)
#: The public seed text: changing it makes a different, incompatible mark.
_PUBLIC_SEED = b"medgen tiled spread-spectrum watermark v1 (public key)"
_BAND = (0.2, 0.5)  # cycles per voxel kept in the tile (periods of 2 to 5 voxels)
_HIGHPASS_SIGMA = 0.5  # voxels: image content smoother than this is removed before correlating
_LOCAL_SIGMA = 1.0  # voxels: neighbourhood for the local normalisation of the residual
_TILE_CLIP = 3.0  # the Gaussian tile is clipped at this many SDs


def _seed(key: int | None) -> int:
    text = _PUBLIC_SEED if key is None else _PUBLIC_SEED + f" key={int(key)}".encode("ascii")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


@functools.lru_cache(maxsize=16)
def watermark_tile(key: int | None = None) -> np.ndarray:
    """The mark's tile: float64 ``(P, P, P)`` with ``P = TILE_PERIOD``, zero mean, unit RMS, cyclic.

    Args:
        key: ``None`` for the public medgen mark; another integer gives an unrelated pattern (used to
            measure false positives with keys nobody embedded).
    """
    rng = np.random.default_rng(_seed(key))
    n = TILE_PERIOD
    spectrum = np.fft.rfftn(rng.standard_normal((n, n, n)))
    f = _radial_frequency(n)
    spectrum[(f < _BAND[0]) | (f > _BAND[1])] = 0.0
    tile = np.fft.irfftn(spectrum, s=(n, n, n), axes=(0, 1, 2))
    tile = np.clip(tile / tile.std(), -_TILE_CLIP, _TILE_CLIP)  # no rare large peaks
    tile -= tile.mean()
    tile /= tile.std()
    tile.setflags(write=False)
    return tile


def _radial_frequency(n: int) -> np.ndarray:
    """|f| in cycles/voxel on the rfftn grid of an ``(n, n, n)`` array."""
    fx = np.fft.fftfreq(n)
    fz = np.fft.rfftfreq(n)
    return np.sqrt(fx[:, None, None] ** 2 + fx[None, :, None] ** 2 + fz[None, None, :] ** 2)


def _floor(x: np.ndarray) -> float:
    """The intensity below which nothing is marked: the 1st percentile (the background of most scans;
    robust to a few undershooting voxels, e.g. negative values after denoising or super-resolution)."""
    return float(np.percentile(x, 1.0))


def embed_watermark(
    array: np.ndarray,
    *,
    strength: float = DEFAULT_STRENGTH,
    max_modulation: float = DEFAULT_MAX_MODULATION,
    key: int | None = None,
) -> np.ndarray:
    """Add the mark to a volume.

    The change is ``a * max(x - p1, 0) * w`` with ``w`` the tiled pattern and ``p1`` the 1st percentile of
    ``x``: proportional to the intensity above the background, so background (and anything darker) is
    unchanged, and scaled so that the RMS change over the whole volume is ``strength`` times the data
    range, unless that would modulate the intensity by more than ``max_modulation`` RMS (``a`` is the
    smaller of the two). The result is clipped to the input's value range (a [0, 1] image stays in [0, 1]).

    Args:
        array: Float voxels, shape ``(X, Y, Z)`` (a 2D ``(X, Y)`` slice works too), any intensity units.
        strength: RMS of the change relative to the data range ``max - min``: the PSNR against the
            input is ``-20 log10(strength)`` dB (50.5 dB for the default; more where the modulation
            bound or the clipping to the input's range bites).
        max_modulation: Largest RMS of the relative change ``a * w`` (the pattern has unit RMS and is
            clipped at 3): 0.03 keeps every voxel within 9 % of its intensity above the background.
        key: ``None`` for the public medgen mark (see :func:`watermark_tile`).

    Returns:
        The marked volume, float32, same shape. A constant volume is returned unchanged.

    Raises:
        ValueError: If ``array`` is not 2D/3D, holds non-finite values, or ``strength`` is not in (0, 0.1].
    """
    x = np.asarray(array)
    if x.ndim == 2:
        return embed_watermark(x[:, :, None], strength=strength, max_modulation=max_modulation, key=key)[:, :, 0]
    if x.ndim != 3:
        raise ValueError(f"embed_watermark: expected a (X, Y, Z) volume, got shape {x.shape}")
    if not 0.0 < strength <= 0.1:
        raise ValueError(f"embed_watermark: strength must be in (0, 0.1], got {strength}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embed_watermark: the volume holds NaN or Inf values")
    tile = watermark_tile(key)
    lo, x_min, x_max = _floor(x), float(x.min()), float(x.max())
    data_range = x_max - x_min
    # slab by slab along the last axis (float64 inside a slab), so that a large volume is never copied whole
    step = max(1, _SLAB_VOXELS // max(1, x.shape[0] * x.shape[1]))
    slabs = [slice(z, min(z + step, x.shape[2])) for z in range(0, x.shape[2], step)]

    def mark(z: slice) -> tuple[np.ndarray, np.ndarray]:
        xz = np.asarray(x[:, :, z], dtype=np.float64)
        return xz, np.clip(xz - lo, 0.0, None) * _tiled_region(tile, x.shape[:2], z)

    rms = float(np.sqrt(sum(float(np.sum(mark(z)[1] ** 2)) for z in slabs) / x.size))
    if data_range <= 0 or rms == 0.0:
        return x.astype(np.float32)
    amplitude = min(strength * data_range / rms, max_modulation)
    marked = np.empty(x.shape, dtype=np.float32)
    for z in slabs:
        xz, m = mark(z)
        marked[:, :, z] = np.clip(xz + amplitude * m, x_min, x_max)  # never outside the input's range
    return marked


#: Voxels per slab of :func:`embed_watermark` (about 64 MB of float64 per temporary).
_SLAB_VOXELS = 1 << 23


def _tiled_region(tile: np.ndarray, plane: tuple[int, int], z: slice) -> np.ndarray:
    """The tiling of :func:`_tiled` (origin at index 0 on every axis) restricted to ``[:plane[0], :plane[1], z]``."""
    n = tile.shape
    ix, iy, iz = (np.arange(plane[0]) % n[0], np.arange(plane[1]) % n[1], np.arange(z.start, z.stop) % n[2])
    return tile[np.ix_(ix, iy, iz)]


def _tiled(tile: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``tile`` repeated to cover ``shape``, starting at index 0 on every axis."""
    reps = [-(-s // tile.shape[i]) for i, s in enumerate(shape)]
    return np.tile(tile, reps)[tuple(slice(0, s) for s in shape)]


@dataclass
class WatermarkResult:
    """Outcome of :func:`detect_watermark`.

    Args:
        present: ``score >= threshold``.
        score: Highest peak z-score of the cyclic correlation over offsets, scales and orientations.
        threshold: The decision threshold used.
        offset: Voxel index ``(i, j, k)``, modulo the (scaled) period, where the tile's origin lies: a
            crop starting at index ``c`` of a marked volume gives ``(-c) mod 32`` on each axis.
        scale: Resampling factor at the peak (new size / original size).
        orientation: Axis permutation and flips at the peak, e.g. ``"+x+y+z"`` (as embedded) or ``"-x+z+y"``.
        voxels: Object voxels the detection used; below :data:`MIN_VOXELS` no search is made (score 0).
    """

    present: bool
    score: float
    threshold: float
    offset: tuple[int, int, int]
    scale: float
    orientation: str
    voxels: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out = asdict(self)
        out["offset"] = list(self.offset)
        return out


#: The 48 axis orientations ``(permutation, signs)``; index 0 is the identity.
_ORIENTATIONS = [(p, s) for p in itertools.permutations(range(3)) for s in itertools.product((1, -1), repeat=3)]


def _orientation_name(perm: tuple[int, ...], signs: tuple[int, ...]) -> str:
    return "".join(("+" if s > 0 else "-") + "xyz"[p] for p, s in zip(perm, signs))


@functools.lru_cache(maxsize=64)
def _template_spectra(key: int | None) -> np.ndarray:
    """Conjugate rfftn of the high-passed tile in each of the 48 orientations: complex ``(48, P, P, P//2+1)``.

    Index 0 is the tile as embedded (``"+x+y+z"``).
    """
    n = TILE_PERIOD
    response = _filter_response(_radial_frequency(n))
    filtered = np.fft.irfftn(np.fft.rfftn(watermark_tile(key)) * response, s=(n, n, n), axes=(0, 1, 2))
    spectra = []
    for perm, signs in _ORIENTATIONS:
        oriented = np.transpose(filtered, perm)[tuple(slice(None, None, s) for s in signs)]
        spectra.append(np.conj(np.fft.rfftn(oriented)))
    out = np.stack(spectra)
    out.setflags(write=False)
    return out


def _filter_response(f: np.ndarray) -> np.ndarray:
    """Frequency response of the detector's high-pass (identity minus a Gaussian low-pass)."""
    return 1.0 - np.exp(-2.0 * (np.pi * _HIGHPASS_SIGMA * f) ** 2)


def _detector_input(x: np.ndarray) -> tuple[np.ndarray, int]:
    """High-passed residual, weighted by the expected mark amplitude over the local residual power.

    Returns the weighted residual ``(X, Y, Z)`` (zero outside the object) and the number of object voxels.
    """
    lo, hi = _floor(x), float(np.percentile(x, 99.5))
    if hi <= lo:
        return np.zeros_like(x), 0
    from scipy import ndimage  # imported here: scipy.ndimage costs 0.25 s at start-up of every command

    envelope = np.clip((x - lo) / (hi - lo), 0.0, None)
    residual = x - ndimage.gaussian_filter(x, _HIGHPASS_SIGMA)
    power = ndimage.gaussian_filter(residual**2, _LOCAL_SIGMA) + 1e-12 * (hi - lo) ** 2
    inside = envelope > 0.02
    return np.where(inside, residual * envelope / power, 0.0), int(inside.sum())


def _fold_matrix(n: int, scale: float) -> np.ndarray:
    """``(n, P)`` matrix taking voxel ``i`` to tile phase ``(i - n/2) / scale`` (linear interpolation).

    Anchoring at the centre halves the period drift at the image edges when ``scale`` is slightly off.
    """
    u = (np.arange(n) - n // 2) / scale
    base = np.floor(u)
    frac = u - base
    cells = base.astype(np.int64) % TILE_PERIOD
    matrix = np.zeros((n, TILE_PERIOD))
    rows = np.arange(n)
    matrix[rows, cells] += 1.0 - frac
    matrix[rows, (cells + 1) % TILE_PERIOD] += frac
    return matrix


def _fold(r: np.ndarray, scale: float) -> np.ndarray:
    """Sum ``r`` ``(X, Y, Z)`` modulo the tile period scaled by ``scale``: ``(P, P, P)``."""
    nx, ny, nz = r.shape
    p = TILE_PERIOD
    out = (r.reshape(nx * ny, nz) @ _fold_matrix(nz, scale)).reshape(nx, ny, p)
    out = np.einsum("xyc,yb->xbc", out, _fold_matrix(ny, scale), optimize=True)
    return np.tensordot(_fold_matrix(nx, scale), out, axes=([0], [0]))


def _scale_grid(shape: tuple[int, ...]) -> np.ndarray:
    """Log-spaced scale factors over :data:`SCALE_RANGE`, including 1.0; finer for larger images."""
    step = float(np.clip(1.5 / max(shape), 0.005, 0.02))
    lo, hi = np.log(SCALE_RANGE[0]), np.log(SCALE_RANGE[1])
    return np.exp(np.concatenate([np.arange(0.0, lo, -step)[1:][::-1], np.arange(0.0, hi, step)]))


def _peaks(folded: np.ndarray, spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per orientation: peak z-score, normalised peak correlation and flat offset of one fold's cyclic correlation.

    ``z`` is the peak against the correlation's own spread over all offsets (the significance); the
    normalised correlation (peak over the fold's norm) measures alignment and picks the geometry when
    the mark is strong enough for ``z`` to saturate.
    """
    n = TILE_PERIOD
    corr = np.fft.irfftn(np.fft.rfftn(folded)[None] * spectra, s=(n, n, n), axes=(1, 2, 3)).reshape(len(spectra), -1)
    centred = corr - corr.mean(axis=1, keepdims=True)
    flat = np.argmax(centred, axis=1)
    peak = centred[np.arange(len(spectra)), flat]
    spread = corr.std(axis=1)
    norm = float(np.linalg.norm(folded))
    z = np.where(spread > 0, peak / np.where(spread > 0, spread, 1.0), 0.0)
    return z, peak / norm if norm > 0 else np.zeros_like(peak), flat


def detect_watermark(
    array: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    scales: np.ndarray | list[float] | None = None,
    key: int | None = None,
) -> WatermarkResult:
    """Look for the mark in a volume, without the original.

    The search covers every crop offset (cyclic correlation), the scale factors ``scales`` in the
    stored axis order, and at scale 1 also the 48 axis flips/permutations (conversions reorder axes
    but rarely resample at the same time).

    Args:
        array: Voxels, shape ``(X, Y, Z)`` (or ``(X, Y)``), any dtype and intensity scaling.
        threshold: Decision threshold on the score.
        scales: Resampling factors to search; default: a log-spaced grid over :data:`SCALE_RANGE`
            (steps of 0.5-2 %, finer for larger images) that includes 1.0.
        key: ``None`` for the public medgen mark.

    Returns:
        The :class:`WatermarkResult`: the highest z-score over the whole search, and the geometry
        (scale, orientation, offset) of the best-aligned significant peak (highest normalised
        correlation among those at or above ``threshold``; the highest-z peak when none is).

    Raises:
        ValueError: If ``array`` is not 2D/3D.
    """
    return detect_watermark_keys(array, [key], threshold=threshold, scales=scales)[0]


def detect_watermark_keys(
    array: np.ndarray,
    keys: list[int | None],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    scales: np.ndarray | list[float] | None = None,
) -> list[WatermarkResult]:
    """:func:`detect_watermark` for several keys at once (the folds are shared): one result per key.

    Keys nobody embedded give samples of the detector's null distribution on the same image.
    """
    x = np.asarray(array, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"detect_watermark: expected a (X, Y, Z) volume, got shape {x.shape}")
    x = np.where(np.isfinite(x), x, 0.0)
    r, voxels = _detector_input(x)
    if voxels < MIN_VOXELS:
        return [WatermarkResult(False, 0.0, float(threshold), (0, 0, 0), 1.0, "+x+y+z", voxels) for _ in keys]
    grid = _scale_grid(x.shape) if scales is None else np.asarray(scales, dtype=np.float64)
    spectra = [_template_spectra(key) for key in keys]
    # per key: (z, normalised correlation, orientation index, flat offset, scale) of every peak
    candidates: list[list[tuple[float, float, int, int, float]]] = [[] for _ in keys]
    for scale in grid:
        folded = _fold(r, float(scale))
        for i, spec in enumerate(spectra):
            z, rho, flat = _peaks(folded, spec if np.isclose(scale, 1.0) else spec[:1])
            candidates[i] += [(float(z[k]), float(rho[k]), k, int(flat[k]), float(scale)) for k in range(len(z))]
    results = []
    for found in candidates:
        score = max(c[0] for c in found)
        significant = [c for c in found if c[0] >= threshold]
        _, _, k, flat, scale = max(significant, key=lambda c: c[1]) if significant else max(found)
        cells = np.unravel_index(flat, (TILE_PERIOD,) * 3)  # the fold starts at the centre voxel (see _fold_matrix)
        offset = tuple(int(round(n // 2 + c * scale)) % int(round(TILE_PERIOD * scale)) for n, c in zip(x.shape, cells))
        perm, signs = _ORIENTATIONS[k]
        results.append(WatermarkResult(
            bool(score >= threshold), score, float(threshold), offset, scale, _orientation_name(perm, signs), voxels
        ))
    return results
