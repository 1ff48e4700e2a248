"""The bundle catalogue's lookup order (``--bundle``, MEDGEN_BUNDLE_PATH, user folder, installed package,
source tree), hidden duplicates, broken metadata, folder keying, ``bundle list --json`` / ``check --json``,
and packs whose hashes do not match (medgen_core.bundles.catalog, medgen_core.cli.bundle_cmd)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundle_testing import REPO, snapshot_bundle
from medgen_core.bundles.catalog import get_bundle
from medgen_core.bundles.sharing import MANIFEST_NAME, pack_bundle
from medgen_core.bundles.zoo_index import read_zoo_index
from medgen_core.cli.main import main

SOURCE_TREE = REPO / "monai_bundles"
BUILTINS = sorted(p.parent.parent.name for p in SOURCE_TREE.glob("*/configs/metadata.json"))
GENSEG = SOURCE_TREE / "brain_tissue_genseg"
LIST_KEYS = {"name", "display_name", "version", "path", "source", "hidden", "weights_ok", "metadata"}


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """An empty user folder; no MEDGEN_BUNDLE_PATH, no MEDGEN_BUILTIN_BUNDLES; no importable medgen_bundles
    package other than what a test puts there (an editable install maps it onto the source tree)."""
    monkeypatch.setenv("MEDGEN_BUNDLE_DIR", str(tmp_path / "user"))
    monkeypatch.delenv("MEDGEN_BUNDLE_PATH", raising=False)
    monkeypatch.delenv("MEDGEN_BUILTIN_BUNDLES", raising=False)
    monkeypatch.chdir(tmp_path)
    saved = sys.modules.pop("medgen_bundles", None)
    yield tmp_path
    sys.modules.pop("medgen_bundles", None)  # a test's stand-in package must not outlive it
    if saved is not None:
        sys.modules["medgen_bundles"] = saved


@pytest.fixture(scope="module")
def genseg_copy(tmp_path_factory) -> Path:
    return snapshot_bundle(GENSEG, tmp_path_factory.mktemp("genseg") / "brain_tissue_genseg")


def _copy(src: Path, dest: Path, display_name: str | None = None, strip_hashes: bool = False) -> Path:
    """A copy of a bundle at ``dest`` (its folder name is its key), optionally with another metadata name
    or without any recorded weight sha256 (as Model Zoo bundles ship)."""
    root = snapshot_bundle(src, dest)
    meta_path = root / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    if display_name is not None:
        meta["name"] = display_name
    if strip_hashes:
        stack = [meta]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                item.pop("sha256", None)
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    meta_path.write_text(json.dumps(meta, indent=4) + "\n")
    return root


def _cli(argv: list, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, re.sub(r"--- Logging error ---\n.*?\nArguments: .*?\n", "", err, flags=re.S)


def _listing(capsys, *extra) -> tuple[dict[str, dict], str]:
    code, out, err = _cli(["bundle", "list", "--json", *extra], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"bundles"}
    for entry in data["bundles"]:
        assert set(entry) == LIST_KEYS and Path(entry["path"]).is_absolute()
    return {b["name"]: b for b in data["bundles"]}, err


def test_list_json_source_tree(env: Path, capsys) -> None:
    """From a clone: all seven built-ins, source "source", full metadata, weights verified, nothing hidden."""
    bundles, err = _listing(capsys)
    assert sorted(bundles) == BUILTINS and len(BUILTINS) == 7 and "warning" not in err
    for name, entry in bundles.items():
        on_disk = json.loads((SOURCE_TREE / name / "configs" / "metadata.json").read_text())
        assert entry["source"] == "source" and Path(entry["path"]) == SOURCE_TREE / name and entry["hidden"] == []
        assert entry["metadata"] == on_disk and entry["version"] == on_disk["version"] and entry["display_name"] == on_disk["name"]
        assert entry["weights_ok"] is True
    code, out, _ = _cli(["bundle", "list"], capsys)
    assert code == 0 and f"source {SOURCE_TREE}" in out and next(l for l in out.splitlines() if l.startswith("brain_tissue_genseg")).split()[3] == "source"


def test_lookup_order_first_wins_and_names_hidden(env: Path, genseg_copy: Path, monkeypatch, capsys) -> None:
    """--bundle beats MEDGEN_BUNDLE_PATH (in its own order) beats the user folder; later copies are listed as hidden."""
    env_a, env_b, user = env / "env_a", env / "env_b", env / "user"
    a = _copy(genseg_copy, env_a / "mine", display_name="My GenSeg (A)")
    b = _copy(genseg_copy, env_b / "mine")
    u = _copy(genseg_copy, user / "mine")
    only_user = _copy(genseg_copy, user / "user_only")
    single = _copy(genseg_copy, env / "single_bundle")  # an entry may be one bundle folder
    monkeypatch.setenv("MEDGEN_BUNDLE_PATH", os.pathsep.join([str(env_a), "", str(env_b), str(single)]))
    bundles, _ = _listing(capsys)
    assert bundles["mine"]["source"] == "env" and Path(bundles["mine"]["path"]) == a
    assert bundles["mine"]["hidden"] == [str(b), str(u)] and bundles["mine"]["display_name"] == "My GenSeg (A)"
    assert bundles["user_only"]["source"] == "user" and Path(bundles["user_only"]["path"]) == only_user
    assert bundles["single_bundle"]["source"] == "env"
    assert {bundles[n]["source"] for n in BUILTINS} == {"source"}
    assert get_bundle("mine").path == a and get_bundle("mine").source == "env"
    # an explicit folder comes first of all
    explicit = _copy(genseg_copy, env / "explicit" / "mine")
    bundles, _ = _listing(capsys, "--bundle", explicit)
    assert bundles["mine"]["source"] == "path" and bundles["mine"]["hidden"] == [str(a), str(b), str(u)]
    assert get_bundle(explicit).source == "path"
    code, out, _ = _cli(["bundle", "list"], capsys)
    assert code == 0 and f"mine: {b} is hidden by the env bundle at {a}" in out and f"mine: {u} is hidden" in out
    # the same folder reached twice is not a duplicate
    monkeypatch.setenv("MEDGEN_BUNDLE_PATH", os.pathsep.join([str(user), str(user)]))
    bundles, _ = _listing(capsys)
    assert bundles["mine"]["source"] == "env" and bundles["mine"]["hidden"] == []


def test_copy_of_a_builtin_never_replaces_it(env: Path, genseg_copy: Path, monkeypatch, capsys) -> None:
    """A MEDGEN_BUNDLE_PATH or user bundle named like a built-in is hidden behind it, with one warning line."""
    in_env = _copy(genseg_copy, env / "env" / "brain_tissue_genseg")
    in_user = _copy(genseg_copy, env / "user" / "brain_tissue_genseg")
    monkeypatch.setenv("MEDGEN_BUNDLE_PATH", str(env / "env"))
    bundles, err = _listing(capsys)
    entry = bundles["brain_tissue_genseg"]
    assert entry["source"] == "source" and Path(entry["path"]) == GENSEG and entry["hidden"] == [str(in_env), str(in_user)]
    warnings = [line for line in err.splitlines() if line.startswith("medgen: warning:")]
    assert len(warnings) == 2 and all("does not replace it" in w for w in warnings) and str(in_env) in warnings[0]
    assert get_bundle("brain_tissue_genseg").path == GENSEG


def test_bad_bundle_path_is_one_line(env: Path, genseg_copy: Path, monkeypatch, capsys) -> None:
    a_file = env / "a_file.txt"
    a_file.write_text("not a folder")
    for entry, why in ((env / "no_such_folder", "does not exist"), (a_file, "is a file")):
        monkeypatch.setenv("MEDGEN_BUNDLE_PATH", os.pathsep.join([str(env), str(entry)]))
        for argv in (["bundle", "list"], ["bundle", "list", "--json"], ["bundle", "run", "brain_tissue_genseg", "in.nii.gz", "out.nii.gz"]):
            code, out, err = _cli(argv, capsys)
            lines = err.strip().splitlines()
            assert code == 2 and out == "" and len(lines) == 1 and "Traceback" not in err, err
            assert lines[0].startswith("medgen: error: MEDGEN_BUNDLE_PATH entry") and str(entry) in lines[0] and why in lines[0]
    code, _, _ = _cli(["bundle", "list", "--bundle", env / "no_bundle_here"], capsys)
    assert code == 2


@pytest.mark.parametrize("text, why", [('{"name": "broken", "version": ', "not valid JSON"), ("[1, 2]", "must hold a JSON object")],
                         ids=["invalid-json", "not-an-object"])
def test_broken_metadata_is_one_line_and_the_rest_are_listed(env: Path, genseg_copy: Path, capsys, text: str, why: str) -> None:
    broken = _copy(genseg_copy, env / "user" / "broken")
    (broken / "configs" / "metadata.json").write_text(text)
    good = _copy(genseg_copy, env / "user" / "good")
    bundles, err = _listing(capsys)
    assert "broken" not in bundles and Path(bundles["good"]["path"]) == good and set(BUILTINS) < set(bundles)
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(broken) in warnings[0] and why in warnings[0] and "Traceback" not in err
    code, out, err = _cli(["bundle", "list"], capsys)
    assert code == 0 and any(line.startswith("good ") for line in out.splitlines()) and str(broken) in err
    assert get_bundle("good").path == good
    code, _, err = _cli(["bundle", "check", broken, "--quick"], capsys)  # asked for by folder: a clear error
    assert code == 2 and why in err and len(err.strip().splitlines()) == 1


def test_package_data_comes_before_the_source_tree(env: Path, genseg_copy: Path, monkeypatch, capsys) -> None:
    """An importable medgen_bundles package (a wheel's package data) wins over the clone's monai_bundles/."""
    site = env / "site"
    (site / "medgen_bundles").mkdir(parents=True)
    (site / "medgen_bundles" / "__init__.py").write_text("")
    packaged = _copy(genseg_copy, site / "medgen_bundles" / "brain_tissue_genseg")
    monkeypatch.syspath_prepend(str(site))
    bundles, _ = _listing(capsys)
    entry = bundles["brain_tissue_genseg"]
    assert entry["source"] == "package" and Path(entry["path"]) == packaged and entry["hidden"] == [str(GENSEG)]
    assert bundles["brain_mri_super_resolution"]["source"] == "source"
    from medgen_core.bundles.inspection import is_builtin

    assert is_builtin(packaged) and is_builtin(GENSEG) and not is_builtin(genseg_copy)


def test_package_data_that_is_the_source_tree_is_listed_once(env: Path, monkeypatch, capsys) -> None:
    """An editable install maps medgen_bundles onto the clone's folder: one copy each, source "source"."""
    site = env / "site"
    site.mkdir()
    (site / "medgen_bundles").symlink_to(SOURCE_TREE, target_is_directory=True)
    monkeypatch.syspath_prepend(str(site))
    bundles, _ = _listing(capsys)
    assert sorted(bundles) == BUILTINS and all(b["source"] == "source" and b["hidden"] == [] for b in bundles.values())


def test_zoo_style_bundle_keyed_by_folder(env: Path, genseg_copy: Path, capsys) -> None:
    """A Model Zoo style bundle: display name in metadata, no weight sha256 recorded. Installing it needs
    --trust (one line without), then it is found by its folder name."""
    zoo = _copy(genseg_copy, env / "zoo" / "tissue_zoo_gan", display_name="Tissue Zoo GAN", strip_hashes=True)
    code, _, err = _cli(["bundle", "install", zoo], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unverified" in err and "--trust" in err
    assert not (env / "user" / "tissue_zoo_gan").exists()
    code, out, err = _cli(["bundle", "install", zoo, "--trust"], capsys)
    assert code == 0, err
    installed = env / "user" / "tissue_zoo_gan"
    assert "installed tissue_zoo_gan " in out and (installed / "configs" / "metadata.json").is_file()
    entry = _listing(capsys)[0]["tissue_zoo_gan"]
    assert entry["display_name"] == "Tissue Zoo GAN" and entry["source"] == "user" and entry["weights_ok"] is None
    index = read_zoo_index()[f"tissue_zoo_gan_v{entry['version']}"]
    assert index["weights_verified"] is False and index["display_name"] == "Tissue Zoo GAN"
    info = get_bundle("tissue_zoo_gan")
    assert info.name == "tissue_zoo_gan" and info.bundle_id == f"tissue_zoo_gan@{entry['version']}"
    # a verifiable bundle with a display name packs and installs under its folder name
    labelled = _copy(genseg_copy, env / "src" / "labelled_genseg", display_name="Labelled GenSeg")
    archive = pack_bundle(labelled, env / "packs")
    assert archive.name.startswith("labelled_genseg_v")
    with zipfile.ZipFile(archive) as zf:
        assert "labelled_genseg/configs/metadata.json" in zf.namelist()
    assert _cli(["bundle", "install", archive], capsys)[0] == 0
    assert get_bundle("labelled_genseg").path == env / "user" / "labelled_genseg"


def _flip_weight_byte(archive: Path, dest: Path) -> tuple[Path, str]:
    """A copy of ``archive`` with one byte of a weight file changed and the manifest left as it was."""
    with zipfile.ZipFile(archive) as zin:
        member = next(n for n in zin.namelist() if "/models/" in n and n.endswith(".pt"))
        with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zout:
            for item in zin.infolist():
                data = bytearray(zin.read(item.filename))
                if item.filename == member:
                    data[len(data) // 2] ^= 0x01
                zout.writestr(item.filename, bytes(data))
    return dest, member


def test_pack_whose_hash_does_not_match_installs_nothing(env: Path, genseg_copy: Path, capsys) -> None:
    user = env / "user"
    src = _copy(genseg_copy, env / "src" / "genseg_share")
    archive = pack_bundle(src, env / "packs")
    bad, member = _flip_weight_byte(archive, env / "packs" / "genseg_share_bad.zip")
    code, out, err = _cli(["bundle", "install", bad], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert member in lines[0] and "does not match" in lines[0] and MANIFEST_NAME in lines[0]
    assert not user.exists() or not any(p.name != "model_info.json" for p in user.iterdir())
    # --sha256: a wrong digest refuses before anything is extracted, the right one installs
    good_sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    code, _, err = _cli(["bundle", "install", archive, "--sha256", "0" * 64], capsys)
    assert code == 2 and "does not match the expected" in err and len(err.strip().splitlines()) == 1
    assert not (user / "genseg_share").exists()
    assert _cli(["bundle", "install", archive, "--sha256", good_sha.upper()], capsys)[0] == 0
    installed = user / "genseg_share"
    before = {p.relative_to(installed): p.read_bytes() for p in installed.rglob("*") if p.is_file()}
    entry_before = read_zoo_index()
    # a bad pack over an installed bundle leaves the installed one exactly as it was
    code, _, err = _cli(["bundle", "install", bad, "--force"], capsys)
    assert code == 2 and member in err
    assert {p.relative_to(installed): p.read_bytes() for p in installed.rglob("*") if p.is_file()} == before
    assert read_zoo_index() == entry_before and not [p for p in user.iterdir() if p.name.startswith(".install-")]


def test_check_json(env: Path, capsys) -> None:
    code, out, err = _cli(["bundle", "check", "brain_tissue_genseg", "--quick", "--json"], capsys)
    results = json.loads(out)
    assert isinstance(results, list) and results and all(set(r) == {"check", "passed", "message"} for r in results)
    assert all(isinstance(r["passed"], bool) and isinstance(r["message"], str) for r in results)
    assert all(r["message"] for r in results if not r["passed"])
    assert code == (0 if all(r["passed"] for r in results) else 1), err
