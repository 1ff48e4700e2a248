"""The Model Zoo's ci/verify_bundle.py logic (medgen_core.bundles.zoo_verify): every shipped bundle in min and
full mode, and broken copies the zoo rejects (a declared shape the network cannot take, stale hashes, a
version missing from the changelog, an unpinned schema), each with the zoo step that fails."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from bundle_testing import BUNDLE_IDS, BUNDLES, REPO, snapshot_bundle
from medgen_core.bundles.conformance import check_large_files, check_metadata, run_checks, zoo_verdict
from medgen_core.bundles.large_files import write_large_files
from medgen_core.bundles.zoo_ci import main
from medgen_core.bundles.zoo_verify import FULL_STEPS, MIN_STEPS, STEPS, first_failure, verify, verify_data_shape
from medgen_core.cli.main import main as medgen_main

logging.getLogger("monai").setLevel(logging.WARNING)  # MONAI's functions log every argument at INFO
DDPM = "brain_slice_ddpm"
# the shapes the metadata declared before the zoo fix, and what the network says about them at n = 1
OLD_SHAPES = {
    "brain_t1_to_t2w_cyclegan": ("4*n", "at least 8"),  # 4x4 -> 1x1 bottleneck
    "brain_tissue_genseg": ("8*n", "Expected more than 1 spatial element"),  # InstanceNorm on a 1x1 bottleneck
    "brain_tissue_to_t1_pix2pix": ("16*n", "divisible by 32"),
}


@pytest.fixture(scope="module", params=BUNDLES, ids=BUNDLE_IDS)
def bundle(request, tmp_path_factory) -> Path:
    """A consistent snapshot of one shipped bundle, under its own folder name (the zoo's lists use it)."""
    src: Path = request.param
    return snapshot_bundle(src, tmp_path_factory.mktemp("zoo") / src.name)


def _copy(name: str, tmp_path: Path, folder: str | None = None) -> Path:
    return snapshot_bundle(REPO / "monai_bundles" / name, tmp_path / (folder or name))


def _edit_metadata(root: Path, edit) -> None:
    path = root / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=4) + "\n")


def _set_image_shape(shape: str):
    def edit(meta: dict) -> None:
        for group in ("inputs", "outputs"):
            spec = meta["network_data_format"][group]["image" if group == "inputs" else "pred"]
            spec["spatial_shape"] = [shape, shape]
    return edit


# -- every shipped bundle ------------------------------------------------------------------------------
def test_min_mode_passes(bundle: Path) -> None:
    results = verify(bundle, "min")
    assert [r.name for r in results] == list(MIN_STEPS)
    assert first_failure(results, "min") is None, "\n".join(f"{r.name}: {r.message}" for r in results)
    assert "present with matching hashes" in results[0].message  # large_files.yml was read and checked


def test_full_mode_passes(bundle: Path, tmp_path: Path) -> None:
    results = {r.name: r for r in verify(bundle, "full", work_dir=tmp_path)}
    assert list(results) == list(STEPS)
    failed = [f"{r.name}: {r.message}" for r in results.values() if not r.passed]
    assert not failed and first_failure(list(results.values()), "full") is None, "\n".join(failed)
    excluded = {n for n, r in results.items() if r.status == "excluded"}
    if bundle.name == DDPM:  # excluded the zoo's way (by name in the custom-data lists), its own check passing
        assert excluded == {"verify_data_shape", "verify_torchscript", "torchscript_matches_eager"}
        assert "exclude_verify_shape_list" in results["verify_data_shape"].message
        assert "timesteps (1,)" in results["all_inputs_shape"].message and "class_labels (1,)" in results["all_inputs_shape"].message
    else:
        assert not excluded
        assert (tmp_path / "verify_model.ts").is_file()  # the export went to work_dir, not into the bundle
        assert not (bundle / "models" / "verify_model.ts").exists()
        assert results["torchscript_matches_eager"].message.startswith("max |scripted - eager| ")


