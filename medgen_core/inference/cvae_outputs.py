"""Generated ABR records as files: NPZ or CSV (by suffix) with a provenance sidecar, and reading the
static parameters that drive legacy sampling.

NPZ and CSV hold whole records (signal, static parameters, peaks). A NIfTI/NRRD destination gets the
waveforms alone as an ``(n, 200, 1)`` image (one row per record, 0.05 ms per pixel along the second
axis, values in uV), for image viewers such as 3D Slicer, stamped like every generated image
(:func:`~medgen_core.provenance.write_generated_volume`).

:func:`generate_abr_samples` is the one call that the ``medgen cvae sample`` command and the
``abr_joint_cvae`` bundle's inference config both make.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from medgen_core.data.abr_dataset import STATIC_NAMES, ABRDataset, SignalDataError, load_abr_dataset, save_abr_csv, save_abr_npz
from medgen_core.inference.cvae_sampling import sample_joint, sample_legacy
from medgen_core.networks.cvae import SignalCVAE
from medgen_core.io import SUPPORTED_WRITE_SUFFIXES, Volume, format_of
from medgen_core.provenance import GenerationMetadata, write_generated_file, write_generated_volume

__all__ = ["SIGNAL_DISCLOSURE", "SIMULATION_DISCLOSURE", "generate_abr_samples", "read_static_parameters", "write_abr_records"]

SIGNAL_DISCLOSURE = "AI-generated synthetic signals and parameters. Not recorded from a patient. Not for diagnostic use."
SIMULATION_DISCLOSURE = "Simulated signals (physiological model, not a trained network). Not recorded from a patient. Not for diagnostic use."
OUTPUT_SUFFIXES = (".npz", ".csv", *SUPPORTED_WRITE_SUFFIXES)
MS_PER_SAMPLE = 0.05


def write_abr_records(records: ABRDataset, path: str | Path, metadata: GenerationMetadata) -> Path:
    """Write ``records`` to ``path`` atomically with its ``.generated.json`` sidecar: ``.npz``/``.csv`` (whole
    records) or ``.nii``/``.nii.gz``/``.nrrd`` (waveform image, see the module docstring)."""
    path = Path(path)
    known = format_of(path)
    if known is not None and known[1] in SUPPORTED_WRITE_SUFFIXES:
        image = Volume(records.signals[:, :, None], np.diag([1.0, MS_PER_SAMPLE, 1.0, 1.0]))
        metadata.parameters.setdefault("image_layout", "waveforms only: axis 0 record, axis 1 time (0.05 ms per pixel), values in uV")
        return write_generated_volume(image, path, metadata)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise SignalDataError(f"{path}: unsupported output format {suffix or '(none)'!r}; expected one of {', '.join(OUTPUT_SUFFIXES)}")
    writer = save_abr_npz if suffix == ".npz" else save_abr_csv
    return write_generated_file(path, lambda tmp: writer(records, tmp), metadata)


def read_static_parameters(path: str | Path, num_static: int = len(STATIC_NAMES)) -> np.ndarray:
    """Static parameter sets (M, S) for legacy sampling from a CSV with the :data:`STATIC_NAMES` columns
    (other columns ignored) or an NPZ/CSV dataset file (its ``static``).

    Raises:
        SignalDataError: missing file, missing columns, non-numeric or non-finite values, no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise SignalDataError(f"{path}: file not found (expected static parameters: a CSV with columns {', '.join(STATIC_NAMES)}, or an NPZ dataset)")
    if path.suffix.lower() == ".npz":
        return load_abr_dataset(path).static
    if path.suffix.lower() != ".csv":
        raise SignalDataError(f"{path}: unsupported format {path.suffix!r} for static parameters; expected .csv or .npz")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header = [h.strip() for h in rows[0]] if rows else []
    missing = [c for c in STATIC_NAMES[:num_static] if c not in header]
    if missing:
        raise SignalDataError(f"{path}: missing column(s) {', '.join(missing)}; expected a header with {', '.join(STATIC_NAMES)}")
    cols = [header.index(c) for c in STATIC_NAMES[:num_static]]
    values = []
    for row_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            values.append([float(row[c]) for c in cols])
        except (ValueError, IndexError):
            raise SignalDataError(f"{path}: row {row_no} has a missing or non-numeric static parameter; expected numbers in {', '.join(STATIC_NAMES)}") from None
    array = np.asarray(values, dtype=np.float32).reshape(-1, num_static)
    if array.shape[0] == 0:
        raise SignalDataError(f"{path}: no parameter rows; expected at least one row under the header")
    if not np.isfinite(array).all():
        raise SignalDataError(f"{path}: static parameters contain NaN/Inf; expected finite numbers")
    return array


def generate_abr_samples(network: SignalCVAE, mode: str, num_samples: int, seed: int, output_path: str | Path,
                         static_file: str | Path | None = None, generator_name: str = "signal_cvae", generator_version: str = "0.0.0",
                         bundle_id: str | None = None, weights_sha256: str | None = None, observation_noise: bool = True,
                         extra_parameters: Mapping[str, Any] | None = None) -> Path:
    """Sample ``network`` and write the records with provenance.

    Args:
        network: a trained :class:`SignalCVAE`; its ``joint_generation`` is set from ``mode``.
        mode: ``"joint"`` (``num_samples`` records from noise) or ``"legacy"`` (``num_samples`` per row of
            ``static_file``).
        num_samples: records (joint) or records per parameter set (legacy).
        seed: sampling seed.
        output_path: ``.npz`` or ``.csv``.
        static_file: legacy mode: static parameters (:func:`read_static_parameters`); recorded as an input.
        generator_name, generator_version, bundle_id, weights_sha256: provenance.
        observation_noise: sample the full generative model (default) or return decoder means.
        extra_parameters: more parameters to record.
    """
    if mode not in ("joint", "legacy"):
        raise SignalDataError(f"unknown sampling mode {mode!r}; expected 'joint' or 'legacy'")
    inputs: dict[str, Path] = {}
    if mode == "joint":
        network.joint_generation = True
        records = sample_joint(network, num_samples, seed, observation_noise)
        given = None
    else:
        if not static_file:
            raise SignalDataError("legacy sampling needs static parameters: give a CSV with columns " + ", ".join(STATIC_NAMES))
        network.joint_generation = False
        given = read_static_parameters(static_file, network.num_static)
        records = sample_legacy(network, given, num_samples, seed, observation_noise)
        inputs["static_parameters"] = Path(static_file)
    parameters = {"mode": mode, "num_samples": int(num_samples), "num_records": len(records), "observation_noise": bool(observation_noise),
                  "signal_length": network.signal_length, "sampling_rate_hz": 20000.0, "signal_unit": "uV",
                  "static_names": list(STATIC_NAMES[: network.num_static]), **dict(extra_parameters or {})}
    meta = GenerationMetadata.create(generator_name=generator_name, generator_version=generator_version, task=f"abr_{mode}_generation",
                                     input_paths=inputs, bundle_id=bundle_id, weights_sha256=weights_sha256, parameters=parameters, seed=int(seed))
    meta.disclosure = SIGNAL_DISCLOSURE
    return write_abr_records(records, output_path, meta)
