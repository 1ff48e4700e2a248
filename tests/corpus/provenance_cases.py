"""Provenance: ``medgen provenance verify`` on generated files that were moved, flipped, edited, forged or stripped.

Issue 14, point 1: geometry is bound (origin, direction, spacing) in NIfTI and NRRD, sidecar and embedded
record; a record forged by recomputing hashes is forged or unsigned, never intact and trusted; stripped
metadata is missing. Every file is first written by ``medgen upscale`` itself.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from .common import generated
from .files import nifti
from .model import Action, Case, Status
from .tamper import edit_nifti, edit_nrrd_header, edit_sidecar, forge_records, nrrd_vector_text, nrrd_vectors, sidecar_of

__all__ = ["CASES"]

NII, NRRD = "generated.nii.gz", "generated.nrrd"


def _moved(affine: np.ndarray) -> np.ndarray:
    affine[0, 3] += 50.0
    return affine


def _flipped(affine: np.ndarray) -> np.ndarray:
    affine[:3, 0] *= -1  # a left-right swap of the patient
    return affine


def _permuted(affine: np.ndarray) -> np.ndarray:
    affine[:3, [0, 1]] = affine[:3, [1, 0]]  # x and y exchanged (same spacing in-plane)
    return affine


def _respaced(affine: np.ndarray) -> np.ndarray:
    affine[:3, 2] *= 1.5
    return affine


def _nrrd_edit(change):
    def edit(fields: dict[str, str]) -> None:
        vectors = nrrd_vectors(fields["space directions"])
        origin = nrrd_vectors(fields["space origin"])[0]
        change(vectors, origin)
        fields["space directions"] = nrrd_vector_text(vectors)
        fields["space origin"] = nrrd_vector_text([origin])

    return edit


def _nii_case(case_id: str, doc: str, edit, statuses: tuple[str, ...], trusted: bool | None = None) -> Case:
    def build(folder: Path) -> Action:
        generated(NII)
        edit(Path(NII))
        return None

    return Case(case_id, "provenance", doc, build, Status(NII, statuses, trusted))


def _nrrd_case(case_id: str, doc: str, edit, statuses: tuple[str, ...], trusted: bool | None = None) -> Case:
    def build(folder: Path) -> Action:
        generated(NRRD)
        edit(Path(NRRD))
        return None

    return Case(case_id, "provenance", doc, build, Status(NRRD, statuses, trusted))


def _bump_voxel(array: np.ndarray) -> np.ndarray:
    array[array.shape[0] // 2, array.shape[1] // 2, array.shape[2] // 2] += 1.0
    return array


def _tamper_record(record: dict) -> dict:
    record["generator_version"] = "9.9.9"
    return record


def _tampered_record(path: Path) -> None:
    edit_nifti(path, record=_tamper_record)
    edit_sidecar(path, lambda doc: _tamper_record(doc["record"]))


def _forged(drop_signature: bool):
    def edit(path: Path) -> None:
        edit_nifti(path, data=_bump_voxel)
        forge_records(path, drop_signature)

    return edit


def _acquired_with_forged_sidecar(path: Path) -> None:
    """A real (acquired) image given the sidecar of a generated one, every hash recomputed, no signature."""
    generated("other.nii.gz")
    nifti(path.name)
    shutil.copy(sidecar_of("other.nii.gz"), sidecar_of(path))
    edit_sidecar(path, lambda doc: doc["record"]["output"].update(path=path.name))
    forge_records(path, drop_signature=True)
    for name in ("other.nii.gz", sidecar_of("other.nii.gz"), "source.nii.gz"):
        Path(name).unlink()


def _foreign_key(folder: Path) -> Action:
    """Stamped by another installation (its own key dir), verified here where that key is not trusted."""
    saved = os.environ["MEDGEN_KEY_DIR"]
    os.environ["MEDGEN_KEY_DIR"] = str(folder / "attacker_keys")
    try:
        generated(NII)
    finally:
        os.environ["MEDGEN_KEY_DIR"] = saved
    return None


def _strip_nii(path: Path) -> None:
    edit_nifti(path, strip=True)
    sidecar_of(path).unlink()


def _strip_nrrd(path: Path) -> None:
    def drop(fields: dict[str, str]) -> None:
        for key in [k for k in fields if k.startswith("medgen_") or k == "content"]:
            del fields[key]

    edit_nrrd_header(path, drop)
    sidecar_of(path).unlink()


def _swap_sidecar(path: Path) -> None:
    nifti("other_source.nii.gz", np.full((24, 24, 6), 7.0, np.float32) + np.arange(6, dtype=np.float32))
    generated("other.nii.gz", "other_source.nii.gz")
    edit_nifti(path, strip=True)
    shutil.copy(sidecar_of("other.nii.gz"), sidecar_of(path))


def _renamed(path: Path) -> None:
    os.replace(path, "renamed.nii.gz")
    os.replace(sidecar_of(path), sidecar_of("renamed.nii.gz"))


def _renamed_case() -> Case:
    def build(folder: Path) -> Action:
        generated(NII)
        _renamed(Path(NII))
        return None

    return Case("prov_renamed_file", "provenance", "a generated file renamed together with its sidecar: intact (renaming is not editing)",
                build, Status("renamed.nii.gz", ("intact",), True))


CASES: list[Case] = [
    _nii_case("prov_control_nifti", "a generated NIfTI as written: intact, signed by this installation", lambda p: None, ("intact",), True),
    _nrrd_case("prov_control_nrrd", "a generated NRRD as written: intact, signed by this installation", lambda p: None, ("intact",), True),
    _nii_case("prov_moved_origin_nifti", "NIfTI origin moved by 50 mm (pixels untouched): modified",
              lambda p: edit_nifti(p, affine=_moved), ("modified",)),
    _nii_case("prov_flipped_axis_nifti", "NIfTI x axis flipped (a left-right swap): modified", lambda p: edit_nifti(p, affine=_flipped),
              ("modified",)),
    _nii_case("prov_permuted_axes_nifti", "NIfTI x and y axes exchanged in the affine: modified", lambda p: edit_nifti(p, affine=_permuted),
              ("modified",)),
    _nii_case("prov_changed_spacing_nifti", "NIfTI slice spacing 3 -> 4.5 mm: modified", lambda p: edit_nifti(p, affine=_respaced),
              ("modified",)),
    _nrrd_case("prov_moved_origin_nrrd", "NRRD space origin moved by 50 mm: modified",
               lambda p: edit_nrrd_header(p, _nrrd_edit(lambda v, o: o.__setitem__(0, o[0] + 50))), ("modified",)),
    _nrrd_case("prov_flipped_axis_nrrd", "NRRD first space direction negated: modified",
               lambda p: edit_nrrd_header(p, _nrrd_edit(lambda v, o: v.__setitem__(0, [-x for x in v[0]]))), ("modified",)),
    _nrrd_case("prov_changed_spacing_nrrd", "NRRD third space direction scaled by 1.5: modified",
               lambda p: edit_nrrd_header(p, _nrrd_edit(lambda v, o: v.__setitem__(2, [1.5 * x for x in v[2]]))), ("modified",)),
    _nii_case("prov_changed_voxel_nifti", "one voxel of a generated NIfTI changed by 1: modified", lambda p: edit_nifti(p, data=_bump_voxel),
              ("modified",)),
    _nii_case("prov_tampered_record", "generator_version edited in both records, old signature kept: forged or modified",
              _tampered_record, ("forged", "modified")),
    _nii_case("prov_forged_recomputed_hashes", "voxel edited, every hash recomputed, old signature kept: forged",
              _forged(drop_signature=False), ("forged", "unsigned")),
    _nii_case("prov_forged_signature_dropped", "voxel edited, every hash recomputed, signature removed: unsigned",
              _forged(drop_signature=True), ("unsigned", "forged")),
    _nii_case("prov_acquired_with_forged_sidecar", "a real image given a generated file's sidecar with its hashes recomputed: unsigned",
              _acquired_with_forged_sidecar, ("unsigned", "forged")),
    Case("prov_foreign_key", "provenance", "stamped by another installation's key: intact but not trusted", _foreign_key,
         Status(NII, ("intact",), False)),
    _nii_case("prov_stripped_nifti", "header mark and sidecar removed: missing", _strip_nii, ("missing",)),
    _nrrd_case("prov_stripped_nrrd", "medgen NRRD fields and sidecar removed: missing", _strip_nrrd, ("missing",)),
    _nii_case("prov_sidecar_deleted", "sidecar deleted, embedded record kept: intact (embedded record is signed)",
              lambda p: sidecar_of(p).unlink(), ("intact",), True),
    _nii_case("prov_embedded_stripped", "embedded record stripped, sidecar kept: intact (the sidecar is signed)",
              lambda p: edit_nifti(p, strip=True), ("intact",), True),
    _nii_case("prov_sidecar_not_json", "sidecar overwritten with garbage: modified", lambda p: sidecar_of(p).write_text("{not json"),
              ("modified",)),
    _nii_case("prov_sidecar_from_other_file", "embedded record stripped and the sidecar of another generated file put in place: modified",
              _swap_sidecar, ("modified",)),
    _renamed_case(),
]
