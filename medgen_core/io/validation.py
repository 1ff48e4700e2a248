"""Voxel-type policy and geometry checks shared by every reader.

Voxel types (every reader returns float32, so a type is accepted only where float32 holds its values):

* bool, (u)int8, (u)int16, float16 and float32 are converted exactly. No supported file format stores
  bool or float16 (they reach a :class:`~medgen_core.io.volume.Volume` only from memory); a 0/1 mask is
  read from uint8, and the bit-packed NIfTI ``DT_BINARY`` (and long double) is refused as unsupported.
* (u)int32 and (u)int64 are converted when every value is exactly representable in float32 (all
  integers up to 2**24 in magnitude, and larger ones that happen to be representable); otherwise the
  file is refused (a label value 16777217 would silently become 16777216). Scaled NIfTI integers
  (``scl_slope`` not 0 or 1, or ``scl_inter`` not 0) are real numbers by definition and are converted
  as nibabel scales them.
* float64 (and longer floats) are rounded to float32; finite values beyond the float32 range are refused.
* complex and RGB/RGBA/vector (more than one value per voxel) are refused.

Geometry: the voxel-to-world affine must be finite, every axis must have a positive length (spacing),
and the axes must not be (nearly) parallel: ``|det(A / column norms)| >= MIN_AXIS_INDEPENDENCE``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen_core.errors import ImageReadError

__all__ = ["MIN_AXIS_INDEPENDENCE", "check_affine", "check_spacing", "check_voxel_type", "one_line", "to_float32"]

#: Smallest ``|det|`` of the affine's direction matrix (columns normalised): 1 for orthogonal axes,
#: 0 for a singular (collinear) one; 1e-3 still allows skewed (e.g. gantry-tilt) grids.
MIN_AXIS_INDEPENDENCE = 1e-3
_FLOAT32_EXACT_INT = 2**24
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def one_line(err: BaseException | str, limit: int = 300) -> str:
    """A library error as one short line (ITK messages span several lines and name source files)."""
    text = str(err)
    for marker in ("ITK ERROR:", "itk::ERROR:"):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            text = text.split("): ", 1)[-1]
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_float32(raw: np.ndarray, path: Path) -> np.ndarray:
    """Convert stored voxel values to float32 following the module's voxel-type policy.

    Raises:
        ImageReadError: Complex or structured (RGB) values, integers float32 cannot hold exactly,
            finite floats beyond the float32 range.
    """
    dtype = raw.dtype
    check_voxel_type(dtype, path)
    if dtype.kind in "iu" and dtype.itemsize >= 4 and raw.size:
        _check_exact_integers(raw, path)
    if dtype.kind == "f" and dtype.itemsize > 4 and raw.size:
        finite = raw[np.isfinite(raw)]
        if finite.size and float(np.abs(finite).max()) > _FLOAT32_MAX:
            raise ImageReadError(f"{path}: values up to {float(np.abs(finite).max()):.3g} exceed the float32 range "
                                 f"(+-{_FLOAT32_MAX:.3g}); expected values float32 can hold")
    return np.asarray(raw, dtype=np.float32)


def check_voxel_type(dtype: np.dtype, path: Path) -> None:
    """Refuse complex and structured (RGB/RGBA/vector) voxel types."""
    if dtype.kind == "c":
        raise ImageReadError(f"{path}: complex voxels ({dtype.name}); expected real scalar values (take the magnitude "
                             "or the real part first)")
    if dtype.kind == "V" or dtype.fields is not None:
        raise ImageReadError(f"{path}: voxels of type {dtype} (RGB/vector); expected one real scalar value per voxel")


def _check_exact_integers(raw: np.ndarray, path: Path) -> None:
    """Refuse integers that change when stored as float32."""
    lo, hi = int(raw.min()), int(raw.max())
    if -_FLOAT32_EXACT_INT <= lo and hi <= _FLOAT32_EXACT_INT:
        return
    wide = raw[(raw < -_FLOAT32_EXACT_INT) | (raw > _FLOAT32_EXACT_INT)]
    as_float = wide.astype(np.float32).astype(np.float64)
    bound = 2.0**63 if raw.dtype.kind == "i" else 2.0**64
    fits = np.abs(as_float) < bound  # float32 may round up to 2**63 / 2**64, which the integer type cannot hold
    exact = np.zeros(wide.shape, dtype=bool)
    exact[fits] = as_float[fits].astype(raw.dtype) == wide[fits]
    if not exact.all():
        bad = wide[~exact]
        raise ImageReadError(
            f"{path}: {bad.size} {raw.dtype.name} voxel values (e.g. {int(bad[0])}) cannot be held exactly in float32 "
            f"(exact up to +-{_FLOAT32_EXACT_INT}); expected values float32 represents exactly"
        )


def check_affine(affine: np.ndarray, path: Path, *, source: str = "geometry") -> None:
    """Refuse a non-finite, zero-length-axis or singular voxel-to-world affine.

    Args:
        affine: 4x4 voxel -> world matrix.
        path: The file (for the message).
        source: Where the geometry came from (e.g. ``"sform"``), for the message.

    Raises:
        ImageReadError: Any of the above, with the spacing or determinant found.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ImageReadError(f"{path}: {source} is not finite (NaN/Inf in the voxel-to-world matrix); expected a "
                             "finite affine")
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.all(norms > 0):
        spacing = ", ".join(f"{n:g}" for n in norms)
        raise ImageReadError(f"{path}: {source} has a zero-length voxel axis (spacing {spacing}); expected positive "
                             "spacing on every axis")
    independence = abs(float(np.linalg.det(affine[:3, :3] / norms)))
    if independence < MIN_AXIS_INDEPENDENCE:
        raise ImageReadError(f"{path}: {source} is singular (voxel axes parallel, |det| of the direction matrix "
                             f"{independence:.2g}); expected independent axes")


def check_spacing(values: np.ndarray | list[float], path: Path, what: str) -> None:
    """Refuse a zero, negative or non-finite spacing value."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)) or not np.all(values > 0):
        shown = " ".join(f"{v:g}" for v in values)
        raise ImageReadError(f"{path}: {what} {shown} has a zero, negative or NaN value; expected positive finite "
                             "spacing")
