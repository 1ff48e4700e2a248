"""The bundles MedGen can run, grouped by action (``metadata["medgen"]["action"]``), for the bundle chooser.

The list comes from the ``medgen`` CLI (``medgen bundle list --json``) in a child process, so nothing of
MedGen (nor torch) is imported into Slicer's Python. Output schema of that command::

    {"bundles": [{"name": <folder key>, "display_name": str, "version": str, "path": <absolute path>,
                  "source": "path" | "env" | "user" | "package" | "source", "hidden": [...],
                  "weights_ok": bool | null, "metadata": <the bundle's whole metadata.json>}, ...]}
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from MedGenLib.commands import ACTIONS, medgen_executable

__all__ = [
    "BUNDLE_SOURCES",
    "BundleChoice",
    "CatalogError",
    "bundle_for",
    "bundles_by_action",
    "choice_from_entry",
    "choice_from_metadata",
    "enabled_actions",
    "find_choice",
    "list_bundles",
    "list_bundles_in_background",
    "parse_bundle_list",
]

#: Where ``medgen bundle list`` says a bundle came from, in lookup order.
BUNDLE_SOURCES: tuple[str, ...] = ("path", "env", "user", "package", "source")
LIST_ARGS: tuple[str, ...] = ("bundle", "list", "--json")


class CatalogError(RuntimeError):
    """The bundle list could not be obtained or read (one line, says which command or entry and why)."""


@dataclass(frozen=True)
class BundleChoice:
    """One bundle as the module shows it.

    Args:
        name: the bundle's key (its folder name), passed as ``--bundle``.
        version: bundle version.
        action: ``upscale``, ``translate`` or ``augment``.
        task: the metadata's ``task`` (shown as tooltip).
        variants: ``medgen.variants`` (variant name -> dict with ``scale``, ``sha256``, ...).
        default_variant: ``medgen.default_variant`` (for upscale: scale as str -> variant).
        directions: ``medgen.directions`` of a two-way translate bundle (``a2b``, ``b2a``); empty for one-way.
        trained: ``medgen.trained`` (default true); an untrained bundle is listed but cannot run.
        display_name: the metadata's ``name`` (a label; defaults to ``name``).
        path: the bundle folder as the CLI found it ("" when unknown).
        source: where the CLI found it (one of :data:`BUNDLE_SOURCES`, "" when unknown).
        weights_ok: the CLI's weight check: True (hashes match), False (missing or changed), None (unverified).
        hidden: bundles of the same name found later in the lookup order (shadowed by this one).
    """

    name: str
    version: str
    action: str
    task: str = ""
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_variant: dict[str, str] = field(default_factory=dict)
    directions: tuple[str, ...] = ()
    trained: bool = True
    display_name: str = ""
    path: str = ""
    source: str = ""
    weights_ok: bool | None = None
    hidden: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.display_name or self.name} {self.version}"

    @property
    def runnable(self) -> bool:
        """Trained and its weights are not known to be missing or changed."""
        return self.trained and self.weights_ok is not False

    @property
    def scales(self) -> list[int]:
        """Upscaling factors the shipped variants provide."""
        return sorted({int(v["scale"]) for v in self.variants.values() if isinstance(v, Mapping) and "scale" in v})

    def variants_for_scale(self, scale: int) -> list[str]:
        return sorted(n for n, v in self.variants.items() if isinstance(v, Mapping) and int(v.get("scale", 0)) == int(scale))

    def weights_sha256(self, variant: str) -> str | None:
        spec = self.variants.get(variant) or {}
        return spec.get("sha256") if isinstance(spec, Mapping) else None


def choice_from_metadata(name: str, metadata: Mapping[str, Any], **listing: Any) -> BundleChoice | None:
    """A :class:`BundleChoice` keyed ``name`` from a bundle's ``metadata.json``, or ``None`` if it has no known action.

    ``listing``: the other fields of a ``bundle list`` entry (``display_name``, ``path``, ``source``,
    ``weights_ok``, ``hidden``).
    """
    medgen = metadata.get("medgen") or {}
    action = str(medgen.get("action", ""))
    if action not in ACTIONS:
        return None
    directions = tuple(str(d) for d in medgen.get("directions") or ()) if action == "translate" else ()
    return BundleChoice(
        name=str(name),
        version=str(listing.get("version") or metadata.get("version", "?")),
        action=action,
        task=str(metadata.get("task", "")),
        variants={str(k): dict(v) for k, v in (medgen.get("variants") or {}).items() if isinstance(v, Mapping)},
        default_variant={str(k): str(v) for k, v in (medgen.get("default_variant") or {}).items()},
        directions=directions,
        trained=bool(medgen.get("trained", True)),
        display_name=str(listing.get("display_name") or metadata.get("name") or name),
        path=str(listing.get("path") or ""),
        source=str(listing.get("source") or ""),
        weights_ok=listing.get("weights_ok"),
        hidden=tuple(str(h) for h in listing.get("hidden") or ()),
    )


def choice_from_entry(entry: Mapping[str, Any]) -> BundleChoice | None:
    """A :class:`BundleChoice` from one (validated) entry of ``medgen bundle list --json``."""
    return choice_from_metadata(entry["name"], entry["metadata"], **{k: v for k, v in entry.items() if k not in ("name", "metadata")})


_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "display_name": (str,), "version": (str,), "source": (str,), "hidden": (list,), "weights_ok": (bool, type(None)),
}


def parse_bundle_list(text: str | bytes | Mapping[str, Any], origin: str = "medgen bundle list --json") -> list[dict[str, Any]]:
    """The entries of ``medgen bundle list --json`` output, checked against the schema in this module's docstring.

    Raises:
        CatalogError: not JSON, not ``{"bundles": [...]}``, or an entry lacks ``name``/``path``/``metadata``
            or has a field of the wrong type (the message names the entry and the field).
    """
    if isinstance(text, Mapping):
        document: Any = text
    else:
        try:
            document = json.loads(text)
        except ValueError as err:
            raise CatalogError(f"{origin}: output is not JSON ({err}); expected {{\"bundles\": [...]}}") from err
    if not isinstance(document, Mapping) or not isinstance(document.get("bundles"), list):
        raise CatalogError(f"{origin}: expected a JSON object with a 'bundles' list, got {type(document).__name__}")
    entries = []
    for i, entry in enumerate(document["bundles"]):
        where = f"{origin}: bundle entry {i}"
        if not isinstance(entry, Mapping):
            raise CatalogError(f"{where} is a {type(entry).__name__}, expected an object")
        for key, kind, expected in (("name", str, "the bundle's folder key"), ("path", str, "an absolute path"),
                                    ("metadata", Mapping, "the bundle's metadata.json object")):
            if not isinstance(entry.get(key), kind) or (kind is str and not entry[key]):
                raise CatalogError(f"{where} has no valid '{key}' (expected {expected})")
        where = f"{origin}: bundle {entry['name']!r}"
        for key, kinds in _OPTIONAL_TYPES.items():
            if key in entry and not isinstance(entry[key], kinds):
                raise CatalogError(f"{where}: '{key}' is a {type(entry[key]).__name__}, expected {' or '.join(k.__name__ for k in kinds)}")
        if entry.get("source") not in (None, *BUNDLE_SOURCES):
            raise CatalogError(f"{where}: 'source' is {entry['source']!r}, expected one of {', '.join(BUNDLE_SOURCES)}")
        entries.append(dict(entry))
    return entries


def _one_line_error(stderr: str, returncode: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("medgen: error:")]
    return (errors or lines or [f"exit code {returncode}"])[-1]


def list_bundles(
    executable: Sequence[str] | None = None,
    timeout_s: float = 180.0,
    env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run ``<executable> bundle list --json`` and return its validated entries.

    Args:
        executable: argv prefix of the CLI (default :func:`MedGenLib.commands.medgen_executable`).
        timeout_s: give up after this many seconds.
        env: child environment (default: the current one).

    Raises:
        CatalogError: the CLI cannot be started, fails, times out or prints something else than the schema.
    """
    argv = [*(executable or medgen_executable()), *LIST_ARGS]
    child_env = dict(os.environ if env is None else env)
    child_env.pop("MEDGEN_PROGRESS", None)  # stdout must hold the JSON document only
    child_env["PYTHONUNBUFFERED"] = "1"
    command = subprocess.list2cmdline(argv)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", errors="replace",
                              stdin=subprocess.DEVNULL, env=child_env, timeout=timeout_s, check=False)
    except OSError as err:
        raise CatalogError(f"cannot start {argv[0]!r} to list bundles: {err}") from err
    except subprocess.TimeoutExpired as err:
        raise CatalogError(f"{command} did not answer within {timeout_s:g} s") from err
    if done.returncode != 0:
        raise CatalogError(f"{command} failed: {_one_line_error(done.stderr, done.returncode)}")
    return parse_bundle_list(done.stdout, origin=command)


