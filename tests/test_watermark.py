"""The voxel watermark (medgen_core.provenance.watermark) and ``medgen provenance detect``, on small real files.

The phantom is a 64^3 "head": an ellipsoid of smooth random tissue contrast with scanner-like noise
(SD 20 on a 0..~3000 scale) in a zero background.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medgen_core.cli.main import main
from medgen_core.io import Volume, read_volume, write_volume
from medgen_core.provenance import GenerationMetadata, pixel_sha256, read_provenance, verify_provenance, write_generated_volume
from medgen_core.provenance.dicom_output import write_generated_dicom_series
from medgen_core.provenance.record import DERIVED_LABEL_DISCLOSURE
from medgen_core.provenance.watermark import (
    DEFAULT_STRENGTH,
    DEFAULT_THRESHOLD,
    SCHEME,
    SCHEME_VERSION,
    TILE_PERIOD,
    detect_watermark,
    detect_watermark_keys,
    embed_watermark,
)


def _phantom(seed: int = 0, n: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.indices((n, n, n), dtype=np.float64) - (n - 1) / 2
    radius = np.sqrt((grid[0] / (0.42 * n)) ** 2 + (grid[1] / (0.38 * n)) ** 2 + (grid[2] / (0.35 * n)) ** 2)
    tissue = ndimage.gaussian_filter(rng.standard_normal((n, n, n)), 3.0)
    image = np.where(radius < 1.0, 600.0 + 1200.0 * (tissue > 0) + 300.0 * np.tanh(20.0 * tissue), 0.0)
    image = ndimage.gaussian_filter(image, 0.7) + rng.normal(0.0, 20.0, image.shape) * (radius < 1.0)
    return np.clip(image, 0.0, None).astype(np.float32)


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    return _phantom()


@pytest.fixture(scope="module")
def marked(phantom: np.ndarray) -> np.ndarray:
    return embed_watermark(phantom)


def _psnr(reference: np.ndarray, other: np.ndarray) -> float:
    diff = other.astype(np.float64) - reference
    return float(20 * np.log10(np.ptp(reference) / np.sqrt(np.mean(diff**2))))


def test_marked_is_detected_and_unmarked_is_not(phantom: np.ndarray, marked: np.ndarray) -> None:
    found = detect_watermark(marked)
    assert found.present and found.score > 5 * DEFAULT_THRESHOLD
    assert found.scale == pytest.approx(1.0) and found.orientation == "+x+y+z" and found.offset == (0, 0, 0)
    for seed in range(3):  # three different unmarked images
        clean = detect_watermark(_phantom(seed))
        assert not clean.present and clean.score < DEFAULT_THRESHOLD - 1.0


def test_mark_is_invisible_by_the_numbers(phantom: np.ndarray, marked: np.ndarray) -> None:
    assert marked.shape == phantom.shape and marked.dtype == np.float32
    assert 50.0 <= _psnr(phantom, marked) < 51.0
    assert np.array_equal(marked[phantom == 0], phantom[phantom == 0])  # zero background stays zero
    assert np.abs(marked - phantom).max() < 0.05 * np.ptp(phantom)


def test_a_key_nobody_embedded_is_not_found(marked: np.ndarray) -> None:
    public, *others = detect_watermark_keys(marked, [None, 1, 2, 3])
    assert public.present
    assert all(not r.present and r.score < DEFAULT_THRESHOLD - 1.0 for r in others)


def test_detected_after_crop_to_half_fov_at_odd_offset(marked: np.ndarray) -> None:
    start = (13, 7, 5)
    crop = marked[13:45, 7:39, 5:37]  # half the field of view along every axis
    found = detect_watermark(crop)
    assert found.present and found.score > 2 * DEFAULT_THRESHOLD
    # the tile origin is found where the crop put it
    assert found.offset == tuple((-s) % TILE_PERIOD for s in start)


def test_detected_after_int16_rescale_through_nifti(tmp_path, marked: np.ndarray) -> None:
    stored = np.round((marked - marked.min()) / np.ptp(marked) * 4095).astype(np.int16)
    path = tmp_path / "int16.nii.gz"
    nib.save(nib.Nifti1Image(stored, np.diag([1.2, 1.2, 3.0, 1.0])), path)
    assert nib.load(path).get_data_dtype() == np.int16
    found = detect_watermark(read_volume(path).array)
    assert found.present and found.score > 5 * DEFAULT_THRESHOLD


def test_detected_after_resampling_by_1_1(marked: np.ndarray) -> None:
    resampled = ndimage.zoom(marked, 1.1, order=1)  # 64 -> 70 voxels per axis, linear interpolation
    assert resampled.shape == (70, 70, 70)
    found = detect_watermark(resampled)
    assert found.present and found.score > 2 * DEFAULT_THRESHOLD
    assert found.scale == pytest.approx(69 / 63, abs=0.02)


def test_detected_after_axis_reversal_and_swap(marked: np.ndarray) -> None:
    reoriented = np.swapaxes(marked[:, :, ::-1], 0, 1)  # e.g. a DICOM round trip of a left-handed grid, then a reorientation
    found = detect_watermark(reoriented)
    assert found.present and found.orientation != "+x+y+z"


def test_not_found_where_the_mark_breaks(marked: np.ndarray) -> None:
    """The documented limits: heavy blur and resampling far outside the searched scales lose the mark."""
    assert not detect_watermark(ndimage.gaussian_filter(marked, 2.0)).present
    assert not detect_watermark(ndimage.zoom(marked, 0.5, order=1)).present


def test_degenerate_inputs() -> None:
    assert not detect_watermark(np.zeros((40, 40, 40))).present
    assert detect_watermark(np.zeros((40, 40, 40))).voxels == 0
    constant = np.full((8, 8, 8), 3.0, dtype=np.float32)
    assert np.array_equal(embed_watermark(constant), constant)
    with pytest.raises(ValueError, match="strength"):
        embed_watermark(constant, strength=0.5)
    with pytest.raises(ValueError, match="NaN"):
        embed_watermark(np.full((8, 8, 8), np.nan))
    with pytest.raises(ValueError, match=r"\(X, Y, Z\)"):
        detect_watermark(np.zeros((2, 2, 2, 2)))


def test_cli_detect_exit_codes(tmp_path, phantom: np.ndarray, marked: np.ndarray, capsys) -> None:
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    write_volume(Volume(marked, affine), tmp_path / "marked.nii.gz")
    write_volume(Volume(phantom, affine), tmp_path / "plain.nii.gz")
    write_volume(Volume(marked, affine), tmp_path / "marked.nrrd")

    assert main(["provenance", "detect", str(tmp_path / "marked.nii.gz")]) == 0
    assert capsys.readouterr().out.startswith("mark present: score ")
    assert main(["provenance", "detect", str(tmp_path / "marked.nrrd")]) == 0
    capsys.readouterr()
    assert main(["provenance", "detect", str(tmp_path / "plain.nii.gz")]) == 1
    assert capsys.readouterr().out.startswith("mark not found: score ")
    assert main(["provenance", "detect", "--json", str(tmp_path / "marked.nii.gz")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["present"] is True and result["score"] >= result["threshold"] == DEFAULT_THRESHOLD

    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti file")
    for bad in (tmp_path / "missing.nii.gz", tmp_path / "broken.nii.gz", tmp_path / "notes.txt", ""):
        if bad == tmp_path / "notes.txt":
            bad.write_text("hello")
        assert main(["provenance", "detect", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("medgen: error:") and "\n" not in err


# ---------------------------------------------------------------- writers of generated pixels mark synthetic images
def _record(tmp_path, **kw) -> GenerationMetadata:
    source = tmp_path / "source.nii.gz"
    if not source.exists():
        write_volume(Volume(_phantom(5), np.eye(4)), source)
    return GenerationMetadata.create(generator_name="rrdb_sr", generator_version="1.0.0", task="super_resolution",
                                     input_paths=[source], **kw)


def test_generated_image_is_marked_before_hashing_and_found_without_its_record(tmp_path, phantom: np.ndarray) -> None:
    meta = _record(tmp_path)
    out = write_generated_volume(Volume(phantom, np.diag([0.5, 0.5, 1.0, 1.0])), tmp_path / "sr.nii.gz", meta)
    written = read_volume(out).array
    assert not np.array_equal(written, phantom) and _psnr(phantom, written) >= 50.0
    mark = meta.parameters["watermark"]
    assert mark["scheme"] == SCHEME and mark["version"] == SCHEME_VERSION and mark["strength"] == DEFAULT_STRENGTH
    assert mark["psnr_db"] == pytest.approx(_psnr(phantom, written), abs=0.01)
    assert read_provenance(out)["embedded"]["parameters"]["watermark"] == mark
    assert meta.output["sha256"] == pixel_sha256(written)  # the record binds the marked pixels
    assert verify_provenance(out).status == "intact"

    # metadata gone: header extension, descrip and sidecar stripped by a re-save with another tool
    stripped = tmp_path / "stripped.nii"
    nib.save(nib.Nifti1Image(nib.load(out).get_fdata(dtype=np.float32), nib.load(out).affine), stripped)
    assert read_provenance(stripped) is None
    assert main(["provenance", "detect", str(stripped)]) == 0


def test_label_maps_integer_images_and_opt_out_are_not_marked(tmp_path, phantom: np.ndarray) -> None:
    labels = np.digitize(phantom, [1.0, 900.0, 1600.0]).astype(np.float32)  # 0..3 tissue classes
    derived = _record(tmp_path, disclosure=DERIVED_LABEL_DISCLOSURE)
    out = write_generated_volume(Volume(labels, np.eye(4)), tmp_path / "labels.nii.gz", derived)
    np.testing.assert_array_equal(read_volume(out).array, labels)
    assert "watermark" not in derived.parameters

    integers = np.round(phantom)
    meta = _record(tmp_path)
    out = write_generated_volume(Volume(integers, np.eye(4)), tmp_path / "integers.nii.gz", meta)
    np.testing.assert_array_equal(read_volume(out).array, integers)
    assert "watermark" not in meta.parameters

    meta = _record(tmp_path)
    out = write_generated_volume(Volume(phantom, np.eye(4)), tmp_path / "plain.nii.gz", meta, watermark=False)
    np.testing.assert_array_equal(read_volume(out).array, phantom)
    assert "watermark" not in meta.parameters and not detect_watermark(read_volume(out).array).present


def test_dicom_output_is_marked_once(tmp_path, phantom: np.ndarray) -> None:
    meta = _record(tmp_path)
    series = write_generated_dicom_series(Volume(phantom, np.eye(4)), tmp_path / "dicom", meta)
    once = read_volume(series).array
    assert "watermark" in meta.parameters and detect_watermark(once).present
    # the record of already-marked pixels (a bundle's staged output re-written as DICOM) is not marked again
    again = write_generated_dicom_series(Volume(once, np.eye(4)), tmp_path / "dicom_again", GenerationMetadata.from_dict(meta.to_dict()))
    np.testing.assert_allclose(read_volume(again).array, once, atol=float(np.ptp(once)) / 60000)
