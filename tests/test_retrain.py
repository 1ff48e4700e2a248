"""Training the MONAI way on the user's data: every bundle's train.json passes MONAI's ConfigWorkflow property check and
trains 2 steps on a folder of real NIfTI files; ``medgen train`` writes a retrained copy whose weights ``medgen upscale``
accepts, with ``weights_origin: user-retrained`` in the provenance; ``medgen bundle rehash`` makes hand-trained weights
usable, never for a built-in bundle; bad data is one line and exit code 2, with no copy left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle_testing import REPO, snapshot_bundle
from medgen_core.cli.main import main
from medgen_core.provenance import read_provenance, sha256_file, verify_provenance
from medgen_core.training.engines import checkpoint_files
from train_testing import smooth_volume, train, volume_folder, write_nifti

SR = "brain_mri_super_resolution"
SR_TINY = ["--set", "data_config#patch_size", "32", "--set", "data_config#batch_size", "2", "--set", "bf16", "false"]


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _pix2pix_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(2):
        labels = rng.integers(0, 4, size=(40, 40, 4)).astype(np.uint8)
        write_nifti(root / "labels" / f"s{i}.nii.gz", labels)
        write_nifti(root / "t1" / f"s{i}.nii.gz", (labels * 30.0 + 5).astype(np.float32))
    return root


def _cyclegan_folder(root: Path) -> Path:
    volume_folder(root / "A", n=1, shape=(36, 36, 4))
    volume_folder(root / "B", n=2, shape=(36, 36, 4), seed=5)
    return root


def _genseg_folder(root: Path) -> Path:
    for i in range(2):
        vol = smooth_volume((48, 48, 6), i)
        write_nifti(root / "images" / f"s{i}.nii.gz", vol)
        write_nifti(root / "labels" / f"s{i}.nii.gz", np.digitize(vol, [20, 45, 70]).astype(np.uint8))
    return root


def _abr_folder(root: Path) -> Path:
    from medgen_core.data.abr_dataset import save_abr_npz
    from medgen_core.data.abr_simulator import simulate_abr_dataset

    root.mkdir(parents=True)
    save_abr_npz(simulate_abr_dataset(48, 0), root / "train.npz")
    return root


# the user's data folder of each bundle and the overrides that make a 2-step run tiny
USER_RUNS = {
    SR: (lambda root: volume_folder(root, n=2, shape=(48, 48, 4)),
         {"data_config#patch_size": 32, "data_config#batch_size": 2, "bf16": False, "network_def#num_feat": 8, "network_def#num_block": 1}),
    "brain_tissue_to_t1_pix2pix": (_pix2pix_folder, {"slice_size": [32, 32], "generator#num_downs": 3, "generator#features": 4}),
    "brain_t1_to_t2w_cyclegan": (_cyclegan_folder, {"slice_size": [32, 32], "generator_a2b#features": 4, "generator_b2a#features": 4,
                                                    "generator_a2b#n_res": 1, "generator_b2a#n_res": 1}),
    "brain_slice_ddpm": (lambda root: volume_folder(root, n=2, shape=(40, 44, 8)),
                         {"image_size": 32, "batch_size": 2, "bf16": False, "network_def#channels": [8, 8],
                          "network_def#attention_levels": [False, False], "network_def#num_head_channels": 8}),
    "brain_slice_autoencoder": (lambda root: volume_folder(root, n=2, shape=(40, 44, 8)),
                                {"image_size": 16, "batch_size": 2, "latent_size": 4, "network_def#channels": [4, 8]}),
    "brain_tissue_genseg": (_genseg_folder, {"batch_size": 2, "network_def#channels": [4, 8], "network_def#strides": [2],
                                             "generator#features": 4, "discriminator#features": 4}),
    "abr_joint_cvae": (_abr_folder, {"batch_size": 16, "network_def#latent_dim": 4, "network_def#hidden": 16, "train_config#prior_components": 2,
                                 "train_config#checkpoint_every": 1}),
}


def test_every_bundle_has_a_training_run() -> None:
    assert sorted(USER_RUNS) == sorted(p.parents[1].name for p in (REPO / "monai_bundles").glob("*/configs/train.json"))


@pytest.mark.parametrize("bundle", sorted(USER_RUNS))
def test_train_json_passes_monai_property_check_and_trains_two_steps_on_a_user_folder(tmp_path: Path, bundle: str) -> None:
    make_data, tiny = USER_RUNS[bundle]
    data = make_data(tmp_path / "data")
    out = tmp_path / "run"
    w = train(bundle, {**tiny, "dataset_dir": str(data), "num_steps": 2, "output_dir": str(out), "log_every": 1})  # asserts check_properties() == []
    assert w.parser.get_parsed_content("train#trainer").state.iteration == 2
    exports = w.parser.get_parsed_content("bundle_exports")
    assert exports and all((out / name).is_file() for name in exports)
    assert all((REPO / "monai_bundles" / bundle / target).is_file() for target in exports.values())  # they name shipped files
    assert [n for n, _ in checkpoint_files(out)] == [1]
    state = torch.load(out / next(iter(exports)), map_location="cpu", weights_only=True)
    assert state and all(v.device.type == "cpu" for v in state.values())


def test_monai_bundle_run_trains_on_a_user_folder(tmp_path: Path) -> None:
    """The same through ``python -m monai.bundle run`` (MONAI's command line), from another folder."""
    import os
    import subprocess
    import sys

    data = volume_folder(tmp_path / "data", n=1, shape=(40, 40, 4))
    bundle = REPO / "monai_bundles" / SR
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "train.json"), "--meta_file",
           str(bundle / "configs" / "metadata.json"), "--bundle_root", str(bundle), "--dataset_dir", str(data), "--num_steps", "2",
           "--output_dir", str(tmp_path / "run"), "--data_config#patch_size", "32", "--data_config#batch_size", "2", "--bf16", "False",
           "--network_def#num_feat", "8", "--network_def#num_block", "1"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "model.pt").is_file() and (tmp_path / "run" / "checkpoint_epoch=1.pt").is_file()


