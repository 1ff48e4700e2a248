"""Run a bundle's ``configs/inference.json`` through MONAI's own :class:`~monai.bundle.ConfigWorkflow`.

The CLI, the tests and the Slicer module all come through here, so they share one code path with
``python -m monai.bundle run``. Before MONAI sees anything, the bundle's configs are inspected
(:func:`~medgen_core.bundles.inspection.require_inspected`; built-in bundles are trusted), and every
user value (input and output paths, the bundle root, variant names, ``--set`` values) is handed over
as a literal (:mod:`medgen_core.bundles.overrides`): a file named ``$__import__('os')...``, ``%x.json#y``
or ``a@#b.nii.gz`` is a file name, never an expression, macro or reference.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Mapping

from medgen_core.bundles.catalog import BundleInfo, get_bundle
from medgen_core.bundles.inspection import require_inspected
from medgen_core.bundles.overrides import check_override_id, literal_overrides, torch_device
from medgen_core.errors import BundleError, ImageReadError, MedGenError

__all__ = ["run_bundle_inference", "training_parser"]

logger = logging.getLogger(__name__)


def _device_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with ``device`` (a string or ``"$torch.device('cpu')"``) replaced by a :class:`torch.device`."""
    out = dict(values)
    if out.get("device") is not None:
        out["device"] = torch_device(out["device"])
    return out


def _user_error_in(err: BaseException) -> MedGenError | None:
    """The first :class:`MedGenError` in an exception's cause/context chain (MONAI wraps config errors)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, MedGenError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def run_bundle_inference(
    bundle: str | Path | BundleInfo,
    input_path: str | Path,
    output_path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    config: str = "inference",
    trust: bool = False,
    expressions: Mapping[str, Any] | None = None,
) -> Path:
    """Run ``bundle``'s inference config on one input file and write one output file.

    Args:
        bundle: bundle name, bundle folder, or :class:`BundleInfo`.
        input_path: input image (any format :func:`medgen_core.io.read_volume` reads).
        output_path: output file (``.nii``, ``.nii.gz`` or ``.nrrd``); written atomically with provenance.
        overrides: config ids to override, e.g. ``{"variant": "x4_mixed", "axes": "all"}``; values are
            literals (strings stay strings, whatever they contain); ``device`` may be a string or
            ``"$torch.device('cpu')"`` and becomes a :class:`torch.device`.
        config: config name under ``configs/``.
        trust: run even if the configs fail the inspection (the user's explicit ``--trust``).
        expressions: ids whose values MONAI interprets (``$``, ``@``); each must come from
            :func:`~medgen_core.bundles.overrides.expert_override`, which inspects it.

    Returns:
        The written output path.
    """
    from monai.bundle import ConfigWorkflow

    info = bundle if isinstance(bundle, BundleInfo) else get_bundle(bundle)
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise ImageReadError(f"{input_path}: file does not exist (expected an image: NIfTI, NRRD, MHA/MHD or DICOM).")
    config_file = info.config(config)
    require_inspected(info, trust=trust)  # before MONAI reads the logging INI or any config
    values = literal_overrides(_device_values({**dict(overrides or {}), "bundle_root": str(info.path), "input_file": input_path,
                                               "output_file": output_path}))
    raw = {check_override_id(k): v for k, v in (expressions or {}).items()}  # already inspected (overrides.expert_override)
    root = str(info.path)
    if root not in sys.path:  # bundle-local scripts/ must import before ConfigWorkflow.run() adds the root itself
        sys.path.insert(0, root)
    logging_file = info.path / "configs" / "logging.conf"
    try:
        workflow = ConfigWorkflow(
            config_file=str(config_file),
            meta_file=str(info.path / "configs" / "metadata.json"),
            logging_file=str(logging_file) if logging_file.is_file() else None,
            workflow_type="infer",
            **values,
            **raw,
        )
    except (KeyError, ValueError, IndexError) as err:  # an override id that does not fit the config
        raise BundleError(f"bundle {info.name}: cannot apply the overrides {sorted({**values, **raw})}: {err}") from None
    try:
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    except MedGenError:
        raise
    except Exception as err:  # MONAI wraps errors raised inside config expressions
        user_error = _user_error_in(err)
        if user_error is not None:
            raise user_error from None
        raise
    if not output_path.exists():
        raise BundleError(f"bundle {info.name} ran but wrote no output at {output_path}.")
    return output_path


def training_parser(bundle_root: str | Path, output_dir: str | Path, device: str | None = None, config: str = "train.json",
                    trust: bool = False, **overrides: Any) -> Any:
    """A MONAI ``ConfigParser`` over ``configs/<config>`` of a bundle, with ``bundle_root``, ``output_dir``, the
    optional torch ``device`` and every override that is not None set (as literals), and its ``initialize``
    section run. Used by the scripts that train the shipped weights (so they go through the bundle's own
    config); a bundle that is not built in is inspected first."""
    from monai.bundle import ConfigParser

    require_inspected(bundle_root, trust=trust)
    parser = ConfigParser()
    parser.read_config(str(Path(bundle_root) / "configs" / config))
    values: dict[str, Any] = {"bundle_root": str(bundle_root), "output_dir": str(output_dir), **overrides}
    if device:
        values["device"] = device
    parser.update(literal_overrides(_device_values(values)))
    parser.get_parsed_content("initialize")
    return parser
