"""Read NIfTI, NRRD, MetaImage and DICOM files into a :class:`~medgen_core.io.volume.Volume`.

Every failure is raised as :class:`~medgen_core.errors.ImageReadError` whose message names the file,
says what is wrong and what was expected, on one line, so the CLI can print it as is.

Order of work, so that hostile or broken files fail fast and with bounded memory:

1. the header alone is parsed and checked (:mod:`~medgen_core.io.headers`,
   :mod:`~medgen_core.io.header_checks`, :mod:`~medgen_core.io.dicom_series`): declared size against
   :mod:`~medgen_core.io.limits`, voxel type, spacing and direction, detached data present and of the
   declared length; compressed data is decompressed only up to the declared size;
2. the voxels are read (nibabel for NIfTI, through a bounded stream; SimpleITK for the rest) and
   converted to float32 under the voxel-type policy of :mod:`~medgen_core.io.validation`;
3. the resulting affine is checked (finite, positive spacing, not singular), then the shape and values.

NIfTI goes through nibabel (already RAS+). NRRD, MetaImage and DICOM go through SimpleITK, whose
geometry is LPS+ and whose arrays are ``(Z, Y, X)``; both are converted here, exactly:
``affine_lps[:3, :3] = direction * spacing`` (column ``j`` scaled by ``spacing[j]``),
``affine_lps[:3, 3] = origin`` and ``affine_ras = diag(-1, -1, 1, 1) @ affine_lps``.
"""

from __future__ import annotations

import errno
import gzip
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from medgen_core.errors import ImageReadError
from medgen_core.io.dicom_series import check_dicom_file, series_files
from medgen_core.io.header_checks import check_meta, check_nifti, check_nrrd, nifti_data_offset
from medgen_core.io.headers import read_meta_header, read_nifti_header, read_nrrd_header
from medgen_core.io.limits import BoundedStream
from medgen_core.io.validation import check_affine, one_line, to_float32
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
        path: A ``.nii``/``.nii.gz`` (or NIfTI ``.hdr``/``.img`` pair), ``.nrrd``/``.nhdr``,
            ``.mha``/``.mhd`` or ``.dcm`` file, or a directory containing a DICOM series (the series
            with the most image files is read).
        strict: If ``True`` (default), also refuse NaN/Inf voxels and empty volumes (no voxels, or
            every voxel exactly zero). ``False`` skips these value checks (used to hash whatever
            pixels a file holds).

    Returns:
        The volume, with ``path`` and ``format`` set.

    Raises:
        ImageReadError: The file is missing, has an unsupported extension, is truncated or corrupt,
            declares more voxels than the limit, has a non-real voxel type, degenerate geometry
            (zero/negative/NaN spacing, singular affine), a DICOM series with missing, duplicate or
            mixed slices, is 1D or truly 4D+, or (``strict``) holds NaN/Inf values or is empty.

    Example:
        >>> vol = read_volume("t1.nii.gz")  # doctest: +SKIP
        >>> vol.shape, vol.spacing  # doctest: +SKIP
        ((182, 218, 182), (1.0, 1.0, 1.0))
    """
    path = Path(path)
    _check_input_path(path)
    known = ("dicom", "") if path.is_dir() else format_of(path)
    if known is None:
        raise ImageReadError(
            f"{path}: unsupported file extension {''.join(path.suffixes) or '(none)'!r}; "
            f"expected one of {', '.join(SUPPORTED_READ_SUFFIXES)} or a DICOM series directory"
        )
    fmt = known[0]
    try:
        array, affine = _read_dicom_dir(path) if path.is_dir() else _READERS[fmt](path)
    except ImageReadError:
        raise
    except Exception as err:  # library errors vary (EOFError, zlib.error, RuntimeError, ...)
        raise ImageReadError(
            f"{path}: cannot read as {fmt.upper()} ({type(err).__name__}: {one_line(err)}); "
            "the file may be truncated or corrupt"
        ) from err

    check_affine(affine, path, source=f"{fmt.upper()} geometry")
    array = _to_3d(array, path)
    if strict:
        _check_values(array, path)
    logger.debug("read %s: format=%s shape=%s", path, fmt, array.shape)
    return Volume(array=array, affine=affine, path=path, format=fmt)


def _check_input_path(path: Path) -> None:
    """Missing, symlink loop, not a file or folder, unreadable: one line each."""
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise ImageReadError(f"{path}: is a symlink loop; expected an existing image file or DICOM directory") from None
    if not path.exists():
        raise ImageReadError(f"{path}: file not found (expected an existing image file or DICOM directory)")
    if not path.is_dir() and not path.is_file():
        raise ImageReadError(f"{path}: is not a regular file (device, FIFO or socket); expected an image file")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise ImageReadError(f"{path}: permission denied; expected a readable image file or DICOM directory")


def _sitk() -> Any:
    """Import SimpleITK lazily (it is slow to import and only needed for non-NIfTI formats)."""
    import SimpleITK

    return SimpleITK


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Check the raw header, then read through nibabel; ``.nii.gz`` through a stream bounded by the declared size."""
    import nibabel as nib

    header = read_nifti_header(path)
    declared = check_nifti(header)
    if header.data_files or not path.name.lower().endswith(".gz"):
        img = nib.load(str(path))
        return _nifti_array(img, path), np.asarray(img.affine, dtype=np.float64)
    klass = nib.Nifti2Image if int(header.fields["sizeof_hdr"]) == 540 else nib.Nifti1Image
    end = nifti_data_offset(header) + int(np.prod(declared.shape)) * declared.dtype.itemsize
    with gzip.open(path, "rb") as raw:
        stream = io.BufferedReader(BoundedStream(raw, end))
        img = klass.from_file_map(klass.make_file_map({"image": stream, "header": stream}), mmap=False)
        array = _nifti_array(img, path)
        if raw.tell() >= end and raw.read(1):
            raise ImageReadError(
                f"{path}: compressed data continue past the {end} bytes the header declares (a decompression "
                "bomb or trailing data); refusing to read it"
            )
    return array, np.asarray(img.affine, dtype=np.float64)