def test_medgen_train_writes_a_retrained_copy_that_upscale_uses_with_user_retrained_provenance(tmp_path: Path, capsys) -> None:
    shipped = REPO / "monai_bundles" / SR
    before = {p.name: sha256_file(p) for p in (shipped / "models").iterdir()}
    meta_before = (shipped / "configs" / "metadata.json").read_bytes()
    data = volume_folder(tmp_path / "data", n=2, shape=(48, 48, 4))
    copy = tmp_path / "sr_retrained"
    code, out, err = _cli(capsys, "train", SR, "--data", data, "--out", copy, "--steps", "2", *SR_TINY)
    assert code == 0, err
    assert f"installed {copy / 'models' / 'x2_mixed.pt'}" in out and "rehashed models/x2_mixed.pt" in out
    meta = json.loads((copy / "configs" / "metadata.json").read_text())["medgen"]
    entry = meta["variants"]["x2_mixed"]
    assert entry["sha256"] == sha256_file(copy / "models" / "x2_mixed.pt") and entry["weights_origin"] == "user-retrained"
    assert meta["weights_origin"] == "user-retrained" and meta["retrained"]["files"] == ["models/x2_mixed.pt"]
    assert meta["retrained"]["iterations"] == 2 and meta["default_variant"]["2"] == "x2_mixed"
    assert "weights_origin" not in meta["variants"]["x4_mixed"]  # untouched weights keep their shipped record
    # the installed bundle is never written
    assert {p.name: sha256_file(p) for p in (shipped / "models").iterdir()} == before
    assert (shipped / "configs" / "metadata.json").read_bytes() == meta_before

    scan = write_nifti(tmp_path / "scan.nii.gz", smooth_volume((40, 40, 3), 7))
    result = tmp_path / "up.nii.gz"
    code, out, err = _cli(capsys, "upscale", scan, result, "--bundle", copy, "--no-gate", "--device", "cpu")
    assert code == 0, err
    record = read_provenance(result)["embedded"]
    assert record["weights_sha256"] == entry["sha256"] and record["parameters"]["variant"] == "x2_mixed"
    assert record["parameters"]["weights_origin"] == "user-retrained"
    assert verify_provenance(result).status == "intact"
    shipped_out = tmp_path / "shipped.nii.gz"
    assert _cli(capsys, "upscale", scan, shipped_out, "--no-gate", "--device", "cpu")[0] == 0
    assert read_provenance(shipped_out)["embedded"]["parameters"]["weights_origin"] == "shipped"

    # the same command again resumes from the copy's checkpoint (2 steps already done: nothing more to train)
    code, out, err = _cli(capsys, "train", SR, "--data", data, "--out", copy, "--steps", "2", *SR_TINY)
    assert code == 0, err
    assert json.loads((copy / "configs" / "metadata.json").read_text())["medgen"]["variants"]["x2_mixed"]["sha256"] == entry["sha256"]


