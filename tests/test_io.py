"""Tests for medgen_core.io: real files in tmp_path, oblique geometry, every bad-input path."""

from __future__ import annotations

import os

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from medgen_core.errors import ImageReadError, ImageWriteError
from medgen_core.io import LPS_TO_RAS, Volume, read_volume, write_volume

SPACING = np.array([0.7, 1.3, 2.5])
ORIGIN = np.array([-40.5, 12.25, 33.0])


def _rotation(ax: float, az: float) -> np.ndarray:
    """Rotation about x by ``ax`` then about z by ``az`` (radians)."""
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx


def oblique_affine() -> np.ndarray:
    """Rotation about two axes + anisotropic spacing + non-zero origin (RAS)."""
    affine = np.eye(4)
    affine[:3, :3] = _rotation(np.deg2rad(20), np.deg2rad(35)) * SPACING
    affine[:3, 3] = ORIGIN
    return affine


@pytest.fixture
def volume() -> Volume:
    rng = np.random.default_rng(0)
    return Volume(rng.normal(size=(6, 7, 5)).astype(np.float32), oblique_affine())


def _sitk_image(array_xyz: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    """Build a SimpleITK image (LPS) with the geometry of a RAS affine."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    lps = LPS_TO_RAS @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def test_volume_properties(volume: Volume) -> None:
    assert volume.shape == (6, 7, 5)
    np.testing.assert_allclose(volume.spacing, SPACING, atol=1e-12)
    assert volume.array.dtype == np.float32
    with pytest.raises(ValueError, match="3D"):
        Volume(np.zeros((3, 3)), np.eye(4))


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nii", "out.nrrd"])
def test_round_trip_keeps_oblique_geometry(tmp_path, volume: Volume, name: str) -> None:
    path = write_volume(volume, tmp_path / "sub" / name)
    back = read_volume(path)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.path == path and back.format == ("nrrd" if name.endswith("nrrd") else "nifti")
    np.testing.assert_allclose(back.spacing, SPACING, atol=1e-5)


def test_nifti_to_nrrd_to_read(tmp_path, volume: Volume) -> None:
    nii = read_volume(write_volume(volume, tmp_path / "a.nii.gz"))
    back = read_volume(write_volume(nii, tmp_path / "b.nrrd"))
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    np.testing.assert_array_equal(back.array, volume.array)
    # Header as written: LPS space, directions = LPS affine columns, gzip float, (X, Y, Z) sizes.
    data, header = nrrd.read(str(tmp_path / "b.nrrd"))
    lps = LPS_TO_RAS @ nii.affine
    assert header["space"] == "left-posterior-superior" and header["encoding"] == "gzip"
    assert header["type"] == "float" and list(header["sizes"]) == [6, 7, 5]
    np.testing.assert_allclose(header["space directions"], lps[:3, :3].T, atol=1e-12)
    np.testing.assert_allclose(header["space origin"], lps[:3, 3], atol=1e-12)
    np.testing.assert_array_equal(data, volume.array)


def test_nifti_header_codes(tmp_path, volume: Volume) -> None:
    img = nib.load(str(write_volume(volume, tmp_path / "a.nii.gz", nifti_descrip="x" * 100)))
    sform, scode = img.header.get_sform(coded=True)
    qform, qcode = img.header.get_qform(coded=True)
    assert (int(scode), int(qcode)) == (2, 1)
    np.testing.assert_allclose(sform, volume.affine, atol=1e-5)
    np.testing.assert_allclose(qform, volume.affine, atol=1e-5)
    assert img.get_data_dtype() == np.float32
    assert img.header["descrip"].item() == b"x" * 79


def test_read_mha_oblique(tmp_path, volume: Volume) -> None:
    for name in ("a.mha", "a.nrrd"):
        sitk.WriteImage(_sitk_image(volume.array, volume.affine), str(tmp_path / name))
        back = read_volume(tmp_path / name)
        np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
        np.testing.assert_array_equal(back.array, volume.array)


def _write_dicom_series(directory, array_xyz: np.ndarray, affine_ras: np.ndarray) -> None:
    """Write an int16 3D image as one DICOM file per slice, with full geometry tags."""
    image = _sitk_image(array_xyz.astype(np.int16), affine_ras)
    direction = image.GetDirection()
    spacing = image.GetSpacing()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    study, series = "1.2.826.0.1.3680043.2.1125.1", "1.2.826.0.1.3680043.2.1125.2"
    for k in range(image.GetDepth()):
        slice_k = image[:, :, k]
        tags = {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{series}.{k + 1}",
            "0020|000d": study,
            "0020|000e": series,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{c:.6f}" for c in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": "\\".join(f"{c:.6f}" for c in (direction[0], direction[3], direction[6],
                                                        direction[1], direction[4], direction[7])),
            "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
            "0018|0050": f"{spacing[2]:.6f}",
        }
        for key, value in tags.items():
            slice_k.SetMetaData(key, value)
        writer.SetFileName(str(directory / f"slice_{k:03d}.dcm"))
        writer.Execute(slice_k)


def test_read_dicom_series_and_single_file(tmp_path, volume: Volume) -> None:
    values = np.arange(np.prod(volume.shape), dtype=np.float32).reshape(volume.shape) - 50
    series_dir = tmp_path / "series"
    series_dir.mkdir()
    _write_dicom_series(series_dir, values, volume.affine)
    (series_dir / "notes.txt").write_text("not dicom")

    back = read_volume(series_dir)
    assert back.format == "dicom" and back.shape == volume.shape
    np.testing.assert_array_equal(back.array, values)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)

    single = read_volume(series_dir / "slice_002.dcm")
    assert single.shape == (6, 7, 1)
    np.testing.assert_array_equal(single.array[:, :, 0], values[:, :, 2])
    np.testing.assert_allclose(single.affine[:3, 3], (volume.affine @ [0, 0, 2, 1])[:3], atol=1e-5)


def test_singleton_and_2d_shapes(tmp_path) -> None:
    data = np.arange(1, 4 * 5 * 3 + 1, dtype=np.float32).reshape(4, 5, 3, 1)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "s.nii.gz"))
    back = read_volume(tmp_path / "s.nii.gz")
    assert back.shape == (4, 5, 3)
    np.testing.assert_array_equal(back.array, data[..., 0])
    nib.save(nib.Nifti1Image(data[:, :, 0, 0], np.eye(4)), str(tmp_path / "flat.nii"))
    assert read_volume(tmp_path / "flat.nii").shape == (4, 5, 1)


def _nifti(path, data) -> None:
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4)), str(path))


def test_missing_and_unsupported(tmp_path) -> None:
    with pytest.raises(ImageReadError, match="nope.nii.gz: file not found"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(ImageReadError, match=r"image.png: unsupported file extension '.png'.*\.nii\.gz"):
        read_volume(tmp_path / "image.png")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty_dir" / "a.txt").write_text("hello")
    with pytest.raises(ImageReadError, match="empty_dir: directory contains no DICOM series"):
        read_volume(tmp_path / "empty_dir")


def test_truncated_and_corrupt_files(tmp_path, volume: Volume) -> None:
    big = Volume(np.random.default_rng(1).normal(size=(32, 32, 32)), np.eye(4))
    path = write_volume(big, tmp_path / "cut.nii.gz")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError, match="cut.nii.gz: cannot read as NIFTI.*truncated or corrupt"):
        read_volume(path)
    # Truncated uncompressed NIfTI and a garbage NRRD / MHA.
    nii = write_volume(big, tmp_path / "cut.nii")
    nii.write_bytes(nii.read_bytes()[:1000])
    with pytest.raises(ImageReadError, match="cut.nii: cannot read"):
        read_volume(nii)
    for name in ("junk.nrrd", "junk.mha"):
        (tmp_path / name).write_bytes(b"this is not an image\x00\x01")
        with pytest.raises(ImageReadError, match=f"{name}: cannot read as"):
            read_volume(tmp_path / name)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (np.arange(1, 11), "is 1D with shape \\(10,\\)"),
        (np.ones((4, 4, 4, 2)), "is 4D with shape \\(4, 4, 4, 2\\)"),
        (np.ones((3, 3, 3, 1, 2)), "is 5D"),
        (np.where(np.arange(27).reshape(3, 3, 3) < 3, np.nan, 1.0), "contains 3 NaN and 0 Inf voxels out of 27"),
        (np.where(np.arange(27).reshape(3, 3, 3) == 5, np.inf, 1.0), "contains 0 NaN and 1 Inf voxels"),
        (np.zeros((3, 3, 3)), "every voxel is exactly zero"),
    ],
)
def test_bad_content(tmp_path, data, pattern) -> None:
    path = tmp_path / "bad_input.nii.gz"
    _nifti(path, data)
    with pytest.raises(ImageReadError, match=f"bad_input.nii.gz: .*{pattern}"):
        read_volume(path)


def test_zero_voxels(tmp_path) -> None:
    path = tmp_path / "void.nrrd"
    nrrd.write(str(path), np.zeros((0, 4, 4), dtype=np.float32))
    with pytest.raises(ImageReadError, match="void.nrrd"):
        read_volume(path)


def test_non_strict_read_allows_nan(tmp_path) -> None:
    path = tmp_path / "nan.nii"
    _nifti(path, np.full((2, 2, 2), np.nan))
    assert np.isnan(read_volume(path, strict=False).array).all()


def test_failed_write_leaves_nothing(tmp_path, volume: Volume, monkeypatch) -> None:
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"previous content")

    def broken_save(img, filename):
        with open(filename, "wb") as handle:  # leave a partial file behind, then fail
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(ImageWriteError, match="out.nii.gz: writing NIFTI failed .*disk full"):
        write_volume(volume, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]
    assert target.read_bytes() == b"previous content"

    monkeypatch.setattr(nrrd, "write", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(ImageWriteError, match="new.nrrd: writing NRRD failed"):
        write_volume(volume, tmp_path / "new.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


def test_refuses_to_overwrite_inputs(tmp_path, volume: Volume) -> None:
    src = write_volume(volume, tmp_path / "in.nii.gz")
    loaded = read_volume(src)
    before = src.read_bytes()
    with pytest.raises(ImageWriteError, match="refusing to overwrite an input"):
        write_volume(loaded, src)
    other = tmp_path / "other.nrrd"
    write_volume(volume, other)
    (tmp_path / "sub").mkdir()
    with pytest.raises(ImageWriteError, match="other.nrrd: output path is the input file"):
        write_volume(volume, tmp_path / "sub" / ".." / "other.nrrd", inputs=[other])
    os.symlink(src, tmp_path / "link.nii.gz")
    with pytest.raises(ImageWriteError, match="refusing to overwrite"):
        write_volume(volume, tmp_path / "link.nii.gz", inputs=[src])
    assert src.read_bytes() == before


def test_write_refusals(tmp_path, volume: Volume) -> None:
    with pytest.raises(ImageWriteError, match=r"out.mha: unsupported output extension '.mha'.*\.nrrd"):
        write_volume(volume, tmp_path / "out.mha")
    with pytest.raises(ImageWriteError, match="not NRRD"):
        write_volume(volume, tmp_path / "x.nii", extra_nrrd_fields={"a": "b"})
    with pytest.raises(ImageWriteError, match="single-line ASCII"):
        write_volume(volume, tmp_path / "x.nrrd", extra_nrrd_fields={"a": "line\nbreak"})
    nan = Volume(np.full((2, 2, 2), np.nan), np.eye(4))
    with pytest.raises(ImageWriteError, match="8 NaN/Inf voxels"):
        write_volume(nan, tmp_path / "nan.nii")
    assert list(tmp_path.iterdir()) == []


def test_extra_nrrd_fields_are_key_value(tmp_path, volume: Volume) -> None:
    path = write_volume(volume, tmp_path / "kv.nrrd", extra_nrrd_fields={"tool_name": "x:1.0", "content": "SYN"})
    text = path.read_bytes().split(b"\n\n")[0].decode("ascii")
    assert "tool_name:=x:1.0" in text.splitlines() and "content: SYN" in text.splitlines()
    assert nrrd.read_header(str(path))["tool_name"] == "x:1.0"
