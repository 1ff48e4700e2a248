"""open_bundle_config: the one way a bundle's configs are opened (metadata, configs, bundle_root, device, literals, errors).

Real bundles (the small GenSeg and autoencoder bundles, or copies of them) through MONAI's real ConfigParser.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bundle_testing import REPO, snapshot_bundle
from medgen_core.bundles.bundle_config import open_bundle_config, user_error_in
from medgen_core.bundles.catalog import get_bundle
from medgen_core.errors import BundleError, WeightsError

GENSEG = REPO / "monai_bundles" / "brain_tissue_genseg"


def test_metadata_bundle_root_and_device_are_set():
    info = get_bundle("brain_tissue_genseg")
    parser = open_bundle_config("brain_tissue_genseg", device="cpu")
    assert parser["_meta_"]["version"] == info.version and parser.info.path == info.path
    assert parser.get_parsed_content("bundle_root") == str(info.path)  # not the config's "."
    assert parser.get_parsed_content("device") == torch.device("cpu")
    assert parser.get_parsed_content("weights_file") == f"{info.path}/models/model.pt"
    net = parser.get_parsed_content("network")  # built and sha256-checked by the bundle's own expression
    assert isinstance(net, torch.nn.Module) and not net.training


def test_user_values_stay_literal(tmp_path: Path):
    odd = tmp_path / "$__import__('os').getcwd()" / "a@#b"
    parser = open_bundle_config("brain_tissue_genseg", overrides={"output_dir": odd, "input_file": None, "slice_axis": 1})
    assert parser.get_parsed_content("output_dir") == str(odd)
    assert parser.get_parsed_content("input_file") == ""  # None: not overridden
    assert parser.get_parsed_content("slice_axis") == 1


def test_several_configs_merge_in_order_and_a_user_file_comes_last(tmp_path: Path):
    user = tmp_path / "my_lab.json"
    user.write_text(json.dumps({"lab_seed": 7}), encoding="utf-8")
    parser = open_bundle_config("brain_slice_autoencoder", ["inference", "lab.json"])
    assert parser.get_parsed_content("lab_seed") == 0 and "network_def" in parser.config and "sweep" in parser.config
    assert open_bundle_config("brain_slice_autoencoder", ["inference", "lab.json", user]).get_parsed_content("lab_seed") == 7


def test_an_error_raised_inside_the_config_comes_out_unwrapped(tmp_path: Path):
    root = snapshot_bundle(GENSEG, tmp_path / "brain_tissue_genseg")
    (root / "models" / "model.pt").write_bytes(b"not the shipped weights")
    parser = open_bundle_config(root, device="cpu")  # a copy: inspected, and its configs are clean
    with pytest.raises(WeightsError, match="sha256") as caught:
        parser.get_parsed_content("network")
    assert user_error_in(caught.value) is caught.value and "\n" not in str(caught.value)


def test_configs_that_would_run_code_are_refused_before_monai_reads_them(tmp_path: Path):
    root = snapshot_bundle(GENSEG, tmp_path / "brain_tissue_genseg")
    marker = tmp_path / "ran"
    config = json.loads((root / "configs" / "inference.json").read_text(encoding="utf-8"))
    config["evil"] = f"$__import__('os').system('touch {marker}')"
    (root / "configs" / "inference.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(BundleError, match="trust"):
        open_bundle_config(root)
    assert "evil" in open_bundle_config(root, trust=True).config  # the user's explicit --trust: opened, nothing evaluated
    assert not marker.exists()


def test_bad_requests_are_one_line_bundle_errors():
    with pytest.raises(BundleError, match=r"configs/nope\.json is missing"):
        open_bundle_config("brain_tissue_genseg", "nope")
    with pytest.raises(BundleError, match="cannot apply the overrides"):
        open_bundle_config("brain_tissue_genseg", overrides={"network_def#no_such#id": 1})
    with pytest.raises(BundleError, match="not a torch device"):
        open_bundle_config("brain_tissue_genseg", device="gpu0")


def test_the_workflow_gets_the_same_files_and_values(tmp_path: Path):
    info = get_bundle("brain_tissue_genseg")
    parsed = open_bundle_config(info, overrides={"output_file": tmp_path / "out.nii.gz"}, device="cpu")
    workflow = parsed.workflow("infer")
    assert workflow.parser.get_parsed_content("bundle_root") == str(info.path)
    assert workflow.parser.get_parsed_content("output_file") == str(tmp_path / "out.nii.gz")
    assert workflow.parser["_meta_"]["version"] == info.version
