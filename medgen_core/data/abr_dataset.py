"""Auditory brainstem response (ABR) records: a container, and reading/writing them as NPZ or CSV.

One record is a 200-sample averaged ABR waveform (microvolts, 20 kHz, 0..10 ms after the click),
6 static parameters (:data:`STATIC_NAMES`) and 6 peak targets (:data:`PEAK_NAMES`: latency in ms and
amplitude in microvolts of waves I, III and V) with a presence mask (an absent peak, e.g. below the
hearing threshold, has ``mask = False`` and NaN in ``peaks``).

File formats (what :func:`load_abr_dataset` accepts, so users can train on their own data):

* **NPZ**: arrays ``signals`` (N, 200), ``static`` (N, 6) and optionally ``peaks`` (N, 6) with NaN
  for absent peaks (``peak_mask`` (N, 6) bool may be given too). Extra keys are ignored.
* **CSV**: a header row; columns named as in :data:`STATIC_NAMES`, the signal as ``s0`` .. ``s199``,
  and optionally the :data:`PEAK_NAMES` columns (empty cell = absent peak). Other columns are ignored.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgen_core.errors import MedGenError

__all__ = [
    "PEAK_NAMES",
    "SAMPLING_RATE_HZ",
    "SIGNAL_LENGTH",
    "STATIC_NAMES",
    "ABRDataset",
    "SignalDataError",
    "load_abr_dataset",
    "save_abr_csv",
    "save_abr_npz",
]

SIGNAL_LENGTH = 200
SAMPLING_RATE_HZ = 20_000.0  # 200 samples = 10 ms
STATIC_NAMES = ("age_years", "sex_male", "intensity_db_nhl", "rate_hz", "hearing_threshold_db_hl", "num_sweeps")
PEAK_NAMES = ("latency_I_ms", "latency_III_ms", "latency_V_ms", "amplitude_I_uv", "amplitude_III_uv", "amplitude_V_uv")


class SignalDataError(MedGenError, ValueError):
    """A signal/parameter dataset file is missing, malformed, or has the wrong shape."""


@dataclass
class ABRDataset:
    """ABR records (float32 numpy arrays).

    Args:
        signals: (N, L) waveforms in microvolts (L = :data:`SIGNAL_LENGTH` for the shipped model).
        static: (N, S) static parameters, columns :data:`STATIC_NAMES`.
        peaks: (N, P) peak latencies (ms) / amplitudes (uV), NaN where absent; None if unknown.
        peak_mask: (N, P) bool, True where the peak is present; None if ``peaks`` is None.
    """

    signals: np.ndarray
    static: np.ndarray
    peaks: np.ndarray | None = None
    peak_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.signals = np.asarray(self.signals, dtype=np.float32)
        self.static = np.asarray(self.static, dtype=np.float32)
        if self.signals.ndim != 2 or self.static.ndim != 2 or self.signals.shape[0] != self.static.shape[0]:
            raise SignalDataError(f"ABRDataset: signals must be (N, L) and static (N, S) with the same N, got {self.signals.shape} and {self.static.shape}")
        if self.peaks is not None:
            self.peaks = np.asarray(self.peaks, dtype=np.float32)
            if self.peaks.ndim != 2 or self.peaks.shape[0] != self.signals.shape[0]:
                raise SignalDataError(f"ABRDataset: peaks must be (N, P) with N = {self.signals.shape[0]}, got {self.peaks.shape}")
            mask = np.isfinite(self.peaks) if self.peak_mask is None else np.asarray(self.peak_mask, dtype=bool)
            self.peak_mask = mask & np.isfinite(self.peaks)
            self.peaks = np.where(self.peak_mask, self.peaks, np.nan).astype(np.float32)

    def __len__(self) -> int:
        return int(self.signals.shape[0])

    def subset(self, index: np.ndarray | slice) -> ABRDataset:
        """The records at ``index`` (a copy)."""
        peaks = None if self.peaks is None else self.peaks[index].copy()
        mask = None if self.peak_mask is None else self.peak_mask[index].copy()
        return ABRDataset(self.signals[index].copy(), self.static[index].copy(), peaks, mask)


def save_abr_npz(dataset: ABRDataset, path: str | Path) -> Path:
    """Write ``dataset`` to ``path`` as an uncompressed NPZ (plus the column names and sampling rate)."""
    path = Path(path)
    arrays = {"signals": dataset.signals, "static": dataset.static, "static_names": np.array(STATIC_NAMES),
              "sampling_rate_hz": np.float32(SAMPLING_RATE_HZ)}
    if dataset.peaks is not None:
        arrays.update(peaks=dataset.peaks, peak_mask=dataset.peak_mask, peak_names=np.array(PEAK_NAMES))
    with open(path, "wb") as handle:  # a file object: numpy must not append ".npz" to a temporary name
        np.savez(handle, **arrays)
    return path


def save_abr_csv(dataset: ABRDataset, path: str | Path) -> Path:
    """Write ``dataset`` as CSV: static columns, peak columns (empty = absent), then ``s0`` .. ``s{L-1}``."""
    path = Path(path)
    n_static, length = dataset.static.shape[1], dataset.signals.shape[1]
    static_names = list(STATIC_NAMES) if n_static == len(STATIC_NAMES) else [f"static{i}" for i in range(n_static)]
    peak_names = [] if dataset.peaks is None else list(PEAK_NAMES)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(static_names + peak_names + [f"s{i}" for i in range(length)])
        for i in range(len(dataset)):
            peaks = [] if dataset.peaks is None else ["" if not m else f"{v:.6g}" for v, m in zip(dataset.peaks[i], dataset.peak_mask[i])]
            writer.writerow([f"{v:.6g}" for v in dataset.static[i]] + peaks + [f"{v:.6g}" for v in dataset.signals[i]])
    return path


def load_abr_dataset(path: str | Path, signal_length: int = SIGNAL_LENGTH, num_static: int = len(STATIC_NAMES)) -> ABRDataset:
    """Read ABR records from an NPZ or CSV file (formats in the module docstring).

    Raises:
        SignalDataError: missing file, unknown suffix, missing arrays/columns, wrong shapes, non-numeric
            or non-finite values; the message names the file, what is wrong and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise SignalDataError(f"{path}: file not found (expected an ABR dataset, .npz or .csv)")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        dataset = _load_npz(path)
    elif suffix == ".csv":
        dataset = _load_csv(path, signal_length)
    else:
        raise SignalDataError(f"{path}: unsupported dataset format {suffix or '(none)'!r}; expected .npz or .csv")
    if dataset.signals.shape[1] != signal_length:
        raise SignalDataError(f"{path}: signals have {dataset.signals.shape[1]} samples; expected {signal_length}")
    if dataset.static.shape[1] != num_static:
        raise SignalDataError(f"{path}: {dataset.static.shape[1]} static parameters; expected {num_static} ({', '.join(STATIC_NAMES)})")
    if dataset.peaks is not None and dataset.peaks.shape[1] != len(PEAK_NAMES):
        raise SignalDataError(f"{path}: peaks have {dataset.peaks.shape[1]} columns; expected {len(PEAK_NAMES)} ({', '.join(PEAK_NAMES)})")
    for name, array in (("signals", dataset.signals), ("static", dataset.static)):
        if not np.isfinite(array).all():
            bad = int(np.argwhere(~np.isfinite(array))[0, 0])
            raise SignalDataError(f"{path}: {name} has NaN/Inf values (first in record {bad}); expected finite numbers")
    if len(dataset) < 1:
        raise SignalDataError(f"{path}: no records; expected at least one")
    return dataset


