"""The module's bundle list: the real ``medgen bundle list --json`` parsed by MedGenLib.catalog, and its bad inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from MedGenLib.catalog import (
    BUNDLE_SOURCES,
    CatalogError,
    bundle_for,
    bundles_by_action,
    choice_from_entry,
    list_bundles,
    parse_bundle_list,
)
from MedGenLib.commands import ACTIONS

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent.parent for p in (REPO / "monai_bundles").glob("*/configs/metadata.json"))


def _metadata(folder: Path) -> dict:
    return json.loads((folder / "configs" / "metadata.json").read_text(encoding="utf-8"))


def _entry_from_files(folder: Path, **overrides) -> dict:
    """A ``bundle list --json`` entry built from a shipped bundle's real metadata.json (schema of MedGenLib.catalog)."""
    meta = _metadata(folder)
    entry = {"name": folder.name, "display_name": str(meta.get("name", folder.name)), "version": str(meta.get("version", "?")),
             "path": str(folder.resolve()), "source": "source", "hidden": [], "weights_ok": None, "metadata": meta}
    return {**entry, **overrides}


def test_the_cli_lists_every_shipped_bundle_with_its_metadata(cli_listing):
    entries = {e["name"]: e for e in cli_listing["entries"]}
    assert set(entries) >= {folder.name for folder in SHIPPED}  # keyed by folder name
    for folder in SHIPPED:
        entry = entries[folder.name]
        assert entry["metadata"] == _metadata(folder)  # the whole metadata.json, as on disk
        assert Path(entry["path"]).is_absolute() and (Path(entry["path"]) / "configs" / "metadata.json").is_file()
        assert entry["source"] in BUNDLE_SOURCES and entry["weights_ok"] in (True, False, None)
        assert entry["version"] == str(_metadata(folder)["version"])


def test_bundles_are_grouped_by_the_action_in_their_metadata(cli_listing):
    groups = bundles_by_action(lambda: cli_listing["entries"])
    expected = {action: sorted(f.name for f in SHIPPED if (_metadata(f).get("medgen") or {}).get("action") == action) for action in ACTIONS}
    assert {action: [c.name for c in choices] for action, choices in groups.items()} == expected
    assert all(expected.values())  # the shipped bundles cover translate, upscale and augment
    sr = bundle_for(groups, "upscale")
    assert sr.scales and set(sr.scales) <= {2, 3, 4, 8} and sr.source in BUNDLE_SOURCES
    assert sr.path == str((REPO / "monai_bundles" / sr.name).resolve()) or sr.source != "source"


def test_the_parser_accepts_entries_made_from_the_real_metadata_files():
    document = {"bundles": [_entry_from_files(folder) for folder in SHIPPED]}
    entries = parse_bundle_list(json.dumps(document))
    assert [e["name"] for e in entries] == [f.name for f in SHIPPED]
    groups = bundles_by_action(lambda: entries)
    assert sum(map(len, groups.values())) == sum(1 for f in SHIPPED if (_metadata(f).get("medgen") or {}).get("action") in ACTIONS)


def test_key_is_the_folder_and_the_metadata_name_is_only_a_label():
    folder = REPO / "monai_bundles" / "brain_mri_super_resolution"
    choice = choice_from_entry(_entry_from_files(folder, name="my_sr_copy", display_name="Brain MRI SR (my copy)"))
    assert choice.name == "my_sr_copy"  # passed as --bundle
    assert choice.label == f"Brain MRI SR (my copy) {_metadata(folder)['version']}"


def test_bundles_with_bad_weights_are_listed_but_not_chosen_first():
    sr = REPO / "monai_bundles" / "brain_mri_super_resolution"
    entries = parse_bundle_list({"bundles": [_entry_from_files(sr, name="a_broken_sr", weights_ok=False), _entry_from_files(sr, weights_ok=True)]})
    groups = bundles_by_action(lambda: entries)
    assert [c.name for c in groups["upscale"]] == ["a_broken_sr", "brain_mri_super_resolution"]
    assert not groups["upscale"][0].runnable and groups["upscale"][1].runnable
    assert bundle_for(groups, "upscale").name == "brain_mri_super_resolution"
    assert bundle_for(groups, "upscale", "a_broken_sr").name == "a_broken_sr"  # an explicit choice is kept


@pytest.mark.parametrize(("document", "message"), [
    ("medgen 0.1.0\n", r"output is not JSON"),
    ('[{"name": "x"}]', r"expected a JSON object with a 'bundles' list, got list"),
    ('{"bundles": [42]}', r"bundle entry 0 is a int, expected an object"),
    ('{"bundles": [{"path": "/b", "metadata": {}}]}', r"bundle entry 0 has no valid 'name' \(expected the bundle's folder key\)"),
    ('{"bundles": [{"name": "b", "path": "/b"}]}', r"bundle entry 0 has no valid 'metadata'"),
    ('{"bundles": [{"name": "b", "path": "/b", "metadata": {}, "weights_ok": "yes"}]}', r"bundle 'b': 'weights_ok' is a str, expected bool or NoneType"),
    ('{"bundles": [{"name": "b", "path": "/b", "metadata": {}, "source": "builtin"}]}', r"bundle 'b': 'source' is 'builtin', expected one of path, env"),
])
def test_bad_listings_give_one_clear_line(document, message):
    with pytest.raises(CatalogError, match=message) as info:
        parse_bundle_list(document)
    assert "\n" not in str(info.value) and str(info.value).startswith("medgen bundle list --json: ")


def test_a_failing_or_missing_cli_is_one_clear_line(tmp_path):
    failing = [sys.executable, "-c", "import sys; print('half'); sys.stderr.write('medgen: error: MEDGEN_BUNDLE_PATH /nope does not exist\\n'); sys.exit(2)"]
    with pytest.raises(CatalogError, match=r"failed: medgen: error: MEDGEN_BUNDLE_PATH /nope does not exist$"):
        list_bundles(failing)  # a stand-in CLI that fails the way medgen does
    with pytest.raises(CatalogError, match=r"cannot start .*no-such-medgen.* to list bundles"):
        list_bundles([str(tmp_path / "no-such-medgen")])
    with pytest.raises(CatalogError, match=r"did not answer within 0.5 s"):
        list_bundles([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
