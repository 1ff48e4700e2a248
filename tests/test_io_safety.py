"""Issue 14, image input/output safety: no input destroyed, no silent wrong geometry, bounded resources.

Every case writes real files (NIfTI byte by byte where nibabel would refuse to, NRRD/MetaImage
headers as text, DICOM with pydicom) and asserts the exact outcome: the values read, or a one-line
error naming the file. The new API is imported inside the tests, so each test fails on its own
against the code before the fix.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from io_testing import (
    VALUES,
    build_bombs,
    dicom_series,
    dicom_slice,
    mha_file,
    nrrd_file,
    slabs,
    structured_report,
    write_mhd,
    write_nhdr,
    write_nifti_raw,
)
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

import medgen_core.io as mio
from medgen_core.errors import ImageReadError, ImageWriteError
from medgen_core.io import Volume, read_volume, write_volume

def one_line_error(exc_info, *fragments: str) -> str:
    """The error text, asserting it is one line and contains every fragment."""
    text = str(exc_info.value)
    assert "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


# -- 1. no input is destroyed ------------------------------------------------------------------


def detached_inputs(folder: Path) -> dict[str, tuple[Path, list[Path]]]:
    """Every detached-data form, each data file named with a writable suffix: {form: (header, data files)}."""
    cases = {}
    parts = slabs(VALUES)
    for form, spec, names in (
        ("mhd", "voxels.nii", ["voxels.nii"]),
        ("mhd_list", "LIST 2D\n" + "\n".join(f"z{k}.nrrd" for k in range(3)), [f"z{k}.nrrd" for k in range(3)]),
        ("mhd_pattern", "z%d.nii.gz 1 3 1", [f"z{k}.nii.gz" for k in (1, 2, 3)]),
        ("nhdr", "voxels.nii", ["voxels.nii"]),
        ("nhdr_list", "LIST 2\n" + "\n".join(f"z{k}.nrrd" for k in range(3)), [f"z{k}.nrrd" for k in range(3)]),
        ("nhdr_pattern", "z%02d.nii 0 2 1 2", [f"z{k:02d}.nii" for k in range(3)]),
    ):
        sub = folder / form
        sub.mkdir()
        payloads = {names[0]: b"".join(parts)} if len(names) == 1 else dict(zip(names, parts))
        writer = write_mhd if form.startswith("mhd") else write_nhdr
        cases[form] = (writer(sub, VALUES, spec, payloads), [sub / n for n in names])
    return cases


def test_input_file_set_names_every_detached_file(tmp_path) -> None:
    for form, (header, data_files) in detached_inputs(tmp_path).items():
        assert mio.input_file_set(header) == [header, *data_files], form
        back = read_volume(header)  # the detached forms really are readable
        np.testing.assert_array_equal(back.array, VALUES)
        np.testing.assert_allclose(back.spacing, (1, 1, 2))
    pair = tmp_path / "pair.hdr"
    nib.save(nib.Nifti1Pair(VALUES, np.diag([2.0, 2.0, 2.0, 1.0])), str(pair))
    assert mio.input_file_set(pair) == [pair, tmp_path / "pair.img"]
    assert mio.input_file_set(tmp_path / "pair.img") == [tmp_path / "pair.img", pair]
    np.testing.assert_array_equal(read_volume(pair).array, VALUES)
    series = dicom_series(tmp_path / "dcm", [0.0, 2.0, 4.0])
    (series / "notes.txt").write_text("not DICOM")
    assert mio.input_file_set(series) == [series / f"s{i:03d}.dcm" for i in range(3)]


@pytest.mark.parametrize("form", ["mhd", "mhd_list", "mhd_pattern", "nhdr", "nhdr_list", "nhdr_pattern"])
def test_output_onto_detached_data_is_refused(tmp_path, form: str) -> None:
    header, data_files = detached_inputs(tmp_path)[form]
    before = {p: p.read_bytes() for p in data_files}
    source = read_volume(header)
    target = data_files[-1]
    with pytest.raises(ImageWriteError) as err:
        write_volume(source, target)  # the volume remembers where it came from
    one_line_error(err, target.name, "voxel data file of the input", "refusing to overwrite an input")
    with pytest.raises(ImageWriteError):
        write_volume(Volume(source.array, source.affine), target, inputs=[header])  # or told through inputs=
    with pytest.raises(ImageWriteError):
        mio.check_output_path([header], target)  # refused before any compute too
    assert {p: p.read_bytes() for p in data_files} == before
    assert leftovers(header.parent) == []


def test_symlink_and_hardlink_to_input_data_are_refused(tmp_path) -> None:
    header, (data,) = detached_inputs(tmp_path)["mhd"]
    before = data.read_bytes()
    source = read_volume(header)
    os.symlink(data, tmp_path / "via_symlink.nii")
    os.link(data, tmp_path / "via_hardlink.nii")
    for name in ("via_symlink.nii", "via_hardlink.nii"):
        with pytest.raises(ImageWriteError) as err:
            write_volume(source, tmp_path / name)
        one_line_error(err, name, "refusing to overwrite an input")
    assert data.read_bytes() == before and os.path.samefile(tmp_path / "via_hardlink.nii", data)


def test_cli_check_output_path_refuses_detached_data(tmp_path) -> None:
    from medgen_core.cli._common import check_output_path

    header, (data,) = detached_inputs(tmp_path)["nhdr"]
    with pytest.raises(ImageWriteError) as err:
        check_output_path(header, data)
    one_line_error(err, "voxel data file of the input")
    check_output_path(header, tmp_path / "fresh.nii.gz")  # a new file is fine


def test_unwritable_destinations_fail_with_one_line(tmp_path) -> None:
    volume = Volume(VALUES, np.eye(4))
    (tmp_path / "folder.nii.gz").mkdir()
    os.symlink(tmp_path / "loop_a.nii", tmp_path / "loop_b.nii")
    os.symlink(tmp_path / "loop_b.nii", tmp_path / "loop_a.nii")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        cases = [
            (tmp_path / "folder.nii.gz", "is a directory"),
            (tmp_path / "loop_a.nii", "is a symlink loop"),
            (tmp_path / "loop_a.nii" / "x.nii", "symlink loop"),
            (locked / "out.nii.gz", "is read-only"),
            (locked / "new_sub" / "out.nii.gz", "is read-only"),
            (Path(os.devnull).with_name("null"), "not a regular file"),
        ]
        for target, fragment in cases:
            with pytest.raises(ImageWriteError) as err:
                mio.check_output_path([], target)
            one_line_error(err, target.name, fragment)
            if target.suffix in (".nii", ".gz"):
                with pytest.raises(ImageWriteError):
                    write_volume(volume, target)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
    assert leftovers(tmp_path) == [] and Path(os.devnull).exists() and not Path(os.devnull).is_file()


def test_failed_write_removes_created_folders(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(nib, "save", lambda img, filename: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(ImageWriteError, match="disk full"):
        write_volume(Volume(VALUES, np.eye(4)), tmp_path / "a" / "b" / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_output_folder_may_not_be_an_input_folder(tmp_path) -> None:
    series = dicom_series(tmp_path / "dcm", [0.0, 2.0, 4.0])
    with pytest.raises(ImageWriteError) as err:
        mio.check_output_folder([series], series)
    one_line_error(err, "is the input folder")
    scan = tmp_path / "scan.nii.gz"
    write_volume(Volume(VALUES, np.eye(4)), scan)
    with pytest.raises(ImageWriteError) as err:
        mio.check_output_folder([scan], tmp_path)
    one_line_error(err, "holds scan.nii.gz")
    mio.check_output_folder([series, scan], tmp_path / "new_series")


# -- 2. no silent wrong geometry: DICOM ---------------------------------------------------------


def test_dicom_missing_slice_is_refused(tmp_path) -> None:
    series = dicom_series(tmp_path / "gap", [0.0, 2.0, 4.0, 8.0, 10.0])
    with pytest.raises(ImageReadError) as err:
        read_volume(series)
    one_line_error(err, "gap: slice positions are unevenly spaced", "expected a step of 2 mm",
                   "gap of 4 mm between 4 and 8 mm", "1 slice(s) may be missing", "positions: 0, 2, 4, 8, 10 mm")


def test_dicom_regular_series_keeps_true_positions(tmp_path) -> None:
    # Files named out of order, oblique, a 0.3% jitter (within the 1% tolerance): read, sorted, spacing 2.
    c, s = np.cos(np.deg2rad(30)), np.sin(np.deg2rad(30))
    series = dicom_series(tmp_path / "ok", [4.0, 0.0, 6.006, 2.0], orientation=(c, s, 0, -s, c, 0))
    back = read_volume(series)
    assert back.shape == (4, 5, 4)
    np.testing.assert_allclose(back.spacing, (0.5, 0.5, 2.002), atol=5e-3)
    np.testing.assert_array_equal(back.array[0, 0, :], [20, 40, 10, 30])  # z = 0, 2, 4, 6.006: instances 2, 4, 1, 3
    np.testing.assert_allclose(back.affine[2, 3], 0.0, atol=1e-6)


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("duplicate", ["are at the same slice position (2 mm", "duplicate slices"]),
        ("orientation", ["Image Orientation (Patient)", "expected one orientation per series"]),
        ("size", ["slice is 6x4", "expected one slice size per series"]),
        ("tilt", ["off the slice normal (gantry tilt"]),
    ],
)
def test_dicom_inconsistent_series_is_refused(tmp_path, case: str, fragments: list[str]) -> None:
    folder = tmp_path / case
    series, study = generate_uid(), generate_uid()
    for i, z in enumerate([0.0, 2.0, 4.0, 6.0]):
        kwargs = {}
        if case == "duplicate" and i == 2:
            z = 2.0
        if case == "orientation" and i == 3:
            kwargs["orientation"] = (1, 0, 0, 0, 0.995004, 0.099833)
        if case == "size" and i == 1:
            kwargs["rows"] = 6
        if case == "tilt":
            kwargs["shift"] = (0.0, 0.8 * i)
        folder.mkdir(exist_ok=True)
        dicom_slice(folder / f"s{i}.dcm", z=z, series=series, study=study, instance=i + 1, **kwargs)
    with pytest.raises(ImageReadError) as err:
        read_volume(folder)
    one_line_error(err, case, *fragments)


def test_dicom_ambiguous_or_broken_folder_is_refused(tmp_path) -> None:
    folder = dicom_series(tmp_path / "two", [0.0, 2.0, 4.0])
    other = dicom_series(tmp_path / "other", [10.0, 12.0, 14.0])
    for path in other.iterdir():
        path.rename(folder / f"b_{path.name}")
    with pytest.raises(ImageReadError) as err:
        read_volume(folder)
    one_line_error(err, "holds 2 DICOM series, the largest two with 3 image files each; ambiguous")
    broken = dicom_series(tmp_path / "broken", [0.0, 2.0, 4.0, 6.0])
    (broken / "s003.dcm").write_bytes((broken / "s003.dcm").read_bytes()[:200])
    with pytest.raises(ImageReadError) as err:
        read_volume(broken)
    one_line_error(err, "s003.dcm: DICOM file cannot be parsed", "truncated or corrupt")


def test_dicom_non_image_objects(tmp_path, caplog) -> None:
    series = dicom_series(tmp_path / "with_sr", [0.0, 2.0, 4.0])
    structured_report(series / "report.dcm")
    with caplog.at_level("WARNING"):
        back = read_volume(series)
    assert back.shape == (4, 5, 3)
    assert "skipped 1 non-image DICOM file(s): report.dcm (Comprehensive SR Storage)" in caplog.text
    only_sr = tmp_path / "only_sr"
    only_sr.mkdir()
    structured_report(only_sr / "report.dcm")
    with pytest.raises(ImageReadError) as err:
        read_volume(only_sr)
    one_line_error(err, "only_sr: directory contains no DICOM series of image files", "report.dcm (Comprehensive SR")
    with pytest.raises(ImageReadError) as err:
        read_volume(only_sr / "report.dcm")
    one_line_error(err, "report.dcm: DICOM object is a Comprehensive SR Storage, not an image")


# -- 2. no silent wrong geometry: spacing, affine, voxel types ---------------------------------


LPS = "space: left-posterior-superior\nspace origin: (0,0,0)\n"
SINGULAR = np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
NAN_AFFINE = np.diag([1.0, np.nan, 1.0, 1.0])

GEOMETRY_CASES = {
    "nifti_pixdim_zero": (lambda p: write_nifti_raw(p, VALUES, pixdim=(1, 0, 1), sform_code=0), "pixdim (voxel size) 1 0 1"),
    "nifti_pixdim_zero_qform": (lambda p: write_nifti_raw(p, VALUES, pixdim=(1, 0, 1), sform_code=0, qform_code=1), "pixdim"),
    "nifti_pixdim_nan": (lambda p: write_nifti_raw(p, VALUES, pixdim=(1, np.nan, 1), sform_code=0), "1 nan 1"),
    "nifti_pixdim_negative": (lambda p: write_nifti_raw(p, VALUES, pixdim=(1, -2, 1), sform_code=0), "1 -2 1"),
    "nifti_sform_singular": (lambda p: write_nifti_raw(p, VALUES, affine=SINGULAR), "zero-length voxel axis"),
    "nifti_sform_parallel": (lambda p: write_nifti_raw(p, VALUES, affine=np.array(
        [[1.0, 1, 0, 0], [0, 1e-6, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])), "is singular (voxel axes parallel"),
    "nifti_sform_nan": (lambda p: write_nifti_raw(p, VALUES, affine=NAN_AFFINE), "is not finite"),
    "nrrd_zero_direction": (lambda p: nrrd_file(p, LPS + "space directions: (1,0,0) (0,0,0) (0,0,1)", VALUES),
                            "space directions of axis 1 is (0.0, 0.0, 0.0)"),
    "nrrd_nan_direction": (lambda p: nrrd_file(p, LPS + "space directions: (1,0,0) (0,nan,0) (0,0,1)", VALUES), "zero or NaN"),
    "nrrd_parallel_directions": (lambda p: nrrd_file(p, LPS + "space directions: (1,0,0) (2,0,0) (0,0,1)", VALUES),
                                 "are parallel"),
    "nrrd_spacing_zero": (lambda p: nrrd_file(p, "spacings: 1 0 1", VALUES), "spacings 1 0 1"),
    "nrrd_spacing_negative": (lambda p: nrrd_file(p, "spacings: 1 -1 1", VALUES), "spacings 1 -1 1"),
    "mha_spacing_zero": (lambda p: mha_file(p, "ElementSpacing = 1 0 1\n", VALUES), "ElementSpacing 1 0 1"),
    "mha_spacing_nan": (lambda p: mha_file(p, "ElementSpacing = 1 nan 1\n", VALUES), "ElementSpacing 1 nan 1"),
    "mha_spacing_negative": (lambda p: mha_file(p, "ElementSpacing = 1 -2 1\n", VALUES), "ElementSpacing 1 -2 1"),
    "mha_singular_matrix": (lambda p: mha_file(p, "TransformMatrix = 1 0 0 1 0 0 0 0 1\n", VALUES), "are parallel"),
}


@pytest.mark.parametrize("case", sorted(GEOMETRY_CASES))
def test_degenerate_geometry_is_refused(tmp_path, case: str) -> None:
    build, fragment = GEOMETRY_CASES[case]
    suffix = {"nifti": ".nii", "nrrd": ".nrrd", "mha": ".mha"}[case.split("_")[0]]
    path = build(tmp_path / f"{case}{suffix}")
    with pytest.raises(ImageReadError) as err:
        read_volume(path)
    one_line_error(err, f"{case}{suffix}: ", fragment)


def test_voxel_type_policy(tmp_path) -> None:
    exact = np.array([1, -5, 2**24, 2**40, -(2**62), 7, 3, 2, 9, 4, 1, 8], dtype=np.int64).reshape(2, 2, 3)
    back = read_volume(write_nifti_raw(tmp_path / "int64_exact.nii", exact))
    np.testing.assert_array_equal(back.array.astype(np.int64), exact)  # every value float32 holds is kept exactly
    big = exact.copy()
    big[0, 0, 0] = 2**24 + 1
    for name, path in (("int64_lossy.nii", write_nifti_raw(tmp_path / "int64_lossy.nii", big)),
                       ("int64_lossy.nrrd", nrrd_file(tmp_path / "int64_lossy.nrrd", "", big, type_="int64")),
                       ("uint32_lossy.mha", mha_file(tmp_path / "uint32_lossy.mha", "", big.astype(np.uint32) + 2**30,
                                                 type_="MET_UINT"))):
        with pytest.raises(ImageReadError) as err:
            read_volume(path)
        one_line_error(err, name, "cannot be held exactly in float32")
    u64 = (np.arange(12, dtype=np.uint64).reshape(2, 2, 3) + 2**63)  # 2**63 + k: not exact except k = 0
    with pytest.raises(ImageReadError, match="uint64 voxel values"):
        read_volume(write_nifti_raw(tmp_path / "u64.nii", u64))
    with pytest.raises(ImageReadError) as err:
        read_volume(write_nifti_raw(tmp_path / "f64.nii", np.full((2, 2, 2), 1e300)))
    one_line_error(err, "exceed the float32 range")
    half = write_nifti_raw(tmp_path / "half.nii", VALUES)
    half.write_bytes(half.read_bytes()[:72] + (16).to_bytes(2, "little") + half.read_bytes()[74:])  # bitpix 16, float32
    with pytest.raises(ImageReadError) as err:
        read_volume(half)
    one_line_error(err, "half.nii: NIfTI bitpix 16 disagrees with datatype float32")
    complex_cases = {
        "c64.nii.gz": lambda p: write_nifti_raw(p, (VALUES + 1j).astype(np.complex64)),
        "c128.nii": lambda p: write_nifti_raw(p, (VALUES + 1j).astype(np.complex128)),
        "cpx.nrrd": lambda p: nrrd_file(p, "kinds: complex domain domain domain", np.stack([VALUES, VALUES])),
    }
    for name, build in complex_cases.items():
        with pytest.raises(ImageReadError) as err:
            read_volume(build(tmp_path / name))
        one_line_error(err, name, "complex voxels")
    rgb = np.zeros(VALUES.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "rgb.nii"))
    with pytest.raises(ImageReadError) as err:
        read_volume(tmp_path / "rgb.nii")
    one_line_error(err, "rgb.nii", "RGB/vector")
    # bool and float16 exist only in memory (no supported format stores them): widened exactly.
    np.testing.assert_array_equal(Volume(VALUES > 30, np.eye(4)).array, (VALUES > 30).astype(np.float32))
    half = (VALUES / 7).astype(np.float16)
    np.testing.assert_array_equal(Volume(half, np.eye(4)).array, half.astype(np.float32))


def test_nifti_scaling_per_standard(tmp_path) -> None:
    raw = VALUES.astype(np.int16)
    np.testing.assert_array_equal(read_volume(write_nifti_raw(tmp_path / "s0.nii", raw, slope=0, inter=5)).array, raw)
    np.testing.assert_array_equal(read_volume(write_nifti_raw(tmp_path / "s2.nii", raw, slope=2, inter=1)).array, 2 * raw + 1)
    for name, slope, inter, fragment in (("snan.nii", np.nan, 0, "scl_slope is nan"), ("sinf.nii", np.inf, 0, "scl_slope is inf"),
                                         ("inan.nii", 2, np.nan, "scl_inter is nan")):
        with pytest.raises(ImageReadError) as err:
            read_volume(write_nifti_raw(tmp_path / name, raw, slope=slope, inter=inter))
        one_line_error(err, name, fragment)


def test_shapes_give_one_line(tmp_path) -> None:
    for name, data, fragment in (("five_d.nii", np.ones((3, 3, 3, 2, 2), np.float32), "is 5D with shape (3, 3, 3, 2, 2)"),
                                 ("empty.nii", np.zeros((3, 0, 3), np.float32), "image has no voxels (shape (3, 0, 3))"),
                                 ("empty.nrrd", np.zeros((3, 0, 3), np.float32), "image has no voxels")):
        path = write_nifti_raw(tmp_path / name, data) if name.endswith(".nii") else nrrd_file(tmp_path / name, "", data)
        for strict in (True, False):
            with pytest.raises(ImageReadError) as err:
                read_volume(path, strict=strict)
            one_line_error(err, name, fragment)


# -- 3. resources: the declared size caps what is read -----------------------------------------


CHILD = textwrap.dedent("""
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a regression must not take the machine down
    from medgen_core.io import read_volume
    results = {}
    for path in sys.argv[1:]:
        start = time.perf_counter()
        try:
            read_volume(path)
            outcome = ["read", ""]
        except Exception as err:
            outcome = [type(err).__name__, str(err)]
        results[path] = outcome + [time.perf_counter() - start]
    # ru_maxrss keeps the parent's peak across fork + exec on Linux; VmHWM is this process's own peak RSS.
    status = open("/proc/self/status").read() if sys.platform.startswith("linux") else ""
    hwm = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
    results["peak_rss_mb"] = int(hwm[0]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(results))
