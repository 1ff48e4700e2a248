"""Packing, verifying and installing bundles (medgen_core.bundles.sharing and ``medgen bundle pack/install/list``)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
import torch

from bundle_testing import BUNDLE_IDS, BUNDLES, REPO, sample_volume, snapshot_bundle
from medgen_core.bundles.catalog import get_bundle
from medgen_core.bundles.runner import run_bundle_inference
from medgen_core.bundles.sharing import MANIFEST_NAME, install_bundle, pack_bundle
from medgen_core.bundles.zoo_index import read_zoo_index
from medgen_core.bundles.weights import weight_files
from medgen_core.cli.main import main
from medgen_core.errors import BundleError
from medgen_core.provenance import verify_provenance


@pytest.fixture(scope="module", params=BUNDLES, ids=BUNDLE_IDS)
def bundle(request, tmp_path_factory) -> Path:
    src: Path = request.param
    return snapshot_bundle(src, tmp_path_factory.mktemp("snapshot") / src.name)


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch) -> Path:
    """An empty user bundle folder (MEDGEN_BUNDLE_DIR), with no built-in bundles (an empty MEDGEN_BUILTIN_BUNDLES):
    the snapshots carry the built-ins' names, which install refuses while the built-ins are there."""
    path = tmp_path / "user_bundles"
    (tmp_path / "no_builtins").mkdir()
    monkeypatch.setenv("MEDGEN_BUNDLE_DIR", str(path))
    monkeypatch.setenv("MEDGEN_BUILTIN_BUNDLES", str(tmp_path / "no_builtins"))
    return path


@pytest.fixture
def archive(bundle: Path, tmp_path: Path, user_dir: Path) -> Path:
    return pack_bundle(bundle, tmp_path / "packs")


def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None] | None = None, extra: dict[str, bytes] | None = None) -> Path:
    """Copy a zip, replacing (bytes) or dropping (None) some members and adding others."""
    change = change or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = change.get(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item.filename, data)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
    return dst


def _manifest_for(members: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in members.items() if n != MANIFEST_NAME).encode()


def _weight_member(archive: Path) -> str:
    with zipfile.ZipFile(archive) as zf:
        return next(n for n in zf.namelist() if "/models/" in n and n.endswith((".pt", ".safetensors", ".ts")))


def test_pack_writes_manifest_and_leaves_out_local_outputs(bundle: Path, tmp_path: Path, user_dir: Path) -> None:
    src = snapshot_bundle(bundle, tmp_path / bundle.name)
    for junk in ("eval/out.nii.gz", "runs/x2/checkpoint.pt", "configs/__pycache__/x.pyc"):
        (src / junk).parent.mkdir(parents=True, exist_ok=True)
        (src / junk).write_bytes(b"local output")
    version = json.loads((src / "configs" / "metadata.json").read_text())["version"]
    archive = pack_bundle(src, tmp_path / "packs")
    assert archive.name == f"{bundle.name}_v{version}.zip"
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        manifest = dict(reversed(line.split("  ", 1)) for line in zf.read(MANIFEST_NAME).decode().splitlines())
        assert all(hashlib.sha256(zf.read(n)).hexdigest() == h for n, h in manifest.items())
    assert set(manifest) == names - {MANIFEST_NAME}
    assert f"{bundle.name}/configs/metadata.json" in names and f"{bundle.name}/LICENSE" in names
    assert not any(part in n for n in names for part in ("/eval/", "/runs/", "__pycache__"))
    entry = read_zoo_index()[f"{bundle.name}_v{version}"]
    assert entry["checksum"] == hashlib.sha256(archive.read_bytes()).hexdigest() and entry["source"] == str(archive)
    assert not list(archive.parent.glob(".tmp-*"))


