"""Read NIfTI, NRRD, MetaImage and DICOM files into a :class:`~medgen_core.io.volume.Volume`.

Every failure is raised as :class:`~medgen_core.errors.ImageReadError` whose message names the file,
says what is wrong and what was expected, so the CLI can print it as one line.

NIfTI goes through nibabel (already RAS+). NRRD, MetaImage and DICOM go through SimpleITK, whose
geometry is LPS+ and whose arrays are ``(Z, Y, X)``; both are converted here, exactly:
``affine_lps[:3, :3] = direction * spacing`` (column ``j`` scaled by ``spacing[j]``),
``affine_lps[:3, 3] = origin`` and ``affine_ras = diag(-1, -1, 1, 1) @ affine_lps``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medgen_core.errors import ImageReadError
from medgen_core.io.volume import FORMAT_BY_SUFFIX, Volume, format_of, lps_to_ras

__all__ = ["SUPPORTED_READ_SUFFIXES", "read_volume"]

logger = logging.getLogger(__name__)

#: File endings :func:`read_volume` accepts (plus a directory holding a DICOM series).
SUPPORTED_READ_SUFFIXES: tuple[str, ...] = tuple(FORMAT_BY_SUFFIX)


def read_volume(path: str | Path, *, strict: bool = True) -> Volume:
    """Read a 3D image file (or a DICOM series directory) into a float32 ``(X, Y, Z)`` volume.

    Trailing singleton dimensions are dropped (``(128, 128, 10, 1)`` becomes 3D) and 2D images
    ``(X, Y)`` become ``(X, Y, 1)``.

    Args:
        path: A ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr``, ``.mha``/``.mhd`` or ``.dcm`` file, or a
            directory containing a DICOM series (the series with the most files is read).
        strict: If ``True`` (default), also refuse NaN/Inf voxels and empty volumes (no voxels, or
            every voxel exactly zero). ``False`` skips these value checks (used to hash whatever
            pixels a file holds).

    Returns:
        The volume, with ``path`` and ``format`` set.

    Raises:
        ImageReadError: The file is missing, has an unsupported extension, is truncated or corrupt,
            is 1D or truly 4D+, or (``strict``) holds NaN/Inf values or is empty.

    Example:
        >>> vol = read_volume("t1.nii.gz")  # doctest: +SKIP
        >>> vol.shape, vol.spacing  # doctest: +SKIP
        ((182, 218, 182), (1.0, 1.0, 1.0))
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found (expected an existing image file or DICOM directory)")
    if path.is_dir():
        fmt = "dicom"
        array, affine = _read_dicom_dir(path)
    else:
        known = format_of(path)
        if known is None:
            raise ImageReadError(
                f"{path}: unsupported file extension {''.join(path.suffixes) or '(none)'!r}; "
                f"expected one of {', '.join(SUPPORTED_READ_SUFFIXES)} or a DICOM series directory"
            )
        fmt = known[0]
        try:
            if fmt == "nifti":
                array, affine = _read_nifti(path)
            else:
                array, affine = _read_sitk(_sitk().ReadImage(str(path)), path)
        except ImageReadError:
            raise
        except Exception as err:  # library errors vary (EOFError, zlib.error, RuntimeError, ...)
            raise ImageReadError(
                f"{path}: cannot read as {fmt.upper()} ({type(err).__name__}: {err}); "
                "the file may be truncated or corrupt"
            ) from err

    array = _to_3d(array, path)
    if strict:
        _check_values(array, path)
    logger.debug("read %s: format=%s shape=%s", path, fmt, array.shape)
    return Volume(array=array, affine=affine, path=path, format=fmt)


def _sitk() -> Any:
    """Import SimpleITK lazily (it is slow to import and only needed for non-NIfTI formats)."""
    import SimpleITK

    return SimpleITK


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI file with nibabel, forcing the data to be read (so truncation fails here)."""
    import nibabel as nib

    img = nib.load(str(path))
    array = np.asarray(img.get_fdata(dtype=np.float32))
    return array, np.asarray(img.affine, dtype=np.float64)


def _read_dicom_dir(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the DICOM series with the most files in ``path``."""
    sitk = _sitk()
    try:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    except Exception as err:
        raise ImageReadError(f"{path}: cannot scan directory for DICOM series ({err})") from err
    if not series_ids:
        raise ImageReadError(f"{path}: directory contains no DICOM series (expected DICOM slice files)")
    files_by_series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), sid) for sid in series_ids}
    best = max(series_ids, key=lambda sid: len(files_by_series[sid]))
    if len(series_ids) > 1:
        logger.info(
            "%s: %d DICOM series found; reading %s (%d files)",
            path, len(series_ids), best, len(files_by_series[best]),
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files_by_series[best])
    try:
        image = reader.Execute()
    except Exception as err:
        raise ImageReadError(
            f"{path}: cannot read DICOM series {best} ({type(err).__name__}: {err}); "
            "a slice may be truncated or corrupt"
        ) from err
    return _read_sitk(image, path)


def _read_sitk(image: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Convert a SimpleITK image to an ``(X, Y, Z, ...)`` array and a 4x4 RAS affine."""
    sitk = _sitk()
    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        raise ImageReadError(
            f"{path}: image has {components} components per voxel (vector/RGB/4D data); "
            "expected a single scalar value per voxel"
        )
    dim = image.GetDimension()
    # SimpleITK arrays are indexed in reverse order (Z, Y, X); transpose back to (X, Y, Z, ...).
    array = sitk.GetArrayViewFromImage(image)
    array = np.asarray(array, dtype=np.float32).transpose(tuple(range(array.ndim - 1, -1, -1)))
    n = min(dim, 3)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    affine_lps = np.eye(4)
    affine_lps[:n, :n] = direction[:n, :n] * spacing[None, :n]
    affine_lps[:n, 3] = origin[:n]
    return np.ascontiguousarray(array), lps_to_ras(affine_lps)


def _to_3d(array: np.ndarray, path: Path) -> np.ndarray:
    """Drop trailing singleton dimensions beyond the third, lift 2D to ``(X, Y, 1)``, refuse 1D/4D+."""
    shape = tuple(array.shape)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim > 3:
        raise ImageReadError(
            f"{path}: image is {array.ndim}D with shape {shape}; expected a 3D volume "
            "(a 4D series must be split into 3D volumes first)"
        )
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim < 2 or (array.size > 1 and sum(s > 1 for s in array.shape) == 1):
        raise ImageReadError(f"{path}: image is 1D with shape {shape}; expected a 2D or 3D image")
    return array


def _check_values(array: np.ndarray, path: Path) -> None:
    """Refuse empty volumes and non-finite voxels."""
    if array.size == 0:
        raise ImageReadError(f"{path}: image has no voxels (shape {tuple(array.shape)}); expected a non-empty volume")
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(array.size - finite.sum() - n_nan)
        raise ImageReadError(
            f"{path}: image contains {n_nan} NaN and {n_inf} Inf voxels out of {array.size}; "
            "expected finite values only"
        )
    if not array.any():
        raise ImageReadError(f"{path}: every voxel is exactly zero (empty image); expected image content")
