"""No code runs from a file name, a folder name, a config override or a bundle (issue 14).

Every payload tries to create the marker file ``PWNED`` in the working folder (``tmp_path``). Each test
asserts that the marker was not created and that the path was used literally (the output with the odd
name is written) or that the command stopped with one clean line and exit code 2. Real files, real
bundles, MONAI's real ConfigWorkflow; nothing is mocked.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from bundle_testing import REPO, sample_volume
from medgen_core.cli.main import main
from medgen_core.provenance import verify_provenance

SR = REPO / "monai_bundles" / "brain_mri_super_resolution"
GENSEG = REPO / "monai_bundles" / "brain_tissue_genseg"
PIX2PIX = REPO / "monai_bundles" / "brain_tissue_to_t1_pix2pix"
DDPM = REPO / "monai_bundles" / "brain_slice_ddpm"
LAB = REPO / "monai_bundles" / "brain_slice_autoencoder"

SHELL = "__import__('os').system('touch PWNED')"
# file names that are code to MONAI's ConfigParser: '$' expression, '%' macro (evil.json, written by the
# test, holds the payload), relative ids and '#' (rewritten as '@...'/'::' by the parser)
DOLLAR_FILE = f"${SHELL} or x.nii.gz"
MACRO_FILE = "%evil.json#x.nii.gz"
RELATIVE_FILE = "scan@#1#2.nii.gz"
OUTPUT_NAMES = [DOLLAR_FILE, MACRO_FILE, RELATIVE_FILE, f"${SHELL} or x/out.nii.gz"]
OUTPUT_IDS = ["dollar", "macro", "relative-id", "dollar-folder"]


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """``tmp_path`` as the working folder (the payloads are relative paths, as a user types them), with the
    macro file in place, no user bundles and no key material outside ``tmp_path``. The root logging
    handlers a bundle's logging.conf installs (bound to this test's captured stdout) are removed after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDGEN_BUNDLE_DIR", str(tmp_path / "user_bundles"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "evil.json").write_text(json.dumps({"x.nii.gz": f"${SHELL}"}))
    handlers = list(logging.getLogger().handlers)
    yield tmp_path
    logging.getLogger().handlers[:] = handlers


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _without_logging_errors(err: str) -> str:
    """stderr without the '--- Logging error ---' reports of loggers still bound to an earlier test's
    captured (now closed) stdout: an artefact of in-process pytest capture, not of medgen."""
    return re.sub(r"--- Logging error ---\n.*?\nArguments: .*?\n", "", err, flags=re.S)