""")


def test_decompression_bombs_fail_fast_with_bounded_memory(tmp_path) -> None:
    bombs = build_bombs(tmp_path)
    done = subprocess.run([sys.executable, "-c", CHILD, *map(str, bombs.values())], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MEDGEN_MAX_VOXELS": "", "OMP_NUM_THREADS": "1",
                                            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for name, path in bombs.items():
        kind, message, seconds = results[str(path)]
        assert "\n" not in message and message.startswith(str(path)), message
        if name.startswith("huge"):
            assert kind == "ImageTooLargeError", message
            assert "header declares 1000 x 1000 x 1000 = 1000000000 voxels" in message and "MEDGEN_MAX_VOXELS" in message
        else:
            assert kind == "ImageReadError", message
            assert "a decompression bomb or trailing data" in message
        assert seconds < 3.0, (name, seconds)
    assert results["peak_rss_mb"] < 400, results["peak_rss_mb"]  # old code: 4.9 GB for one huge header


def test_voxel_limit_is_configurable(tmp_path, monkeypatch) -> None:
    path = write_nifti_raw(tmp_path / "small.nii.gz", VALUES)
    monkeypatch.setenv("MEDGEN_MAX_VOXELS", "59")
    with pytest.raises(mio.limits.ImageTooLargeError) as err:
        read_volume(path)
    one_line_error(err, "small.nii.gz: header declares 4 x 5 x 3 = 60 voxels", "over the limit of 59 voxels")
    monkeypatch.setenv("MEDGEN_MAX_VOXELS", "60")
    np.testing.assert_array_equal(read_volume(path).array, VALUES)
    monkeypatch.setenv("MEDGEN_MAX_VOXELS", "lots")
    with pytest.raises(ImageReadError) as err:
        read_volume(path)
    one_line_error(err, "MEDGEN_MAX_VOXELS='lots': expected a positive integer")
    monkeypatch.delenv("MEDGEN_MAX_VOXELS")
    assert mio.max_voxels() == mio.DEFAULT_MAX_VOXELS == 2**29


def test_lying_and_truncated_compressed_data(tmp_path) -> None:
    header = (b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 5 3\nencoding: gzip\nendian: little\nspacings: 1 1 1\n\n")
    data = VALUES.tobytes(order="F")
    cases = {
        "short.nrrd": (header + gzip.compress(data[:-8]), "holds 232 of the 240 bytes its header declares; the file is truncated"),
        "long.nrrd": (header + gzip.compress(data + bytes(64)), "holds more than the 240 bytes its header declares"),
        "cut.nrrd": (header + gzip.compress(data)[:-30], "the file is truncated"),
    }
    for name, (payload, fragment) in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ImageReadError) as err:
            read_volume(tmp_path / name)
        one_line_error(err, name, fragment)
    (tmp_path / "good.nrrd").write_bytes(header + gzip.compress(data[:100]) + gzip.compress(data[100:]))
    np.testing.assert_array_equal(read_volume(tmp_path / "good.nrrd").array, VALUES)  # two gzip members are fine
    write_nifti_raw(tmp_path / "tail.nii.gz", VALUES, tail=b"junk")
    with pytest.raises(ImageReadError) as err:
        read_volume(tmp_path / "tail.nii.gz")
    one_line_error(err, "tail.nii.gz: compressed data continue past the 592 bytes the header declares")
    raw = tmp_path / "cut.mha"
    mha_file(raw, "ElementSpacing = 1 1 1\n", VALUES)
    raw.write_bytes(raw.read_bytes()[:-10])
    with pytest.raises(ImageReadError) as err:
        read_volume(raw)
    one_line_error(err, "cut.mha: cannot read as MHA: cut.mha holds 230 of the 240 bytes")


# -- 4. the CLI prints one line and exits with 2 -----------------------------------------------


def test_cli_refusals_are_one_line(tmp_path, capsys) -> None:
    from medgen_core.cli.main import main

    header, (data,) = detached_inputs(tmp_path)["mhd"]
    before = data.read_bytes()
    os.symlink(tmp_path / "loop.nii.gz", tmp_path / "loop.nii.gz")
    write_nifti_raw(tmp_path / "pix0.nii", VALUES, pixdim=(1, 0, 1), sform_code=0)
    for argv, fragment in (
        (["upscale", str(header), str(data)], "voxel data file of the input"),
        (["upscale", str(header), str(tmp_path / "loop.nii.gz")], "is a symlink loop"),
        (["upscale", str(tmp_path / "pix0.nii"), str(tmp_path / "out.nii.gz")], "pixdim (voxel size) 1 0 1"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("medgen: error: ") and fragment in err, err
    assert data.read_bytes() == before and not (tmp_path / "out.nii.gz").exists()


def test_deflated_dicom_bomb_is_refused(tmp_path, monkeypatch) -> None:
    series = dicom_series(tmp_path / "deflated", [0.0, 2.0, 4.0])
    for path in sorted(series.iterdir()):  # a valid deflated series reads as before
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    np.testing.assert_allclose(read_volume(series).spacing, (0.5, 0.5, 2.0))
    first = series / "s000.dcm"
    raw = first.read_bytes()
    meta_end = 144 + int.from_bytes(raw[140:144], "little")  # preamble, DICM, (0002,0000) UL group length
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first.write_bytes(raw[:meta_end] + comp.compress(bytes(40 << 20)) + comp.flush())  # 40 MiB of zeros in ~40 kB
    monkeypatch.setenv("MEDGEN_MAX_VOXELS", "1000")  # cap = 2 * 1000 + 16 MiB
    with pytest.raises(ImageReadError) as err:
        read_volume(series)
    one_line_error(err, "s000.dcm: deflated DICOM data inflates to more than 16779216 bytes")
