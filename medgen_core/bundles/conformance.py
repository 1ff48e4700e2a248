"""Is a bundle folder zoo-ready? Checks that return a list of problems (empty = passes).

Three groups, run by :func:`run_checks`:

* :data:`STATIC_CHECKS`, in-process, nothing executed: layout, JSON formatting, file sizes, metadata keys,
  MedGen's stricter schema, weight hashes, ``large_files.yml``, config safety, and the Model Zoo's min-mode
  steps (``verify_bundle_directory``, ``verify_version_changes``, ``verify_metadata_format``: what the zoo's
  premerge CPU run, ``ci/verify_bundle.py -m min``, checks).
* :data:`MONAI_CHECKS`, which execute the configs in a subprocess: the zoo's full-mode steps
  (``verify_bundle_properties``, ``verify_data_shape``, ``verify_torchscript``, with the zoo's own defaults),
  MedGen's ``all_inputs_shape`` and ``torchscript_matches_eager`` (:mod:`.zoo_verify`) and ``run``
  (:mod:`.monai_checks`).

Each zoo step carries the zoo's name, and the first zoo step that fails says that the zoo's
``ci/verify_bundle.py`` stops there (and in which mode). Nothing in the metadata changes a zoo step: a bundle
is excluded from ``verify_data_shape`` / ``verify_torchscript`` only the zoo's way, by name in the custom-data
lists (:data:`~.zoo_verify.ZOO_CUSTOM_DATA`, MedGen's entries in :data:`~.zoo_verify.MEDGEN_CUSTOM_DATA`).
``"medgen": {"exempt_checks": {"run": "why"}}`` can exempt only MedGen's own checks (:data:`EXEMPTABLE`).

MONAI's commands parse and run the bundle's configs, so they never run on a bundle that fails the
config inspection: :func:`run_checks` runs ``config_safety`` first (whether or not it was asked for) and
reports each executing check as not run when it fails (adding the ``config_safety`` result to say why),
unless ``trust`` is given. Built-in bundles are inspected too: ``bundle check`` is how a bundle author finds out.

Example::

    from medgen_core.bundles.conformance import check_bundle, run_checks, zoo_verdict
    problems = check_bundle("monai_bundles/brain_mri_super_resolution")
    zoo_verdict(run_checks("monai_bundles/brain_tissue_genseg"))   # {'min': None, 'full': None}: the zoo passes it
"""

from __future__ import annotations

import difflib
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from medgen_core.bundles import monai_checks, zoo_verify
from medgen_core.bundles.catalog import read_metadata
from medgen_core.bundles.config_safety import check_bundle_configs
from medgen_core.bundles.large_files import check_large_files as _check_large_files
from medgen_core.bundles.weights import weight_files, weights_status
from medgen_core.errors import BundleError