def list_bundles_in_background(executable: Sequence[str] | None = None, timeout_s: float = 180.0) -> concurrent.futures.Future:
    """:func:`list_bundles` in a worker thread; the GUI polls ``future.done()`` from a timer (no MRML or Qt touched)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="MedGenBundleList")
    future = pool.submit(list_bundles, executable, timeout_s)
    pool.shutdown(wait=False)
    return future


def bundles_by_action(
    discover: Callable[[], Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]] | None = None,
) -> dict[str, list[BundleChoice]]:
    """``{action: [BundleChoice, ...]}`` for every action in :data:`ACTIONS` (empty lists where none exist).

    Args:
        discover: returns ``bundle list --json`` entries (a list), or ``{bundle key: metadata}``;
            default :func:`list_bundles` (the CLI in a child process).
    """
    found = (discover or list_bundles)()
    if isinstance(found, Mapping):
        choices = [choice_from_metadata(name, metadata) for name, metadata in found.items()]
    else:
        choices = [choice_from_entry(entry) for entry in found]
    groups: dict[str, list[BundleChoice]] = {action: [] for action in ACTIONS}
    for choice in sorted((c for c in choices if c is not None), key=lambda c: c.name):
        groups[choice.action].append(choice)
    return groups


def enabled_actions(groups: Mapping[str, list[BundleChoice]]) -> set[str]:
    """Actions with at least one bundle (their buttons are enabled)."""
    return {action for action, choices in groups.items() if choices}


def bundle_for(groups: Mapping[str, list[BundleChoice]], action: str, preferred: str = "") -> BundleChoice | None:
    """The ``preferred`` bundle if it does ``action``, else the first runnable one that does, else the first (``None`` if none)."""
    choices = groups.get(action) or []
    fallback = next((c for c in choices if c.runnable), choices[0] if choices else None)
    return next((c for c in choices if c.name == preferred), fallback)


def find_choice(groups: Mapping[str, list[BundleChoice]], name: str) -> BundleChoice | None:
    """The bundle called ``name`` in any group."""
    return next((c for choices in groups.values() for c in choices if c.name == name), None)
