"""MedGen provenance records <-> namespaced MRML node attributes (``MedGen.*``) and NRRD ``medgen_*`` fields.

Node attributes persist in ``.mrml``/``.mrb`` scenes and, through ``vtkMRMLNRRDStorageNode``, in NRRD
headers as ``key:=value`` lines. The record itself is MedGen's provenance record
(:class:`medgen_core.provenance.GenerationMetadata` as a dict); it is kept whole in ``MedGen.Record`` so
that a saved NRRD carries the same ``medgen_provenance`` field ``medgen provenance verify`` reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ATTRIBUTES",
    "NAME_SUFFIX",
    "REQUIRED_ATTRIBUTES",
    "ai_name",
    "apply_attributes",
    "attributes_from_nrrd_fields",
    "attributes_from_record",
    "clear_attributes",
    "description",
    "missing_attributes",
    "node_attributes",
    "nrrd_fields",
    "record_from_provenance",
    "with_ai_suffix",
]

PREFIX = "MedGen."
AI_GENERATED = "MedGen.AIGenerated"
GENERATOR = "MedGen.Generator"
GENERATOR_VERSION = "MedGen.GeneratorVersion"
BUNDLE = "MedGen.Bundle"
WEIGHTS_SHA256 = "MedGen.WeightsSHA256"
TASK = "MedGen.Task"
PARAMETERS = "MedGen.Parameters"
SOURCE_NODE_NAME = "MedGen.SourceNodeName"
SOURCE_NODE_ID = "MedGen.SourceNodeID"
GENERATED_AT = "MedGen.GeneratedAt"
DISCLOSURE = "MedGen.Disclosure"
RECORD = "MedGen.Record"

ATTRIBUTES: tuple[str, ...] = (
    AI_GENERATED, GENERATOR, GENERATOR_VERSION, BUNDLE, WEIGHTS_SHA256, TASK, PARAMETERS,
    SOURCE_NODE_NAME, SOURCE_NODE_ID, GENERATED_AT, DISCLOSURE, RECORD,
)
#: Attributes every MedGen output node must carry (values non-empty).
REQUIRED_ATTRIBUTES: tuple[str, ...] = (
    AI_GENERATED, GENERATOR, GENERATOR_VERSION, WEIGHTS_SHA256, TASK, SOURCE_NODE_NAME, SOURCE_NODE_ID,
    GENERATED_AT, DISCLOSURE,
)
NAME_SUFFIX = " (AI)"
#: NRRD fields MedGen writes (same names as ``medgen_core.provenance``'s NRRD writer).
NRRD_PROVENANCE_FIELD = "medgen_provenance"
NRRD_FIELDS: tuple[str, ...] = (
    "medgen_ai_generated", "medgen_generator", "medgen_disclosure", "medgen_pixel_sha256", NRRD_PROVENANCE_FIELD,
)


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def record_from_provenance(found: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The record from :func:`medgen_core.provenance.read_provenance`'s result: the sidecar's, else the embedded one."""
    if not found:
        return None
    sidecar = found.get("sidecar")
    if isinstance(sidecar, Mapping) and isinstance(sidecar.get("record"), Mapping):
        return dict(sidecar["record"])
    embedded = found.get("embedded")
    return dict(embedded) if isinstance(embedded, Mapping) else None


def attributes_from_record(record: Mapping[str, Any], source_name: str, source_id: str) -> dict[str, str]:
    """``MedGen.*`` attributes (all strings) for a record and the scene node it was generated from."""
    return {
        AI_GENERATED: "true" if record.get("synthetic", True) else "false",
        GENERATOR: str(record.get("generator_name", "")),
        GENERATOR_VERSION: str(record.get("generator_version", "")),
        BUNDLE: str(record.get("bundle_id") or ""),
        WEIGHTS_SHA256: str(record.get("weights_sha256") or ""),
        TASK: str(record.get("task", "")),
        PARAMETERS: json.dumps(record.get("parameters") or {}, sort_keys=True),
        SOURCE_NODE_NAME: source_name,
        SOURCE_NODE_ID: source_id,
        GENERATED_AT: str(record.get("generated_at", "")),
        DISCLOSURE: str(record.get("disclosure", "")),
        RECORD: _compact(dict(record)),
    }