def test_rehash_makes_hand_trained_weights_usable_and_refuses_a_built_in_bundle(tmp_path: Path, capsys) -> None:
    copy = snapshot_bundle(REPO / "monai_bundles" / SR, tmp_path / "my_sr")
    run = tmp_path / "run"
    train(SR, {"dataset_dir": str(volume_folder(tmp_path / "data", n=1, shape=(40, 40, 4))), "num_steps": 2, "output_dir": str(run),
               "data_config#patch_size": 32, "data_config#batch_size": 2, "bf16": False, "bundle_root": str(copy)})
    shutil.copyfile(run / "model.pt", copy / "models" / "x2_mixed.pt")  # retrained by hand, not yet recorded
    scan = write_nifti(tmp_path / "scan.nii.gz", smooth_volume((32, 32, 3), 3))
    code, _, err = _cli(capsys, "upscale", scan, tmp_path / "a.nii.gz", "--bundle", copy, "--degradation", "mixed", "--no-gate")
    assert code == 2 and "does not match the sha256 recorded" in err and len(err.strip().splitlines()) == 1, err
    code, out, err = _cli(capsys, "bundle", "rehash", copy)
    assert code == 0 and "rehashed models/x2_mixed.pt" in out, err
    code, out, err = _cli(capsys, "bundle", "rehash", copy)
    assert code == 0 and "nothing to rehash" in out
    code, _, err = _cli(capsys, "upscale", scan, tmp_path / "b.nii.gz", "--bundle", copy, "--degradation", "mixed", "--no-gate")
    assert code == 0, err
    assert read_provenance(tmp_path / "b.nii.gz")["embedded"]["parameters"]["weights_origin"] == "user-retrained"
    code, _, err = _cli(capsys, "bundle", "check", copy, "--only", "weight_hashes", "large_files")
    assert code == 0, err

    code, _, err = _cli(capsys, "bundle", "rehash", SR)
    assert code == 2 and "is built in" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["empty", "wrong_type", "not_nifti", "missing"])
def test_bad_training_data_is_one_line_exit_2_and_leaves_no_copy(tmp_path: Path, capsys, case: str) -> None:
    data = tmp_path / "data"
    if case == "empty":
        (data / "labels").mkdir(parents=True)
        (data / "t1").mkdir()
        bundle, expected = "brain_tissue_to_t1_pix2pix", "no NIfTI file (.nii, .nii.gz) in this folder, it is empty"
    elif case == "wrong_type":
        data.mkdir()
        for name in ("a.png", "b.png"):
            (data / name).write_bytes(b"\x89PNG\r\n\x1a\n")
        bundle, expected = SR, "no NIfTI file (.nii, .nii.gz) in this folder, it holds 2 other entries (a.png, b.png)"
    elif case == "not_nifti":
        data.mkdir()
        (data / "scan.nii.gz").write_bytes(b"not a nifti file at all")
        bundle, expected = SR, "scan.nii.gz: not a readable NIfTI file"
    else:
        bundle, expected = SR, "no such folder or file"
    out = tmp_path / "copy"
    code, stdout, err = _cli(capsys, "train", bundle, "--data", data, "--out", out, "--steps", "2")
    lines = [ln for ln in err.splitlines() if ln.startswith("medgen: error:")]
    assert code == 2 and len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err and not out.exists()
