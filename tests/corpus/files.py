"""Writers for the corpus' files: small volumes, hand-made NIfTI/NRRD/MetaImage headers, DICOM slices, bombs.

Everything is written from code (nibabel, pydicom, plain bytes); nothing is downloaded.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = [
    "CT_IMAGE_SOP",
    "SR_SOP",
    "deflate_zeros",
    "dicom_series",
    "dicom_slice",
    "gzip_zeros",
    "label_map",
    "mhd",
    "nifti",
    "nrrd_bytes",
    "patch_nifti_header",
    "smooth_volume",
]

SHAPE = (24, 24, 6)
CT_IMAGE_SOP = "1.2.840.10008.5.1.4.1.1.2"
SR_SOP = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR: a DICOM object without pixels
_BLOCK = 1 << 20


def smooth_volume(shape: Sequence[int] = SHAPE) -> np.ndarray:
    """A smooth, positive float32 volume (a blob on a background), like a tiny MR slab."""
    grids = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    radius2 = sum(g**2 for g in grids[:2]) + 0.5 * grids[2] ** 2
    return (100 * np.exp(-2 * radius2) + 10).astype(np.float32)


def label_map(shape: Sequence[int] = SHAPE) -> np.ndarray:
    """Nested squares with labels 0 background, 1 CSF, 2 grey matter, 3 white matter (a tissue map)."""
    labels = np.zeros(tuple(shape), np.int16)
    n = shape[0]
    for value, margin in ((1, n // 6), (2, n // 4), (3, n // 3)):
        labels[margin:n - margin, margin:n - margin] = value
    return labels


def nifti(path: str | Path, array: np.ndarray | None = None, affine: np.ndarray | None = None, dtype: object = None) -> Path:
    """Save ``array`` (default :func:`smooth_volume`) as NIfTI with ``affine`` (default 1 x 1 x 3 mm)."""
    array = smooth_volume() if array is None else array
    affine = np.diag([1.0, 1.0, 3.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(array, affine, dtype=dtype), str(path))
    return Path(path)


def patch_nifti_header(path: str | Path, **fields: object) -> Path:
    """Set raw header fields (e.g. ``scl_slope=nan``, ``pixdim=[...]``) of a NIfTI-1 file in place, bytes only.

    nibabel would fix or refuse odd values on save, so the header block is edited directly.
    """
    path = Path(path)
    raw = path.read_bytes()
    packed = gzip.decompress(raw) if path.name.endswith(".gz") else raw
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(packed[:348]), check=False)
    block = bytearray(header.binaryblock)
    view = np.ndarray((), dtype=header.template_dtype, buffer=block)
    for name, value in fields.items():
        view[name] = value
    packed = bytes(block) + packed[348:]
    path.write_bytes(gzip.compress(packed, mtime=0) if path.name.endswith(".gz") else packed)
    return path


def nrrd_bytes(fields: dict[str, str], data: bytes) -> bytes:
    """An attached NRRD file: ``NRRD0004``, one ``key: value`` line per field, a blank line, ``data``."""
    return ("NRRD0004\n" + "".join(f"{k}: {v}\n" for k, v in fields.items()) + "\n").encode("ascii") + data


def nrrd_fields(sizes: Sequence[int] = SHAPE, directions: str = "(1,0,0) (0,1,0) (0,0,3)", encoding: str = "raw",
                **extra: str) -> dict[str, str]:
    """The fields of a float LPS NRRD (``extra`` adds or replaces fields; use ``data_file`` for ``data file``)."""
    fields = {"type": "float", "dimension": str(len(sizes)), "space": "left-posterior-superior",
              "sizes": " ".join(map(str, sizes)), "space directions": directions, "kinds": " ".join(["domain"] * len(sizes)),
              "endian": "little", "encoding": encoding, "space origin": "(0,0,0)"}
    fields.update({k.replace("_", " "): v for k, v in extra.items()})
    return fields


def voxel_bytes(array: np.ndarray | None = None) -> bytes:
    """Little-endian float32 voxels in file order (x fastest), as NRRD and MetaImage store them."""
    array = smooth_volume() if array is None else array
    return np.asarray(array, "<f4").tobytes(order="F")


def mhd(path: str | Path, data_file: str | None = None, spacing: str = "1 1 3", dims: str = "24 24 6",
        extra: str = "", data: bytes | None = None) -> Path:
    """A MetaImage header ``path`` with its detached voxel file ``data_file`` (default ``<stem>.raw``)."""
    path = Path(path)
    data_file = data_file or path.with_suffix(".raw").name
    path.write_text(f"ObjectType = Image\nNDims = 3\nDimSize = {dims}\nElementType = MET_FLOAT\nElementSpacing = {spacing}\n"
                    f"{extra}ElementByteOrderMSB = False\nElementDataFile = {data_file}\n")
    (path.parent / data_file).write_bytes(voxel_bytes() if data is None else data)
    return path


def deflate_zeros(n_bytes: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``n_bytes`` zero bytes, built in milliseconds, and the zeros' CRC-32.

    Each 1 MiB block is compressed after a full flush, so every block has the same compressed bytes.
    """
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(_BLOCK)
    piece = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(n_bytes, _BLOCK)
    tail = comp.compress(bytes(rest)) + comp.flush()
    crc = _zeros_checksum(zlib.crc32, n_bytes, 0)
    return piece * full + tail, crc


