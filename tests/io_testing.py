"""Builders for the image-safety tests: real files written byte by byte (NIfTI, NRRD, MetaImage, DICOM, bombs).

NIfTI headers are written field by field where nibabel would refuse or "fix" the values; NRRD and
MetaImage headers as text; DICOM slices with pydicom; decompression bombs block by block.
"""

from __future__ import annotations

import functools
import gzip
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

VALUES = np.arange(1, 4 * 5 * 3 + 1, dtype=np.float32).reshape(4, 5, 3)


def write_mhd(folder: Path, data: np.ndarray, spec: str, files: dict[str, bytes], extra: str = "") -> Path:
    """A MetaImage header ``scan.mhd`` whose ElementDataFile is ``spec``, plus the data files given."""
    header = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n{extra}"
              f"ElementSpacing = 1 1 2\nDimSize = {' '.join(map(str, data.shape))}\nElementType = MET_FLOAT\n"
              f"ElementDataFile = {spec}\n")
    for name, payload in files.items():
        (folder / name).write_bytes(payload)
    path = folder / "scan.mhd"
    path.write_text(header)
    return path


def write_nhdr(folder: Path, data: np.ndarray, spec: str, files: dict[str, bytes], encoding: str = "raw") -> Path:
    header = (f"NRRD0004\ntype: float\ndimension: 3\nsizes: {' '.join(map(str, data.shape))}\nencoding: {encoding}\n"
              "endian: little\nspace: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,2)\n"
              f"space origin: (0,0,0)\ndata file: {spec}\n")
    for name, payload in files.items():
        (folder / name).write_bytes(payload)
    path = folder / "scan.nhdr"
    path.write_text(header)
    return path


def slabs(data: np.ndarray) -> list[bytes]:
    """One raw little-endian float32 slab per z slice (X fastest)."""
    return [np.ascontiguousarray(data[:, :, k].T, dtype="<f4").tobytes() for k in range(data.shape[2])]


def write_nifti_raw(path: Path, data: np.ndarray, *, affine=None, pixdim=None, sform_code: int = 1,
                    qform_code: int = 0, slope: float | None = None, inter: float | None = None,
                    tail: bytes = b"") -> Path:
    """A NIfTI-1 file written byte by byte: header fields exactly as given, no nibabel validation or fixes."""
    data = np.asarray(data)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(data.dtype)
    hdr.set_data_shape(data.shape)
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    hdr["sform_code"], hdr["qform_code"] = sform_code, qform_code
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = aff[0], aff[1], aff[2]
    if pixdim is not None:
        pd = hdr["pixdim"].copy()
        pd[1: 1 + len(pixdim)] = pixdim
        hdr["pixdim"] = pd
    if slope is not None:
        hdr["scl_slope"] = slope
    if inter is not None:
        hdr["scl_inter"] = inter
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\x00" * 4 + data.tobytes(order="F") + tail
    path.write_bytes(gzip.compress(raw, 1) if path.name.endswith(".gz") else raw)
    return path


def dicom_slice(path: Path, *, z: float, series: str, study: str, instance: int, orientation=(1, 0, 0, 0, 1, 0),
                rows: int = 5, columns: int = 4, shift=(0.0, 0.0), sop_class: str = "1.2.840.10008.5.1.4.1.1.4") -> None:
    """One MR slice (int16), position (shift, z) along the normal of ``orientation``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = study, series, "MR", instance
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in shift[0] * row + shift[1] * col + z * normal]
    ds.PixelSpacing, ds.SliceThickness = ["0.5", "0.5"], "2"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = (np.arange(rows * columns, dtype="<i2") + 10 * instance).tobytes()
    ds.save_as(path, enforce_file_format=True)


def dicom_series(folder: Path, zs, **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    for i, z in enumerate(zs):
        dicom_slice(folder / f"s{i:03d}.dcm", z=z, series=series, study=study, instance=i + 1, **kwargs)
    return folder


def structured_report(path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.33", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "SR"
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.save_as(path, enforce_file_format=True)


def nrrd_file(path: Path, fields: str, data: np.ndarray, *, type_: str = "float") -> Path:
    sizes = " ".join(map(str, data.shape))
    lines = "".join(line + "\n" for line in fields.splitlines())
    header = f"NRRD0004\ntype: {type_}\ndimension: {data.ndim}\nsizes: {sizes}\nencoding: raw\nendian: little\n{lines}\n"
    path.write_bytes(header.encode() + np.asarray(data).tobytes(order="F"))
    return path


def mha_file(path: Path, fields: str, data: np.ndarray, *, type_: str = "MET_FLOAT") -> Path:
    header = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n{fields}"
              f"DimSize = {' '.join(map(str, data.shape))}\nElementType = {type_}\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + np.asarray(data).tobytes(order="F"))
    return path


@functools.lru_cache(maxsize=None)
def zeros_stream(size: int, container: str) -> bytes:
    """``size`` zero bytes compressed block by block (fast, ~1000:1), as a gzip member or a zlib stream."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 24)
    block = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    n = size // len(chunk)
    body = block * n + comp.flush()
    if container == "zlib":
        adler = 1
        for _ in range(n):
            adler = zlib.adler32(chunk, adler)
        return b"\x78\xda" + body + struct.pack(">I", adler)
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(chunk, crc)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body + struct.pack("<II", crc, (n * len(chunk)) & 0xFFFFFFFF)


def build_bombs(folder: Path) -> dict[str, Path]:
    """~1 MB files that decompress to 1 GiB: a modest header (64^3 float32) and a huge one (1000^3)."""
    bombs = {}
    gib = 1 << 30
    for label, n in (("modest", 64), ("huge", 1000)):
        hdr = nib.Nifti1Header()
        hdr.set_data_shape((n, n, n))
        hdr.set_data_dtype(np.float32)
        hdr["vox_offset"] = 352
        head = hdr.binaryblock + bytes(4) + (bytes(4 * n**3) if label == "modest" else b"")
        bombs[f"{label}.nii.gz"] = gzip.compress(head) + zeros_stream(gib, "gzip")  # a second gzip member
        nrrd_header = (f"NRRD0004\ntype: float\ndimension: 3\nsizes: {n} {n} {n}\nencoding: gzip\nendian: little\n"
                       "spacings: 1 1 1\n\n").encode()
        bombs[f"{label}.nrrd"] = nrrd_header + zeros_stream(gib, "gzip")
        payload = zeros_stream(gib, "zlib")
        mha_header = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                      f"CompressedData = True\nCompressedDataSize = {len(payload)}\nDimSize = {n} {n} {n}\n"
                      "ElementSpacing = 1 1 1\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n").encode()
        bombs[f"{label}.mha"] = mha_header + payload
    paths = {}
    for name, payload in bombs.items():
        assert len(payload) < 1.2e6
        paths[name] = folder / f"bomb_{name}"
        paths[name].write_bytes(payload)
    return paths
