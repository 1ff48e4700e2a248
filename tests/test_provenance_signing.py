"""Signed provenance records: the installation key, the trust list, forged and hand-made records, and the
``medgen provenance verify | trust | key`` commands, on real NIfTI/NRRD/CSV files."""

from __future__ import annotations

import json
import stat

import nibabel as nib
import nrrd
import numpy as np
import pytest

from medgen_core.cli.main import main
from medgen_core.errors import ProvenanceError
from medgen_core.io import Volume, read_volume, write_volume
from medgen_core.provenance import (
    GenerationMetadata,
    check_signature,
    installation_key,
    pixel_sha256,
    sha256_file,
    sidecar_path,
    sign_record,
    trust_add,
    trusted_keys,
    verify_provenance,
    write_generated_volume,
    write_sidecar,
)
from medgen_core.provenance.signing import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, canonical_json
from medgen_core.provenance.stamp import image_output, sidecar_document

AFFINE = np.array([[0.0, -0.9, 0.3, -20.0], [0.8, 0.0, 0.1, 5.5], [0.0, 0.2, 2.4, 30.0], [0, 0, 0, 1]])


@pytest.fixture
def keys(tmp_path, monkeypatch):
    """This test's own installation key folder (so trust-list changes stay inside the test)."""
    folder = tmp_path / "keys"
    monkeypatch.setenv("MEDGEN_KEY_DIR", str(folder))
    return folder


@pytest.fixture
def other_key(tmp_path, keys, monkeypatch):
    """Another installation's key (as an attacker or a colleague would have), made in its own folder."""
    monkeypatch.setenv("MEDGEN_KEY_DIR", str(tmp_path / "other_keys"))
    key = installation_key()
    monkeypatch.setenv("MEDGEN_KEY_DIR", str(keys))
    return key


def _meta(task: str = "image_translation") -> GenerationMetadata:
    return GenerationMetadata(generator_name="g", generator_version="1", task=task)


def _volume(seed: int = 0) -> Volume:
    return Volume(np.random.default_rng(seed).normal(size=(5, 6, 4)), AFFINE)


def test_installation_key_created_once_private_and_id_is_short_sha256(keys) -> None:
    import hashlib

    assert not keys.exists()
    key = installation_key()
    assert key.path == keys / PRIVATE_KEY_FILE and key.public_path == keys / PUBLIC_KEY_FILE
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert key.public.key_id == hashlib.sha256(key.public.raw).hexdigest()[:16] and len(key.public.raw) == 32
    assert installation_key().public == key.public  # loaded, not replaced
    assert sorted(p.name for p in keys.iterdir()) == [PRIVATE_KEY_FILE, PUBLIC_KEY_FILE]  # no temporary files
    assert b"BEGIN PUBLIC KEY" in key.public_path.read_bytes()


def test_signature_covers_canonical_record_with_pixels_and_affine(tmp_path, keys) -> None:
    meta = _meta()
    path = write_generated_volume(_volume(), tmp_path / "g.nii.gz", meta)
    record = json.loads(sidecar_path(path).read_text())["record"]
    signature = record["signature"]
    assert signature["key_id"] == installation_key().public.key_id and signature["alg"] == "Ed25519"
    body = {k: v for k, v in record.items() if k != "signature"}
    assert canonical_json(body) == json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    import base64

    Ed25519PublicKey.from_public_bytes(base64.b64decode(signature["public_key"])).verify(
        base64.b64decode(signature["value"]), canonical_json(body))  # any Ed25519 library can check it
    assert check_signature(record).state == "valid"
    for field, value in (("output", {**record["output"], "affine": np.eye(4).tolist()}), ("task", "x"), ("generator_name", "real_scanner")):
        assert check_signature({**record, field: value}).state == "invalid"
    assert check_signature(body).state == "absent"
    assert check_signature({**record, "signature": {**signature, "key_id": "0" * 16}}).state == "invalid"
    result = verify_provenance(path)
    assert (result.status, result.key_id, result.trusted) == ("intact", signature["key_id"], True)


