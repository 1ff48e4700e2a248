"""Tests for medgen_core.provenance and ``medgen provenance``: real files, embedded + sidecar records, the
geometry binding (full affine) and crash-safe image + sidecar pairs (a writer killed with SIGKILL).

Signing, trust and forgery are tested in ``test_provenance_signing.py``.
"""

from __future__ import annotations

import hashlib
import json
import re

import nibabel as nib
import nrrd
import numpy as np
import pytest

from medgen_core.cli.main import main
from medgen_core.errors import ImageWriteError, ProvenanceError
from medgen_core.io import Volume, read_volume, write_volume
from medgen_core.provenance import (
    ALGORITHMICALLY_ENHANCED,
    DIGITAL_SOURCE_TYPE,
    DISCLOSURE,
    SCHEMA,
    GenerationMetadata,
    pixel_sha256,
    read_provenance,
    sha256_file,
    sidecar_path,
    verify_provenance,
    write_generated_volume,
    write_sidecar,
)


@pytest.fixture
def volume() -> Volume:
    affine = np.array([[0.0, -0.9, 0.3, -20.0], [0.8, 0.0, 0.1, 5.5], [0.0, 0.2, 2.4, 30.0], [0, 0, 0, 1]])
    return Volume(np.random.default_rng(3).normal(size=(5, 6, 4)), affine)


@pytest.fixture
def metadata(tmp_path, volume: Volume) -> GenerationMetadata:
    source = write_volume(volume, tmp_path / "source.nii.gz")
    return GenerationMetadata.create(
        generator_name="rrdb_sr",
        generator_version="1.2.0",
        task="sr_x4",
        input_paths={"source_image": source},
        bundle_id="medgen_rrdb_sr@1.2.0",
        weights_sha256="ab" * 32,
        parameters={"scale": 4, "tile": [64, 64, 64]},
        seed=42,
    )