# -- declared shapes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OLD_SHAPES))
def test_declared_shape_holds_for_larger_n(name: str) -> None:
    """The zoo tries n = 1; the declared shape must be valid for every n."""
    for n in (2, 3):
        assert "took a random" in verify_data_shape(REPO / "monai_bundles" / name, n=n)


@pytest.mark.parametrize("name", sorted(OLD_SHAPES))
def test_shape_the_network_cannot_take_is_rejected(name: str, tmp_path: Path) -> None:
    root = _copy(name, tmp_path)
    shape, error = OLD_SHAPES[name]
    _edit_metadata(root, _set_image_shape(shape))
    results = verify(root, "full", steps=["verify_data_shape", "all_inputs_shape"])
    assert [r.status for r in results] == ["fail", "fail"]
    assert error in results[0].message
    assert first_failure(results, "full").name == "verify_data_shape"


def test_check_args_in_metadata_do_not_rescue_a_bad_shape(tmp_path: Path) -> None:
    """``medgen.check_args`` used to pass n = 16 to our check; the zoo never reads it, so neither do we."""
    root = _copy("brain_t1_to_t2w_cyclegan", tmp_path)

    def edit(meta: dict) -> None:
        _set_image_shape("4*n")(meta)
        meta["medgen"]["check_args"] = {"verify_net_in_out": {"args": {"n": 16}, "reason": "old style"}}

    _edit_metadata(root, edit)
    (step,) = verify(root, steps=["verify_data_shape"])
    assert step.status == "fail" and "at least 8" in step.message
    assert any("medgen.check_args ['verify_net_in_out'] would change nothing" in p for p in check_metadata(root))


def test_diffusion_exclusion_is_by_folder_name(tmp_path: Path) -> None:
    """The zoo excludes by bundle name: the DDPM under another folder name gets the plain shape check, which fails."""
    root = _copy(DDPM, tmp_path, folder="renamed_ddpm")
    (step,) = verify(root, steps=["verify_data_shape"])
    assert step.status == "fail" and "timesteps" in step.message


def test_cli_reports_the_zoo_step_that_fails(tmp_path: Path, capsys) -> None:
    """``medgen bundle check`` (the subprocess route) names the failing zoo step and does not say zoo-ready."""
    root = _copy("brain_t1_to_t2w_cyclegan", tmp_path)
    _edit_metadata(root, _set_image_shape("4*n"))
    assert medgen_main(["bundle", "check", str(root), "--only", "verify_data_shape", "verify_torchscript", "torchscript_matches_eager"]) == 1
    out = capsys.readouterr().out
    assert "FAIL   verify_data_shape" in out and "ci/verify_bundle.py (full mode stops here)" in out and "at least 8" in out
    assert "PASS   verify_torchscript" in out and "zoo-ready" not in out
    results = run_checks(root, ["verify_bundle_directory", "verify_version_changes", "verify_metadata_format"])
    assert zoo_verdict(results) == {"min": None, "full": "not checked"}


# -- the other zoo rules -------------------------------------------------------------------------------
def test_large_files_hash_and_url_rules(tmp_path: Path) -> None:
    root = _copy("brain_tissue_genseg", tmp_path)
    weights = root / "models" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    (step,) = verify(root, "min", steps=["verify_bundle_directory"])
    assert step.status == "fail" and "models/model.pt does not match its sha256" in step.message
    assert any("does not match its sha256" in p and "write_large_files.py" in p for p in check_large_files(root))
    write_large_files(root)  # the fix the message names
    assert verify(root, "min", steps=["verify_bundle_directory"])[0].status == "pass" and check_large_files(root) == []
    text = (root / "large_files.yml").read_text()
    (root / "large_files.yml").write_text(text.replace('    url: ""\n', ""))  # the zoo's download_url(**entry) needs a url key
    (step,) = verify(root, "min", steps=["verify_bundle_directory"])
    assert step.status == "fail" and "has no 'url' key" in step.message
    (root / "large_files.yml").unlink()
    assert check_large_files(root)[0].startswith("large_files.yml is missing")
    assert verify(root, "min", steps=["verify_bundle_directory"])[0].status == "pass"  # the zoo itself does not require one