@pytest.mark.parametrize("name", ["gen.nii.gz", "gen.nrrd"])
def test_edited_pixels_with_recomputed_hashes_are_forged(tmp_path, keys, name: str) -> None:
    """The attack medgen's old stamping allowed: edit voxels, recompute the record's hashes, keep the signature."""
    path = write_generated_volume(_volume(), tmp_path / name, _meta())
    if name.endswith(".nii.gz"):
        img = nib.load(str(path))
        data = img.get_fdata(dtype=np.float32)
        data[2, 3, 1] += 5.0
        nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    else:
        data, header = nrrd.read(str(path))
        data[2, 3, 1] += 5.0
        nrrd.write(str(path), data, header)
    new_hash = pixel_sha256(read_volume(path).array)
    side = json.loads(sidecar_path(path).read_text())
    side["record"]["output"]["sha256"] = new_hash
    side["file_sha256"] = sha256_file(path)
    sidecar_path(path).write_text(json.dumps(side))
    assert verify_provenance(path).status == "forged"  # sidecar forged, embedded one still says modified
    embedded_text = canonical_json(side["record"]).decode()
    if name.endswith(".nii.gz"):
        img = nib.load(str(path))
        header = img.header.copy()
        header.extensions.clear()
        header.extensions.append(nib.nifti1.Nifti1Extension(6, embedded_text.encode()))
        nib.save(nib.Nifti1Image(img.get_fdata(dtype=np.float32), img.affine, header), str(path))
    else:
        data, header = nrrd.read(str(path))
        header["medgen_provenance"] = embedded_text
        nrrd.write(str(path), data, header)
    result = verify_provenance(path)
    assert result.status == "forged" and "does not match the record's content" in result.message
    assert main(["provenance", "verify", str(path)]) == 5


def test_tampered_record_text_is_forged_or_modified(tmp_path, keys) -> None:
    path = write_generated_volume(_volume(), tmp_path / "gen.nii.gz", _meta())
    side_file = sidecar_path(path)
    original = json.loads(side_file.read_text())
    tampered = json.loads(json.dumps(original))
    tampered["record"]["disclosure"] = "Acquired on a 3T scanner."
    side_file.write_text(json.dumps(tampered))
    assert verify_provenance(path).status == "forged"
    summary = {**original, "disclosure": "Acquired on a 3T scanner.", "ai_generated": False}  # unsigned summary fields
    side_file.write_text(json.dumps(summary))
    result = verify_provenance(path)
    assert result.status == "modified" and "ai_generated, disclosure disagree with its record" in result.message
    side_file.write_text(json.dumps(original))
    assert verify_provenance(path).status == "intact"


def test_real_image_with_hand_made_record_is_never_intact_and_trusted(tmp_path, keys, other_key, monkeypatch) -> None:
    """An acquired image given a valid-looking record: unsigned without a key, untrusted with another key."""
    real = write_volume(_volume(7), tmp_path / "acquired.nii.gz")
    installation_key()  # the verifier's own key exists and is trusted
    meta = _meta()
    meta.output = image_output(read_volume(real), real.name, ".nii.gz")  # recomputed hashes and affine
    sidecar_path(real).write_text(json.dumps(sidecar_document(meta.to_dict(), sha256_file(real))))
    result = verify_provenance(real)
    assert result.status == "unsigned" and result.trusted is None
    assert main(["provenance", "verify", str(real)]) == 4

    signed = sign_record(meta.to_dict(), key=other_key)
    sidecar_path(real).write_text(json.dumps(sidecar_document(signed, sha256_file(real))))
    result = verify_provenance(real)
    assert (result.status, result.key_id, result.trusted) == ("intact", other_key.public.key_id, False)
    assert "UNTRUSTED key" in result.message
    assert main(["provenance", "verify", str(real)]) == 6

    # The same with medgen's own writers under the other installation (write_sidecar binds the file bytes).
    monkeypatch.setenv("MEDGEN_KEY_DIR", str(other_key.path.parent))
    table = tmp_path / "table.csv"
    table.write_text("a,b\n1,2\n")
    write_sidecar(table, _meta())
    monkeypatch.setenv("MEDGEN_KEY_DIR", str(keys))
    assert (verify_provenance(table).status, verify_provenance(table).trusted) == ("intact", False)


