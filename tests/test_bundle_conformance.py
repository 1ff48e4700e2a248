"""Conformance of every bundle in monai_bundles/ (found by glob, so new bundles are covered automatically),
and bundles broken on purpose (copies) to show each check fails with a clear message."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bundle_testing import BUNDLE_IDS, BUNDLES, sample_volume, snapshot_bundle
from medgen_core.bundles.conformance import (
    MONAI_CHECKS,
    STATIC_CHECKS,
    check_bundle,
    check_config_safety,
    check_file_sizes,
    check_json_format,
    check_layout,
    check_metadata,
    check_schema,
    check_weight_hashes,
    run_checks,
)
from medgen_core.bundles.runner import run_bundle_inference
from medgen_core.bundles.sharing import install_bundle, pack_bundle
from medgen_core.bundles.weights import weight_files, weights_status
from medgen_core.cli.main import main
from medgen_core.errors import BundleError, WeightsError

assert BUNDLES, "no bundle found under monai_bundles/"


@pytest.fixture(scope="module", params=BUNDLES, ids=BUNDLE_IDS)
def bundle(request, tmp_path_factory) -> Path:
    """A consistent snapshot of one shipped bundle (read-only use)."""
    src: Path = request.param
    return snapshot_bundle(src, tmp_path_factory.mktemp("snapshot") / src.name)


@pytest.fixture
def broken(bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle, to break on purpose."""
    return snapshot_bundle(bundle, tmp_path / bundle.name)


def _edit_json(path: Path, edit) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj, indent=4) + "\n")


# -- every bundle passes every check ---------------------------------------------------------------
@pytest.mark.parametrize("check", list(STATIC_CHECKS))
def test_static_check_passes(bundle: Path, check: str) -> None:
    (result,) = run_checks(bundle, [check])
    assert result.problems == [], f"{bundle.name}: {check}:\n" + "\n".join(result.problems)


def test_run_check_passes(bundle: Path, tmp_path: Path) -> None:
    """MedGen's end-to-end ``run`` check; the zoo's full-mode steps of every bundle are in tests/test_zoo_verify.py."""
    assert "run" in MONAI_CHECKS
    (result,) = run_checks(bundle, ["run"], work_dir=tmp_path)
    assert result.exempt_reason is None, f"{bundle.name} is exempt from run: {result.exempt_reason}"
    assert result.problems == [], f"{bundle.name}: run:\n" + "\n".join(result.problems)
    out = tmp_path / "run" / "out" / "sample_output.nii.gz"
    assert out.is_file() and Path(f"{out}.generated.json").is_file()


def test_every_weight_file_hash_is_recorded(bundle: Path) -> None:
    files = weight_files(bundle)
    assert files, f"{bundle.name}: models/ has no weights"
    meta_text = (bundle / "configs" / "metadata.json").read_text()
    from medgen_core.provenance import sha256_file

    for path in files:
        assert sha256_file(path) in meta_text, f"{path.name}: sha256 not recorded in metadata.json"


