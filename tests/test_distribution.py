"""What a plain ``pip install`` of the wheel carries: no weight file twice, the default variant as ``models/model.pt``,
and the dependencies that ``medgen demo`` needs (no optional ones).

The wheel itself is built and installed by ``scripts/check_installed_wheel.py`` (a CI step); these tests check the
sources it is built from.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest
from bundle_testing import BUNDLE_IDS, BUNDLES, REPO, snapshot_bundle

from medgen_core.bundles.catalog import read_metadata
from medgen_core.bundles.weights import install_variant_weights, weight_files, weights_status


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


@pytest.mark.parametrize("bundle", BUNDLES, ids=BUNDLE_IDS)
def test_no_bundle_holds_a_weight_file_twice(bundle: Path) -> None:
    """Identical weight files would ship twice in the wheel and every pack: the variant must name models/model.pt."""
    by_hash: dict[str, list[str]] = defaultdict(list)
    for path in weight_files(bundle):
        by_hash[hashlib.sha256(path.read_bytes()).hexdigest()].append(path.relative_to(bundle).as_posix())
    twins = [files for files in by_hash.values() if len(files) > 1]
    assert not twins, (f"{bundle.name}: identical weight files {twins}; keep one (models/model.pt for the default variant), "
                       "point configs/metadata.json at it and rewrite large_files.yml (scripts/write_large_files.py)")


@pytest.mark.parametrize("bundle", BUNDLES, ids=BUNDLE_IDS)
def test_model_pt_is_the_file_of_its_variant(bundle: Path) -> None:
    medgen = read_metadata(bundle).get("medgen", {})
    model_pt = medgen.get("model_pt")
    assert (bundle / "models" / "model.pt").is_file()  # the zoo's default weights
    if model_pt and model_pt.get("variant"):
        variant = medgen["variants"][model_pt["variant"]]
        assert variant["file"] == model_pt["file"] == "models/model.pt" and variant["sha256"] == model_pt["sha256"]


def test_installing_the_default_variant_records_its_hash_everywhere(tmp_path: Path) -> None:
    """Retrained x2_synthetic weights land in models/model.pt; the variant and model_pt entries both get the new sha256."""
    bundle = snapshot_bundle(REPO / "monai_bundles" / "brain_mri_super_resolution", tmp_path / "sr")
    new = tmp_path / "retrained.pt"
    new.write_bytes((bundle / "models" / "x4_synthetic.pt").read_bytes())  # any other weights will do
    installed = install_variant_weights(bundle, "x2_synthetic", new, trained=True)
    medgen = read_metadata(bundle)["medgen"]
    digest = hashlib.sha256(new.read_bytes()).hexdigest()
    assert installed == bundle / "models" / "model.pt"
    assert medgen["variants"]["x2_synthetic"]["sha256"] == medgen["model_pt"]["sha256"] == digest
    assert weights_status(bundle, read_metadata(bundle))[0] == "OK"


def test_two_entries_of_one_file_that_disagree_are_a_mismatch(tmp_path: Path) -> None:
    bundle = snapshot_bundle(REPO / "monai_bundles" / "brain_t1_to_t2w_cyclegan", tmp_path / "cyclegan")
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["medgen"]["model_pt"]["sha256"] = "0" * 64  # the a2b variant still records the right hash of models/model.pt
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    state, problems = weights_status(bundle, meta)
    assert state == "MISMATCH" and any(p.startswith("models/model.pt: sha256") and "0" * 64 in p for p in problems), problems


def test_a_plain_install_has_the_demos_data_and_no_optional_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = _requirement_names(project["dependencies"])
    assert "nilearn" in core  # medgen demo's MNI152 sample and the SR bundle's default input
    assert not core & {"transformers", "dipy", "pytest"}, core
    assert "transformers" in _requirement_names(project["optional-dependencies"]["sd"])
