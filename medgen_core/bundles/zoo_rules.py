"""The Model Zoo's pinned rules and the helpers its steps share (:mod:`.zoo_verify` runs the zoo's steps,
:mod:`.zoo_medgen_checks` MedGen's two checks): the custom-data lists of ``ci/bundle_custom_data.py`` at
:data:`ZOO_COMMIT` with MedGen's entries, the step names, the names the zoo derives from a bundle folder, the pinned
schema's hash, and reading a bundle's metadata and inference config the zoo's way.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FULL_STEPS", "MEDGEN_CUSTOM_DATA", "MEDGEN_STEPS", "MIN_STEPS", "PINNED_SCHEMAS", "SCHEMA_DIR", "STEPS", "ZOO_COMMIT",
    "ZOO_CUSTOM_DATA", "ZOO_REPO", "ZooCheckError", "ZooStep", "bundle_metadata", "bundle_name", "bundle_on_sys_path",
    "bundle_root_literal", "declared_input_shape", "default_device", "exclusion", "find_bundle_file", "inference_config",
    "net_id", "quiet_monai", "weights_names",
]

ZOO_REPO = "Project-MONAI/model-zoo"
ZOO_COMMIT = "dfae206df112837d817e78d3727c9f32b3b52e82"  # model-zoo dev, 2024-10-11: the ci/ rules pinned here
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
# schema file name (the last part of metadata["schema"]) -> sha256 of the pinned copy in SCHEMA_DIR.
# meta_schema_20240725.json is the MONAI-extra-test-data 0.8.1 release asset, as republished byte for byte
# at project-monai.github.io/schema/ (public/schema/ of Project-MONAI/project-monai.github.io).
PINNED_SCHEMAS = {"meta_schema_20240725.json": "cd64aa8a5904426f6fc6855dabe46af8c742d5bad644b4e9cfb78ebad09ad678"}

# ci/bundle_custom_data.py at ZOO_COMMIT (the lists verify_bundle.py reads)
ZOO_CUSTOM_DATA: dict[str, tuple[str, ...]] = {
    "exclude_verify_shape_list": (
        "mednist_gan", "lung_nodule_ct_detection", "pathology_nuclei_segmentation_classification", "brats_mri_generative_diffusion",
        "brats_mri_axial_slices_generative_diffusion", "maisi_ct_generative",
    ),
    "exclude_verify_preferred_files_list": ("pediatric_abdominal_ct_segmentation", "maisi_ct_generative"),
    "exclude_verify_torchscript_list": (
        "swin_unetr_btcv_segmentation", "renalStructures_UNEST_segmentation", "renalStructures_CECT_segmentation",
        "wholeBrainSeg_Large_UNEST_segmentation", "breast_density_classification", "mednist_reg", "brats_mri_axial_slices_generative_diffusion",
        "brats_mri_generative_diffusion", "vista3d", "maisi_ct_generative", "vista2d",
    ),
    "exclude_download_large_file_list": ("maisi_ct_generative",),
}
# MedGen's additions to those lists, with the reason a zoo pull request would give
MEDGEN_CUSTOM_DATA: dict[str, dict[str, str]] = {
    "exclude_verify_shape_list": {
        "brain_slice_ddpm": "a diffusion UNet: DiffusionModelUNet.forward needs timesteps and class labels besides the image, and "
                            "verify_net_in_out feeds one random image (the zoo lists its diffusion bundles for the same reason); "
                            "MedGen's all_inputs_shape check feeds every declared input instead",
    },
    "exclude_verify_torchscript_list": {
        "brain_slice_ddpm": "a diffusion UNet: torch.jit.script fails inside MONAI's DiffusionModelUNet (its attention block reshapes "
                            "with a starred size), as for the zoo's brats_mri_*generative_diffusion and maisi_ct_generative",
    },
}

MIN_STEPS = ("verify_bundle_directory", "verify_version_changes", "verify_metadata_format")
FULL_STEPS = (*MIN_STEPS, "verify_bundle_properties", "verify_data_shape", "verify_torchscript")
MEDGEN_STEPS = ("all_inputs_shape", "torchscript_matches_eager")
STEPS = (*FULL_STEPS, *MEDGEN_STEPS)
_EXCLUSION_LIST = {"verify_data_shape": "exclude_verify_shape_list", "verify_torchscript": "exclude_verify_torchscript_list"}


class ZooCheckError(Exception):
    """A step's finding (the zoo raises ``ValueError``/``KeyError``/... at that point)."""