def test_hashes(tmp_path, volume: Volume) -> None:
    data = b"some bytes" * 1000
    (tmp_path / "f.bin").write_bytes(data)
    assert sha256_file(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()
    dicom_dir = tmp_path / "dcm"
    dicom_dir.mkdir()
    (dicom_dir / "b.dcm").write_bytes(b"BBB")
    (dicom_dir / "a.dcm").write_bytes(b"AA")
    assert sha256_file(dicom_dir) == hashlib.sha256(b"AABBB").hexdigest()
    with pytest.raises(ProvenanceError, match="missing.bin: cannot hash, file not found"):
        sha256_file(tmp_path / "missing.bin")

    arr = volume.array
    expected = hashlib.sha256(b"(5, 6, 4)" + arr.astype("<f4").tobytes()).hexdigest()
    assert pixel_sha256(arr) == expected
    assert pixel_sha256(arr.astype(np.float64)) == expected
    assert pixel_sha256(arr.reshape(6, 5, 4)) != expected  # same bytes, other shape


def test_metadata_create_and_round_trip(metadata: GenerationMetadata, tmp_path) -> None:
    source = tmp_path / "source.nii.gz"
    assert metadata.inputs == [{"role": "source_image", "path": str(source), "sha256": sha256_file(source)}]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", metadata.generated_at)
    assert metadata.software["medgen"] == "0.1.0" and metadata.software["numpy"] == np.__version__
    assert metadata.disclosure == DISCLOSURE and metadata.synthetic is True
    assert metadata.schema == SCHEMA == "medgen-provenance/1.1"
    assert metadata.digital_source_type == ALGORITHMICALLY_ENHANCED  # task sr_x4: an acquired image, enhanced
    assert GenerationMetadata(generator_name="g", generator_version="1", task="image_translation_t1_to_t2w").digital_source_type == DIGITAL_SOURCE_TYPE
    assert re.fullmatch(r"[0-9a-f-]{36}", metadata.run_id)
    record = metadata.to_dict()
    assert GenerationMetadata.from_dict(record) == metadata
    with pytest.raises(ProvenanceError, match="unknown provenance schema 'other/2.0'"):
        GenerationMetadata.from_dict({**record, "schema": "other/2.0"})
    with pytest.raises(ProvenanceError, match=r"unknown keys \['colour'\]"):
        GenerationMetadata.from_dict({**record, "colour": "red"})
    with pytest.raises(ProvenanceError, match="not JSON-serialisable"):
        GenerationMetadata(generator_name="g", generator_version="1", task="t", parameters={"x": object()}).to_dict()
    single = GenerationMetadata.create(generator_name="g", generator_version="1", task="t", input_paths=str(source))
    assert [(i["role"], i["path"]) for i in single.inputs] == [("input", str(source))]
    with pytest.raises(ProvenanceError, match="not found"):
        GenerationMetadata.create(generator_name="g", generator_version="1", task="t", input_paths=[tmp_path / "x"])


def test_nifti_embedded_and_sidecar(tmp_path, volume: Volume, metadata: GenerationMetadata) -> None:
    path = write_generated_volume(volume, tmp_path / "out" / "sr.nii.gz", metadata)
    assert metadata.output == {
        "path": "sr.nii.gz",
        "sha256": pixel_sha256(volume.array),
        "format": "nii.gz",
        "shape": [5, 6, 4],
        "spacing": list(volume.spacing),
        "affine": volume.affine.tolist(),
    }
    actions = metadata.assertions[0]["data"]["actions"]
    assert metadata.assertions[0]["label"] == "c2pa.actions" and actions[0]["action"] == "c2pa.edited"
    assert actions[0]["digitalSourceType"] == ALGORITHMICALLY_ENHANCED and metadata.signature["alg"] == "Ed25519"
    img = nib.load(str(path))
    assert img.header["descrip"].item() == b"SYNTHETIC AI rrdb_sr:1.2.0"
    comments = [e for e in img.header.extensions if e.get_code() == 6]
    assert len(comments) == 1
    embedded = json.loads(comments[0].content.rstrip(b"\x00"))
    assert embedded == metadata.to_dict()

    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar_path(path).name == "sr.nii.gz.generated.json"
    assert sidecar["generator"] == "rrdb_sr:1.2.0" and sidecar["ai_generated"] is True
    assert sidecar["disclosure"] == DISCLOSURE and sidecar["generated_at"] == metadata.generated_at
    assert sidecar["file_sha256"] == sha256_file(path)
    assert sidecar["record"] == embedded

    found = read_provenance(path)
    assert found == {"sidecar": sidecar, "embedded": embedded}
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    assert sorted(p.name for p in path.parent.iterdir()) == ["sr.nii.gz", "sr.nii.gz.generated.json"]


def test_nrrd_embedded_fields(tmp_path, volume: Volume, metadata: GenerationMetadata) -> None:
    path = write_generated_volume(volume, tmp_path / "sr.nrrd", metadata)
    header_text = path.read_bytes().split(b"\n\n")[0].decode("ascii").splitlines()
    assert "content: SYNTHETIC AI-generated" in header_text
    assert "medgen_ai_generated:=true" in header_text
    assert "medgen_generator:=rrdb_sr:1.2.0" in header_text
    assert f"medgen_disclosure:={DISCLOSURE}" in header_text
    assert f"medgen_pixel_sha256:={pixel_sha256(volume.array)}" in header_text
    header = nrrd.read_header(str(path))
    assert json.loads(header["medgen_provenance"]) == metadata.to_dict()
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine  # the NRRD space fields come from the same affine
    assert metadata.output["space"] == "left-posterior-superior"
    np.testing.assert_allclose(metadata.output["space_directions"], lps[:3, :3].T)
    np.testing.assert_allclose(metadata.output["space_origin"], lps[:3, 3])
    np.testing.assert_allclose(header["space directions"], metadata.output["space_directions"], atol=1e-12)
    assert read_provenance(path)["embedded"] == metadata.to_dict()
    assert verify_provenance(path).status == "intact"


@pytest.mark.parametrize("name", ["sr.nii.gz", "sr.nrrd"])
def test_verify_intact_modified_missing(tmp_path, volume: Volume, metadata: GenerationMetadata, name: str) -> None:
    path = write_generated_volume(volume, tmp_path / name, metadata)
    result = verify_provenance(path)
    assert result.status == "intact", result.message
    assert result.details["pixel_sha256"] == metadata.output["sha256"]
    assert result.details["sources"] == ["embedded", "sidecar"]

    # Change one voxel and re-save with the same library, keeping the header (and its record).
    if name.endswith(".nii.gz"):
        img = nib.load(str(path))
        data = img.get_fdata(dtype=np.float32)
        data[2, 3, 1] += 0.5
        nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    else:
        data, header = nrrd.read(str(path))
        data[2, 3, 1] += 0.5
        nrrd.write(str(path), data, header)
    assert read_provenance(path)["embedded"] == metadata.to_dict()  # record survived the re-save
    result = verify_provenance(path)
    assert result.status == "modified"
    assert "pixel sha256 differs" in result.message
    assert result.details["file_sha256_matches_sidecar"] is False

    plain = write_volume(volume, tmp_path / f"plain_{name}")
    result = verify_provenance(plain)
    assert result.status == "missing" and f"plain_{name}.generated.json" in result.message


def test_sidecar_only_and_disagreement(tmp_path, volume: Volume, metadata: GenerationMetadata) -> None:
    path = write_generated_volume(volume, tmp_path / "sr.nii.gz", metadata)
    side = sidecar_path(path)
    original = side.read_text()
    # Another generated file's (validly signed) sidecar next to this image: the records disagree.
    write_generated_volume(volume, tmp_path / "other.nii.gz", metadata)
    side.write_text(sidecar_path(tmp_path / "other.nii.gz").read_text())
    result = verify_provenance(path)
    assert result.status == "modified" and "sidecar and embedded records disagree (output, signature)" in result.message
    side.write_text(original)

    # A tool that drops header extensions: pixels unchanged, sidecar still binds them.
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(img.get_fdata(dtype=np.float32), img.affine), str(path))
    write_generated_volume(volume, tmp_path / "again.nii.gz", metadata)
    (tmp_path / "again.nii.gz.generated.json").replace(side)
    result = verify_provenance(path)
    assert result.status == "intact"
    assert result.details["sources"] == ["sidecar"]
    assert "no embedded record" in result.message and "pixels and geometry are unchanged" in result.message

    side.write_text("{not json")
    result = verify_provenance(path)
    assert result.status == "modified" and "not valid JSON" in result.message


