"""Is a bundle folder zoo-ready? Checks that return a list of problems (empty = passes).

Fast, in-process checks: layout, JSON formatting, file sizes, metadata keys and schema, weight hashes,
config safety. Slower checks run MONAI's own commands in a subprocess (:mod:`.monai_checks`):
``verify_metadata``, ``verify_net_in_out``, ``ckpt_export`` and ``run``.

MONAI's commands parse and run the bundle's configs, so they never run on a bundle that fails the
config inspection: :func:`run_checks` runs ``config_safety`` first (whether or not it was asked for) and
reports each MONAI check as not run when it fails (adding the ``config_safety`` result to say why),
unless ``trust`` is given. Built-in bundles are
inspected too: ``bundle check`` is how a bundle author finds out.

A bundle may exempt itself from a MONAI command check with a reason in its metadata,
``"medgen": {"exempt_checks": {"ckpt_export": "why"}}``; only the checks in :data:`EXEMPTABLE` can be
exempted. Every problem names the file and says what was expected.

Example::

    from medgen_core.bundles.conformance import check_bundle
    problems = check_bundle("monai_bundles/brain_mri_super_resolution")
"""

from __future__ import annotations

import difflib
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from medgen_core.bundles.catalog import read_metadata
from medgen_core.bundles.config_safety import check_bundle_configs
from medgen_core.bundles.weights import weights_status
from medgen_core.errors import BundleError

__all__ = [
    "CHECKS",
    "EXCLUDED_TOP_DIRS",
    "EXEMPTABLE",
    "MANDATORY_METADATA_KEYS",
    "MAX_FILE_BYTES",
    "MONAI_CHECKS",
    "SCHEMA_PATH",
    "STATIC_CHECKS",
    "TENSOR_KEYS",
    "CheckResult",
    "bundle_files",
    "check_bundle",
    "check_config_safety",
    "check_file_sizes",
    "check_json_format",
    "check_layout",
    "check_metadata",
    "check_schema",
    "check_weight_hashes",
    "run_checks",
]

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "meta_schema_medgen.json"
MAX_FILE_BYTES = 25_000_000  # the model zoo refuses committed files over 25 MB
REQUIRED_PATHS = ("LICENSE", "configs/metadata.json", "configs/inference.json", "configs/logging.conf", "models/", "docs/README.md")
MANDATORY_METADATA_KEYS = (
    "version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
    "task", "description", "authors", "copyright", "network_data_format",
)
TENSOR_KEYS = ("type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data", "channel_def")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
EXCLUDED_TOP_DIRS = ("eval", "runs")  # local outputs, never shipped
EXCLUDED_NAMES = ("__pycache__", ".ipynb_checkpoints", ".git", ".DS_Store")


def bundle_files(bundle_root: str | Path) -> list[Path]:
    """Files that belong to a bundle (what ``pack`` ships): all but ``eval/``, ``runs/``, caches and temporaries."""
    root = Path(bundle_root)
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in EXCLUDED_TOP_DIRS or any(p in EXCLUDED_NAMES for p in rel.parts):
            continue
        if path.suffix == ".pyc" or path.name.startswith(".tmp-") or not (path.is_file() or path.is_symlink()):
            continue
        files.append(path)
    return files


def check_layout(bundle_root: str | Path) -> list[str]:
    """The files MONAI's spec and the model zoo require."""
    root = Path(bundle_root)
    problems = []
    for rel in REQUIRED_PATHS:
        ok = (root / rel).is_dir() if rel.endswith("/") else (root / rel).is_file()
        if not ok:
            problems.append(f"{rel} is missing (a zoo bundle needs {', '.join(REQUIRED_PATHS)})")
    if (root / "configs/train.json").is_file() and not (root / "configs/multi_gpu_train.json").is_file():
        problems.append("configs/multi_gpu_train.json is missing: a bundle that ships configs/train.json must also train with torchrun "
                        "(an override config: process group, DistributedSampler, rank-0-only writes)")
    return problems