def test_cli_check_quick(bundle: Path, capsys) -> None:
    assert main(["bundle", "check", str(bundle), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "PASS   metadata" in out and "zoo-ready" in out


# -- broken copies fail with clear messages ---------------------------------------------------------
def test_missing_mandatory_metadata_key(broken: Path, tmp_path: Path) -> None:
    _edit_json(broken / "configs" / "metadata.json", lambda m: m.pop("task"))
    assert "configs/metadata.json: mandatory key 'task' is missing" in check_metadata(broken)
    assert any("'task' is a required property" in p for p in check_schema(broken))
    # the zoo's verify_metadata_format (MONAI's verify_metadata with the pinned zoo schema) refuses it too; the old name still works
    (result,) = run_checks(broken, ["verify_metadata"], work_dir=tmp_path)
    assert result.name == "verify_metadata_format" and len(result.problems) == 1
    assert result.problems[0].startswith("the Model Zoo's ci/verify_bundle.py (-m min and full mode stop here): ")
    assert "'task' is a required property" in result.problems[0] and "meta_schema_20240725.json" in result.problems[0]
    assert main(["bundle", "check", str(broken), "--only", "metadata"]) == 1


def test_metadata_version_changelog_and_tensor_specs(broken: Path) -> None:
    def edit(meta: dict) -> None:
        meta["version"] = "1.0"
        meta["optional_packages_version"] = {}
        meta["network_data_format"]["outputs"]["pred"].pop("channel_def")

    _edit_json(broken / "configs" / "metadata.json", edit)
    problems = "\n".join(check_metadata(broken))
    assert "version '1.0' is not a semantic version" in problems
    assert "changelog has no entry for the current version '1.0'" in problems
    assert "'optional_packages_version' is deprecated" in problems
    assert "network_data_format.outputs.pred lacks channel_def" in problems


def test_wrong_weight_hash_is_refused(broken: Path, tmp_path: Path) -> None:
    for path in weight_files(broken):  # one byte changed in every weight file
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    problems = check_weight_hashes(broken)
    assert problems and all("weights (MISMATCH)" in p or "not recorded" in p for p in problems)
    assert any("does not match the sha256" in p for p in problems)
    with pytest.raises(WeightsError, match="sha256"):
        run_bundle_inference(broken, sample_volume(tmp_path / "in.nii.gz"), tmp_path / "out.nii.gz")
    assert not (tmp_path / "out.nii.gz").exists()


def test_unrecorded_weight_file(broken: Path) -> None:
    (broken / "models" / "extra.pt").write_bytes(b"not recorded anywhere")
    state, problems = weights_status(broken, json.loads((broken / "configs" / "metadata.json").read_text()))
    assert state == "unverified"
    assert any(p.startswith("models/extra.pt: its sha256") and "not recorded anywhere" in p for p in problems)


def test_disallowed_target_is_refused_at_install(broken: Path, tmp_path: Path, monkeypatch) -> None:
    _edit_json(broken / "configs" / "inference.json", lambda c: c.update({"cleanup": {"_target_": "os.system", "command": "echo should-never-run"}}))
    assert any("id 'cleanup#_target_'" in p and "os.system" in p for p in check_config_safety(broken))
    assert any(p.startswith("config_safety:") for p in check_bundle(broken, monai=False))
    monkeypatch.setenv("MEDGEN_BUNDLE_DIR", str(tmp_path / "user"))
    archive = pack_bundle(broken, tmp_path / "packs", index_dir=tmp_path / "index")
    with pytest.raises(BundleError, match=r"configs/inference.json id 'cleanup#_target_': 'os.system'.*outside the allowed libraries"):
        install_bundle(archive)
    assert not (tmp_path / "user" / broken.name).exists()


def test_layout_json_format_and_file_size(broken: Path) -> None:
    (broken / "LICENSE").unlink()
    infer = broken / "configs" / "inference.json"
    infer.write_text(json.dumps(json.loads(infer.read_text()), indent=2) + "\n")
    with open(broken / "docs" / "big.bin", "wb") as f:  # sparse: no real disk use
        f.truncate(26_000_000)
    assert any(p.startswith("LICENSE is missing") for p in check_layout(broken))
    assert any(p.startswith("configs/inference.json: not formatted like json.dumps(obj, indent=4)") for p in check_json_format(broken))
    assert check_file_sizes(broken) == ["docs/big.bin: 26.0 MB is over the 25 MB limit; host it and list it in large_files.yml"]


def test_trainable_bundle_needs_multi_process_config(broken: Path) -> None:
    assert (broken / "configs" / "train.json").is_file()
    assert not any("multi_gpu_train" in p for p in check_layout(broken))
    (broken / "configs" / "multi_gpu_train.json").unlink()
    assert any(p.startswith("configs/multi_gpu_train.json is missing") for p in check_layout(broken))


def test_exemption_is_honoured_and_limited(broken: Path) -> None:
    """Only MedGen's own checks can be exempted in the metadata; never a zoo step (the zoo reads no medgen.* key)."""
    _edit_json(
        broken / "configs" / "metadata.json",
        lambda m: m.setdefault("medgen", {}).update({"exempt_checks": {"run": "needs a GPU", "verify_data_shape": "diffusion UNet", "layout": "no"}}),
    )
    results = {r.name: r for r in run_checks(broken, ["metadata", "run", "layout"])}
    assert results["run"].exempt_reason == "needs a GPU" and results["run"].passed
    assert results["layout"].exempt_reason is None  # static checks cannot be exempted
    problem = results["exemptions"].problems[0]
    assert "medgen.exempt_checks may only name MedGen's own checks" in problem and "'verify_data_shape'" in problem


def test_unknown_check_name() -> None:
    with pytest.raises(ValueError, match="unknown check"):
        run_checks(os.devnull, ["nope"])