def _assert_clean_refusal(code: int, err: str, *fragments: str) -> None:
    err = _without_logging_errors(err)
    lines = [line for line in err.splitlines() if line.startswith("medgen: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _make_output_parent(name: str) -> None:
    if "/" in name:
        Path(name).parent.mkdir(parents=True, exist_ok=True)


def _labels(path: Path) -> Path:
    """A small tissue label map (0 background, 1 CSF, 2 GM, 3 WM) as NIfTI."""
    x, y = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), indexing="ij")
    r = np.sqrt(x**2 + y**2)
    plane = np.select([r < 0.3, r < 0.6, r < 0.85], [3, 2, 1], 0).astype(np.int16)
    nib.save(nib.Nifti1Image(np.repeat(plane[:, :, None], 2, axis=2), np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return path


def _dicom_series(folder: Path) -> Path:
    """A 3-slice MR DICOM series (int16, 1 x 1 x 3 mm) written with SimpleITK."""
    folder.mkdir(parents=True)
    x, y = np.meshgrid(np.linspace(-1, 1, 24), np.linspace(-1, 1, 32), indexing="ij")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.99"
    for k in range(3):
        plane = sitk.GetImageFromArray((1000 * np.exp(-(x**2 + y**2) * (2 + k))).astype(np.int16).T.copy())
        plane.SetSpacing((1.0, 1.0))
        tags = {"0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|0018": f"{series}.{k + 1}",
                "0020|000d": f"{series}.0", "0020|000e": series, "0020|0013": str(k + 1), "0020|0032": f"0\\0\\{3.0 * k:.6f}",
                "0020|0037": "1\\0\\0\\0\\1\\0", "0028|0030": "1\\1", "0018|0050": "3"}
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(plane)
    return folder


# -- hole 1: code from a file name, on every route ---------------------------------------------------
@pytest.mark.parametrize("name", OUTPUT_NAMES, ids=OUTPUT_IDS)
def test_upscale_output_name_is_a_name(cwd: Path, capsys, name: str) -> None:
    sample_volume(cwd / "in.nii.gz")
    _make_output_parent(name)
    code, _, err = _cli(["upscale", "in.nii.gz", name, "--device", "cpu"], capsys)
    assert code == 0, err
    assert not (cwd / "PWNED").exists()
    assert verify_provenance(cwd / name).status.startswith("intact")
    assert not list(cwd.glob("*::*"))  # '#' was not rewritten to '::'


@pytest.mark.parametrize("kind", ["nifti", "dicom-folder"])
def test_upscale_input_name_is_a_name(cwd: Path, capsys, kind: str) -> None:
    """A NIfTI file or a DICOM series folder (as Slicer or a PACS export names them) whose name is code."""
    src = sample_volume(cwd / DOLLAR_FILE) if kind == "nifti" else _dicom_series(cwd / f"${SHELL}")
    code, _, err = _cli(["upscale", src.name, "out.nii.gz", "--device", "cpu"], capsys)
    assert code == 0, err
    assert not (cwd / "PWNED").exists() and (cwd / "out.nii.gz").is_file()
    record = json.loads((cwd / "out.nii.gz.generated.json").read_text())["record"]
    assert src.name in json.dumps(record)  # the input was read from the literal path


def test_upscale_input_reference_is_a_name(cwd: Path, capsys) -> None:
    """A DICOM folder named '@output_file' is read as that folder, not as a reference to another config id."""
    _dicom_series(cwd / "@output_file")
    code, _, err = _cli(["upscale", "@output_file", "out.nii.gz", "--device", "cpu"], capsys)
    assert code == 0, err
    assert (cwd / "out.nii.gz").is_file()


def test_translate_paths_are_names(cwd: Path, capsys) -> None:
    _labels(cwd / DOLLAR_FILE)
    code, _, err = _cli(["translate", DOLLAR_FILE, RELATIVE_FILE, "--bundle", "brain_tissue_to_t1_pix2pix", "--device", "cpu"], capsys)
    assert code == 0, err
    assert not (cwd / "PWNED").exists() and verify_provenance(cwd / RELATIVE_FILE).status.startswith("intact")


def test_genseg_segment_paths_are_names(cwd: Path, capsys) -> None:
    sample_volume(cwd / RELATIVE_FILE)
    code, _, err = _cli(["genseg", "segment", RELATIVE_FILE, MACRO_FILE, "--device", "cpu"], capsys)
    assert code == 0, err
    assert not (cwd / "PWNED").exists() and (cwd / MACRO_FILE).is_file()


def test_bundle_run_paths_are_names(cwd: Path, capsys) -> None:
    sample_volume(cwd / MACRO_FILE)
    code, _, err = _cli(["bundle", "run", "brain_tissue_genseg", MACRO_FILE, DOLLAR_FILE, "--set", "device", "cpu"], capsys)
    assert code == 0, err
    assert not (cwd / "PWNED").exists() and (cwd / DOLLAR_FILE).is_file()


def test_bundle_folder_name_is_a_name(cwd: Path, capsys) -> None:
    """``--bundle FOLDER`` with '#' and '@#' in the folder name: the bundle root reaches the config literally."""
    root = shutil.copytree(GENSEG, cwd / "my#bundle@#1", ignore=shutil.ignore_patterns("eval", "runs"))
    sample_volume(cwd / "in.nii.gz")
    code, _, err = _cli(["genseg", "segment", "in.nii.gz", "out.nii.gz", "--bundle", root, "--device", "cpu"], capsys)
    assert code == 0, err
    assert (cwd / "out.nii.gz").is_file()


SET_PAYLOADS = {
    "dollar": ("variant", f"${SHELL}"),
    "macro": ("variant", "%evil.json#x.nii.gz"),
    "reference": ("variant", "@bundle_root"),
    "relative-id": ("variant", "@#input_file"),
}


@pytest.mark.parametrize("config_id, value", SET_PAYLOADS.values(), ids=list(SET_PAYLOADS))
def test_bundle_run_set_values_are_literals(cwd: Path, capsys, config_id: str, value: str) -> None:
    """``--set variant <payload>``: the variant is looked up by that literal name, which does not exist."""
    sample_volume(cwd / "in.nii.gz")
    code, _, err = _cli(["bundle", "run", "brain_tissue_genseg", "in.nii.gz", "out.nii.gz", "--set", config_id, value], capsys)
    _assert_clean_refusal(code, err, "brain_tissue_genseg", "KeyError")
    assert not (cwd / "PWNED").exists() and not (cwd / "out.nii.gz").exists()


def test_bundle_run_set_literal_numbers_and_strings(cwd: Path, capsys) -> None:
    """JSON numbers become numbers and plain words stay strings: both reach the config and its record."""
    sample_volume(cwd / "in.nii.gz")
    code, _, err = _cli(["bundle", "run", "brain_tissue_genseg", "in.nii.gz", "out.nii.gz", "--set", "slice_axis", "1",
                         "--set", "variant", "tissue_genseg", "--set", "device", "cpu"], capsys)
    assert code == 0, err
    parameters = json.loads((cwd / "out.nii.gz.generated.json").read_text())["record"]["parameters"]
    assert parameters["slice_axis"] == 1 and isinstance(parameters["slice_axis"], int) and parameters["variant"] == "tissue_genseg"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--set", "network_def", json.dumps({"_target_": f"${SHELL}"})], "special keys"),
        (["--set", "network_def", json.dumps({"_target_": "os.system", "command": "touch PWNED"})], "names code in 'os'"),
        (["--set", "network_def#_target_", "os.system"], "cannot be overridden"),
        (["--set", "_meta_#name", "x"], "cannot be overridden"),
        (["--set", "preprocessing#transforms#0#reader", "os.system"], "outside the allowed libraries"),
        (["--set", "preprocessing#transforms#0#reader", "open"], "builtin open()"),
        (["--set-expression", "batch_size", f"${SHELL}"], "dunder name '__import__'"),
        (["--set-expression", "network_def", json.dumps({"_target_": "os.system", "command": "touch PWNED"})], "outside the allowed"),
    ],
    ids=["target-json", "target-json-dotted", "target-id", "meta-id", "reader-dotted", "reader-builtin", "expression-dunder", "expression-target"],
)
def test_bundle_run_refuses_code_in_overrides(cwd: Path, capsys, argv: list[str], fragment: str) -> None:
    sample_volume(cwd / "in.nii.gz")
    code, _, err = _cli(["bundle", "run", "brain_tissue_genseg", "in.nii.gz", "out.nii.gz", *argv], capsys)
    _assert_clean_refusal(code, err, fragment)
    assert not (cwd / "PWNED").exists() and not (cwd / "out.nii.gz").exists()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--set", "no_such_section#x", "1"], "cannot apply the overrides"),
        (["--set", "batch_size", "many"], "failed on in.nii.gz"),
        (["--set", "device", "gpu0"], "is not a torch device"),
    ],
    ids=["unknown-id", "wrong-type", "bad-device"],
)
def test_bundle_run_bad_overrides_are_one_line(cwd: Path, capsys, argv: list[str], fragment: str) -> None:
    sample_volume(cwd / "in.nii.gz")
    code, _, err = _cli(["bundle", "run", "brain_tissue_genseg", "in.nii.gz", "out.nii.gz", *argv], capsys)
    _assert_clean_refusal(code, err, fragment)
    assert not (cwd / "out.nii.gz").exists()