def test_pack_install_run(bundle: Path, archive: Path, tmp_path: Path, user_dir: Path) -> None:
    info = install_bundle(archive)
    assert info.path == user_dir / bundle.name and not (info.path / MANIFEST_NAME).exists()
    found = get_bundle(bundle.name)
    assert found.source == "user" and found.path == info.path
    if found.metadata.get("medgen", {}).get("input_mode") == "labels":  # label-map models get their shipped sample
        source = next((info.path / "sample_data").glob("*.nii.gz"))
    else:
        source = sample_volume(tmp_path / "in.nii.gz")
    out = run_bundle_inference(bundle.name, source, tmp_path / "out" / "generated.nii.gz")
    assert verify_provenance(out).status == "intact"
    entry = read_zoo_index()[f"{bundle.name}_v{info.version}"]
    assert entry["checksum"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert entry["installed_path"] == str(info.path) and entry["needed_trust"] is False
    assert not [p for p in user_dir.iterdir() if p.name.startswith(".install-")]
    # the same version again needs --force
    with pytest.raises(BundleError, match="already installed.*--force"):
        install_bundle(archive)
    assert install_bundle(archive, force=True).path == info.path


def test_changed_weight_byte_is_refused(archive: Path, tmp_path: Path, user_dir: Path) -> None:
    member = _weight_member(archive)
    with zipfile.ZipFile(archive) as zf:
        data = bytearray(zf.read(member))
        members = {n: zf.read(n) for n in zf.namelist()}
    data[len(data) // 3] ^= 0x01
    bad = _rewrite(archive, tmp_path / "bad.zip", {member: bytes(data)})
    with pytest.raises(BundleError, match=rf"{member}: sha256 .* does not match .* in checksums.sha256"):
        install_bundle(bad)
    # a consistent manifest does not help: the weights must still match the metadata's sha256
    members[member] = bytes(data)
    resigned = _rewrite(archive, tmp_path / "resigned.zip", {member: bytes(data), MANIFEST_NAME: _manifest_for(members)})
    with pytest.raises(BundleError, match="weights cannot be verified.*MISMATCH"):
        install_bundle(resigned)
    assert not user_dir.exists() or not any(p for p in user_dir.iterdir() if p.is_dir())


def test_missing_extra_and_unsafe_members_are_refused(archive: Path, tmp_path: Path, user_dir: Path) -> None:
    name = archive.name.rsplit("_v", 1)[0]
    missing = _rewrite(archive, tmp_path / "missing.zip", {f"{name}/LICENSE": None})
    with pytest.raises(BundleError, match="LICENSE: listed in checksums.sha256 but missing"):
        install_bundle(missing)
    extra = _rewrite(archive, tmp_path / "extra.zip", extra={f"{name}/configs/extra.json": b"{}"})
    with pytest.raises(BundleError, match="extra.json: present but not listed"):
        install_bundle(extra)
    for evil in ("../escaped.txt", "/tmp/absolute.txt", f"{name}/../../escaped.txt"):
        with pytest.raises(BundleError, match="unsafe archive member"):
            install_bundle(_rewrite(archive, tmp_path / "evil.zip", extra={evil: b"x"}))
    no_manifest = _rewrite(archive, tmp_path / "plain.zip", {MANIFEST_NAME: None})
    with pytest.raises(BundleError, match="no checksums.sha256"):
        install_bundle(no_manifest)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/absolute.txt").exists()


@pytest.mark.parametrize(
    "config_id, value",
    [
        ("shell", {"_target_": "os.system", "command": "echo must-not-run"}),
        ("shell", "$__import__('os').system('echo must-not-run')"),
        ("shell", "$torch.os.system('echo must-not-run')"),
    ],
    ids=["target", "dunder-import", "module-attribute"],
)
def test_unsafe_config_needs_trust(bundle: Path, tmp_path: Path, user_dir: Path, config_id: str, value) -> None:
    src = snapshot_bundle(bundle, tmp_path / bundle.name)
    infer = src / "configs" / "inference.json"
    config = json.loads(infer.read_text())
    config[config_id] = value
    infer.write_text(json.dumps(config, indent=4) + "\n")
    archive = pack_bundle(src, tmp_path / "packs")
    with pytest.raises(BundleError, match=r"refusing to install \(use --trust.*\n.*configs/inference.json id 'shell"):
        install_bundle(archive)
    assert main(["bundle", "install", str(archive)]) == 2
    assert not (user_dir / bundle.name).exists()
    info = install_bundle(archive, trust=True)  # installed, not run
    assert json.loads((info.path / "configs" / "inference.json").read_text())[config_id] == value
    assert read_zoo_index()[f"{info.name}_v{info.version}"]["needed_trust"] is True


def test_install_from_folder_and_cli_list(bundle: Path, tmp_path: Path, user_dir: Path, capsys) -> None:
    assert main(["bundle", "install", str(bundle)]) == 0
    assert (user_dir / bundle.name / "configs" / "metadata.json").is_file()
    assert main(["bundle", "pack", bundle.name, "--out", str(tmp_path / "packs")]) == 0
    capsys.readouterr()
    assert main(["bundle", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["name", "version", "action", "source", "weights"]
    row = next(line for line in lines if line.startswith(bundle.name))
    assert " user:" in row and " OK " in row
    for path in weight_files(user_dir / bundle.name):  # break the installed copy: list says so
        path.write_bytes(path.read_bytes()[:-1])
    main(["bundle", "list"])
    assert " MISMATCH " in next(line for line in capsys.readouterr().out.splitlines() if line.startswith(bundle.name))


# -- hostile archives and weights (issue 14): one line, exit code 2, nothing installed, nothing run ---------
GENSEG = REPO / "monai_bundles" / "brain_tissue_genseg"


@pytest.fixture
def small_bundle(tmp_path: Path) -> Path:
    """A copy of the (small) GenSeg bundle under its own name."""
    root = snapshot_bundle(GENSEG, tmp_path / "genseg_copy")
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    meta["name"] = "genseg_copy"
    (root / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")
    return root


def _cli_error(argv: list[str], capsys) -> str:
    """The one error line of a medgen command that must fail with exit code 2 (no traceback). Reports of
    loggers still bound to an earlier test's closed capture stream (a pytest artefact) are left out."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = re.sub(r"--- Logging error ---\n.*?\nArguments: .*?\n", "", capsys.readouterr().err, flags=re.S)
    lines = [line for line in err.splitlines() if line.startswith("medgen: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _set_declared_size(archive: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size that the zip's central directory records for ``member`` (the data stays)."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    name = member.encode()
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        if data[pos + 46 : pos + 46 + len(name)] == name:
            data[pos + 24 : pos + 28] = size.to_bytes(4, "little")
            archive.write_bytes(bytes(data))
            assert zipfile.ZipFile(archive).getinfo(member).file_size == size != info.file_size
            return
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{member} not found in the central directory")


@pytest.mark.parametrize("declared", [5, 10**6], ids=["smaller", "larger"])
def test_member_whose_size_lies_is_one_line(small_bundle: Path, tmp_path: Path, user_dir: Path, capsys, declared: int) -> None:
    archive = pack_bundle(small_bundle, tmp_path / "packs")
    _set_declared_size(archive, "genseg_copy/LICENSE", declared)
    line = _cli_error(["bundle", "install", archive], capsys)
    assert "genseg_copy/LICENSE" in line and ("corrupt or its recorded sizes lie" in line or "declares" in line), line
    assert not (user_dir / "genseg_copy").exists()


def test_zip_bomb_is_refused_before_extraction(small_bundle: Path, tmp_path: Path, user_dir: Path, capsys) -> None:
    """20 MB of zeros deflate to ~20 kB: refused by its compression ratio, even though the manifest lists it."""
    archive = pack_bundle(small_bundle, tmp_path / "packs")
    zeros = bytes(20 * 1024**2)
    with zipfile.ZipFile(archive) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["genseg_copy/docs/zeros.bin"] = zeros
    members[MANIFEST_NAME] = _manifest_for(members)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    assert bomb.stat().st_size < 2 * archive.stat().st_size
    line = _cli_error(["bundle", "install", bomb], capsys)
    assert "zeros.bin" in line and "zip bomb" in line
    assert not (user_dir / "genseg_copy").exists()
    # the per-member and total limits count the bytes: a lower limit refuses the plain archive too
    with pytest.raises(BundleError, match="over the 0 MiB limit per file"):
        install_bundle(archive, max_member_bytes=100_000)
    with pytest.raises(BundleError, match="unpacks to more than 0 MiB"):
        install_bundle(archive, max_unpacked_bytes=100_000)


def test_symlink_member_is_refused(small_bundle: Path, tmp_path: Path, user_dir: Path, capsys) -> None:
    archive = pack_bundle(small_bundle, tmp_path / "packs")
    evil = tmp_path / "link.zip"
    shutil.copy(archive, evil)
    link = zipfile.ZipInfo("genseg_copy/docs/passwd")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(evil, "a") as zf:
        zf.writestr(link, "../../../../etc/passwd")
    assert "symbolic link" in _cli_error(["bundle", "install", evil], capsys)


class _PicklePayload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickle_payload_with_recomputed_hash_is_refused(small_bundle: Path, tmp_path: Path, user_dir: Path, capsys, monkeypatch) -> None:
    """A .pt carrying code, with its sha256 recorded consistently (metadata and manifest): the hash checks
    pass, and ``weights_only=True`` refuses it, in one line, at install and when the folder is run; the
    payload never runs."""
    monkeypatch.chdir(tmp_path)
    weights = small_bundle / "models" / "model.pt"
    old = hashlib.sha256(weights.read_bytes()).hexdigest()
    torch.save({"weight": _PicklePayload()}, weights)
    new = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta = small_bundle / "configs" / "metadata.json"
    meta.write_text(meta.read_text().replace(old, new))
    archive = pack_bundle(small_bundle, tmp_path / "packs")  # pack checks the hashes: they agree
    line = _cli_error(["bundle", "install", archive], capsys)
    assert "refusing to install" in line and "carries a pickle payload" in line and not (user_dir / "genseg_copy").exists()
    line = _cli_error(["genseg", "segment", sample_volume(tmp_path / "in.nii.gz"), tmp_path / "out.nii.gz", "--bundle", small_bundle], capsys)
    assert "carries a pickle payload" in line and not (tmp_path / "PWNED").exists() and not (tmp_path / "out.nii.gz").exists()


def test_flipped_weight_byte_is_one_line_when_run(small_bundle: Path, tmp_path: Path, user_dir: Path, capsys) -> None:
    weights = small_bundle / "models" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    line = _cli_error(["genseg", "segment", sample_volume(tmp_path / "in.nii.gz"), tmp_path / "out.nii.gz", "--bundle", small_bundle], capsys)
    assert "does not match the sha256 recorded" in line and not (tmp_path / "out.nii.gz").exists()
