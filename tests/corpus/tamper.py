"""Edits an attacker or a careless tool makes to a generated file: geometry, voxels, records, stripped metadata.

Each edit keeps everything it does not mean to change: the NIfTI header extension and data stay as they
were unless edited, the NRRD header is edited as text, the sidecar is left alone unless the edit is a forgery
(then the attacker recomputes every hash they can: pixel sha256, file sha256).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = ["edit_nifti", "edit_nrrd_header", "edit_sidecar", "forge_records", "sidecar_of"]

PROVENANCE_ECODE = 6
NRRD_RECORD_FIELD = "medgen_provenance"


def sidecar_of(path: str | Path) -> Path:
    return Path(f"{path}.generated.json")


def edit_nifti(path: str | Path, affine: Callable[[np.ndarray], np.ndarray] | None = None,
               data: Callable[[np.ndarray], np.ndarray] | None = None,
               record: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None, strip: bool = False) -> Path:
    """Rewrite a NIfTI file with a changed affine, changed voxels, an edited embedded record (``record`` returns
    the new record, or None to drop it) or, with ``strip``, without any MedGen mark (extension and descrip)."""
    path = Path(path)
    img = nib.load(str(path))
    array = np.array(img.dataobj)
    header = img.header.copy()
    new_affine = img.affine if affine is None else affine(img.affine.copy())
    out = nib.Nifti1Image(data(array) if data is not None else array, new_affine, header)
    out.set_sform(new_affine, code=int(header["sform_code"]) or 2)
    out.set_qform(new_affine, code=int(header["qform_code"]) or 1)
    exts = out.header.extensions
    kept = [e for e in exts if e.get_code() != PROVENANCE_ECODE]
    found = [e for e in exts if e.get_code() == PROVENANCE_ECODE]
    if strip:
        out.header["descrip"] = b""
        found = []
    elif record is not None:
        edited = [record(json.loads(e.get_content().rstrip(b"\x00").decode())) for e in found]
        found = [nib.nifti1.Nifti1Extension(PROVENANCE_ECODE, json.dumps(r, sort_keys=True, separators=(",", ":")).encode())
                 for r in edited if r is not None]
    exts.clear()
    exts.extend(kept + found)
    nib.save(out, str(path))
    if not strip and record is None and not any(e.get_code() == PROVENANCE_ECODE for e in nib.load(str(path)).header.extensions):
        raise RuntimeError(f"{path}: the embedded record was lost while editing; the case would not test what it says")
    return path


def _split_nrrd(path: Path) -> tuple[list[str], bytes]:
    raw = path.read_bytes()
    end = raw.index(b"\n\n")
    return raw[:end].decode("ascii").split("\n"), raw[end + 2:]


def edit_nrrd_header(path: str | Path, change: Callable[[dict[str, str]], None]) -> Path:
    """Edit an attached NRRD's header fields as text (``key: value`` and ``key:=value``); data bytes unchanged.

    ``change`` receives ``{key: value}`` (``:=`` keys end with ``=``) and edits it in place; removed keys are dropped.
    """
    path = Path(path)
    lines, data = _split_nrrd(path)
    fields: dict[str, str] = {}
    order = []
    for line in lines[1:]:
        if line.startswith("#"):
            continue
        key, sep, value = re.match(r"([^:]+)(:=|: )(.*)", line).groups()
        name = key + ("=" if sep == ":=" else "")
        fields[name] = value
        order.append(name)
    change(fields)
    names = [k for k in order if k in fields] + [k for k in fields if k not in order]
    text = [lines[0]] + [f"{k[:-1]}:={fields[k]}" if k.endswith("=") else f"{k}: {fields[k]}" for k in names]
    path.write_bytes(("\n".join(text) + "\n\n").encode("ascii") + data)
    return path


def nrrd_vectors(text: str) -> list[list[float]]:
    return [[float(v) for v in group.split(",")] for group in re.findall(r"\(([^)]*)\)", text)]


def nrrd_vector_text(vectors: list[list[float]]) -> str:
    return " ".join("(" + ",".join(repr(float(v)) for v in vec) + ")" for vec in vectors)


def edit_sidecar(path: str | Path, change: Callable[[dict[str, Any]], None]) -> Path:
    side = sidecar_of(path)
    doc = json.loads(side.read_text())
    change(doc)
    side.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return side


def nrrd_pixels(path: Path) -> np.ndarray:
    _, data = _split_nrrd(path)
    return np.frombuffer(gzip.decompress(data), "<f4")


def forge_records(path: str | Path, drop_signature: bool) -> None:
    """Recompute every hash in the embedded record and the sidecar of ``path`` for its current content
    (pixel sha256 with medgen's own function, shape, spacing and affine, file sha256), keeping or dropping
    the old signature."""
    from medgen_core.io import read_volume
    from medgen_core.provenance import pixel_sha256

    path = Path(path)
    volume = read_volume(path, strict=False)
    digest = pixel_sha256(volume.array)
    geometry = {"shape": list(volume.shape), "spacing": [float(s) for s in volume.spacing], "affine": volume.affine.tolist()}

    def fix(record: dict[str, Any]) -> dict[str, Any]:
        record["output"]["sha256"] = digest
        record["output"].update({k: v for k, v in geometry.items() if k in record["output"]})
        if drop_signature:
            record.pop("signature", None)
        return record

    if path.name.endswith((".nii", ".nii.gz")):
        edit_nifti(path, record=fix)
    else:
        def change(fields: dict[str, str]) -> None:
            fields[f"{NRRD_RECORD_FIELD}="] = json.dumps(fix(json.loads(fields[f"{NRRD_RECORD_FIELD}="])), sort_keys=True,
                                                         separators=(",", ":"))
            if "medgen_pixel_sha256=" in fields:
                fields["medgen_pixel_sha256="] = digest

        edit_nrrd_header(path, change)
    file_digest = hashlib.sha256(path.read_bytes()).hexdigest()

    def change_sidecar(doc: dict[str, Any]) -> None:
        fix(doc["record"])
        doc["file_sha256"] = file_digest

    edit_sidecar(path, change_sidecar)