def test_install_of_a_non_archive_is_one_line(cwd: Path, capsys) -> None:
    (cwd / "fake_v1.zip").write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = _cli(["bundle", "install", "fake_v1.zip"], capsys)
    _assert_clean_refusal(code, err, "not a readable zip archive")


def test_bundle_run_expert_expression_still_works(cwd: Path, capsys) -> None:
    sample_volume(cwd / "in.nii.gz")
    code, _, err = _cli(["bundle", "run", "brain_tissue_genseg", "in.nii.gz", "out.nii.gz", "--set-expression", "batch_size", "$2 * 2",
                         "--set", "device", "cpu"], capsys)
    assert code == 0, err


def test_augment_variants_paths_are_names(cwd: Path, capsys) -> None:
    _labels(cwd / DOLLAR_FILE)
    bundle = shutil.copytree(PIX2PIX, cwd / "gen#erator@#x", ignore=shutil.ignore_patterns("eval", "runs"))
    code, _, err = _cli(["augment", "variants", DOLLAR_FILE, "--bundle", bundle, "--source", "labels", "--k", "1",
                         "--output", RELATIVE_FILE, "--device", "cpu"], capsys)
    assert code == 0, err
    assert not (cwd / "PWNED").exists() and verify_provenance(cwd / RELATIVE_FILE).status.startswith("intact")