__all__ = [
    "CHECKS",
    "CHECK_ALIASES",
    "EXCLUDED_TOP_DIRS",
    "EXEMPTABLE",
    "MANDATORY_METADATA_KEYS",
    "MAX_FILE_BYTES",
    "MONAI_CHECKS",
    "SCHEMA_PATH",
    "STATIC_CHECKS",
    "TENSOR_KEYS",
    "ZOO_CHECKS",
    "CheckResult",
    "bundle_files",
    "check_bundle",
    "check_config_safety",
    "check_file_sizes",
    "check_json_format",
    "check_large_files",
    "check_layout",
    "check_metadata",
    "check_schema",
    "check_weight_hashes",
    "run_checks",
    "zoo_verdict",
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
    medgen = meta.get("medgen") if isinstance(meta.get("medgen"), dict) else {}
    ignored = [k for k in (medgen.get("check_args") or {}) if k != "run"] if isinstance(medgen.get("check_args"), dict) else []
    if ignored:
        problems.append(f"configs/metadata.json: medgen.check_args {ignored} would change nothing: the zoo runs its checks with its own defaults "
                        f"and reads no medgen.* key; only MedGen's 'run' check takes check_args (fix the declared shapes or the network instead)")
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


def check_large_files(bundle_root: str | Path) -> list[str]:
    """``large_files.yml`` lists every weight file in ``models/`` with a hash it matches (``url: ""``: shipped)."""
    return _check_large_files(bundle_root, require_listed=tuple(weight_files(bundle_root)))


def _zoo_in_process(name: str) -> Callable[[Path], list[str]]:
    def run(root: Path) -> list[str]:
        (step,) = zoo_verify.verify(root, steps=[name])
        return [step.message] if step.status == "fail" else []

    run.__doc__ = f"The Model Zoo's ``{name}`` step (min mode; nothing executed; see :mod:`medgen_core.bundles.zoo_verify`)."
    return run


STATIC_CHECKS: dict[str, Callable[[Path], list[str]]] = {
    "layout": check_layout,
    "json_format": check_json_format,
    "file_sizes": check_file_sizes,
    "metadata": check_metadata,
    "schema": check_schema,
    "weight_hashes": check_weight_hashes,
    "large_files": check_large_files,
    "config_safety": check_config_safety,
    **{name: _zoo_in_process(name) for name in zoo_verify.MIN_STEPS},
}
# steps that execute the configs, run in one subprocess of zoo_verify
_ZOO_SUBPROCESS = (*(s for s in zoo_verify.FULL_STEPS if s not in zoo_verify.MIN_STEPS), *zoo_verify.MEDGEN_STEPS)


def _subprocess_step(name: str) -> Callable[[Path, Path], list[str]]:
    def run(root: Path, work_dir: Path) -> list[str]:
        step = monai_checks.run_zoo_steps(root, [name], work_dir)[name]
        return [step.message] if step.status == "fail" else []

    run.__doc__ = f"``{name}`` in a subprocess (see :mod:`medgen_core.bundles.zoo_verify`)."
    return run


MONAI_CHECKS: dict[str, Callable[[Path, Path], list[str]]] = {
    **{name: _subprocess_step(name) for name in _ZOO_SUBPROCESS},
    "run": monai_checks.check_run,
}
ZOO_CHECKS = zoo_verify.FULL_STEPS  # the Model Zoo's own steps, in its order
# old names, still accepted (``medgen bundle check --only verify_net_in_out`` runs verify_data_shape)
CHECK_ALIASES = {"verify_metadata": "verify_metadata_format", "verify_net_in_out": "verify_data_shape", "ckpt_export": "verify_torchscript"}


class _CheckNames(tuple):
    """The check names; ``in`` also accepts the old names of :data:`CHECK_ALIASES` (so argparse ``choices`` does)."""

    def __contains__(self, name: object) -> bool:
        return tuple.__contains__(self, CHECK_ALIASES.get(name, name) if isinstance(name, str) else name)


CHECKS = _CheckNames((*STATIC_CHECKS, *MONAI_CHECKS))
EXEMPTABLE = ("all_inputs_shape", "torchscript_matches_eager", "run")  # MedGen's own checks; zoo steps never


@dataclass
class CheckResult:
    """Outcome of one check: its problems, or the reason it was exempted."""

    name: str
    problems: list[str] = field(default_factory=list)
    exempt_reason: str | None = None
    detail: str = ""  # what a passing check looked at (zoo steps: input shape, device, export, ...)

    @property
    def passed(self) -> bool:
        return not self.problems


def _exemptions(root: Path) -> dict[str, str]:
    meta, _ = _metadata(root)
    exempt = (meta or {}).get("medgen", {}).get("exempt_checks", {}) if isinstance(meta, dict) else {}
    return {k: str(v) for k, v in exempt.items()} if isinstance(exempt, dict) else {}


def _canonical(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        n = CHECK_ALIASES.get(n, n)
        if n not in out:
            out.append(n)
    return out


def _mark_zoo_stop(results: list[CheckResult]) -> None:
    """Prefix the first failing zoo step's first problem with where the zoo's CI stops (min and/or full mode)."""
    failed = [r for r in results if r.name in ZOO_CHECKS and r.problems]
    if not failed:
        return
    first = min(failed, key=lambda r: ZOO_CHECKS.index(r.name))
    modes = "-m min and full mode stop" if first.name in zoo_verify.MIN_STEPS else "full mode stops"
    first.problems[0] = f"the Model Zoo's ci/verify_bundle.py ({modes} here): {first.problems[0]}"


def zoo_verdict(results: list[CheckResult]) -> dict[str, str | None]:
    """``{"min": step, "full": step}``: the zoo step at which ``ci/verify_bundle.py -m <mode>`` would stop,
    ``None`` when it passes, ``"not checked"`` when some of that mode's steps were not among ``results``."""
    by_name = {r.name: r for r in results}
    verdict: dict[str, str | None] = {}
    for mode, steps in (("min", zoo_verify.MIN_STEPS), ("full", zoo_verify.FULL_STEPS)):
        failing = next((s for s in steps if s in by_name and by_name[s].problems), None)
        verdict[mode] = failing or (None if all(s in by_name for s in steps) else "not checked")
    return verdict


def run_checks(bundle_root: str | Path, names: list[str] | tuple[str, ...] | None = None, work_dir: str | Path | None = None,
               trust: bool = False) -> list[CheckResult]:
    """Run the named checks (default: all of :data:`CHECKS`) and return one result per check.

    Args:
        bundle_root: the bundle folder.
        names: checks to run, from :data:`CHECKS` (old names in :data:`CHECK_ALIASES` are accepted and
            reported under their new names).
        work_dir: scratch folder for the executing checks (TorchScript export, sample input/output);
            a temporary folder when None.
        trust: run the executing checks even when the config inspection fails (they execute the configs).
    """
    root = Path(bundle_root)
    names = _canonical(list(CHECKS if names is None else names))
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"run_checks: unknown check(s) {unknown}; choose from {list(CHECKS)}.")
    exempt = _exemptions(root)
    bad_exemptions = [n for n in exempt if n not in EXEMPTABLE]
    results = []
    unsafe: list[str] = []
    executing = [n for n in names if n in MONAI_CHECKS]
    if executing:  # inspect before anything executes the configs
        unsafe = check_config_safety(root)
        if unsafe and "config_safety" not in names:  # say why the executing checks do not run
            names.insert(0, "config_safety")
    with tempfile.TemporaryDirectory(prefix="medgen-check-") as tmp:
        scratch = Path(work_dir or tmp)
        zoo_steps = [n for n in executing if n in _ZOO_SUBPROCESS and not (n in exempt and n in EXEMPTABLE)]
        zoo = monai_checks.run_zoo_steps(root, zoo_steps, scratch / "zoo") if zoo_steps and (trust or not unsafe) else {}
        for name in names:
            if name in exempt and name in EXEMPTABLE:
                results.append(CheckResult(name, exempt_reason=exempt[name]))
            elif name == "config_safety" and executing:
                results.append(CheckResult(name, unsafe))
            elif name in zoo_verify.MIN_STEPS:
                (step,) = zoo_verify.verify(root, steps=[name])
                results.append(_from_zoo(step))
            elif name in STATIC_CHECKS:
                results.append(CheckResult(name, STATIC_CHECKS[name](root)))
            elif unsafe and not trust:
                results.append(CheckResult(name, [f"not run: the configs failed the config inspection ({len(unsafe)} problem(s)), and "
                                                  f"{name} would execute them; fix them, or pass --trust"]))
            elif name in zoo:
                results.append(_from_zoo(zoo[name]))
            else:
                (scratch / name).mkdir(parents=True, exist_ok=True)
                results.append(CheckResult(name, MONAI_CHECKS[name](root, scratch / name)))
    if bad_exemptions and "metadata" in names:
        results.append(CheckResult("exemptions", [f"configs/metadata.json: medgen.exempt_checks may only name MedGen's own checks {list(EXEMPTABLE)}, "
                                                  f"not {bad_exemptions}: the zoo reads no medgen.* key and excludes a bundle from a step only by "
                                                  f"name, in its ci/bundle_custom_data.py lists"]))
    _mark_zoo_stop(results)
    return results


def _from_zoo(step: zoo_verify.ZooStep) -> CheckResult:
    if step.status == "excluded":
        return CheckResult(step.name, exempt_reason=step.message)
    return CheckResult(step.name, [step.message] if step.status != "pass" else [], detail=step.message if step.status == "pass" else "")


def check_bundle(bundle_root: str | Path, monai: bool = True, work_dir: str | Path | None = None, trust: bool = False) -> list[str]:
    """All problems of a bundle as ``"<check>: <problem>"`` lines; empty when it is zoo-ready.

    Args:
        bundle_root: the bundle folder.
        monai: also run the checks that execute the configs (slower: two subprocesses, seconds to a minute).
        work_dir: scratch folder for the executing checks.
    """
    names = list(CHECKS) if monai else list(STATIC_CHECKS)
    return [f"{r.name}: {p}" for r in run_checks(bundle_root, names, work_dir, trust) for p in r.problems]
