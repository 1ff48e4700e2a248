"""Write a :class:`~medgen_core.io.volume.Volume` to NIfTI or NRRD, atomically.

The file is first written to a hidden temporary file in the destination directory (with the same
extension, so nibabel/pynrrd pick the right format), flushed to disk with ``fsync`` and then moved
into place with :func:`os.replace`. If anything fails, the temporary file (and any folder created
for it) is removed and the destination is left untouched.

Before anything is written, :func:`~medgen_core.io.file_sets.check_output_path` refuses a destination
that is any file of an input (the header, a detached ``.raw``/``.zraw``/LIST/pattern data file, a
NIfTI ``.img``, a file of a DICOM folder; by resolved path and by inode, so symlinks and hardlinks
count), an existing folder, a non-regular file, a symlink loop, or one in a read-only folder.

Generated images must not be written with :func:`write_volume` directly: use
:func:`medgen_core.provenance.write_generated_volume`, which embeds the provenance record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medgen_core.errors import ImageWriteError
from medgen_core.io.file_sets import check_output_path
from medgen_core.io.volume import Volume, format_of, ras_to_lps

__all__ = ["SUPPORTED_WRITE_SUFFIXES", "atomic_path", "fsync_dir", "write_volume"]

logger = logging.getLogger(__name__)

#: File endings :func:`write_volume` can produce.
SUPPORTED_WRITE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd")

#: NIfTI ``sform_code`` / ``qform_code`` used for written files: 2 = aligned to an anatomical
#: reference (the generated image lives in the input's space), 1 = scanner anatomical.
NIFTI_SFORM_CODE = 2
NIFTI_QFORM_CODE = 1


def write_volume(
    volume: Volume,
    path: str | Path,
    *,
    inputs: Iterable[str | Path] = (),
    extra_nrrd_fields: Mapping[str, str] | None = None,
    nifti_extensions: Sequence[Any] | None = None,
    nifti_descrip: str | None = None,
) -> Path:
    """Write ``volume`` as float32 NIfTI (``.nii``/``.nii.gz``) or gzip NRRD (``.nrrd``).

    NIfTI gets the affine as both sform (code 2) and qform (code 1), units mm. NRRD gets
    ``space: left-posterior-superior``, ``space directions`` (the LPS affine's columns) and
    ``space origin``; the array stays in ``(X, Y, Z)`` index order.

    Args:
        volume: The volume to write.
        path: Destination file; its parent directory is created if needed.
        inputs: Files this volume was derived from. The destination must not be any file of any of
            them (header, detached data, DICOM folder member), nor of ``volume.path``: inputs are
            never overwritten.
        extra_nrrd_fields: NRRD only: extra ``key:=value`` fields (single-line ASCII strings).
        nifti_extensions: NIfTI only: ``nibabel.nifti1.Nifti1Extension`` objects to add.
        nifti_descrip: NIfTI only: the ``descrip`` header text (truncated to 79 bytes).

    Returns:
        The destination path.

    Raises:
        ImageWriteError: Unsupported extension, destination is (a file of) an input, an existing
            folder, a symlink loop or in a read-only folder, options that do not match the format,
            non-finite voxels, or the underlying library failed.
    """
    path = Path(path)
    known = format_of(path)
    if known is None or known[1] not in SUPPORTED_WRITE_SUFFIXES:
        raise ImageWriteError(
            f"{path}: unsupported output extension {''.join(path.suffixes) or '(none)'!r}; "
            f"expected one of {', '.join(SUPPORTED_WRITE_SUFFIXES)}"
        )
    fmt = known[0]
    check_output_path([volume.path, *inputs], path)
    if fmt != "nrrd" and extra_nrrd_fields:
        raise ImageWriteError(f"{path}: extra_nrrd_fields given but the output is {fmt.upper()}, not NRRD")
    if fmt != "nifti" and (nifti_extensions or nifti_descrip):
        raise ImageWriteError(f"{path}: NIfTI header options given but the output is {fmt.upper()}, not NIfTI")
    if not np.all(np.isfinite(volume.array)):
        n_bad = int(volume.array.size - np.isfinite(volume.array).sum())
        raise ImageWriteError(f"{path}: volume has {n_bad} NaN/Inf voxels; refusing to write non-finite values")

    created = _make_parents(path)
    try:
        with atomic_path(path) as tmp:
            if fmt == "nifti":
                _write_nifti(volume, tmp, nifti_extensions or (), nifti_descrip)
            else:
                _write_nrrd(volume, tmp, extra_nrrd_fields or {})
    except BaseException as err:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(err, ImageWriteError) or not isinstance(err, Exception):
            raise
        raise ImageWriteError(f"{path}: writing {fmt.upper()} failed ({type(err).__name__}: {' '.join(str(err).split())})") from err
    logger.debug("wrote %s: shape=%s spacing=%s", path, volume.shape, volume.spacing)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and move it onto ``path``.

    The temporary name is ``.tmp-<random>-<name>`` so it keeps ``path``'s extension. On any
    exception the temporary file is removed and the exception propagates; ``path`` is untouched.

    Example:
        >>> with atomic_path("out/report.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{secrets.token_hex(6)}-{path.name}")
    try:
        yield tmp
        if not tmp.is_file():
            raise ImageWriteError(f"{path}: the writer produced no file")
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk (best effort; not supported on every platform)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parent folders of ``path``; return the ones created (outermost first)."""
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ImageWriteError(f"{path}: cannot create the output folder ({type(err).__name__}: {err})") from err
    return list(reversed(missing))


def _refuse_overwriting_inputs(path: Path, inputs: Sequence[str | Path]) -> None:
    """Raise if ``path`` is any file of ``inputs`` or cannot be written (kept for callers of the old name)."""
    check_output_path(inputs, path)


def _write_nifti(volume: Volume, tmp: Path, extensions: Sequence[Any], descrip: str | None) -> None:
    """Save a float32 NIfTI-1 with sform/qform = affine."""
    import nibabel as nib

    img = nib.Nifti1Image(volume.array, volume.affine)
    header = img.header
    header.set_data_dtype(np.float32)
    header.set_xyzt_units(xyz="mm")
    img.set_sform(volume.affine, code=NIFTI_SFORM_CODE)
    img.set_qform(volume.affine, code=NIFTI_QFORM_CODE)
    if descrip is not None:
        header["descrip"] = descrip.encode("utf-8")[:79]
    for extension in extensions:
        header.extensions.append(extension)
    nib.save(img, str(tmp))


def _write_nrrd(volume: Volume, tmp: Path, extra_fields: Mapping[str, str]) -> None:
    """Save a gzip float32 NRRD in LPS space, array in (X, Y, Z) index order."""
    import nrrd

    affine_lps = ras_to_lps(volume.affine)
    header: dict[str, Any] = {
        "type": "float",
        "dimension": 3,
        "space": "left-posterior-superior",
        "kinds": ["domain", "domain", "domain"],
        "endian": "little",
        "encoding": "gzip",
        # pynrrd wants one row per index axis: row j is the LPS vector of voxel axis j.
        "space directions": affine_lps[:3, :3].T.copy(),
        "space origin": affine_lps[:3, 3].copy(),
    }
    custom_map: dict[str, Any] = {}
    for key, value in extra_fields.items():
        _check_nrrd_field(tmp, key, value)
        if key in header:
            raise ImageWriteError(f"{tmp.name}: extra NRRD field {key!r} clashes with a standard field")
        header[key] = value
        custom_map[key] = "string"
    data = np.asarray(volume.array, dtype="<f4")
    nrrd.write(str(tmp), data, header, custom_field_map=custom_map, index_order="F")


def _check_nrrd_field(tmp: Path, key: str, value: str) -> None:
    """NRRD key/value fields are single ASCII lines; keys may not contain ':'."""
    if not isinstance(value, str):
        raise ImageWriteError(f"NRRD field {key!r}: value must be a string, got {type(value).__name__}")
    text = key + value
    if ":" in key or not key.strip() or "\n" in text or "\r" in text or not text.isascii():
        raise ImageWriteError(
            f"NRRD field {key!r}: keys and values must be single-line ASCII and keys may not contain ':'"
        )