def test_trust_add_list_remove_changes_trusted(tmp_path, keys, other_key, capsys, monkeypatch) -> None:
    path = tmp_path / "gen.nrrd"
    monkeypatch.setenv("MEDGEN_KEY_DIR", str(other_key.path.parent))
    write_generated_volume(_volume(), path, _meta())
    monkeypatch.setenv("MEDGEN_KEY_DIR", str(keys))
    own = installation_key().public.key_id
    assert main(["provenance", "verify", str(path)]) == 6
    assert capsys.readouterr().out.startswith(f"intact: signed by {other_key.public.key_id} (UNTRUSTED key")

    assert main(["provenance", "trust", "add", str(other_key.public_path), "--name", "lab B"]) == 0
    assert other_key.public.key_id in capsys.readouterr().out
    assert main(["provenance", "verify", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"intact: signed by {other_key.public.key_id} (trusted key)")
    assert main(["provenance", "trust", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0] == f"{own}  this installation" and listed[1].startswith(f"{other_key.public.key_id}  lab B, added ")

    # A key file with the raw base64 form (as printed in records) names the same key.
    (tmp_path / "b64.pub").write_text(other_key.public.b64 + "\n")
    assert trust_add(tmp_path / "b64.pub").key_id == other_key.public.key_id

    assert main(["provenance", "trust", "remove", other_key.public.key_id]) == 0
    assert main(["provenance", "verify", str(path)]) == 6
    capsys.readouterr()
    assert main(["provenance", "trust", "remove", own]) == 2
    assert "always trusted" in capsys.readouterr().err


def test_cli_bad_input_is_one_line_exit_2(tmp_path, keys, capsys) -> None:
    (tmp_path / "garbage.pub").write_bytes(b"\x00\x01not a key at all")
    (tmp_path / "rsa.pub").write_text("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC nobody@host\n")
    cases = [
        (["provenance", "verify", ""], "empty file name"),
        (["provenance", "verify", str(tmp_path / "nope.nii.gz")], "nope.nii.gz: file not found"),
        (["provenance", "trust", "add", str(tmp_path / "garbage.pub")], "garbage.pub: not an Ed25519 public key"),
        (["provenance", "trust", "add", str(tmp_path / "rsa.pub")], "rsa.pub: not a readable public key"),
        (["provenance", "trust", "add", str(tmp_path / "missing.pub")], "missing.pub: key file not found"),
        (["provenance", "trust", "remove", "0123456789abcdef"], "0123456789abcdef: not on the trust list"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and expected in err, (argv, err)
    keys.mkdir()
    (keys / "trusted_keys.json").write_text("{broken")
    with pytest.raises(ProvenanceError, match="trust list is not valid JSON"):
        trusted_keys()
    assert main(["provenance", "trust", "list"]) == 2


def test_cli_key_show_and_help_document_exit_codes(keys, capsys) -> None:
    assert main(["provenance", "key", "show"]) == 0
    out = capsys.readouterr().out
    key = installation_key()
    assert f"key id:      {key.public.key_id}" in out and str(key.public_path) in out
    with pytest.raises(SystemExit):
        main(["provenance", "verify", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for text in ("0 intact (trusted key)", "6 intact but untrusted key", "1 modified", "3 missing", "4 unsigned", "5 forged"):
        assert text in help_text