@dataclass
class ZooStep:
    """One step's outcome: ``status`` is ``pass``, ``fail``, ``excluded`` (a custom-data list names the bundle)
    or ``not_run``; ``message`` says what was checked or what is wrong."""

    name: str
    status: str
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status in ("pass", "excluded")

    @property
    def is_zoo_step(self) -> bool:
        return self.name in FULL_STEPS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bundle_name(bundle_root: str | Path) -> str:
    """The zoo names a bundle by its folder (``models/<name>``), not by ``metadata["name"]``."""
    return Path(bundle_root).absolute().name


def exclusion(step: str, name: str) -> str | None:
    """Why ``step`` is skipped for bundle ``name`` (its custom-data list names it), or None."""
    key = _EXCLUSION_LIST.get(step)
    if key is None:
        return None
    if name in ZOO_CUSTOM_DATA[key]:
        return f"listed in the zoo's ci/bundle_custom_data.py {key}"
    if name in MEDGEN_CUSTOM_DATA.get(key, {}):
        return f"{key} (MedGen's entry for the zoo's ci/bundle_custom_data.py): {MEDGEN_CUSTOM_DATA[key][name]}"
    return None


def net_id(name: str) -> str:
    """The config id of the network the zoo checks (``ci/verify_bundle.py::_get_net_id``)."""
    return "autoencoder_def" if name in ("brats_mri_generative_diffusion", "brats_mri_axial_slices_generative_diffusion") else "network_def"


def weights_names(name: str) -> tuple[str, str | None]:
    """``(checkpoint, shipped TorchScript or None)`` under ``models/`` (``ci/verify_bundle.py::_get_weights_names``)."""
    special = {"brats_mri_generative_diffusion": ("model_autoencoder.pt", "model_autoencoder.ts"),
               "brats_mri_axial_slices_generative_diffusion": ("model_autoencoder.pt", None), "pediatric_abdominal_ct_segmentation": ("dynunet_FT.pt", None)}
    return special.get(name, ("model.pt", "model.ts"))


def find_bundle_file(folder: Path, stem: str) -> str | None:
    """``stem.json|yaml|yml`` in ``folder``; when several exist the last of that order wins, as in the zoo."""
    found = None
    for suffix in ("json", "yaml", "yml"):
        if (folder / f"{stem}.{suffix}").is_file():
            found = f"{stem}.{suffix}"
    return found


def bundle_metadata(root: Path) -> dict[str, Any]:
    """``configs/metadata.json`` as a dict (a :class:`ZooCheckError` when it is not a JSON object)."""
    path = root / "configs" / "metadata.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ZooCheckError(f"configs/metadata.json cannot be read as JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ZooCheckError("configs/metadata.json does not hold a JSON object")
    return meta


def inference_config(root: Path) -> Path:
    """``configs/inference.json|yaml|yml`` (the last of that order, as in the zoo)."""
    name = find_bundle_file(root / "configs", "inference")
    if name is None:
        raise ZooCheckError("configs/inference.json|yaml|yml is missing (the zoo checks the network of the inference config)")
    return root / "configs" / name


@contextlib.contextmanager
def bundle_on_sys_path(root: Path) -> Iterator[None]:
    """The bundle folder first on ``sys.path`` while a step runs (the zoo: ``sys.path = [bundle] + sys.path``)."""
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(root))


@contextlib.contextmanager
def quiet_monai() -> Iterator[None]:
    """MONAI's bundle functions log every argument and file check at INFO; only warnings pass while a step runs."""
    import logging

    loggers = [logging.getLogger(n) for n in ("monai.apps", "monai.bundle.scripts", "monai.bundle")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def bundle_root_literal(root: Path) -> Any:
    """``root`` as a literal for MONAI's config parser (a path is never evaluated)."""
    from medgen_core.bundles.overrides import literal

    return literal(str(root))


def declared_input_shape(meta: dict[str, Any], n: int = 1, p: int = 1, any_size: int = 1) -> tuple[int, ...]:
    """``(1, C, *spatial)`` of the declared ``image`` input at ``n``, ``p`` and ``any``, as MONAI's ``verify_net_in_out`` builds it."""
    from monai.bundle.scripts import _get_fake_spatial_shape

    spec = meta["network_data_format"]["inputs"]["image"]
    return (1, int(spec["num_channels"]), *_get_fake_spatial_shape(spec["spatial_shape"], p=p, n=n, any=any_size))


def default_device(device: str | None) -> str:
    """``device``, else MONAI's default: ``cuda:0`` when available, else the CPU."""
    import torch

    return device or ("cuda:0" if torch.cuda.is_available() else "cpu")