def apply_attributes(node: Any, attributes: Mapping[str, str]) -> None:
    """Set the attributes on an MRML node (one ``Modified`` event)."""
    was = node.StartModify()
    try:
        for key, value in attributes.items():
            node.SetAttribute(key, str(value))
    finally:
        node.EndModify(was)


def node_attributes(node: Any) -> dict[str, str]:
    """The node's ``MedGen.*`` attributes."""
    names = node.GetAttributeNames() or ()
    return {name: node.GetAttribute(name) for name in names if name.startswith(PREFIX)}


def clear_attributes(node: Any, prefixes: tuple[str, ...] = (PREFIX,)) -> None:
    """Remove the node's attributes whose names start with one of ``prefixes``."""
    for name in list(node.GetAttributeNames() or ()):
        if name.startswith(prefixes):
            node.RemoveAttribute(name)


def with_ai_suffix(name: str) -> str:
    """``name`` ending in `` (AI)`` (added once)."""
    return name if name.endswith(NAME_SUFFIX) else f"{name}{NAME_SUFFIX}"


def ai_name(source_name: str, task_label: str) -> str:
    """Name of a new output node: ``"<input> <task> (AI)"``, e.g. ``"MRHead upscale x2 (AI)"``."""
    return with_ai_suffix(f"{source_name} {task_label}".strip())


def description(attributes: Mapping[str, str]) -> str:
    """Node description: the disclosure plus generator, task and source."""
    return (
        f"{attributes.get(DISCLOSURE, '')} Generated by {attributes.get(GENERATOR, '?')} "
        f"{attributes.get(GENERATOR_VERSION, '')} ({attributes.get(TASK, '?')}) from "
        f"'{attributes.get(SOURCE_NODE_NAME, '?')}' at {attributes.get(GENERATED_AT, '?')}."
    ).strip()


def missing_attributes(attributes: Mapping[str, str]) -> list[str]:
    """Problems with the provenance attributes (empty list when complete)."""
    problems = [f"provenance attribute {name} is missing" for name in REQUIRED_ATTRIBUTES if not attributes.get(name)]
    if attributes.get(AI_GENERATED) not in (None, "", "true"):
        problems.append(f"{AI_GENERATED} is {attributes[AI_GENERATED]!r}, expected 'true'")
    return problems


def nrrd_fields(attributes: Mapping[str, str]) -> dict[str, str]:
    """``medgen_*`` NRRD header fields for a node's ``MedGen.*`` attributes (single-line values)."""
    fields = {
        "medgen_ai_generated": attributes.get(AI_GENERATED, "true") or "true",
        "medgen_generator": f"{attributes.get(GENERATOR, '')}:{attributes.get(GENERATOR_VERSION, '')}",
        "medgen_disclosure": attributes.get(DISCLOSURE, ""),
    }
    record = _record_of(attributes)
    if record is not None:
        sha = (record.get("output") or {}).get("sha256")
        if sha:
            fields["medgen_pixel_sha256"] = str(sha)
        fields[NRRD_PROVENANCE_FIELD] = _compact(record)
    return {key: " ".join(value.splitlines()) for key, value in fields.items() if value}


def attributes_from_nrrd_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """``MedGen.*`` attributes restored from NRRD header fields.

    ``MedGen.*`` fields written by the NRRD storage node win; missing ones are rebuilt from the
    ``medgen_provenance`` record (e.g. for files written by the ``medgen`` CLI itself).
    """
    attributes = {k: v for k, v in fields.items() if k.startswith(PREFIX)}
    text = fields.get(NRRD_PROVENANCE_FIELD)
    if text:
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if isinstance(record, dict):
            rebuilt = attributes_from_record(
                record, attributes.get(SOURCE_NODE_NAME, _source_name(record)), attributes.get(SOURCE_NODE_ID, "")
            )
            attributes = {**rebuilt, **{k: v for k, v in attributes.items() if v}}
    if fields.get("medgen_ai_generated") == "true":
        attributes.setdefault(AI_GENERATED, "true")
    return attributes


def _record_of(attributes: Mapping[str, str]) -> dict[str, Any] | None:
    try:
        record = json.loads(attributes.get(RECORD, "") or "null")
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _source_name(record: Mapping[str, Any]) -> str:
    inputs = record.get("inputs") or []
    return str(inputs[0].get("path", "")) if inputs and isinstance(inputs[0], Mapping) else ""
