"""The bundles MedGen can run, grouped by action (``metadata["medgen"]["action"]``), for the bundle chooser."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from MedGenLib.commands import ACTIONS

__all__ = ["BundleChoice", "bundle_for", "bundles_by_action", "choice_from_metadata", "enabled_actions", "find_choice"]


@dataclass(frozen=True)
class BundleChoice:
    """One bundle as the module shows it.

    Args:
        name, version: bundle name and version.
        action: ``upscale``, ``translate`` or ``augment``.
        task: the metadata's ``task`` (shown as tooltip).
        variants: ``medgen.variants`` (variant name -> dict with ``scale``, ``sha256``, ...).
        default_variant: ``medgen.default_variant`` (for upscale: scale as str -> variant).
        directions: ``medgen.directions`` of a two-way translate bundle (``a2b``, ``b2a``); empty for one-way.
        trained: ``medgen.trained`` (default true); an untrained bundle is listed but cannot run.
    """

    name: str
    version: str
    action: str
    task: str = ""
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_variant: dict[str, str] = field(default_factory=dict)
    directions: tuple[str, ...] = ()
    trained: bool = True

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def scales(self) -> list[int]:
        """Upscaling factors the shipped variants provide."""
        return sorted({int(v["scale"]) for v in self.variants.values() if isinstance(v, Mapping) and "scale" in v})

    def variants_for_scale(self, scale: int) -> list[str]:
        return sorted(n for n, v in self.variants.items() if isinstance(v, Mapping) and int(v.get("scale", 0)) == int(scale))

    def weights_sha256(self, variant: str) -> str | None:
        spec = self.variants.get(variant) or {}
        return spec.get("sha256") if isinstance(spec, Mapping) else None


def choice_from_metadata(name: str, metadata: Mapping[str, Any]) -> BundleChoice | None:
    """A :class:`BundleChoice` from a bundle's ``metadata.json``, or ``None`` if it has no known action."""
    medgen = metadata.get("medgen") or {}
    action = str(medgen.get("action", ""))
    if action not in ACTIONS:
        return None
    directions = tuple(str(d) for d in medgen.get("directions") or ()) if action == "translate" else ()
    return BundleChoice(
        name=str(metadata.get("name", name)),
        version=str(metadata.get("version", "?")),
        action=action,
        task=str(metadata.get("task", "")),
        variants={str(k): dict(v) for k, v in (medgen.get("variants") or {}).items() if isinstance(v, Mapping)},
        default_variant={str(k): str(v) for k, v in (medgen.get("default_variant") or {}).items()},
        directions=directions,
        trained=bool(medgen.get("trained", True)),
    )


def _discover_metadata() -> dict[str, Mapping[str, Any]]:
    from medgen_core.bundles import (
        discover_bundles,  # imported on use: needs MedGen installed
    )

    return {name: info.metadata for name, info in discover_bundles().items()}


def bundles_by_action(discover: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None) -> dict[str, list[BundleChoice]]:
    """``{action: [BundleChoice, ...]}`` for every action in :data:`ACTIONS` (empty lists where none exist).

    Args:
        discover: returns ``{bundle name: metadata}``; default ``medgen_core.bundles.discover_bundles()``.
    """
    groups: dict[str, list[BundleChoice]] = {action: [] for action in ACTIONS}
    for name, metadata in sorted((discover or _discover_metadata)().items()):
        choice = choice_from_metadata(name, metadata)
        if choice is not None:
            groups[choice.action].append(choice)
    return groups


def enabled_actions(groups: Mapping[str, list[BundleChoice]]) -> set[str]:
    """Actions with at least one bundle (their buttons are enabled)."""
    return {action for action, choices in groups.items() if choices}


def bundle_for(groups: Mapping[str, list[BundleChoice]], action: str, preferred: str = "") -> BundleChoice | None:
    """The ``preferred`` bundle if it does ``action``, else the first bundle that does (``None`` if none)."""
    choices = groups.get(action) or []
    return next((c for c in choices if c.name == preferred), choices[0] if choices else None)


def find_choice(groups: Mapping[str, list[BundleChoice]], name: str) -> BundleChoice | None:
    """The bundle called ``name`` in any group."""
    return next((c for choices in groups.values() for c in choices if c.name == name), None)