def _load_npz(path: Path) -> ABRDataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:  # noqa: BLE001 - zipfile/numpy raise many kinds on a corrupt file
        raise SignalDataError(f"{path}: cannot be read as NPZ ({type(err).__name__}: {err})") from err
    missing = [k for k in ("signals", "static") if k not in arrays]
    if missing:
        raise SignalDataError(f"{path}: NPZ lacks array(s) {missing}; found {sorted(arrays)}, expected 'signals' (N, L) and 'static' (N, S)")
    for key in ("signals", "static", "peaks"):
        if key in arrays and (arrays[key].ndim != 2 or not np.issubdtype(arrays[key].dtype, np.number)):
            raise SignalDataError(f"{path}: array '{key}' has shape {arrays[key].shape} and dtype {arrays[key].dtype}; expected a 2D numeric array")
    try:
        return ABRDataset(arrays["signals"], arrays["static"], arrays.get("peaks"), arrays.get("peak_mask"))
    except SignalDataError as err:
        raise SignalDataError(f"{path}: {err}") from err


def _load_csv(path: Path, signal_length: int) -> ABRDataset:
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SignalDataError(f"{path}: cannot be read as CSV ({err})") from err
    if len(rows) < 2:
        raise SignalDataError(f"{path}: needs a header row and at least one record, found {len(rows)} row(s)")
    header = [h.strip() for h in rows[0]]
    signal_cols = [f"s{i}" for i in range(signal_length)]
    missing = [c for c in (*STATIC_NAMES, *signal_cols) if c not in header]
    if missing:
        shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        raise SignalDataError(f"{path}: missing column(s) {shown}; expected {', '.join(STATIC_NAMES)} and s0..s{signal_length - 1}")
    col = {name: i for i, name in enumerate(header)}
    has_peaks = all(p in col for p in PEAK_NAMES)

    def number(row_no: int, row: list[str], name: str, allow_empty: bool = False) -> float:
        if col[name] >= len(row):
            raise SignalDataError(f"{path}: row {row_no} has {len(row)} fields; the header has {len(header)}")
        text = row[col[name]].strip()
        if text == "" and allow_empty:
            return math.nan
        try:
            return float(text)
        except ValueError:
            raise SignalDataError(f"{path}: row {row_no}, column {name!r}: {text!r} is not a number") from None

    signals, static, peaks = [], [], []
    for row_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        static.append([number(row_no, row, c) for c in STATIC_NAMES])
        signals.append([number(row_no, row, c) for c in signal_cols])
        if has_peaks:
            peaks.append([number(row_no, row, c, allow_empty=True) for c in PEAK_NAMES])
    return ABRDataset(np.array(signals), np.array(static), np.array(peaks) if has_peaks else None)
