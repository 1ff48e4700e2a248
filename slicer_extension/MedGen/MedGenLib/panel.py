"""What the MedGen panel shows and runs, decided without Qt or Slicer: whether an action button can run (and its
tooltip), the entries of the bundle and variant choosers, and the :class:`~MedGenLib.jobs.JobOptions` a press runs.

``MedGen.py``'s widget copies these into its widgets. User-facing strings go through ``_`` (``slicer.i18n.tr`` in the
module, so that Slicer's string extraction still finds every ``_("...")``; identity by default, e.g. in tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from MedGenLib.catalog import BundleChoice
from MedGenLib.commands import ACTIONS, Device
from MedGenLib.jobs import JobOptions

__all__ = ["ComboEntry", "bundle_entries", "button_state", "job_options", "variant_entries"]

Translate = Callable[[str], str]


@dataclass(frozen=True)
class ComboEntry:
    """One item of a combo box: shown ``label``, item ``data``, ``tooltip``; ``header``: a group title, not selectable."""

    label: str
    data: str
    tooltip: str = ""
    header: bool = False


def bundle_entries(catalog: Mapping[str, list[BundleChoice]]) -> list[ComboEntry]:
    """The bundle chooser: per action with bundles (in :data:`ACTIONS` order), a header, then its bundles."""
    entries: list[ComboEntry] = []
    for action in ACTIONS:
        choices = catalog.get(action) or []
        if choices:
            entries.append(ComboEntry(f"— {action.capitalize()} —", "", header=True))
            entries += [ComboEntry(c.label, c.name, f"{c.task} ({c.source}: {c.path})") for c in choices]
    return entries


def variant_entries(choice: BundleChoice | None, _: Translate = str) -> tuple[list[ComboEntry], bool]:
    """The variant chooser for ``choice``: ``(entries, enabled)``; "(default)" first. Only upscale and augment bundles
    offer variants (a translate bundle's variants are its directions)."""
    enabled = bool(choice and choice.action in ("upscale", "augment"))
    variants = sorted(choice.variants) if enabled and choice is not None else []
    return [ComboEntry(_("(default)"), ""), *(ComboEntry(v, v) for v in variants)], enabled


def button_state(action: str, bundle: BundleChoice | None, *, has_input: bool, install_first: bool, running: str | None,
                 scale: int, axes: str, _: Translate = str) -> tuple[bool, str]:
    """``(enabled, tooltip)`` of ``action``'s button. ``bundle``: the chosen (or first) bundle for ``action``;
    ``running``: the action whose job runs now (its button cancels it, the others wait)."""
    if running is not None:
        return action == running, _("Cancel the running job (kills the MedGen process).")
    if not has_input:
        return False, _("Select an input volume.")
    if install_first:
        return True, _("MedGen's Python packages will be installed first.")
    if bundle is None:
        return False, _("No {action} bundle is installed.").format(action=action)
    if not bundle.trained:
        return False, _("Bundle {name} has no trained weights yet.").format(name=bundle.name)
    if not bundle.runnable:
        return False, _("The weights of bundle {name} are missing or changed (see 'medgen bundle list').").format(name=bundle.name)
    if action == "upscale" and axes != "through" and scale not in bundle.scales:
        return False, _("Bundle {name} has no x{scale} model.").format(name=bundle.name, scale=scale)
    return True, _("Run {action} with {name}.").format(action=action, name=bundle.label)


def job_options(action: str, choice: BundleChoice, *, scale: int = 2, variant: str | None = None, direction: str | None = "a2b",
                seed: int | None = None, strength: float | None = None, count: int = 1, force_cpu: bool = False,
                axes: str = "inplane", target_spacing: float | None = None, adapt_seconds: float | None = None,
                gate: bool = True) -> JobOptions:
    """What a press of ``action`` runs with ``choice``: ``direction`` only for two-way bundles, ``strength`` and
    ``count`` only for augment, the through-plane settings only for ``upscale --axes through``."""
    upscale = {}
    if action == "upscale":
        through = axes == "through"
        upscale = dict(axes=axes, target_spacing=target_spacing if through else None, adapt_seconds=adapt_seconds if through else None,
                       gate=bool(gate))
    return JobOptions(action=action, bundle=choice.name, scale=int(scale), variant=variant,
                      direction=direction if direction in choice.directions else None, seed=seed,
                      strength=strength if action == "augment" else None, count=int(count) if action == "augment" else 1,
                      device=Device.CPU if force_cpu else Device.AUTO, **upscale)