def check_json_format(bundle_root: str | Path) -> list[str]:
    """Every JSON file parses and equals ``json.dumps(obj, indent=4)`` plus a final newline (key order kept)."""
    root = Path(bundle_root)
    problems = []
    for path in (p for p in bundle_files(root) if p.suffix == ".json"):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(f"{rel}: not valid JSON ({err})")
            continue
        expected = [json.dumps(obj, indent=4, ensure_ascii=a) + "\n" for a in (True, False)]
        if text not in expected:
            diff = next((line for line in difflib.unified_diff(text.splitlines(), expected[1].splitlines(), lineterm="", n=0) if line.startswith("@@")), "")
            problems.append(f"{rel}: not formatted like json.dumps(obj, indent=4) with a final newline (first difference {diff}); re-save it that way")
    return problems


def check_file_sizes(bundle_root: str | Path, limit: int = MAX_FILE_BYTES) -> list[str]:
    """No shipped file is larger than ``limit`` bytes (large weights belong in ``large_files.yml``)."""
    root = Path(bundle_root)
    return [
        f"{p.relative_to(root).as_posix()}: {p.stat().st_size / 1e6:.1f} MB is over the {limit / 1e6:.0f} MB limit; host it and list it in large_files.yml"
        for p in bundle_files(root)
        if p.is_file() and p.stat().st_size > limit
    ]


def _metadata(bundle_root: str | Path) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        return read_metadata(bundle_root), []
    except BundleError as err:
        return None, [str(err)]


def check_metadata(bundle_root: str | Path) -> list[str]:
    """MONAI's mandatory metadata keys, semver version in the changelog, and ``image``/``pred`` tensor specs."""
    meta, problems = _metadata(bundle_root)
    if meta is None:
        return problems
    problems += [f"configs/metadata.json: mandatory key '{k}' is missing" for k in MANDATORY_METADATA_KEYS if k not in meta]
    if "optional_packages_version" in meta:
        problems.append("configs/metadata.json: 'optional_packages_version' is deprecated and overwrites 'required_packages_version' in MONAI 1.6; use only 'required_packages_version'")
    version = meta.get("version")
    if "version" in meta and not (isinstance(version, str) and SEMVER.match(version)):
        problems.append(f"configs/metadata.json: version {version!r} is not a semantic version like '1.2.3'")
    if "changelog" in meta and (not isinstance(meta["changelog"], dict) or version not in meta["changelog"]):
        problems.append(f"configs/metadata.json: changelog has no entry for the current version {version!r}")
    fmt = meta.get("network_data_format")
    if "network_data_format" in meta:
        for group, name in (("inputs", "image"), ("outputs", "pred")):
            spec = fmt.get(group, {}).get(name) if isinstance(fmt, dict) and isinstance(fmt.get(group), dict) else None
            if not isinstance(spec, dict):
                problems.append(f"configs/metadata.json: network_data_format.{group}.{name} is missing (MONAI's verify_net_in_out reads exactly this name)")
                continue
            missing = [k for k in TENSOR_KEYS if k not in spec]
            if missing:
                problems.append(f"configs/metadata.json: network_data_format.{group}.{name} lacks {', '.join(missing)}")
    return problems


