"""Volumes between the MRML scene and files: export inputs, import outputs with provenance, save/load NRRD.

Only MRML classes and storage nodes are used and the scene is passed in, so this runs with
``slicer-core`` outside the Slicer application. Output geometry always comes from the file (storage
node read), never from the input node.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from MedGenLib import provenance_attributes as pa

__all__ = [
    "box_corners",
    "export_volume",
    "get_ijk_to_ras",
    "import_output",
    "load_output_nrrd",
    "make_workspace",
    "read_record",
    "read_sidecar",
    "remove_node",
    "remove_workspace",
    "save_output_nrrd",
    "set_ijk_to_ras",
    "sidecar_path",
    "unique_name",
    "upscaled_ijk_to_ras",
    "validate_output",
]

logger = logging.getLogger(__name__)
SIDECAR_SUFFIX = ".generated.json"


# -- geometry ------------------------------------------------------------------------------------
def get_ijk_to_ras(node: Any) -> np.ndarray:
    """The node's 4x4 IJK-to-RAS matrix (IJK = array index ``(i, j, k)`` = MedGen's voxel ``(x, y, z)``)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def set_ijk_to_ras(node: Any, ijk_to_ras: np.ndarray) -> None:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r, c in product(range(4), range(4)):
        matrix.SetElement(r, c, float(ijk_to_ras[r][c]))
    node.SetIJKToRASMatrix(matrix)


def dimensions(node: Any) -> tuple[int, int, int]:
    image = node.GetImageData()
    return tuple(int(d) for d in image.GetDimensions()) if image is not None else (0, 0, 0)  # type: ignore[return-value]


def upscaled_ijk_to_ras(ijk_to_ras: np.ndarray, factors: tuple[float, float, float]) -> np.ndarray:
    """IJK-to-RAS of a grid upscaled by ``factors`` that covers the same box (MedGen's ``upscaled_affine``)."""
    f = np.asarray(factors, dtype=np.float64)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(1.0 / f)
    index_map[:3, 3] = 0.5 / f - 0.5
    return np.asarray(ijk_to_ras, dtype=np.float64) @ index_map


def box_corners(ijk_to_ras: np.ndarray, dims: tuple[int, int, int], centres: bool = False) -> np.ndarray:
    """RAS corners (8, 3) of the voxel grid's outer box (or of its corner voxel centres), in index-corner order."""
    lo = 0.0 if centres else -0.5
    pts = [[lo if c == 0 else n - 1 - lo for c, n in zip(corner, dims)] for corner in product((0, 1), repeat=3)]
    pts = np.c_[np.asarray(pts, dtype=np.float64), np.ones(8)]
    return (np.asarray(ijk_to_ras) @ pts.T).T[:, :3]


# -- temporary files -----------------------------------------------------------------------------
def make_workspace(root: str | os.PathLike[str] | None = None) -> Path:
    """A fresh private folder for one run's files (under ``root``, e.g. Slicer's temporary path)."""
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="MedGen-", dir=None if root is None else str(root)))


