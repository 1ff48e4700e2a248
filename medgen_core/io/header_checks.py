"""Checks on what a NIfTI, NRRD or MetaImage header declares, run before any voxel is read.

Each ``check_*`` function refuses, with one line naming the file:

* a declared grid over the voxel limit (:func:`~medgen_core.io.limits.check_declared_size`) or with a
  zero-length axis;
* complex, RGB and unsupported voxel types (policy in :mod:`medgen_core.io.validation`);
* zero, negative or NaN spacing (NIfTI ``pixdim``, NRRD ``spacings``, MetaImage ``ElementSpacing``), a
  zero or NaN NRRD ``space directions`` vector, a singular or non-finite direction matrix;
* a NIfTI ``bitpix`` that disagrees with ``datatype``;
* NIfTI ``scl_slope`` NaN/Inf (``scl_slope = 0`` means "no scaling", as the NIfTI standard says) and a
  non-finite ``scl_inter`` with a slope;
* voxel data that is missing, truncated, or (compressed) decompresses to more or fewer bytes than
  declared (:func:`~medgen_core.io.limits.measure_decompressed`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgen_core.errors import ImageReadError
from medgen_core.io.headers import Header
from medgen_core.io.limits import MAX_HEADER_BYTES, BoundedStream, check_declared_size, measure_decompressed
from medgen_core.io.validation import MIN_AXIS_INDEPENDENCE, check_spacing, check_voxel_type

__all__ = ["Declared", "check_meta", "check_nifti", "check_nrrd", "nifti_data_offset"]

_NRRD_COMPLEX_KINDS = {"complex"}
_NRRD_CODECS = {"gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}
_NRRD_TEXT = {"ascii", "text", "txt", "hex"}
_NRRD_SPATIAL_KINDS = {"domain", "space"}
_META_TYPES = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2", "MET_INT": "i4",
    "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4", "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}


@dataclass(frozen=True)
class Declared:
    """The declared grid (every axis, file order) and stored type, after the checks passed."""

    shape: tuple[int, ...]
    dtype: np.dtype


def _check_shape(path: Path, shape: Sequence[int], itemsize: int) -> int:
    """Zero-length axes and the voxel limit; returns the data size in bytes."""
    nbytes = check_declared_size(path, shape, itemsize)
    if 0 in shape:
        raise ImageReadError(f"{path}: image has no voxels (shape {tuple(shape)}); expected a non-empty volume")
    return nbytes


def _check_directions(path: Path, vectors: list[np.ndarray], what: str) -> None:
    """Every vector finite and non-zero; together independent (non-singular)."""
    for i, vector in enumerate(vectors):
        if not np.all(np.isfinite(vector)) or not np.linalg.norm(vector) > 0:
            raise ImageReadError(f"{path}: {what} of axis {i} is {tuple(float(v) for v in vector)} (zero or NaN); "
                                 "expected a finite non-zero vector per axis")
    if len(vectors) >= 2:
        matrix = np.stack([v / np.linalg.norm(v) for v in vectors], axis=1)
        volume = float(np.sqrt(abs(np.linalg.det(matrix.T @ matrix))))  # |det| for square, area for 2 axes
        if volume < MIN_AXIS_INDEPENDENCE:
            raise ImageReadError(f"{path}: {what} are parallel (singular geometry, |det| {volume:.2g}); expected "
                                 "independent axes")


def _check_data_size(path: Path, fmt: str, files: list[Path], offset: int, nbytes: int, codec: str | None,
                     *, skip_lines: int = 0, skip_bytes: int = 0, compressed_size: int | None = None,
                     detached_offset: int = 0) -> None:
    """Detached files exist; raw data is long enough; compressed data decompresses to exactly the declared size."""
    attached = not files
    files = files or [path]
    for name in files:
        if not name.is_file():
            raise ImageReadError(f"{path}: data file {name} named by the header does not exist; expected the voxel data")
    per_file = nbytes // len(files)
    for name in files:
        start = offset if attached else detached_offset
        if codec is None:
            if skip_lines == 0 and skip_bytes >= 0:
                have = name.stat().st_size - start - skip_bytes
                if have < per_file:
                    raise ImageReadError(f"{path}: cannot read as {fmt}: {name.name} holds {max(have, 0)} of the "
                                         f"{per_file} bytes of voxel data the header declares; the file is truncated")
            continue
        with open(name, "rb") as raw:
            raw.seek(start)
            for _ in range(skip_lines):
                raw.readline(MAX_HEADER_BYTES)
            limit = raw.tell() + compressed_size if compressed_size is not None else 1 << 62
            measure_decompressed(name, BoundedStream(raw, limit), codec, per_file + max(skip_bytes, 0))


# -- NIfTI ---------------------------------------------------------------------------------------


def check_nifti(header: Header) -> Declared:
    """Checks on a raw NIfTI-1/-2 header (see the module docstring)."""
    path, hdr = header.path, header.fields
    ndim = int(hdr["dim"][0])
    if not 1 <= ndim <= 7:
        raise ImageReadError(f"{path}: NIfTI dim[0] = {ndim}; expected 1 to 7 dimensions")
    shape = tuple(int(d) for d in hdr["dim"][1: ndim + 1])
    code = int(hdr["datatype"])
    try:
        dtype = hdr.get_data_dtype()
    except KeyError:
        raise ImageReadError(f"{path}: unsupported NIfTI datatype code {code}; expected an integer or float type") from None
    if dtype.itemsize == 0:
        raise ImageReadError(f"{path}: NIfTI datatype code {code} cannot be read here (1-bit or long double); "
                             "expected an integer or float type")
    check_voxel_type(dtype, path)
    if int(hdr["bitpix"]) not in (0, 8 * dtype.itemsize):  # 0: left unset by the writer
        raise ImageReadError(f"{path}: NIfTI bitpix {int(hdr['bitpix'])} disagrees with datatype {dtype.name} "
                             f"({8 * dtype.itemsize} bits); the header is inconsistent")
    nbytes = _check_shape(path, shape, dtype.itemsize)
    check_spacing(hdr["pixdim"][1: min(ndim, 3) + 1], path, "NIfTI pixdim (voxel size)")
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if not math.isfinite(slope):
        raise ImageReadError(f"{path}: NIfTI scl_slope is {slope}; expected a finite slope (0 means no scaling)")
    if slope != 0 and not math.isfinite(inter):
        raise ImageReadError(f"{path}: NIfTI scl_inter is {inter} with scl_slope {slope}; expected a finite intercept")
    offset = float(hdr["vox_offset"])
    if not math.isfinite(offset) or not 0 <= offset <= MAX_HEADER_BYTES:
        raise ImageReadError(f"{path}: NIfTI vox_offset {offset} is outside 0..{MAX_HEADER_BYTES}; the header is corrupt")
    if not path.name.lower().endswith(".gz") and not any(f.name.lower().endswith(".gz") for f in header.data_files):
        _check_data_size(path, "NIFTI", header.data_files, nifti_data_offset(header), nbytes, None,
                         detached_offset=int(offset))
    return Declared(shape, dtype)


def nifti_data_offset(header: Header) -> int:
    """Where the voxel data of a single-file NIfTI start (nibabel raises a too-low ``vox_offset`` to the header end)."""
    sizeof = int(header.fields["sizeof_hdr"])
    return max(int(header.fields["vox_offset"]), sizeof + 4)


# -- NRRD ----------------------------------------------------------------------------------------


def check_nrrd(header: Header) -> Declared:
    """Checks on an NRRD header (see the module docstring)."""
    import nrrd.reader

    path, fields = header.path, header.fields
    for key in ("type", "dimension", "sizes", "encoding"):
        if key not in fields:
            raise ImageReadError(f"{path}: NRRD header lacks the required field {key!r}")
    kind = nrrd.reader._TYPEMAP_NRRD2NUMPY.get(fields["type"])
    if kind is None:
        raise ImageReadError(f"{path}: NRRD type {fields['type']!r} is not supported; expected an integer or float type")
    dtype = np.dtype(kind)
    sizes = tuple(int(s) for s in fields["sizes"])
    if len(sizes) != int(fields["dimension"]):
        raise ImageReadError(f"{path}: NRRD dimension {fields['dimension']} but {len(sizes)} sizes")
    kinds = [str(k) for k in fields.get("kinds", [])]
    for axis, (name, size) in enumerate(zip(kinds, sizes)):
        if name.lower() in _NRRD_COMPLEX_KINDS and size > 1:
            raise ImageReadError(f"{path}: complex voxels (NRRD axis {axis} kind 'complex'); expected real scalar values")
    nbytes = _check_shape(path, sizes, dtype.itemsize)
    if "space directions" in fields:
        tokens = header.text.get("space directions", "").split()
        matrix = np.asarray(fields["space directions"], dtype=np.float64)
        vectors = [matrix[i] for i, token in enumerate(tokens) if token != "none" and i < len(matrix)]
        _check_directions(path, vectors, "NRRD space directions")
    if "spacings" in fields:
        spacings = np.asarray(fields["spacings"], dtype=np.float64)
        spatial = [i for i in range(len(spacings))
                   if not kinds or i >= len(kinds) or kinds[i].lower() in _NRRD_SPATIAL_KINDS]
        check_spacing(spacings[spatial], path, "NRRD spacings")
    if "space origin" in fields and not np.all(np.isfinite(np.asarray(fields["space origin"], dtype=np.float64))):
        raise ImageReadError(f"{path}: NRRD space origin is not finite; expected a finite origin")
    encoding = str(fields["encoding"]).lower()
    if encoding not in _NRRD_TEXT:
        if encoding not in _NRRD_CODECS and encoding != "raw":
            raise ImageReadError(f"{path}: NRRD encoding {encoding!r} is not supported; expected raw, gzip, bzip2 or ascii")
        _check_data_size(path, "NRRD", header.data_files, header.data_offset, nbytes, _NRRD_CODECS.get(encoding),
                         skip_lines=int(fields.get("line skip", 0)), skip_bytes=int(fields.get("byte skip", 0)))
    return Declared(sizes, dtype)


# -- MetaImage -----------------------------------------------------------------------------------


def _numbers(path: Path, text: dict[str, str], keys: Sequence[str], count: int) -> np.ndarray | None:
    """The first of ``keys`` present, parsed as ``count`` floats (``None`` if none present)."""
    for key in keys:
        if key in text:
            try:
                values = np.array([float(v) for v in text[key].split()], dtype=np.float64)
            except ValueError:
                raise ImageReadError(f"{path}: MetaImage {key} = {text[key]!r} is not numeric") from None
            if values.size < count:
                raise ImageReadError(f"{path}: MetaImage {key} has {values.size} values; expected {count}")
            return values[:count]
    return None


def check_meta(header: Header) -> Declared:
    """Checks on a MetaImage header (see the module docstring)."""
    path, text = header.path, header.text
    try:
        ndims = int(text.get("NDims", ""))
    except ValueError:
        raise ImageReadError(f"{path}: MetaImage NDims is missing or not an integer") from None
    sizes_f = _numbers(path, text, ("DimSize",), ndims)
    if sizes_f is None or ndims < 1:
        raise ImageReadError(f"{path}: MetaImage header lacks DimSize (or NDims < 1)")
    sizes = tuple(int(s) for s in sizes_f)
    kind = _META_TYPES.get(text.get("ElementType", ""))
    if kind is None:
        raise ImageReadError(f"{path}: MetaImage ElementType {text.get('ElementType')!r} is not supported; "
                             "expected an integer or float MET_ type")
    dtype = np.dtype(kind)
    channels = int(float(text.get("ElementNumberOfChannels", "1")))
    if channels != 1:
        raise ImageReadError(f"{path}: image has {channels} components per voxel (vector/RGB/4D data); "
                             "expected a single scalar value per voxel")
    nbytes = _check_shape(path, sizes, dtype.itemsize)
    spacing = _numbers(path, text, ("ElementSpacing", "ElementSize"), ndims)
    if spacing is not None:
        check_spacing(spacing, path, "MetaImage ElementSpacing")
    matrix = _numbers(path, text, ("TransformMatrix", "Rotation", "Orientation"), ndims * ndims)
    if matrix is not None:
        matrix = matrix.reshape(ndims, ndims)
        _check_directions(path, [matrix[i] for i in range(ndims)], "MetaImage TransformMatrix")
    origin = _numbers(path, text, ("Offset", "Position", "Origin"), ndims)
    if origin is not None and not np.all(np.isfinite(origin)):
        raise ImageReadError(f"{path}: MetaImage Offset is not finite; expected a finite origin")
    compressed = text.get("CompressedData", "False").strip().lower() == "true"
    skip = int(float(text.get("HeaderSize", "0")))
    size_text = text.get("CompressedDataSize")
    _check_data_size(path, "MHA", header.data_files, header.data_offset, nbytes, "zlib" if compressed else None,
                     skip_bytes=0 if compressed else skip,
                     compressed_size=int(float(size_text)) if compressed and size_text and not header.data_files else None)
    return Declared(sizes, dtype)