def test_sidecar_failure_removes_image(tmp_path, volume: Volume, metadata: GenerationMetadata) -> None:
    target = tmp_path / "sr.nii.gz"
    sidecar_path(target).mkdir()  # the sidecar cannot replace a directory
    with pytest.raises(ProvenanceError, match="sr.nii.gz: cannot write the provenance sidecar .*: it is a directory; nothing written"):
        write_generated_volume(volume, target, metadata)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.nii.gz", "sr.nii.gz.generated.json"]
    assert not any(sidecar_path(target).iterdir())


def test_never_overwrites_inputs(tmp_path, volume: Volume, metadata: GenerationMetadata) -> None:
    source = tmp_path / "source.nii.gz"
    before = source.read_bytes()
    with pytest.raises(ImageWriteError, match="refusing to overwrite an input"):
        write_generated_volume(volume, source, metadata)
    with pytest.raises(ImageWriteError, match="unsupported output extension"):
        write_generated_volume(volume, tmp_path / "x.mha", metadata)
    assert source.read_bytes() == before
    assert not sidecar_path(source).exists()


def test_non_image_sidecar(tmp_path, metadata: GenerationMetadata) -> None:
    table = tmp_path / "metrics.csv"
    table.write_text("case,psnr\n1,30.5\n")
    side = write_sidecar(table, metadata)
    assert side.name == "metrics.csv.generated.json"
    record = json.loads(side.read_text())["record"]
    assert record["output"]["sha256"] == sha256_file(table) and record["output"]["format"] == "csv"
    assert verify_provenance(table).status == "intact"
    table.write_text("case,psnr\n1,35.5\n")
    result = verify_provenance(table)
    assert result.status == "modified" and "file sha256 differs" in result.message


