"""End-to-end tests of the shipped SR bundle (monai_bundles/brain_mri_super_resolution) and ``medgen upscale``.

Runs the real bundle with whatever weights are shipped (their sha256 comes from configs/metadata.json)
on small real NIfTI files, through ``python -m monai.bundle run`` and through the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from medgen_core.cli.main import main  # noqa: E402
from medgen_core.inference import upscaled_affine, voxel_corners_world  # noqa: E402
from medgen_core.io import read_volume  # noqa: E402
from medgen_core.provenance import read_provenance, sidecar_path, verify_provenance  # noqa: E402

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_mri_super_resolution"
METADATA = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
VARIANTS = METADATA["medgen"]["variants"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHAPE = (40, 48, 6)



def oblique_affine() -> np.ndarray:
    """Rotations about z (20 deg) and x (10 deg), spacing 0.9 x 0.9 x 3 mm, non-zero origin."""
    a, b = np.deg2rad(20), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.9, 0.9, 3.0])
    affine[:3, 3] = [-20.0, 10.5, 5.25]
    return affine


def smooth_data(shape=SHAPE) -> np.ndarray:
    x, y, z = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    return np.clip(0.5 + 0.4 * np.sin(6 * x) * np.cos(5 * y) + 0.05 * z, 0, 1).astype(np.float32)


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), oblique_affine() if affine is None else affine), str(path))
    return path


@pytest.fixture
def input_file(tmp_path) -> Path:
    return save_nifti(tmp_path / "input.nii.gz", smooth_data())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    return env


def test_shipped_weights_match_metadata() -> None:
    assert "x2_mixed" in VARIANTS and METADATA["medgen"]["default_variant"] == {"2": "x2_synthetic", "4": "x4_synthetic"}
    for name, v in VARIANTS.items():
        path = BUNDLE / v["file"]
        assert path.is_file(), name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == v["sha256"], name
    model_pt = METADATA["medgen"]["model_pt"]
    assert hashlib.sha256((BUNDLE / model_pt["file"]).read_bytes()).hexdigest() == model_pt["sha256"]


def test_monai_bundle_run_writes_intact_provenance(tmp_path, input_file: Path) -> None:
    out = tmp_path / "out" / "sr.nii.gz"
    out.parent.mkdir()
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
           "--meta_file", "configs/metadata.json", "--bundle_root", str(BUNDLE),
           "--input_file", str(input_file), "--output_file", str(out)]
    proc = subprocess.run(cmd, cwd=BUNDLE, env=_env(), capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file() and sidecar_path(out).is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["sr.nii.gz", "sr.nii.gz.generated.json"]

    result = verify_provenance(out)
    assert result.status == "intact", result.message
    prov = read_provenance(out)
    embedded = prov["embedded"]
    assert embedded is not None and embedded == prov["sidecar"]["record"]
    assert embedded["weights_sha256"] == VARIANTS["x2_synthetic"]["sha256"]
    assert embedded["task"] == "super_resolution" and embedded["parameters"]["variant"] == "x2_synthetic"
    assert embedded["inputs"][0]["sha256"] == hashlib.sha256(input_file.read_bytes()).hexdigest()
    assert embedded["output"]["shape"] == [80, 96, 6]

    in_img, out_img = nib.load(str(input_file)), nib.load(str(out))
    assert out_img.shape == (80, 96, 6)
    expected_affine = upscaled_affine(in_img.affine, (2, 2, 1))
    np.testing.assert_allclose(out_img.affine, expected_affine, atol=1e-4)
    np.testing.assert_allclose(voxel_corners_world(out_img.affine, out_img.shape, False),
                               voxel_corners_world(in_img.affine, in_img.shape, False), atol=1e-3)
    # the model output is an upscaled version of the input: close to it after block-averaging back
    data = out_img.get_fdata()
    back = data.reshape(40, 2, 48, 2, 6).mean(axis=(1, 3))
    assert np.abs(back - in_img.get_fdata()).mean() < 0.02
    assert data.min() >= in_img.get_fdata().min() - 1e-6 and data.max() <= in_img.get_fdata().max() + 1e-6

    # change one voxel, keep header and extensions: the record no longer matches
    changed = out_img.get_fdata(dtype=np.float32).copy()
    changed[10, 20, 3] += 0.25
    modified = nib.Nifti1Image(changed, out_img.affine, header=out_img.header)
    nib.save(modified, str(out))
    assert read_provenance(out)["embedded"] is not None  # the header extension survived
    after = verify_provenance(out)
    assert after.status == "modified", after.message
    assert "pixel sha256 differs" in after.message


def _run_cli(capsys, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_upscale_nifti_with_preview(tmp_path, input_file: Path, capsys) -> None:
    out = tmp_path / "cli" / "sr.nii.gz"
    preview = tmp_path / "cli" / "x.png"
    code, stdout, stderr = _run_cli(capsys, "upscale", input_file, out, "--scale", "2", "--preview", preview)
    assert code == 0, stderr
    assert out.is_file() and sidecar_path(out).is_file()
    assert f"wrote {out}" in stdout and "(40, 48, 6) -> (80, 96, 6)" in stdout and "x2_synthetic" in stdout
    vol = read_volume(out)
    assert vol.shape == (80, 96, 6)
    np.testing.assert_allclose(vol.affine, upscaled_affine(read_volume(input_file).affine, (2, 2, 1)), atol=1e-4)
    assert verify_provenance(out).status == "intact"
    png = preview.read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    image = plt.imread(str(preview))
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 100


def test_cli_upscale_nrrd_output(tmp_path, input_file: Path, capsys) -> None:
    out = tmp_path / "sr.nrrd"
    code, _, stderr = _run_cli(capsys, "upscale", input_file, out, "--scale", "2")
    assert code == 0, stderr
    assert sidecar_path(out).is_file()
    vol = read_volume(out)
    assert vol.format == "nrrd" and vol.shape == (80, 96, 6)
    np.testing.assert_allclose(vol.affine, upscaled_affine(read_volume(input_file).affine, (2, 2, 1)), atol=1e-4)
    result = verify_provenance(out)
    assert result.status == "intact", result.message
    assert read_provenance(out)["embedded"]["output"]["format"] == "nrrd"


def _make_bad_input(kind: str, tmp_path: Path) -> Path:
    if kind == "missing":
        return tmp_path / "missing.nii.gz"
    if kind == "truncated":
        full = save_nifti(tmp_path / "full.nii.gz", np.random.default_rng(0).random(SHAPE))
        cut = tmp_path / "truncated.nii.gz"
        data = full.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        full.unlink()
        return cut
    if kind == "text":
        path = tmp_path / "notes.nii"
        path.write_text("this is a text file, not an image\n" * 20)
        return path
    if kind == "png":
        path = tmp_path / "slice.png"
        plt.imsave(str(path), np.random.default_rng(0).random((16, 16)))
        return path
    if kind == "4d":
        return save_nifti(tmp_path / "series.nii.gz", np.random.default_rng(0).random((8, 8, 8, 3)))
    if kind == "1d":
        return save_nifti(tmp_path / "line.nii.gz", np.arange(1, 17, dtype=np.float32))
    if kind == "nan":
        data = smooth_data()
        data[3, 4, 2] = np.nan
        return save_nifti(tmp_path / "nan.nii.gz", data)
    if kind == "zero":
        return save_nifti(tmp_path / "zero.nii.gz", np.zeros(SHAPE))
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind,message",
    [
        ("missing", "not found"),
        ("truncated", "truncated or corrupt"),
        ("text", "cannot read as NIFTI"),
        ("png", "unsupported file extension"),
        ("4d", "expected a 3D volume"),
        ("1d", "1D"),
        ("nan", "NaN"),
        ("zero", "every voxel is exactly zero"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, kind: str, message: str) -> None:
    bad = _make_bad_input(kind, tmp_path)
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    out = out_dir / "sr.nii.gz"
    code, stdout, stderr = _run_cli(capsys, "upscale", bad, out, "--scale", "2")
    assert code == 2
    assert stderr.startswith("medgen: error:") and str(bad) in stderr and message in stderr, stderr
    assert "Traceback" not in stderr
    assert not out.exists() and not sidecar_path(out).exists()
    assert list(out_dir.iterdir()) == []


def test_cli_refuses_to_overwrite_the_input(tmp_path, input_file: Path, capsys) -> None:
    before = input_file.read_bytes()
    code, _, stderr = _run_cli(capsys, "upscale", input_file, input_file, "--scale", "2")
    assert code == 2
    assert str(input_file) in stderr and "refusing to overwrite an input" in stderr
    assert input_file.read_bytes() == before
    assert not sidecar_path(input_file).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.nii.gz"]


@pytest.mark.parametrize("name", ["sr.png", "sr.mha", "sr"])
def test_cli_refuses_unsupported_output_extension(tmp_path, input_file: Path, capsys, name: str) -> None:
    out = tmp_path / "results" / name
    code, _, stderr = _run_cli(capsys, "upscale", input_file, out, "--scale", "2")
    assert code == 2
    assert str(out) in stderr and "unsupported output format" in stderr
    assert not out.exists() and not sidecar_path(out).exists() and not out.parent.exists()


def test_cli_weights_hash_mismatch(tmp_path, input_file: Path, capsys) -> None:
    copy = tmp_path / "bundle_copy"
    shutil.copytree(BUNDLE, copy, ignore=shutil.ignore_patterns("eval", "__pycache__"))
    weights = copy / VARIANTS["x2_synthetic"]["file"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 3] ^= 0xFF
    weights.write_bytes(bytes(data))
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    out = out_dir / "sr.nii.gz"
    code, _, stderr = _run_cli(capsys, "upscale", input_file, out, "--bundle", copy)
    assert code == 2
    assert "sha256" in stderr and str(weights) in stderr and "Traceback" not in stderr, stderr
    assert list(out_dir.iterdir()) == []


def test_cli_unknown_variant(tmp_path, input_file: Path, capsys) -> None:
    out = tmp_path / "sr.nii.gz"
    code, _, stderr = _run_cli(capsys, "upscale", input_file, out, "--variant", "x8_magic")
    assert code == 2
    assert "x8_magic" in stderr and "x2_mixed" in stderr
    assert not out.exists()


def test_bundle_list(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MEDGEN_BUNDLE_DIR", str(tmp_path / "no_user_bundles"))
    code, stdout, _ = _run_cli(capsys, "bundle", "list")
    assert code == 0
    line = next(l for l in stdout.splitlines() if l.startswith("brain_mri_super_resolution"))
    assert METADATA["version"] in line and "upscale" in line and line.split()[3] == "source"  # built-in, from the clone
