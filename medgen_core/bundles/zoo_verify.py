"""The MONAI Model Zoo's bundle verification (``ci/verify_bundle.py``, min and full modes), offline.

Re-implemented from the zoo's published rules at Project-MONAI/model-zoo commit :data:`ZOO_COMMIT`
(``ci/verify_bundle.py``, ``ci/utils.py``, ``ci/prepare_schema.py``, ``ci/bundle_custom_data.py``), calling
the same MONAI functions with the same defaults. Nothing is downloaded: the metadata schema is a pinned
copy in ``schemas/`` and every file named in ``large_files.yml`` must already be in the bundle.

The zoo's steps, in its order. ``-m min`` (premerge, CPU) runs 1-3; full mode (the GPU ``/build`` run)
runs all six. The zoo stops at the first failure; :func:`verify` runs every step and
:func:`first_failure` says where the zoo would stop.

1. ``verify_bundle_directory``: every entry of ``large_files.{json,yaml,yml}`` (the last of those names
   present) is fetched by ``download_url(**entry)``, which keeps a present file whose hash matches (here:
   present and matching, or fail); ``LICENSE`` and ``configs/metadata.json`` exist; ``models/model.pt`` and
   ``configs/inference.{json,yaml,yml}`` exist unless the bundle is in ``exclude_verify_preferred_files_list``.
2. ``verify_version_changes``: ``version`` and ``changelog`` exist, the version is in the changelog, and
   ``<bundle>_v<version>`` is not yet in the zoo's ``models/model_info.json`` (checked when one is given).
3. ``verify_metadata_format``: MONAI's ``verify_metadata`` against the schema that ``metadata["schema"]``
   names (by file name, as ``prepare_schema`` saves it).
4. ``verify_bundle_properties``: app property checks for ``supported_apps`` whose app has a
   ``bundle_properties.py`` in the zoo (none at the pinned commit, so nothing runs).
5. ``verify_data_shape``: MONAI's ``verify_net_in_out(net_id, meta_file, config_file, bundle_root=...)`` with
   its defaults: a random input of the declared ``image`` shape at ``n = p = any = 1`` in the declared
   dtype, on ``cuda:0`` if available else the CPU, checking the ``pred`` channels and dtype. Skipped for
   bundles in ``exclude_verify_shape_list``.
6. ``verify_torchscript``: MONAI's ``ckpt_export`` of ``models/model.pt`` (``torch.jit.script``), then
   ``torch.jit.load`` of a shipped ``models/model.ts``. Skipped for ``exclude_verify_torchscript_list``.

The network id is ``network_def`` (the zoo uses ``autoencoder_def`` for its two BraTS diffusion bundles).
MedGen's own bundles are excluded the zoo's way: by name, in :data:`MEDGEN_CUSTOM_DATA` (the entries a pull
request would add to ``ci/bundle_custom_data.py``). Two further checks are MedGen's, not the zoo's:
``all_inputs_shape`` (every declared input, e.g. a diffusion UNet's timesteps and class labels, fed to the
network; the output's channels, dtype and evaluable spatial shape checked) and ``torchscript_matches_eager``
(the exported module equals the eager network with the trained weights, max abs difference <= 1e-5).

The differences from the zoo are deliberate: no network access, nothing written into the bundle (the
export goes to ``work_dir``), and paths reach MONAI's config parser as inert literals.

This module holds the zoo's six steps and :func:`verify`; the pinned lists, step names and shared helpers are in
:mod:`.zoo_rules`, MedGen's two checks in :mod:`.zoo_medgen_checks` (both re-exported here).

Command line (what ``medgen bundle check`` runs in a subprocess; :mod:`medgen_core.bundles.zoo_ci`)::

    python -m medgen_core.bundles.zoo_ci monai_bundles/brain_tissue_genseg -m full [--json-out FILE]
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

from medgen_core.bundles.zoo_medgen_checks import TORCHSCRIPT_ATOL, verify_all_inputs, verify_torchscript_matches_eager
from medgen_core.bundles.zoo_rules import (
    FULL_STEPS, MEDGEN_CUSTOM_DATA, MEDGEN_STEPS, MIN_STEPS, PINNED_SCHEMAS, SCHEMA_DIR, STEPS, ZOO_COMMIT, ZOO_CUSTOM_DATA, ZOO_REPO,
    ZooCheckError, ZooStep, bundle_metadata, bundle_name, bundle_on_sys_path, bundle_root_literal, declared_input_shape, default_device,
    exclusion, inference_config, net_id, quiet_monai, weights_names,
)

__all__ = [
    "MEDGEN_CUSTOM_DATA",
    "MEDGEN_STEPS",
    "MIN_STEPS",
    "FULL_STEPS",
    "PINNED_SCHEMAS",
    "STEPS",
    "ZOO_COMMIT",
    "ZOO_CUSTOM_DATA",
    "ZooStep",
    "ZOO_REPO",
    "SCHEMA_DIR",
    "TORCHSCRIPT_ATOL",
    "exclusion",
    "first_failure",
    "verify",
]


_NECESSARY_FILES = ("configs/metadata.json", "LICENSE")
_PREFERRED_WEIGHTS = "models/model.pt"


# -- the zoo's steps ---------------------------------------------------------------------------------
def verify_bundle_directory(root: Path, mode: str) -> str:
    """Step 1: large files present with matching hashes, necessary and preferred files."""
    from monai.apps.utils import check_hash

    from medgen_core.bundles.large_files import find_large_files, read_large_files
    from medgen_core.errors import BundleError

    name = bundle_name(root)
    notes = []
    if name in ZOO_CUSTOM_DATA["exclude_download_large_file_list"] and mode == "min":
        notes.append("large files skipped (exclude_download_large_file_list, min mode)")
    elif (large := find_large_files(root)) is not None:
        try:
            entries = read_large_files(large)
        except BundleError as err:
            raise ZooCheckError(f"download large files in {name} error: {err}") from None
        for entry in entries:
            if not isinstance(entry, dict) or "path" not in entry:
                raise ZooCheckError(f"{large.name}: entry {entry!r} has no 'path' (the zoo reads entry['path'])")
            if "url" not in entry:
                raise ZooCheckError(f"{large.name}: entry {entry['path']!r} has no 'url' key: the zoo's download_url(**entry) needs one "
                                    f"(url: \"\" for a file that ships in the bundle)")
            target = (root / str(entry["path"])).resolve()
            if not target.is_relative_to(root.resolve()):
                raise ZooCheckError(f"{large.name}: path {entry['path']!r} points outside the bundle")
            if not target.exists():
                where = f"from {entry['url']}" if entry["url"] else "(its url is empty)"
                raise ZooCheckError(f"{large.name}: {entry['path']} is missing; the zoo would download it {where}, which this offline check does not do")
            hash_val = entry.get("hash_val") or None
            hash_type = entry.get("hash_type") or "sha256"  # download_url's default in MONAI 1.6
            if not check_hash(target, hash_val, hash_type):
                raise ZooCheckError(f"{large.name}: {entry['path']} does not match its {hash_type} {hash_val} (download_url raises HashCheckError)")
        notes.append(f"{len(entries)} file(s) of {large.name} present with matching hashes")
    for rel in _NECESSARY_FILES:
        if not (root / rel).exists():
            raise ZooCheckError(f"necessary file {rel} is not existing.")
    if name not in ZOO_CUSTOM_DATA["exclude_verify_preferred_files_list"]:
        inference_config(root)
        if not (root / _PREFERRED_WEIGHTS).exists():
            raise ZooCheckError(f"necessary file {_PREFERRED_WEIGHTS} is not existing.")
    return "; ".join([*notes, "LICENSE, configs/metadata.json, models/model.pt and the inference config exist"])


def verify_version_changes(root: Path, model_info: Path | None = None) -> str:
    """Step 2: ``version`` in ``changelog``; ``<name>_v<version>`` not yet published (when ``model_info`` is given)."""
    name, meta = bundle_name(root), bundle_metadata(root)
    for key in ("version", "changelog"):
        if key not in meta:
            raise ZooCheckError(f"'{key}' is missing in configs/metadata.json of bundle: {name}.")
    version, changelog = meta["version"], meta["changelog"]
    if not isinstance(changelog, dict) or version not in changelog:
        raise ZooCheckError(f"version number: {version} is missing in 'changelog' in configs/metadata.json of bundle: {name}.")
    if model_info is None:
        return f"version {version} is in the changelog; {name}_v{version} not compared with the zoo's models/model_info.json (none given)"
    try:
        published = json.loads(Path(model_info).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ZooCheckError(f"{model_info}: cannot be read as JSON: {err}") from err
    if f"{name}_v{version}" in published:
        raise ZooCheckError(f"version number: {version} is already used of bundle: {name}. Please change it.")
    return f"version {version} is in the changelog and {name}_v{version} is not in {Path(model_info).name}"


def pinned_schema(url: Any) -> Path:
    """The pinned copy of the schema that ``metadata["schema"]`` names (checked against its recorded sha256)."""
    from medgen_core.provenance import sha256_file

    if not isinstance(url, str) or not url:
        raise ZooCheckError("configs/metadata.json has no 'schema' URL (the zoo downloads the schema from metadata['schema'])")
    file_name = url.rstrip("/").split("/")[-1]
    if file_name not in PINNED_SCHEMAS:
        raise ZooCheckError(f"schema {url} is not pinned offline (pinned: {', '.join(PINNED_SCHEMAS)}); "
                            f"use https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json")
    path = SCHEMA_DIR / file_name
    if sha256_file(path) != PINNED_SCHEMAS[file_name]:
        raise ZooCheckError(f"the pinned schema {path} does not match its recorded sha256 (reinstall medgen)")
    return path


def verify_metadata_format(root: Path) -> str:
    """Step 3: MONAI's ``verify_metadata`` against the pinned copy of the named schema."""
    from monai.bundle import verify_metadata

    schema = pinned_schema(bundle_metadata(root).get("schema"))
    try:
        verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(schema), hash_val=PINNED_SCHEMAS[schema.name], hash_type="sha256")
    except ValueError as err:
        raise ZooCheckError(" ".join(str(err).split())) from None
    return f"configs/metadata.json is valid against {schema.name}"


