"""The panel's decisions (MedGenLib.panel), from the shipped bundles' real metadata: button states and tooltips, the
bundle and variant choosers, and the JobOptions a press runs with."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from MedGenLib.catalog import bundle_for, bundles_by_action
from MedGenLib.commands import ACTIONS, Device
from MedGenLib.panel import ComboEntry, bundle_entries, button_state, job_options, variant_entries

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def catalog() -> dict:
    metadata = {p.parents[1].name: json.loads(p.read_text(encoding="utf-8")) for p in (REPO / "monai_bundles").glob("*/configs/metadata.json")}
    return bundles_by_action(lambda: metadata)


def _state(catalog: dict, action: str, preferred: str = "", **kwargs) -> tuple[bool, str]:
    settings = {"has_input": True, "install_first": False, "running": None, "scale": 2, "axes": "inplane", **kwargs}
    return button_state(action, bundle_for(catalog, action, preferred), **settings)


def test_bundle_chooser_groups_bundles_under_action_headers(catalog: dict) -> None:
    entries = bundle_entries(catalog)
    assert [e.label for e in entries if e.header] == [f"— {a.capitalize()} —" for a in ACTIONS if catalog[a]]
    assert all(e.data == "" for e in entries if e.header) and all(e.data and e.tooltip for e in entries if not e.header)
    start = next(i for i, e in enumerate(entries) if e.label == "— Upscale —")
    sr = bundle_for(catalog, "upscale", "brain_mri_super_resolution")
    assert entries[start + 1] == ComboEntry(sr.label, "brain_mri_super_resolution", f"{sr.task} (: )")  # no listing: source, path ""
    assert bundle_entries({action: [] for action in catalog}) == []


def test_variants_for_upscale_only(catalog: dict) -> None:
    sr = bundle_for(catalog, "upscale", "brain_mri_super_resolution")
    entries, enabled = variant_entries(sr)
    assert enabled and entries[0].label == "(default)" and entries[0].data == ""
    assert {"x2_synthetic", "x4_synthetic", "x2_gaussian"} <= {e.data for e in entries[1:]}
    entries, enabled = variant_entries(bundle_for(catalog, "translate", "brain_t1_to_t2w_cyclegan"), lambda s: s.upper())
    assert not enabled and [e.label for e in entries] == ["(DEFAULT)"]  # directions are not variants; strings translated
    assert variant_entries(None) == ([ComboEntry("(default)", "")], False)


def test_button_states_and_tooltips(catalog: dict) -> None:
    assert _state(catalog, "upscale") == (True, f"Run upscale with {bundle_for(catalog, 'upscale').label}.")
    assert _state(catalog, "upscale", has_input=False) == (False, "Select an input volume.")
    assert _state(catalog, "upscale", scale=3) == (False, "Bundle brain_mri_super_resolution has no x3 model.")
    assert _state(catalog, "upscale", scale=3, axes="through")[0]  # through-plane takes any factor
    assert _state(catalog, "translate", running="upscale") == (False, "Cancel the running job (kills the MedGen process).")
    assert _state(catalog, "upscale", running="upscale")[0]  # its button cancels
    assert _state({"upscale": []}, "upscale") == (False, "No upscale bundle is installed.")
    assert _state({"upscale": []}, "upscale", install_first=True) == (True, "MedGen's Python packages will be installed first.")
    sr = bundle_for(catalog, "upscale")
    changed = {"upscale": [dataclasses.replace(sr, weights_ok=False)]}
    assert _state(changed, "upscale") == (False, f"The weights of bundle {sr.name} are missing or changed (see 'medgen bundle list').")
    untrained = {"upscale": [dataclasses.replace(sr, trained=False)]}
    assert _state(untrained, "upscale") == (False, f"Bundle {sr.name} has no trained weights yet.")


def test_job_options_keep_only_what_the_action_takes(catalog: dict) -> None:
    sr = bundle_for(catalog, "upscale")
    inplane = job_options("upscale", sr, scale=4, axes="inplane", target_spacing=0.9, adapt_seconds=5, strength=0.5, count=3)
    assert (inplane.scale, inplane.axes, inplane.target_spacing, inplane.adapt_seconds, inplane.strength, inplane.count) == (4, "inplane", None, None, None, 1)
    through = job_options("upscale", sr, axes="through", target_spacing=0.9, adapt_seconds=5, gate=False, force_cpu=True)
    assert (through.target_spacing, through.adapt_seconds, through.gate, through.device) == (0.9, 5, False, Device.CPU)
    assert job_options("translate", bundle_for(catalog, "translate", "brain_t1_to_t2w_cyclegan"), direction="b2a").direction == "b2a"
    assert job_options("translate", bundle_for(catalog, "translate", "brain_tissue_to_t1_pix2pix"), direction="b2a").direction is None
    augment = job_options("augment", bundle_for(catalog, "augment"), strength=0.4, count="3")
    assert (augment.strength, augment.count, augment.device, augment.axes) == (0.4, 3, Device.AUTO, "inplane")