def test_cvae_device_is_not_code(cwd: Path, capsys) -> None:
    device = "cpu') and __import__('os').system('touch PWNED') or torch.device('cpu"
    code, _, err = _cli(["cvae", "sample", "--bundle", "abr_joint_cvae", "--n", "2", "--output", "out.npz", "--device", device], capsys)
    _assert_clean_refusal(code, err, "is not a torch device")
    assert not (cwd / "PWNED").exists()


def test_lab_config_is_inspected(cwd: Path, capsys) -> None:
    lab = json.loads((LAB / "configs" / "lab.json").read_text())
    lab["network_def"] = f"${SHELL}"
    (cwd / "lab.json").write_text(json.dumps(lab))
    code, _, err = _cli(["lab", "interpolate", "--config", "lab.json", "--out", "out"], capsys)
    _assert_clean_refusal(code, err, "refusing this lab config", "__import__")
    assert not (cwd / "PWNED").exists()


# -- hole 2: hostile bundles are inspected on every route, before anything runs -------------------------
def _bundle_copy(dest: Path, name: str = "evil_genseg", edit=None, logging_conf: str | None = None) -> Path:
    """A copy of the GenSeg bundle at ``dest/name`` (a bundle is keyed by its folder name) with ``name`` in its
    metadata, its inference.json changed by ``edit``."""
    root = shutil.copytree(GENSEG, dest / name, ignore=shutil.ignore_patterns("eval", "runs"))
    meta_path = root / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["name"] = name
    meta_path.write_text(json.dumps(meta, indent=4) + "\n")
    if edit is not None:
        infer = root / "configs" / "inference.json"
        config = json.loads(infer.read_text())
        edit(config)
        infer.write_text(json.dumps(config, indent=4) + "\n")
    if logging_conf is not None:
        (root / "configs" / "logging.conf").write_text(logging_conf)
    return root