# app name -> bundle_properties.py in the zoo at ZOO_COMMIT: there is none, so no supported app is checked
ZOO_APP_PROPERTIES: dict[str, str] = {}


def verify_bundle_properties(root: Path) -> str:
    """Step 4: properties of the inference workflow for each supported app that the zoo has a property file for."""
    apps = bundle_metadata(root).get("supported_apps")
    if not apps:
        return "no supported_apps: nothing to check (as in the zoo)"
    checked = [app for app in apps if app in ZOO_APP_PROPERTIES]
    if not checked:
        return f"supported_apps {sorted(apps)}: the zoo has no bundle_properties.py for them, nothing to check"
    raise ZooCheckError(f"supported_apps {checked}: app property checks are not pinned in MedGen's copy of the zoo's rules")


def verify_data_shape(root: Path, device: str | None = None, n: int | None = None, p: int | None = None) -> str:
    """Step 5: MONAI's ``verify_net_in_out`` with the zoo's defaults (``device``/``n``/``p`` only for other uses)."""
    from monai.bundle import verify_net_in_out

    name, config = bundle_name(root), inference_config(root)
    meta = bundle_metadata(root)
    with bundle_on_sys_path(root):
        verify_net_in_out(net_id=net_id(name), meta_file=str(root / "configs" / "metadata.json"), config_file=str(config),
                          bundle_root=bundle_root_literal(root), device=device, n=n, p=p)
    shape = declared_input_shape(meta, n=n or 1, p=p or 1)
    pred = meta["network_data_format"]["outputs"]["pred"]
    return f"{net_id(name)} took a random {meta['network_data_format']['inputs']['image']['dtype']} input {shape} on {default_device(device)} " \
           f"and returned {pred['num_channels']} channel(s) of {pred['dtype']}"


