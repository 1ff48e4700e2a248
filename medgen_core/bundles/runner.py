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
from pathlib import Path
from typing import Any, Mapping, Sequence

from medgen_core.bundles.bundle_config import open_bundle_config, unwrapped_errors
from medgen_core.bundles.catalog import BundleInfo, get_bundle
from medgen_core.errors import BundleError, ImageReadError

__all__ = ["run_bundle_inference", "training_parser"]

logger = logging.getLogger(__name__)


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
    info = bundle if isinstance(bundle, BundleInfo) else get_bundle(bundle)
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise ImageReadError(f"{input_path}: file does not exist (expected an image: NIfTI, NRRD, MHA/MHD or DICOM).")
    info.config(config)  # a bundle without this config: one line before anything is inspected
    parsed = open_bundle_config(info, config, overrides={**dict(overrides or {}), "input_file": input_path, "output_file": output_path},
                                trust=trust, expressions=expressions)  # inspected before MONAI reads the logging INI or any config
    workflow = parsed.workflow("infer")
    with unwrapped_errors():  # MONAI wraps errors raised inside config expressions
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    if not output_path.exists():
        raise BundleError(f"bundle {info.name} ran but wrote no output at {output_path}.")
    return output_path


def training_parser(bundle_root: str | Path, output_dir: str | Path, device: str | None = None,
                    config: str | Sequence[str] = "train.json", trust: bool = False, **overrides: Any) -> Any:
    """:func:`~medgen_core.bundles.bundle_config.open_bundle_config` over ``configs/<config>`` (one or several) of a
    bundle with ``output_dir``, the optional ``device`` and every override that is not None, and its ``initialize``
    section run. Used by the scripts that train the shipped weights (so they go through the bundle's own config)."""
    parser = open_bundle_config(bundle_root, config, overrides={"output_dir": str(output_dir), **overrides}, device=device or None,
                                trust=trust)
    parser.get_parsed_content("initialize")
    return parser
