"""``--format {auto,nifti,nrrd,dicom}`` for the commands that write a generated image (upscale, translate).

NIfTI and NRRD are written by the bundle itself, as before. For DICOM the bundle runs into a
temporary NRRD inside a temporary folder (NRRD rather than NIfTI: its header keeps the affine in full
float64 precision, NIfTI's sform is float32); that volume and the record the bundle wrote for it (the
real generator, weights hash, parameters and input) are then written as a DICOM series with
:func:`medgen_core.provenance.dicom_output.write_generated_dicom_series`; the temporary folder is removed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgen_core.errors import ImageWriteError, ProvenanceError
from medgen_core.io import SUPPORTED_WRITE_SUFFIXES, Volume, check_output_folder, check_output_path, format_of, read_volume

if TYPE_CHECKING:
    from medgen_core.bundles import BundleInfo

__all__ = ["FORMATS", "add_output_format_arguments", "check_output", "run_bundle_to_output"]

FORMATS = ("auto", "nifti", "nrrd", "dicom")


def add_output_format_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--format`` and ``--keep-patient-ids``."""
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="output format: 'auto' (default) from the output suffix (.nii, .nii.gz, .nrrd); "
                             "'dicom' writes a DICOM series into the folder OUTPUT (new or empty)")
    parser.add_argument("--keep-patient-ids", action="store_true",
                        help="--format dicom with a DICOM input: copy patient name/ID/birth date/sex and study "
                             "identifiers into the series (default: anonymous values)")


def check_output(input_path: Path, output_path: Path, fmt: str, keep_patient_ids: bool = False) -> str:
    """The output format (``nifti``, ``nrrd`` or ``dicom``), refusing bad requests before any compute.

    Raises:
        ImageWriteError: Unknown or mismatched suffix, an output that is the input, or a DICOM
            folder that exists and is not empty (or is the input folder).
    """
    known = format_of(output_path)
    if fmt == "dicom":
        if known is not None:
            raise ImageWriteError(f"{output_path}: --format dicom writes a series into a folder; expected a folder name, not a {known[1]} file name.")
        if output_path.exists() and not output_path.is_dir():
            raise ImageWriteError(f"{output_path}: exists and is not a folder; --format dicom needs a new (or empty) folder.")
        if input_path.exists() and output_path.exists() and output_path.resolve() in (input_path.resolve(), input_path.resolve().parent):
            raise ImageWriteError(f"{output_path}: is the input folder; refusing to write into an input (choose a new folder).")
        if output_path.is_dir() and any(output_path.iterdir()):
            raise ImageWriteError(f"{output_path}: folder exists and is not empty; --format dicom needs a new (or empty) folder.")
        check_output_folder([input_path], output_path)  # links to input folders, symlink loops, read-only folders
        return "dicom"
    if keep_patient_ids:
        raise ImageWriteError(f"{output_path}: --keep-patient-ids applies to --format dicom only (NIfTI/NRRD outputs carry no patient identifiers).")
    if known is None or known[1] not in SUPPORTED_WRITE_SUFFIXES:
        raise ImageWriteError(f"{output_path}: unsupported output format; expected one of {', '.join(SUPPORTED_WRITE_SUFFIXES)}, "
                              "or --format dicom with a folder.")
    if fmt not in ("auto", known[0]):
        raise ImageWriteError(f"{output_path}: the suffix {known[1]} is {known[0].upper()}, not --format {fmt}.")
    check_output_path([input_path], output_path)  # every file of the input (detached data, DICOM folder), links, loops, read-only
    return known[0]


def run_bundle_to_output(
    bundle: BundleInfo,
    input_path: Path,
    output_path: Path,
    overrides: Mapping[str, Any],
    fmt: str,
    *,
    keep_patient_ids: bool = False,
    derivation_codes: Iterable[tuple[str, str, str]] = (),
) -> tuple[Path, Volume]:
    """Run the bundle and write its output in ``fmt``; returns the output path and the generated volume.

    The volume is in the bundle output's own voxel order (a DICOM series of a left-handed grid
    reads back with its slice order reversed, see :mod:`medgen_core.io.dicom_writer`).
    """
    from medgen_core.bundles import run_bundle_inference

    if fmt != "dicom":
        out = run_bundle_inference(bundle, input_path, output_path, overrides)
        return out, read_volume(out)
    from medgen_core.provenance import GenerationMetadata, sidecar_path
    from medgen_core.provenance.dicom_output import write_generated_dicom_series

    work = Path(tempfile.mkdtemp(prefix="medgen-dicom-"))
    try:
        staged = run_bundle_inference(bundle, input_path, work / "generated.nrrd", overrides)
        result = read_volume(staged)
        try:
            record = json.loads(sidecar_path(staged).read_text(encoding="utf-8"))["record"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ProvenanceError(f"bundle {bundle.name} wrote no readable provenance record for its output ({err}).") from err
        metadata = GenerationMetadata.from_dict(record)
        write_generated_dicom_series(result, output_path, metadata, source=input_path,
                                     keep_patient=keep_patient_ids, derivation_codes=derivation_codes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output_path, result