def test_cli_verify_and_show(tmp_path, volume: Volume, metadata: GenerationMetadata, capsys) -> None:
    path = write_generated_volume(volume, tmp_path / "sr.nrrd", metadata)
    assert main(["provenance", "verify", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"intact: signed by {metadata.signature['key_id']} (trusted key)")

    assert main(["provenance", "show", str(path)]) == 0
    shown = capsys.readouterr().out
    for text in ("rrdb_sr", "1.2.0", "sr_x4", metadata.generated_at, "source_image", DISCLOSURE, "sidecar, embedded"):
        assert text in shown

    assert main(["provenance", "show", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["embedded"] == metadata.to_dict()

    data, header = nrrd.read(str(path))
    data[0, 0, 0] = 99.0
    nrrd.write(str(path), data, header)
    assert main(["provenance", "verify", str(path)]) == 1
    assert capsys.readouterr().out.startswith("modified: pixel sha256 differs")
    assert main(["provenance", "verify", "--json", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "modified"

    plain = write_volume(volume, tmp_path / "plain.nii.gz")
    assert main(["provenance", "verify", str(plain)]) == 3
    assert capsys.readouterr().out.startswith("missing: ")
    assert main(["provenance", "show", str(plain)]) == 3
    assert main(["provenance", "verify", str(tmp_path / "nope.nii.gz")]) == 2
    assert "nope.nii.gz: file not found" in capsys.readouterr().err


def test_derived_label_maps_are_marked_as_ai_derived_not_synthetic(tmp_path) -> None:
    """A segmentation of a real image says so in the record, the NIfTI descrip and the NRRD content field."""
    import nibabel as nib

    from medgen_core.io import Volume
    from medgen_core.provenance import GenerationMetadata, read_provenance, verify_provenance, write_generated_volume
    from medgen_core.provenance.record import DERIVED_LABEL_DISCLOSURE

    labels = Volume(array=np.random.default_rng(0).integers(0, 4, (6, 5, 3)).astype(np.float32), affine=np.eye(4))
    meta = GenerationMetadata.create(generator_name="seg", generator_version="1.0", task="segmentation", disclosure=DERIVED_LABEL_DISCLOSURE)
    nii = write_generated_volume(labels, tmp_path / "seg.nii.gz", meta)
    nrrd = write_generated_volume(labels, tmp_path / "seg.nrrd", meta)
    assert nib.load(str(nii)).header["descrip"].item() == b"AI-DERIVED seg:1.0"
    assert "content: AI-DERIVED label map" in (tmp_path / "seg.nrrd").read_bytes().split(b"\n\n")[0].decode()
    for path in (nii, nrrd):
        assert read_provenance(path)["embedded"]["disclosure"] == DERIVED_LABEL_DISCLOSURE
        assert verify_provenance(path).status == "intact"


# -- geometry binding: the record holds the full affine ----------------------------------------------------------
def _rotation(z_deg: float, x_deg: float) -> np.ndarray:
    cz, sz, cx, sx = np.cos(np.radians(z_deg)), np.sin(np.radians(z_deg)), np.cos(np.radians(x_deg)), np.sin(np.radians(x_deg))
    return np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])


# Oblique, equal in-plane spacing (0.9 mm): swapping the x and y axes keeps the spacing, so only the affine tells.
OBLIQUE = np.eye(4)
OBLIQUE[:3, :3] = _rotation(30, 10) @ np.diag([0.9, 0.9, 2.4])
OBLIQUE[:3, 3] = [-20.0, 5.5, 30.0]
GEOMETRY_CHANGES = {
    "origin_moved_50mm": lambda a: a + np.pad(np.array([[50.0], [0], [0]]), ((0, 1), (3, 0))),
    "x_axis_flipped": lambda a: np.diag([-1.0, 1, 1, 1]) @ a,  # world left-right swap, pixels untouched
    "axes_permuted": lambda a: a[:, [1, 0, 2, 3]],  # voxel axes i and j swapped in the header
    "spacing_changed": lambda a: a @ np.diag([1.0, 1.0, 1.25, 1.0]),
}


def _rewrite_geometry(path, affine: np.ndarray, keep_embedded: bool) -> None:
    """Re-save ``path`` with the same voxels and a new affine, as nibabel/pynrrd users would."""
    if path.name.endswith(".nii.gz"):
        img = nib.load(str(path))
        data = img.get_fdata(dtype=np.float32)
        header = img.header if keep_embedded else None  # a header without the ecode-6 record
        nib.save(nib.Nifti1Image(data, affine, header), str(path))
    else:
        data, header = nrrd.read(str(path))
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        header["space directions"], header["space origin"] = lps[:3, :3].T, lps[:3, 3]
        if not keep_embedded:
            header = {k: v for k, v in header.items() if not k.startswith("medgen_")}
        nrrd.write(str(path), data, header)


@pytest.mark.parametrize("change", sorted(GEOMETRY_CHANGES))
@pytest.mark.parametrize("copy", ["sidecar_only", "embedded_only"])
@pytest.mark.parametrize("name", ["sr.nii.gz", "sr.nrrd"])
def test_changed_geometry_is_modified(tmp_path, name: str, copy: str, change: str) -> None:
    volume = Volume(np.random.default_rng(5).normal(size=(5, 6, 4)), OBLIQUE)
    meta = GenerationMetadata(generator_name="g", generator_version="1", task="image_translation")
    path = write_generated_volume(volume, tmp_path / name, meta)
    np.testing.assert_allclose(meta.output["affine"], OBLIQUE)
    new_affine = GEOMETRY_CHANGES[change](OBLIQUE)
    _rewrite_geometry(path, new_affine, keep_embedded=copy == "embedded_only")
    if copy == "embedded_only":
        sidecar_path(path).unlink()
    back = read_volume(path)
    np.testing.assert_allclose(back.affine, new_affine, atol=1e-5)  # the change really is in the file
    assert pixel_sha256(back.array) == meta.output["sha256"]  # ... and the voxels are untouched
    result = verify_provenance(path)
    assert result.details["sources"] == (["embedded"] if copy == "embedded_only" else ["sidecar"])
    assert result.status == "modified", result.message
    assert "differs from the record" in result.message
    assert main(["provenance", "verify", str(path)]) == 1


def test_geometry_within_tolerance_and_legacy_records(tmp_path) -> None:
    """A re-save that moves the grid by < 1e-4 mm stays intact; a schema-1.0 record (no affine, no signature)
    still reads, verifies as unsigned, and as modified when its pixels change."""
    volume = Volume(np.random.default_rng(6).normal(size=(5, 6, 4)), OBLIQUE)
    path = write_generated_volume(volume, tmp_path / "sr.nii.gz", GenerationMetadata(generator_name="g", generator_version="1", task="t"))
    _rewrite_geometry(path, OBLIQUE + np.pad(np.full((3, 1), 3e-5), ((0, 1), (3, 0))), keep_embedded=True)
    assert verify_provenance(path).status == "intact"

    legacy = GenerationMetadata(generator_name="old", generator_version="0.9", task="sr_x2").to_dict()
    for key in ("assertions", "signature"):
        legacy.pop(key)
    legacy.update(schema="medgen-provenance/1.0", output={"path": "old.nii.gz", "sha256": pixel_sha256(volume.array),
                                                          "format": "nii.gz", "shape": [5, 6, 4], "spacing": list(volume.spacing)})
    assert GenerationMetadata.from_dict(legacy).signature is None
    text = json.dumps(legacy, sort_keys=True, separators=(",", ":"))
    old = write_volume(volume, tmp_path / "old.nii.gz", nifti_extensions=[nib.nifti1.Nifti1Extension(6, text.encode())])
    sidecar_path(old).write_text(json.dumps({"generated_at": legacy["generated_at"], "generator": "old:0.9", "ai_generated": True,
                                             "disclosure": legacy["disclosure"], "file_sha256": sha256_file(old), "record": legacy}))
    result = verify_provenance(old)
    assert result.status == "unsigned" and result.key_id is None, result.message
    assert "no affine (schema 1.0)" in result.message
    assert main(["provenance", "verify", str(old)]) == 4
    img = nib.load(str(old))
    nib.save(nib.Nifti1Image(img.get_fdata(dtype=np.float32) + 1, img.affine, img.header), str(old))
    assert verify_provenance(old).status == "modified"


# -- crash-safe pairs: a writer killed with SIGKILL leaves the old pair or the new one -----------------------------
_KILLED_WRITER = """
import sys
import numpy as np
from medgen_core.io import Volume
from medgen_core.provenance import GenerationMetadata, write_generated_file, write_generated_volume
meta = GenerationMetadata(generator_name="g", generator_version="2", task="synthesis")
if sys.argv[1].endswith(".csv"):
    write_generated_file(sys.argv[1], lambda tmp: tmp.write_text("new,table\\n"), meta)
else:
    write_generated_volume(Volume(np.full((5, 6, 4), 7.0), np.eye(4)), sys.argv[1], meta)
"""


def _run_and_kill(target, stage: str, marker) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "MEDGEN_TEST_PAIR_PAUSE": f"{stage}:{marker}"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], env=env)
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"writer did not reach stage {stage} (exit {proc.poll()})"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


@pytest.mark.parametrize("stage,new_pair", [("staged", False), ("journaled", True), ("between-renames", True), ("renamed", True)])
def test_killed_writer_leaves_old_or_new_pair(tmp_path, stage: str, new_pair: bool) -> None:
    from medgen_core.provenance.pairs import journal_path

    out = tmp_path / "out"
    old = Volume(np.full((5, 6, 4), 3.0), np.eye(4))
    path = write_generated_volume(old, out / "gen.nii.gz", GenerationMetadata(generator_name="g", generator_version="1", task="synthesis"))
    _run_and_kill(path, stage, tmp_path / "marker")
    left = sorted(p.name for p in out.iterdir())
    assert len(left) > 2  # the killed writer left temporary files (and, after staging, a journal)
    assert (journal_path(path).name in left) == (stage != "staged")

    result = verify_provenance(path)  # recovers first: rolls the journal forward, removes dead temporaries
    assert result.status == "intact" and result.trusted, result.message
    expected = pixel_sha256(np.full((5, 6, 4), 7.0 if new_pair else 3.0))
    assert result.details["pixel_sha256"] == expected
    assert json.loads(sidecar_path(path).read_text())["record"]["generator_version"] == ("2" if new_pair else "1")
    assert sorted(p.name for p in out.iterdir()) == ["gen.nii.gz", "gen.nii.gz.generated.json"]


def test_killed_file_writer_is_recovered_on_next_write(tmp_path) -> None:
    from medgen_core.provenance import write_generated_file

    path = tmp_path / "table.csv"
    write_generated_file(path, lambda tmp: tmp.write_text("old,table\n"), GenerationMetadata(generator_name="g", generator_version="1", task="t"))
    _run_and_kill(path, "between-renames", tmp_path / "marker")
    assert json.loads(sidecar_path(path).read_text())["record"]["generator_version"] == "1"  # the pair disagrees now ...
    assert path.read_text() == "new,table\n"
    write_generated_file(path, lambda tmp: tmp.write_text("third,table\n"), GenerationMetadata(generator_name="g", generator_version="3", task="t"))
    assert verify_provenance(path).status == "intact"  # ... until the next access rolls it forward, then writes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker", "table.csv", "table.csv.generated.json"]

    from medgen_core.provenance.pairs import journal_path

    # A journal this module did not write (renaming another file over the table) is refused, nothing renamed.
    (tmp_path / "notes.txt").write_text("keep me")
    journal_path(path).write_text(json.dumps({"schema": "medgen-pair-journal/1", "renames": [["notes.txt", "table.csv"]]}))
    result = verify_provenance(path)
    assert result.status == "modified" and "not a commit journal of table.csv" in result.message
    with pytest.raises(ProvenanceError, match="not a commit journal of table.csv"):
        write_sidecar(path, GenerationMetadata(generator_name="g", generator_version="4", task="t"))
    assert (tmp_path / "notes.txt").read_text() == "keep me" and path.read_text() == "third,table\n"