HOSTILE = {
    # a plain dotted string that MONAI resolves by name: LoadImage locates "os.system" and calls it with its kwargs
    "reader-dotted": dict(edit=lambda c: c["initialize"].append({"_target_": "monai.transforms.LoadImage", "reader": "os.system",
                                                               "command": "touch PWNED"})),
    # a numpy method that writes a file, called on a value (the receiver cannot be resolved statically)
    "tofile": dict(edit=lambda c: c["initialize"].append("$numpy.zeros(3).tofile('PWNED')")),
    "dunder": dict(edit=lambda c: c["initialize"].append(f"${SHELL}")),
    # logging.config.fileConfig evaluates args= when ConfigWorkflow starts
    "logging-ini": dict(logging_conf="[loggers]\nkeys=root\n[handlers]\nkeys=h\n[formatters]\nkeys=\n[logger_root]\nlevel=INFO\nhandlers=h\n"
                                     f"[handler_h]\nclass=StreamHandler\nlevel=INFO\nargs=({SHELL},)\n"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_bundle_folder_is_refused_before_it_runs(cwd: Path, capsys, kind: str) -> None:
    """``--bundle FOLDER``, a folder symlinked into the user bundle folder, and ``bundle run``: refused, nothing runs."""
    root = _bundle_copy(cwd / "evil", **HOSTILE[kind])
    (cwd / "user_bundles").mkdir()
    (cwd / "user_bundles" / "evil_genseg").symlink_to(root, target_is_directory=True)
    sample_volume(cwd / "in.nii.gz")
    for argv in (["genseg", "segment", "in.nii.gz", "out.nii.gz", "--bundle", root], ["genseg", "segment", "in.nii.gz", "out.nii.gz", "--bundle", "evil_genseg"],
                 ["bundle", "run", "evil_genseg", "in.nii.gz", "out.nii.gz"]):
        code, _, err = _cli(argv, capsys)
        _assert_clean_refusal(code, err, "refusing to run it")
        assert not (cwd / "PWNED").exists() and not (cwd / "out.nii.gz").exists()


@pytest.mark.parametrize("kind", ["reader-dotted", "tofile"])
def test_hostile_bundle_install_is_refused(cwd: Path, capsys, kind: str) -> None:
    root = _bundle_copy(cwd / "evil", **HOSTILE[kind])
    code, _, err = _cli(["bundle", "install", root], capsys)
    _assert_clean_refusal(code, err, "refusing to install")
    assert not (cwd / "user_bundles" / "evil_genseg").exists() and not (cwd / "PWNED").exists()


@pytest.mark.parametrize("kind", ["dunder", "logging-ini"])
def test_bundle_check_inspects_before_executing(cwd: Path, capsys, kind: str) -> None:
    """``medgen bundle check`` never hands a config that fails the inspection to MONAI's commands."""
    root = _bundle_copy(cwd / "evil", **HOSTILE[kind])
    code, out, _ = _cli(["bundle", "check", root, "--only", "run", "verify_net_in_out"], capsys)
    assert code == 1 and not (cwd / "PWNED").exists()
    assert "FAIL   config_safety" in out and out.count("not run: the configs failed the config inspection") == 2


def test_inspection_is_cached_by_config_content(cwd: Path, capsys) -> None:
    """A clean symlinked bundle runs; changing one config byte afterwards brings the inspection back."""
    from medgen_core.bundles.inspection import _CLEAN, config_digest

    root = _bundle_copy(cwd / "copy")
    (cwd / "user_bundles").mkdir()
    (cwd / "user_bundles" / "evil_genseg").symlink_to(root, target_is_directory=True)  # found by its folder name
    sample_volume(cwd / "in.nii.gz")
    code, _, err = _cli(["genseg", "segment", "in.nii.gz", "out.nii.gz", "--bundle", "evil_genseg", "--device", "cpu"], capsys)
    assert code == 0, err
    assert config_digest(root) in _CLEAN
    infer = root / "configs" / "inference.json"
    config = json.loads(infer.read_text())
    config["initialize"].append("$numpy.zeros(3).tofile('PWNED')")
    infer.write_text(json.dumps(config, indent=4) + "\n")
    code, _, err = _cli(["genseg", "segment", "in.nii.gz", "out2.nii.gz", "--bundle", "evil_genseg"], capsys)
    _assert_clean_refusal(code, err, "tofile")
    assert not (cwd / "PWNED").exists()


def test_trusted_install_runs_only_the_configs_that_were_trusted(cwd: Path, capsys) -> None:
    """``install --trust`` records the configs' digest: they run (the user trusted them); an edit is inspected again."""
    marker = "$numpy.zeros(3).tofile('TRUSTED')"
    root = _bundle_copy(cwd / "src", edit=lambda c: c["initialize"].append(marker))
    assert _cli(["bundle", "install", root, "--trust"], capsys)[0] == 0
    sample_volume(cwd / "in.nii.gz")
    code, _, err = _cli(["genseg", "segment", "in.nii.gz", "out.nii.gz", "--bundle", "evil_genseg", "--device", "cpu"], capsys)
    assert code == 0 and (cwd / "TRUSTED").is_file(), err
    installed = cwd / "user_bundles" / "evil_genseg" / "configs" / "inference.json"
    installed.write_text(installed.read_text().replace("TRUSTED", "PWNED"))
    code, _, err = _cli(["genseg", "segment", "in.nii.gz", "out2.nii.gz", "--bundle", "evil_genseg"], capsys)
    _assert_clean_refusal(code, err, "refusing to run it")
    assert not (cwd / "PWNED").exists()


def test_user_bundle_never_replaces_a_builtin(cwd: Path, capsys) -> None:
    """Installing under a built-in's name needs --allow-builtin-name; even then the built-in keeps the name, with one warning line."""
    from medgen_core.bundles.catalog import get_bundle

    root = _bundle_copy(cwd / "src", name="brain_tissue_genseg")
    code, _, err = _cli(["bundle", "install", root], capsys)
    _assert_clean_refusal(code, err, "has the name of a built-in bundle", "--allow-builtin-name")
    assert not (cwd / "user_bundles" / "brain_tissue_genseg").exists()
    assert _cli(["bundle", "install", root, "--allow-builtin-name"], capsys)[0] == 0
    capsys.readouterr()
    info = get_bundle("brain_tissue_genseg")
    warning = capsys.readouterr().err
    assert info.source == "source" and info.path == GENSEG  # the built-in from the clone's monai_bundles/
    assert len(warning.splitlines()) == 1 and "does not replace it" in warning and str(cwd / "user_bundles" / "brain_tissue_genseg") in warning