def test_version_changelog_and_published_versions(tmp_path: Path) -> None:
    root = _copy("brain_tissue_genseg", tmp_path)
    version = json.loads((root / "configs" / "metadata.json").read_text())["version"]
    published = tmp_path / "model_info.json"
    published.write_text(json.dumps({f"brain_tissue_genseg_v{version}": {"checksum": "0"}}))
    (step,) = verify(root, steps=["verify_version_changes"], model_info=published)
    assert step.status == "fail" and f"version number: {version} is already used" in step.message
    _edit_metadata(root, lambda m: m.update(version="9.9.9"))
    (step,) = verify(root, steps=["verify_version_changes"])
    assert step.status == "fail" and "9.9.9 is missing in 'changelog'" in step.message


def test_unpinned_schema_is_refused(tmp_path: Path) -> None:
    root = _copy("brain_tissue_genseg", tmp_path)
    _edit_metadata(root, lambda m: m.update(schema="https://example.org/meta_schema_29990101.json"))
    (step,) = verify(root, steps=["verify_metadata_format"])
    assert step.status == "fail" and "is not pinned offline" in step.message


def test_module_command_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "zoo.json"
    assert main([str(REPO / "monai_bundles" / "brain_tissue_genseg"), "-m", "min", "--json-out", str(out)]) == 0
    assert [r["name"] for r in json.loads(out.read_text())] == list(MIN_STEPS)
    assert "zoo ci/verify_bundle.py -m min: passes" in capsys.readouterr().out
    assert set(FULL_STEPS) > set(MIN_STEPS)


def test_scripted_generators_equal_eager(tmp_path: Path) -> None:
    """Pix2Pix and CycleGAN generators script (torch.jit.script, no tracing) with the shipped weights and match eager."""
    from medgen_core.bundles.weights import load_state_dict_safely
    from medgen_core.networks.gan import Pix2PixUNet, ResnetGenerator

    cases = [
        (ResnetGenerator(2, 1, 1, features=32, n_res=6, n_down=2), "brain_t1_to_t2w_cyclegan/models/generator_b2a.pt", (1, 1, 40, 24)),
        (Pix2PixUNet(2, 4, 1, num_downs=5, features=24, norm="instance", dropout=0.5), "brain_tissue_to_t1_pix2pix/models/model.pt", (1, 4, 64, 96)),
    ]
    for net, weights, shape in cases:
        net.load_state_dict(load_state_dict_safely(REPO / "monai_bundles" / weights), strict=True)
        scripted = torch.jit.script(net.eval())
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert float((scripted(x) - net(x)).abs().max()) <= 1e-6
        with pytest.raises(Exception, match="divisible by"):
            scripted(torch.rand(1, shape[1], 4, 4))


def test_check_modules_import_one_way() -> None:
    """conformance -> monai_checks -> zoo_verify -> zoo_medgen_checks -> zoo_rules: no lower module imports conformance (no
    import cycle), and zoo_rules imports neither zoo module above it."""
    import ast

    import medgen_core.bundles.monai_checks as monai_checks
    import medgen_core.bundles.zoo_medgen_checks as zoo_medgen_checks
    import medgen_core.bundles.zoo_rules as zoo_rules
    import medgen_core.bundles.zoo_verify as zoo_verify

    for module in (monai_checks, zoo_verify, zoo_rules, zoo_medgen_checks):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(name.endswith("conformance") for name in imported), f"{module.__name__} imports {sorted(imported)}"
        if module is zoo_rules:
            assert not imported & {"medgen_core.bundles.zoo_verify", "medgen_core.bundles.zoo_medgen_checks"}, sorted(imported)