def remove_workspace(path: str | os.PathLike[str] | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


# -- export / import -----------------------------------------------------------------------------
def _storage_node(scene: Any, class_name: str) -> Any:
    node = scene.CreateNodeByClass(class_name)
    node.UnRegister(None)  # CreateNodeByClass returns an owned reference; Python keeps its own
    return node


def export_volume(scene: Any, node: Any, path: str | os.PathLike[str]) -> Path:
    """Write a scalar volume node to an uncompressed NRRD with a temporary storage node (not added to the scene)."""
    path = Path(path)
    if node is None or node.GetImageData() is None:
        raise ValueError("the input volume has no image data")
    storage = _storage_node(scene, "vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    storage.UseCompressionOff()
    if not storage.WriteData(node) or not path.is_file():
        raise OSError(f"could not write '{node.GetName()}' to {path}")
    return path


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The provenance sidecar the ``medgen`` CLI writes next to an output: ``<path>.generated.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar JSON of an output file, or ``None`` if there is none.

    A sidecar whose ``file_sha256`` does not match the file (left over from another file) is ignored.

    Raises:
        ValueError: the sidecar exists but is not a JSON object.
    """
    path = Path(path)
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        document = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{side.name}: provenance sidecar is not valid JSON ({err})") from err
    if not isinstance(document, dict):
        raise ValueError(f"{side.name}: provenance sidecar must hold a JSON object, got {type(document).__name__}")
    expected = document.get("file_sha256")
    if expected and path.is_file() and _sha256_file(path) != expected:
        logger.warning("%s does not match %s (file_sha256 differs); ignoring it", side.name, path.name)
        return None
    return document


def read_record(path: Path, header_attributes: dict[str, str]) -> dict[str, Any] | None:
    """The provenance record of an output file written by the ``medgen`` CLI.

    From the sidecar (``<file>.generated.json``, key ``record``), else from the NRRD header field
    ``medgen_provenance`` (``header_attributes``: the ``medgen_*`` fields the NRRD storage node read).
    Only files are read: nothing of MedGen is imported.
    """
    record = pa.record_from_provenance({"sidecar": read_sidecar(path)})
    if record is None and header_attributes.get(pa.NRRD_PROVENANCE_FIELD):
        with contextlib.suppress(ValueError):
            record = json.loads(header_attributes[pa.NRRD_PROVENANCE_FIELD])
    return record if isinstance(record, dict) else None


def _read_into_new_node(scene: Any, path: Path) -> Any:
    """A scalar volume node (not yet in the scene) read from ``path`` by a storage node."""
    node = scene.CreateNodeByClass("vtkMRMLScalarVolumeNode")
    node.UnRegister(None)
    is_nrrd = path.name.lower().endswith((".nrrd", ".nhdr"))
    storage = _storage_node(scene, "vtkMRMLNRRDStorageNode" if is_nrrd else "vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise OSError(f"could not read the generated volume {path}")
    return node


def _header_attributes(node: Any) -> dict[str, str]:
    return {name: node.GetAttribute(name) for name in node.GetAttributeNames() or () if name.startswith("medgen_")}


def unique_name(scene: Any, name: str) -> str:
    """``name``, or ``"<stem> 2 (AI)"``, ``"<stem> 3 (AI)"``, ... if taken (the `` (AI)`` suffix stays last)."""
    stem, suffix = (name[: -len(pa.NAME_SUFFIX)], pa.NAME_SUFFIX) if name.endswith(pa.NAME_SUFFIX) else (name, "")
    candidate, n = name, 1
    while scene.GetFirstNodeByName(candidate) is not None:
        n += 1
        candidate = f"{stem} {n}{suffix}"
    return candidate


def _add_with_display(scene: Any, node: Any, name: str) -> Any:
    node.SetName(unique_name(scene, name))
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    return node


def remove_node(scene: Any, node: Any) -> None:
    """Remove a volume node with its display and storage nodes."""
    helpers = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())] + [node.GetStorageNode()]
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None and helper.GetScene() is scene:
            scene.RemoveNode(helper)


def _place_next_to(scene: Any, node: Any, source: Any) -> None:
    """Same parent transform and subject-hierarchy folder/study as ``source``."""
    node.SetAndObserveTransformNodeID(source.GetTransformNodeID())
    try:
        import slicer

        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        source_item = sh.GetItemByDataNode(source) if sh else 0
        if source_item:
            parent, item = sh.GetItemParent(source_item), sh.GetItemByDataNode(node)
            if item:
                sh.SetItemParent(item, parent)
            else:
                sh.CreateItem(parent, node)
    except Exception as err:  # noqa: BLE001 - subject hierarchy is a convenience, never a reason to fail
        logger.debug("subject hierarchy placement skipped: %s", err)


def import_output(
    scene: Any, path: str | os.PathLike[str], source: Any, output_node: Any | None = None, task_label: str = "generated"
) -> Any:
    """Load a generated file into the scene, tagged with its provenance.

    Reads the file into a new node first (geometry from the file), so a failed read changes nothing.
    Then fills ``output_node`` (if given) or adds the new node named ``"<source> <task_label> (AI)"``,
    sets the ``MedGen.*`` attributes from the record (sidecar or embedded), the description, the
    source's parent transform and subject-hierarchy folder, and an NRRD storage node so that saving
    from Slicer keeps the attributes.
    """
    path = Path(path)
    loaded = _read_into_new_node(scene, path)
    header = _header_attributes(loaded)
    record = read_record(path, header)
    if record is None:
        raise ValueError(f"{path.name} has no MedGen provenance record; refusing to import it as AI-generated")
    attributes = pa.attributes_from_record(record, source.GetName(), source.GetID())
    pa.clear_attributes(loaded, ("medgen_",))  # regenerated from MedGen.* when saved (save_output_nrrd)
    if output_node is None:
        node = _add_with_display(scene, loaded, pa.ai_name(source.GetName(), task_label))
    else:
        node = output_node
        was = node.StartModify()
        node.SetAndObserveImageData(loaded.GetImageData())
        set_ijk_to_ras(node, get_ijk_to_ras(loaded))
        pa.clear_attributes(node)
        node.SetName(pa.with_ai_suffix(node.GetName() or source.GetName()))
        node.EndModify(was)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
    pa.apply_attributes(node, attributes)
    node.SetDescription(pa.description(attributes))
    _place_next_to(scene, node, source)
    if node.GetStorageNode() is None or not node.GetStorageNode().IsA("vtkMRMLNRRDStorageNode"):
        storage = scene.AddNewNodeByClass("vtkMRMLNRRDStorageNode")
        node.SetAndObserveStorageNodeID(storage.GetID())
    return node


# -- saving / loading outputs --------------------------------------------------------------------
def save_output_nrrd(node: Any, path: str | os.PathLike[str]) -> Path:
    """Save an output node as NRRD whose header carries the ``MedGen.*`` and ``medgen_*`` fields.

    ``vtkMRMLNRRDStorageNode`` writes every node attribute as a ``key:=value`` line, so the
    ``medgen_*`` fields are set as attributes for the duration of the write (written to a temporary
    file, checked, then renamed over ``path``).
    """
    import slicer

    path = Path(path)
    fields = pa.nrrd_fields(pa.node_attributes(node))
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.nrrd")
    storage = slicer.vtkMRMLNRRDStorageNode()
    storage.SetFileName(str(tmp))
    was = node.StartModify()
    try:
        pa.apply_attributes(node, fields)
        ok = storage.WriteData(node)
    finally:
        for key in fields:
            node.RemoveAttribute(key)
        node.EndModify(was)
    try:
        if not ok or not tmp.is_file():
            raise OSError(f"could not write {path}")
        written = _read_nrrd_header_fields(tmp)
        lost = sorted(k for k, v in fields.items() if written.get(k) != v)
        if lost:
            raise OSError(f"the NRRD writer dropped header fields {lost}")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path


def _read_nrrd_header_fields(path: Path) -> dict[str, str]:
    """``key:=value`` fields of an NRRD header (plain reading, no pynrrd needed)."""
    fields: dict[str, str] = {}
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.decode("latin-1").rstrip("\r\n")
            if not line:
                break
            key, sep, value = line.partition(":=")
            if sep and not line.startswith("#"):
                fields[key] = value
    return fields


def load_output_nrrd(scene: Any, path: str | os.PathLike[str], name: str | None = None) -> Any:
    """Load an NRRD saved by :func:`save_output_nrrd` (or written by ``medgen``), restoring ``MedGen.*`` attributes."""
    path = Path(path)
    node = _read_into_new_node(scene, path)
    header = {n: node.GetAttribute(n) for n in node.GetAttributeNames() or ()}
    attributes = pa.attributes_from_nrrd_fields(header)
    pa.clear_attributes(node, ("medgen_",))
    pa.apply_attributes(node, attributes)
    if attributes:
        node.SetDescription(pa.description(attributes))
    default = path.name[: -len(".nrrd")] if path.name.lower().endswith(".nrrd") else path.stem
    if attributes.get(pa.AI_GENERATED) == "true":
        default = pa.with_ai_suffix(default)
    return _add_with_display(scene, node, name or default)


# -- checks --------------------------------------------------------------------------------------
def validate_output(node: Any, source: Any, tolerance_mm: float | None = None) -> list[str]:
    """Problems with an output node (empty list: valid).

    Checks the provenance attributes (complete, AI flag, pointing at ``source``), the visible cue
    (name suffix, description), and the geometry: the output grid must be an upscaling (factor 1 allowed;
    integer in-plane, any ``n_out / n_in`` along the slice axis of a through-plane run) of the source grid
    covering the same physical box with the same orientation, i.e. its IJK-to-RAS must equal
    :func:`upscaled_ijk_to_ras` of the source's.
    """
    problems: list[str] = []
    if node is None:
        return ["no output volume"]
    if source is not None and node is source:
        problems.append("the output volume is the input volume")
    attributes = pa.node_attributes(node)
    problems += pa.missing_attributes(attributes)
    if source is not None and attributes.get(pa.SOURCE_NODE_ID) not in (None, "", source.GetID()):
        problems.append(f"{pa.SOURCE_NODE_ID} is {attributes[pa.SOURCE_NODE_ID]!r}, not the input's {source.GetID()!r}")
    if not (node.GetName() or "").endswith(pa.NAME_SUFFIX):
        problems.append(f"name {node.GetName()!r} does not end with {pa.NAME_SUFFIX!r}")
    if pa.DISCLOSURE in attributes and attributes[pa.DISCLOSURE] not in (node.GetDescription() or ""):
        problems.append("description does not carry the AI disclosure")
    if source is None:
        return problems
    out_dims, src_dims = dimensions(node), dimensions(source)
    if 0 in out_dims:
        return problems + ["the output volume has no image data"]
    ratios = np.asarray(out_dims, dtype=np.float64) / np.maximum(src_dims, 1)
    fractional = ~np.isclose(ratios, np.round(ratios))
    if np.any(ratios < 1) or int(fractional.sum()) > 1:
        return problems + [f"output grid {out_dims} is not an upscaling of the input grid {src_dims} (integer, or any factor along one axis)"]
    src_m, out_m = get_ijk_to_ras(source), get_ijk_to_ras(node)
    spacing = np.linalg.norm(src_m[:3, :3], axis=0)
    tol = tolerance_mm if tolerance_mm is not None else max(1e-4, 1e-3 * float(spacing.min()))
    expected = upscaled_ijk_to_ras(src_m, tuple(np.where(fractional, ratios, np.round(ratios))))
    box_error = float(np.abs(box_corners(out_m, out_dims) - box_corners(src_m, src_dims)).max())
    if box_error > tol:
        problems.append(f"output box differs from the input's by up to {box_error:.4g} mm (geometry lost)")
    if not np.allclose(out_m, expected, atol=tol):
        problems.append("output IJK-to-RAS is not the input's upscaled IJK-to-RAS (orientation, spacing or origin lost)")
    if (node.GetTransformNodeID() or "") != (source.GetTransformNodeID() or ""):
        problems.append("output is not under the input's parent transform")
    return problems