def gzip_zeros(prefix: bytes, n_zeros: int) -> bytes:
    """A gzip member holding ``prefix`` then ``n_zeros`` zero bytes (a bomb when ``n_zeros`` is large)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    body, _ = deflate_zeros(n_zeros)
    crc = _zeros_checksum(zlib.crc32, n_zeros, zlib.crc32(prefix))
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + head + body + struct.pack("<II", crc, (len(prefix) + n_zeros) & 0xFFFFFFFF)


def _zeros_checksum(update, n_zeros: int, start: int) -> int:
    """``update`` (crc32 / adler32) continued from ``start`` over ``n_zeros`` zero bytes."""
    value, chunk, left = start, bytes(16 * _BLOCK), n_zeros
    while left:
        step = min(left, len(chunk))
        value = update(memoryview(chunk)[:step], value)
        left -= step
    return value


def zlib_zeros(n_zeros: int) -> bytes:
    """A zlib stream of ``n_zeros`` zero bytes (MetaImage ``CompressedData``)."""
    body, _ = deflate_zeros(n_zeros)
    return b"\x78\xda" + body + struct.pack(">I", _zeros_checksum(zlib.adler32, n_zeros, 1))


def nifti_header_bytes(shape: Sequence[int], dtype: object = np.float32, zooms: Sequence[float] = (1.0, 1.0, 3.0)) -> bytes:
    """A NIfTI-1 single-file header (348 bytes + the 4-byte extension flag) declaring ``shape``."""
    header = nib.Nifti1Header()
    header.set_data_shape(tuple(shape))
    header.set_data_dtype(dtype)
    header.set_zooms(tuple(zooms)[: len(shape)] + (1.0,) * max(0, len(shape) - len(zooms)))
    header.set_sform(np.diag([*zooms[:3], 1.0]), code=1)
    header["vox_offset"] = 352
    return header.binaryblock + b"\x00" * 4


def dicom_slice(path: str | Path, study: str, series: str, number: int, z: float | None, pixels: np.ndarray | None,
                sop_class: str = CT_IMAGE_SOP) -> Path:
    """One DICOM file: a CT slice at height ``z`` (``pixels`` int16 rows x columns), or an object without pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = "CORPUS^CASE", "corpus"
    ds.Modality = "CT" if pixels is not None else "SR"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    if pixels is not None:
        ds.ImagePositionPatient = [0.0, 0.0, float(z)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.asarray(pixels, "<i2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)


def dicom_series(folder: str | Path, positions: Sequence[float], shape: tuple[int, int] = (24, 24), first: int = 1,
                 series: str | None = None, study: str | None = None) -> tuple[str, str]:
    """CT slices ``slice_<n>.dcm`` at the given heights in ``folder``; returns (series uid, study uid)."""
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series, study = series or generate_uid(), study or generate_uid()
    blob = smooth_volume((*shape, max(len(positions), 2)))
    for i, z in enumerate(positions):
        pixels = (blob[:, :, i % blob.shape[2]] * 10).astype(np.int16)
        dicom_slice(folder / f"slice_{first + i:03d}.dcm", study, series, first + i, z, pixels)
    return series, study