def verify_torchscript(root: Path, work_dir: Path) -> str:
    """Step 6: ``ckpt_export`` (``torch.jit.script``) to ``work_dir/verify_model.ts``; load a shipped ``models/model.ts``."""
    import torch
    from monai.bundle import ckpt_export

    name, config = bundle_name(root), inference_config(root)
    model_name, ts_name = weights_names(name)
    out = Path(work_dir) / "verify_model.ts"
    with bundle_on_sys_path(root):
        ckpt_export(net_id=net_id(name), filepath=str(out), ckpt_file=str(root / "models" / model_name),
                    meta_file=str(root / "configs" / "metadata.json"), config_file=str(config), bundle_root=bundle_root_literal(root))
    message = f"models/{model_name} exported with torch.jit.script"
    if ts_name is not None and (root / "models" / ts_name).exists():
        torch.jit.load(str(root / "models" / ts_name), map_location="cpu")
        message += f"; the shipped models/{ts_name} loads"
    return message


# -- running the steps ---------------------------------------------------------------------------------
def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "(no message)"
    return text if isinstance(err, ZooCheckError) else f"{type(err).__name__}: {text}"


def verify(bundle_root: str | Path, mode: str = "full", steps: tuple[str, ...] | list[str] | None = None, work_dir: str | Path | None = None,
           model_info: str | Path | None = None, device: str | None = None) -> list[ZooStep]:
    """Run the zoo's steps for ``mode`` (``"min"``: 1-3, ``"full"``: 1-6) plus, in full mode, MedGen's two
    checks; or exactly ``steps`` (names from :data:`STEPS`). Every step runs, also after a failure.

    Args:
        bundle_root: the bundle folder (its folder name is the name the custom-data lists use).
        mode: ``"min"`` or ``"full"``.
        steps: run these instead of the mode's steps.
        work_dir: where the TorchScript export goes (a temporary folder when None); never the bundle.
        model_info: the zoo's ``models/model_info.json``, to refuse a version that is already published.
        device: MONAI's default (``cuda:0`` if available, else the CPU) when None, as in the zoo.
    """
    if mode not in ("min", "full"):
        raise ValueError(f"verify: mode must be 'min' or 'full', got {mode!r}.")
    names = list(steps) if steps is not None else list(MIN_STEPS if mode == "min" else STEPS)
    unknown = [s for s in names if s not in STEPS]
    if unknown:
        raise ValueError(f"verify: unknown step(s) {unknown}; choose from {list(STEPS)}.")
    root = Path(bundle_root).absolute()
    name = bundle_name(root)
    with contextlib.ExitStack() as stack:
        work = Path(work_dir) if work_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medgen-zoo-")))
        work.mkdir(parents=True, exist_ok=True)
        runners = {
            "verify_bundle_directory": lambda: verify_bundle_directory(root, mode),
            "verify_version_changes": lambda: verify_version_changes(root, Path(model_info) if model_info else None),
            "verify_metadata_format": lambda: verify_metadata_format(root),
            "verify_bundle_properties": lambda: verify_bundle_properties(root),
            "verify_data_shape": lambda: verify_data_shape(root, device),
            "verify_torchscript": lambda: verify_torchscript(root, work),
            "all_inputs_shape": lambda: verify_all_inputs(root, device),
            "torchscript_matches_eager": lambda: verify_torchscript_matches_eager(root, work, verify_torchscript, device),
        }
        results = []
        for step in names:
            reason = exclusion("verify_torchscript" if step == "torchscript_matches_eager" else step, name)
            if reason is not None:
                results.append(ZooStep(step, "excluded", reason))
                continue
            try:
                with quiet_monai():
                    results.append(ZooStep(step, "pass", runners[step]()))
            except Exception as err:  # any failure is the step's finding, reported as one line
                results.append(ZooStep(step, "fail", _one_line(err)))
    return results


def first_failure(results: list[ZooStep], mode: str = "full") -> ZooStep | None:
    """The step at which the zoo's ``ci/verify_bundle.py -m <mode>`` would stop, or None when it passes."""
    steps = MIN_STEPS if mode == "min" else FULL_STEPS
    return next((r for r in results if r.name in steps and r.status == "fail"), None)