def _nifti_array(img: Any, path: Path) -> np.ndarray:
    """Unscaled data under the voxel-type policy; scaled data as nibabel scales it (float32)."""
    proxy = img.dataobj
    if (float(proxy.slope), float(proxy.inter)) == (1.0, 0.0):
        return to_float32(np.asanyarray(proxy.get_unscaled()), path)
    return np.asarray(img.get_fdata(dtype=np.float32))


def _read_sitk_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """NRRD / MetaImage / single DICOM file: header checks first, then SimpleITK."""
    fmt = format_of(path)[0]  # type: ignore[index]
    if fmt == "nrrd":
        check_nrrd(read_nrrd_header(path))
    elif fmt == "mha":
        check_meta(read_meta_header(path))
    else:
        check_dicom_file(path)
    return _read_sitk(_sitk().ReadImage(str(path)), path)


def _read_dicom_dir(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the checked, sorted DICOM series of ``path`` (see :mod:`~medgen_core.io.dicom_series`)."""
    files = series_files(path)
    sitk = _sitk()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # spacing already checked; ITK's multi-line warnings add nothing
    try:
        image = reader.Execute()
    except Exception as err:
        raise ImageReadError(
            f"{path}: cannot read DICOM series ({type(err).__name__}: {one_line(err)}); "
            "a slice may be truncated or corrupt"
        ) from err
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    return _read_sitk(image, path)


_READERS = {"nifti": _read_nifti, "nrrd": _read_sitk_file, "mha": _read_sitk_file, "dicom": _read_sitk_file}


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
    array = to_float32(sitk.GetArrayViewFromImage(image), path)
    array = array.transpose(tuple(range(array.ndim - 1, -1, -1)))
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