def check_schema(bundle_root: str | Path, schema_path: str | Path = SCHEMA_PATH) -> list[str]:
    """Validate the metadata against MedGen's schema in-process (what ``verify_metadata`` does, without MONAI)."""
    import jsonschema

    meta, problems = _metadata(bundle_root)
    if meta is None:
        return problems
    schema = json.loads(Path(schema_path).read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    for err in sorted(validator.iter_errors(meta), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        problems.append(f"configs/metadata.json: {where}: {err.message} (schema {Path(schema_path).name})")
    return problems


def check_weight_hashes(bundle_root: str | Path) -> list[str]:
    """Every ``models/`` weight file's sha256 is recorded in the metadata, and every recorded file matches."""
    meta, problems = _metadata(bundle_root)
    if meta is None:
        return problems
    state, found = weights_status(bundle_root, meta)
    return problems + [f"weights ({state}): {p}" for p in found]


def check_config_safety(bundle_root: str | Path) -> list[str]:
    """Configs call only allowlisted libraries (what ``medgen bundle install`` requires without ``--trust``)."""
    return check_bundle_configs(bundle_root, skip_dirs=EXCLUDED_TOP_DIRS)


def _monai(name: str) -> Callable[[Path, Path], list[str]]:
    def run(root: Path, work_dir: Path) -> list[str]:
        from medgen_core.bundles import monai_checks

        return getattr(monai_checks, f"check_{name}")(root, work_dir)

    run.__doc__ = f"``python -m monai.bundle {name}`` (see :mod:`medgen_core.bundles.monai_checks`)."
    return run


STATIC_CHECKS: dict[str, Callable[[Path], list[str]]] = {
    "layout": check_layout,
    "json_format": check_json_format,
    "file_sizes": check_file_sizes,
    "metadata": check_metadata,
    "schema": check_schema,
    "weight_hashes": check_weight_hashes,
    "config_safety": check_config_safety,
}
MONAI_CHECKS: dict[str, Callable[[Path, Path], list[str]]] = {
    name: _monai(name) for name in ("verify_metadata", "verify_net_in_out", "ckpt_export", "run")
}
CHECKS = (*STATIC_CHECKS, *MONAI_CHECKS)
EXEMPTABLE = ("verify_net_in_out", "ckpt_export", "run")


@dataclass
class CheckResult:
    """Outcome of one check: its problems, or the reason it was exempted."""

    name: str
    problems: list[str] = field(default_factory=list)
    exempt_reason: str | None = None

    @property
    def passed(self) -> bool:
        return not self.problems


def _exemptions(root: Path) -> dict[str, str]:
    meta, _ = _metadata(root)
    exempt = (meta or {}).get("medgen", {}).get("exempt_checks", {}) if isinstance(meta, dict) else {}
    return {k: str(v) for k, v in exempt.items()} if isinstance(exempt, dict) else {}


def run_checks(bundle_root: str | Path, names: list[str] | tuple[str, ...] | None = None, work_dir: str | Path | None = None,
               trust: bool = False) -> list[CheckResult]:
    """Run the named checks (default: all of :data:`CHECKS`) and return one result per check.

    Args:
        bundle_root: the bundle folder.
        names: checks to run, from :data:`CHECKS`.
        work_dir: scratch folder for the MONAI checks (exported models, sample input/output);
            a temporary folder when None.
        trust: run MONAI's commands even when the config inspection fails (they execute the configs).
    """
    root = Path(bundle_root)
    names = list(CHECKS if names is None else names)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"run_checks: unknown check(s) {unknown}; choose from {list(CHECKS)}.")
    exempt = _exemptions(root)
    bad_exemptions = [n for n in exempt if n not in EXEMPTABLE]
    results = []
    unsafe: list[str] = []
    if any(n in MONAI_CHECKS for n in names):  # inspect before anything executes the configs
        unsafe = check_config_safety(root)
        if unsafe and "config_safety" not in names:  # say why the MONAI checks do not run
            names.insert(0, "config_safety")
    with tempfile.TemporaryDirectory(prefix="medgen-check-") as tmp:
        for name in names:
            if name in exempt and name in EXEMPTABLE:
                results.append(CheckResult(name, exempt_reason=exempt[name]))
            elif name == "config_safety" and any(n in MONAI_CHECKS for n in names):
                results.append(CheckResult(name, unsafe))
            elif name in STATIC_CHECKS:
                results.append(CheckResult(name, STATIC_CHECKS[name](root)))
            elif unsafe and not trust:
                results.append(CheckResult(name, [f"not run: the configs failed the config inspection ({len(unsafe)} problem(s)), and "
                                                  f"`python -m monai.bundle {name}` would execute them; fix them, or pass --trust"]))
            else:
                scratch = Path(work_dir or tmp) / name
                scratch.mkdir(parents=True, exist_ok=True)
                results.append(CheckResult(name, MONAI_CHECKS[name](root, scratch)))
    if bad_exemptions and "metadata" in names:
        results.append(CheckResult("exemptions", [f"configs/metadata.json: medgen.exempt_checks may only name {list(EXEMPTABLE)}, not {bad_exemptions}"]))
    return results


def check_bundle(bundle_root: str | Path, monai: bool = True, work_dir: str | Path | None = None, trust: bool = False) -> list[str]:
    """All problems of a bundle as ``"<check>: <problem>"`` lines; empty when it is zoo-ready.

    Args:
        bundle_root: the bundle folder.
        monai: also run MONAI's commands (slower: a subprocess each, seconds to a minute).
        work_dir: scratch folder for the MONAI checks.
    """
    names = list(CHECKS) if monai else list(STATIC_CHECKS)
    return [f"{r.name}: {p}" for r in run_checks(bundle_root, names, work_dir, trust) for p in r.problems]
