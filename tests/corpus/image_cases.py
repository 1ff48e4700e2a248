"""Bad (and a few good) image inputs, each upscaled with ``medgen upscale INPUT out.nii.gz``.

Expected outcomes follow issue 14: degenerate geometry, non-real voxels, resource bombs, ambiguous or
broken DICOM series are refused with one line naming the file; real-valued voxel types and the NIfTI
``scl_slope = 0`` convention ("no scaling") are read.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from .common import error, ok, upscale_case
from .files import (
    SR_SOP,
    dicom_series,
    dicom_slice,
    gzip_zeros,
    mhd,
    nifti,
    nifti_header_bytes,
    nrrd_bytes,
    nrrd_fields,
    patch_nifti_header,
    smooth_volume,
    voxel_bytes,
    zlib_zeros,
)
from .model import Case

__all__ = ["CASES"]

BOMB_SHAPE = (1100, 1024, 512)  # 5.8e8 voxels (2.3 GB of float32): more than any reader should take from 2 MB
BOMB_MEMORY_MB = 200


def _w(name: str, write) -> callable:
    def run() -> str:
        write(name)
        return name

    return run


def _nifti_affine(affine: np.ndarray):
    def write(name: str) -> None:
        img = nib.Nifti1Image(smooth_volume(), affine)
        img.set_qform(None, code=0)
        img.set_sform(affine, code=1)
        nib.save(img, name)

    return write


def _singular() -> np.ndarray:
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    affine[:3, 1] = affine[:3, 0]  # the y axis points along x: the grid collapses onto a plane
    return affine


def _nan_origin() -> np.ndarray:
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    affine[0, 3] = np.nan
    return affine


def _zero_pixdim(name: str) -> None:
    nifti(name)
    patch_nifti_header(name, pixdim=[1.0, 0.0, 1.0, 3.0, 1, 0, 0, 0], sform_code=0, qform_code=1)


def _slope(value: float):
    def write(name: str) -> None:
        nifti(name, (smooth_volume() * 10).astype(np.int16))
        patch_nifti_header(name, scl_slope=value, scl_inter=0.0)

    return write


def _rgb(name: str) -> None:
    rgb = np.zeros((24, 24, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = smooth_volume().astype(np.uint8)
    nib.save(nib.Nifti1Image(rgb, np.diag([1.0, 1.0, 3.0, 1.0])), name)


def _binary(name: str) -> None:
    # NIfTI DT_BINARY (datatype 1, bitpix 1): one bit per voxel
    nifti(name, (smooth_volume() > 50).astype(np.uint8))
    raw = Path(name).read_bytes()
    bits = np.packbits((smooth_volume() > 50).ravel(order="F")).tobytes()
    Path(name).write_bytes(raw[:352] + bits)
    patch_nifti_header(name, datatype=1, bitpix=1)


def _half_as_float32(name: str) -> None:
    # float16 voxels saved under the float32 code by a hand-rolled writer: bitpix 16, half the bytes
    header = bytearray(nifti_header_bytes((24, 24, 6)))
    Path(name).write_bytes(bytes(header) + smooth_volume().astype("<f2").tobytes(order="F"))
    patch_nifti_header(name, bitpix=16)


def _nrrd(fields: dict, data):
    """Writer of an attached NRRD; ``data`` is bytes or a function returning them (built only when the case is)."""
    return lambda name: Path(name).write_bytes(nrrd_bytes(fields, data() if callable(data) else data))


def _gzip_bomb_nifti(name: str) -> None:
    header = nifti_header_bytes(BOMB_SHAPE)
    Path(name).write_bytes(gzip_zeros(header, int(np.prod(BOMB_SHAPE)) * 4))


def _header_bomb(name: str) -> None:
    data = nifti_header_bytes(BOMB_SHAPE) + bytes(4096)
    Path(name).write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)


def _mha_bomb(name: str) -> None:
    stream = zlib_zeros(512 << 20)
    head = ("ObjectType = Image\nNDims = 3\nDimSize = 24 24 6\nElementType = MET_FLOAT\nElementSpacing = 1 1 3\n"
            f"ElementByteOrderMSB = False\nCompressedData = True\nCompressedDataSize = {len(stream)}\nElementDataFile = LOCAL\n")
    Path(name).write_bytes(head.encode("ascii") + stream)


def _mha_rgb(name: str) -> None:
    head = ("ObjectType = Image\nNDims = 3\nDimSize = 24 24 6\nElementType = MET_UCHAR\nElementNumberOfChannels = 3\n"
            "ElementSpacing = 1 1 3\nElementByteOrderMSB = False\nElementDataFile = LOCAL\n")
    Path(name).write_bytes(head.encode("ascii") + bytes(24 * 24 * 6 * 3))


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _series(folder: str, positions, **kwargs):
    def run() -> str:
        dicom_series(folder, positions, **kwargs)
        return folder

    return run


def _two_series() -> str:
    dicom_series("series", [0, 2, 4, 6])
    dicom_series("series", [0, 2, 4, 6], first=11)
    return "series"


def _mixed_sizes() -> str:
    uid, study = dicom_series("series", [0, 2, 4])
    dicom_series("series", [6, 8, 10], shape=(20, 20), first=4, series=uid, study=study)
    return "series"


def _with_text_report() -> str:
    from pydicom.uid import generate_uid

    _, study = dicom_series("series", [0, 2, 4, 6, 8, 10])
    dicom_slice("series/report.dcm", study, generate_uid(), 1, None, None, sop_class=SR_SOP)
    return "series"


def _only_report() -> str:
    from pydicom.uid import generate_uid

    Path("series").mkdir()
    dicom_slice("series/report.dcm", generate_uid(), generate_uid(), 1, None, None, sop_class=SR_SOP)
    return "series"


def _truncated_slice() -> str:
    dicom_series("series", [0, 2, 4, 6, 8, 10])
    _truncate(Path("series/slice_003.dcm"))
    return "series"


def _fmt_case(case_id: str, doc: str, name: str, write, expected, **kwargs) -> Case:
    return upscale_case(case_id, "image", doc, _w(name, write), expected, **kwargs)


CASES: list[Case] = [
    # controls: the harness itself accepts good files of every input format
    _fmt_case("nifti_control", "a good 24x24x6 NIfTI volume is upscaled", "scan.nii.gz", lambda n: nifti(n), ok()),
    _fmt_case("nrrd_control", "a good attached NRRD volume is upscaled", "scan.nrrd",
              _nrrd(nrrd_fields(), voxel_bytes()), ok()),
    _fmt_case("mhd_control", "a good MetaImage header + detached .raw is upscaled", "scan.mhd", lambda n: mhd(n), ok()),
    upscale_case("dicom_control", "image", "a good 6-slice CT series folder is upscaled", _series("series", [0, 2, 4, 6, 8, 10]), ok()),
    # resource bombs
    _fmt_case("gzip_bomb_nifti", "2 MB .nii.gz that inflates to 2.3 GB (header declares 5.8e8 voxels): refused before reading",
              "bomb.nii.gz", _gzip_bomb_nifti, error("bomb.nii.gz"), max_memory_mb=BOMB_MEMORY_MB),
    _fmt_case("header_bomb_nifti_gz", "a .nii.gz header declaring 5.8e8 voxels over 4 KB of data: refused without allocating",
              "header_bomb.nii.gz", _header_bomb, error("header_bomb.nii.gz"), max_memory_mb=BOMB_MEMORY_MB),
    _fmt_case("header_bomb_nifti", "an uncompressed .nii header declaring 5.8e8 voxels over 4 KB of data: refused",
              "header_bomb.nii", _header_bomb, error("header_bomb.nii"), max_memory_mb=BOMB_MEMORY_MB),
    _fmt_case("gzip_bomb_nrrd", "a 24x24x6 gzip NRRD whose data inflates to 512 MB: refused, decompression stops at the declared size",
              "bomb.nrrd", _nrrd(nrrd_fields(encoding="gzip"), lambda: gzip_zeros(b"", 512 << 20)),
              error("bomb.nrrd"), max_memory_mb=BOMB_MEMORY_MB),
    _fmt_case("zlib_bomb_mha", "a 24x24x6 compressed MetaImage whose data inflates to 512 MB: refused",
              "bomb.mha", _mha_bomb, error("bomb.mha"), max_memory_mb=BOMB_MEMORY_MB),
    # degenerate geometry
    _fmt_case("spacing_zero_mhd", "ElementSpacing 0 1 3: refused", "zero_spacing.mhd",
              lambda n: mhd(n, spacing="0 1 3"), error("zero_spacing.mhd", "spacing")),
    _fmt_case("spacing_negative_mhd", "ElementSpacing -1 1 3: refused (spacing is a length)", "negative_spacing.mhd",
              lambda n: mhd(n, spacing="-1 1 3"), error("negative_spacing.mhd", "spacing")),
    _fmt_case("spacing_nan_mhd", "ElementSpacing nan 1 3: refused", "nan_spacing.mhd",
              lambda n: mhd(n, spacing="nan 1 3"), error("nan_spacing.mhd", "spacing", "nan", "finite")),
    _fmt_case("spacing_zero_nifti", "NIfTI pixdim[1] = 0 (qform only): refused, not silently set to 1 mm", "zero_pixdim.nii",
              _zero_pixdim, error("zero_pixdim.nii", "spacing", "pixdim", "zero", "singular", "degenerate")),
    _fmt_case("singular_affine_nifti", "NIfTI sform whose x and y columns are equal: refused", "singular.nii.gz",
              _nifti_affine(_singular()), error("singular.nii.gz", "singular", "degenerate", "affine", "spacing")),
    _fmt_case("nan_affine_nifti", "NIfTI sform with a NaN origin: refused in one line", "nan_affine.nii.gz",
              _nifti_affine(_nan_origin()), error("nan_affine.nii.gz", "nan", "finite", "affine")),
    _fmt_case("singular_directions_nrrd", "NRRD space directions with two equal vectors: refused", "singular.nrrd",
              _nrrd(nrrd_fields(directions="(1,0,0) (1,0,0) (0,0,3)"), voxel_bytes()),
              error("singular.nrrd", "singular", "degenerate", "direction", "spacing")),
    _fmt_case("nan_directions_nrrd", "NRRD space directions holding NaN: refused", "nan_directions.nrrd",
              _nrrd(nrrd_fields(directions="(nan,0,0) (0,1,0) (0,0,3)"), voxel_bytes()),
              error("nan_directions.nrrd", "nan", "finite", "direction", "spacing")),
    # intensity scaling
    _fmt_case("scl_slope_zero_nifti", "scl_slope = 0 means 'no scaling' in NIfTI-1: read unscaled", "slope_zero.nii.gz",
              _slope(0.0), ok()),
    _fmt_case("scl_slope_nan_nifti", "scl_slope = NaN: the intensities are undefined, refused rather than guessed",
              "slope_nan.nii.gz", _slope(float("nan")), error("slope_nan.nii.gz", "slope", "scl")),
    # voxel types
    _fmt_case("complex_nifti", "complex64 voxels: refused (not silently reduced to the real part)", "complex.nii.gz",
              lambda n: nifti(n, (smooth_volume() * (1 + 1j)).astype(np.complex64)), error("complex.nii.gz", "complex")),
    _fmt_case("rgb_nifti", "RGB24 voxels: refused", "rgb.nii.gz", _rgb,
              error("rgb.nii.gz", "rgb", "component", "colour", "color", "vector")),
    _fmt_case("rgb_mha", "a 3-channel MetaImage: refused", "rgb.mha", _mha_rgb,
              error("rgb.mha", "component", "channel", "rgb", "vector")),
    _fmt_case("bool_bitpacked_nifti", "NIfTI DT_BINARY (1 bit per voxel): refused as an unsupported voxel type", "mask_bits.nii",
              _binary, error("mask_bits.nii", "type", "binary", "bool")),
    _fmt_case("bool_mask_uint8_nifti", "a 0/1 mask stored the usual way (uint8): read", "mask.nii.gz",
              lambda n: nifti(n, (smooth_volume() > 50).astype(np.uint8)), ok()),
    _fmt_case("float16_as_float32_nifti", "float16 voxels under the float32 code (bitpix 16): refused, header and data disagree",
              "half.nii", _half_as_float32, error("half.nii")),
    _fmt_case("float64_nifti", "float64 voxels: read", "double.nii.gz", lambda n: nifti(n, smooth_volume().astype(np.float64)), ok()),
    _fmt_case("int64_nifti", "int64 voxels: read", "int64.nii.gz",
              lambda n: nifti(n, (smooth_volume() * 10).astype(np.int64), dtype=np.int64), ok()),
    # dimensions
    _fmt_case("four_d_nifti", "a 4D series: refused", "four_d.nii.gz", lambda n: nifti(n, np.ones((24, 24, 6, 3), np.float32)),
              error("four_d.nii.gz", "4D")),
    _fmt_case("five_d_nifti", "5D data: refused", "five_d.nii.gz", lambda n: nifti(n, np.ones((24, 24, 6, 2, 2), np.float32)),
              error("five_d.nii.gz", "5D")),
    _fmt_case("zero_length_dim_nifti", "shape (24, 0, 6): refused", "empty_dim.nii.gz",
              lambda n: nifti(n, np.ones((24, 0, 6), np.float32)), error("empty_dim.nii.gz", "voxel", "empty", "zero", "size")),
    _fmt_case("zero_length_dim_nrrd", "NRRD sizes 24 0 6: refused", "empty_dim.nrrd",
              _nrrd(nrrd_fields(sizes=(24, 0, 6)), b""), error("empty_dim.nrrd")),
    # values
    _fmt_case("nan_voxels_nifti", "NaN voxels: refused", "nan_voxels.nii.gz",
              lambda n: nifti(n, np.where(smooth_volume() > 90, np.nan, smooth_volume()).astype(np.float32)),
              error("nan_voxels.nii.gz", "nan")),
    _fmt_case("all_zero_nifti", "every voxel 0: refused as empty", "zeros.nii.gz", lambda n: nifti(n, np.zeros((24, 24, 6), np.float32)),
              error("zeros.nii.gz", "zero", "empty")),
    # DICOM series
    upscale_case("dicom_missing_slice", "image", "slice positions 0 2 4 8 10 12 (one missing): refused, never spaced evenly",
                 _series("series", [0, 2, 4, 8, 10, 12]), error("series", "missing", "gap", "spacing", "uneven", "uniform", "position")),
    upscale_case("dicom_duplicate_positions", "image", "two slices at the same position: refused",
                 _series("series", [0, 2, 4, 4, 6, 8]), error("series", "duplicate", "position")),
    upscale_case("dicom_two_series", "image", "a folder holding two 4-slice series: refused as ambiguous", _two_series,
                 error("series", "series")),
    upscale_case("dicom_mixed_sizes", "image", "one series whose slices are 24x24 and 20x20: refused", _mixed_sizes,
                 error("series")),
    upscale_case("dicom_non_image_object", "image", "a series folder that also holds a text report (no pixels): the report is ignored",
                 _with_text_report, ok()),
    upscale_case("dicom_only_non_image", "image", "a folder holding only a text report: refused, no image series",
                 _only_report, error("series", "image", "series", "pixel")),
    upscale_case("dicom_truncated_slice", "image", "one slice file cut in half: refused, not silently dropped", _truncated_slice,
                 error("series")),
    # broken or mislabelled files
    _fmt_case("truncated_nifti_gz", "a .nii.gz cut in half: refused", "cut.nii.gz", lambda n: (nifti(n), _truncate(Path(n))),
              error("cut.nii.gz", "truncated", "corrupt")),
    _fmt_case("truncated_nrrd", "an attached NRRD missing half its data: refused", "cut.nrrd",
              _nrrd(nrrd_fields(), voxel_bytes()[: 24 * 24 * 3 * 4]), error("cut.nrrd")),
    _fmt_case("empty_file_nifti", "a zero-byte .nii.gz: refused", "empty.nii.gz", lambda n: Path(n).write_bytes(b""), error("empty.nii.gz")),
    _fmt_case("nrrd_named_nii", "NRRD bytes under a .nii name: refused", "really_nrrd.nii",
              _nrrd(nrrd_fields(), voxel_bytes()), error("really_nrrd.nii")),
    _fmt_case("png_named_nii_gz", "a PNG under a .nii.gz name: refused", "picture.nii.gz",
              lambda n: Path(n).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), error("picture.nii.gz")),
    _fmt_case("unknown_extension", "a .txt file: refused, the message lists the accepted formats", "scan.img.txt",
              lambda n: Path(n).write_text("not an image"), error("scan.img.txt", "extension")),
    _fmt_case("nhdr_missing_data_file", "a detached NRRD header whose data file is missing: refused", "scan.nhdr",
              _nrrd(nrrd_fields(data_file="scan.raw"), b""), error("scan.nhdr", "scan.raw")),
    _fmt_case("input_missing", "an input that does not exist: refused", "absent.nii.gz", lambda n: None,
              error("absent.nii.gz", "not found", "exist")),
]
