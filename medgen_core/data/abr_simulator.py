"""A documented simulator of click-evoked auditory brainstem responses (ABR), since no public ABR data
can be downloaded here.

Each record is a 10 ms averaged response (200 samples at 20 kHz) to a click, with the static
parameters of :data:`~medgen_core.data.abr_dataset.STATIC_NAMES` drawn per record:

* ``age_years`` uniform 18..80; ``sex_male`` 0/1 with probability 1/2;
* ``intensity_db_nhl`` one of 20, 30, ..., 90 dB nHL; ``rate_hz`` one of 11.1, 21.1, 31.1, 51.1 clicks/s;
* ``hearing_threshold_db_hl``: 65% normal hearing (N(5, 5) dB plus 0.3 dB/year of age over 40,
  presbycusis), 35% sensorineural loss uniform 25..75 dB;
* ``num_sweeps`` (averaged sweeps) one of 1000, 2000, 4000.

Waves I-V are positive Gaussian peaks (I, III and V followed by a negative trough; V by the slow
SN10 negativity). The textbook relations that drive them (:func:`expected_peaks`):

* **intensity**: at the effective level ``E`` every latency grows by 0.035 ms per dB below 80 dB
  (wave V about 5.7 ms at 80 dB, about 7.8 ms at 20 dB in normal hearing), the I-V interpeak interval
  stays near 4 ms, and amplitudes grow as ``1 - exp(-E / 25)``. With a cochlear loss the latency-level
  function is steeper and joins the normal one about 50 dB above threshold (recruitment):
  ``E = I - T * max(0, 1 - SL / 50)`` with the sensation level ``SL = I - T``.
* **threshold**: a wave is present only above its sensation level: V for ``SL > 5`` dB, III for
  ``SL > 25`` dB, I for ``SL > 35`` dB (absent peaks are masked targets, NaN). Wave I also shrinks with
  cochlear loss (``exp(-T / 60)``).
* **age**: wave V latency +0.004 ms/year over 30 (wave I +0.002), amplitudes -0.4%/year.
* **sex**: male wave V latency +0.15 ms (wave I +0.04), amplitudes -10%.
* **rate**: wave V latency +0.005 ms per click/s above 11 (wave I +0.002), wave I amplitude -0.5% per click/s.
* each record has its own latency jitter (sd 0.08 ms for I, 0.12 ms for V) and amplitude factor
  (log-normal, sd 0.2).

Noise (what makes an averaged ABR look real): EEG background as 1/f ("pink") noise band-limited to
the usual 100-3000 Hz recording filter, with residual rms ``3 uV / sqrt(num_sweeps)``
(0.05-0.09 uV); residual 50 Hz mains and its 3rd harmonic (random phase, up to 0.04 uV); a small
decaying stimulus artefact in the first 0.5 ms; a slow linear baseline drift.

Reference values follow Hall, *New Handbook of Auditory Evoked Responses* (2007), and Hood, *Clinical
Applications of the Auditory Brainstem Response* (1998): they are typical figures, not a fit to data.
"""

from __future__ import annotations

import numpy as np

from medgen_core.data.abr_dataset import PEAK_NAMES, SAMPLING_RATE_HZ, SIGNAL_LENGTH, STATIC_NAMES, ABRDataset

__all__ = ["WAVE_NAMES", "expected_peaks", "simulate_abr_dataset", "simulate_static", "synthesize_signals", "time_axis_ms"]

WAVE_NAMES = ("I", "II", "III", "IV", "V")
# latency (ms) and amplitude (uV) of each wave for a 30-year-old woman, 80 dB effective level, 11 clicks/s
_BASE_LATENCY = np.array([1.58, 2.70, 3.70, 4.80, 5.50])
_BASE_AMPLITUDE = np.array([0.30, 0.14, 0.28, 0.20, 0.50])
_WIDTH_MS = np.array([0.20, 0.20, 0.24, 0.24, 0.30])
_AGE_SLOPE = np.array([0.002, 0.0025, 0.003, 0.0035, 0.004])  # ms per year over 30
_MALE_SHIFT = np.array([0.04, 0.07, 0.10, 0.12, 0.15])  # ms
_RATE_SLOPE = np.array([0.002, 0.003, 0.0035, 0.0045, 0.005])  # ms per click/s over 11
_PRESENCE_SL = np.array([35.0, 30.0, 25.0, 15.0, 5.0])  # dB sensation level a wave needs
_REPORTED = (0, 2, 4)  # waves I, III, V carry the peak targets
INTENSITIES = np.arange(20.0, 91.0, 10.0)
RATES = np.array([11.1, 21.1, 31.1, 51.1])
SWEEPS = np.array([1000.0, 2000.0, 4000.0])


def time_axis_ms(length: int = SIGNAL_LENGTH) -> np.ndarray:
    """Sample times in ms: ``i / 20 kHz`` for ``i = 0 .. length-1``."""
    return np.arange(length) * 1000.0 / SAMPLING_RATE_HZ


def simulate_static(n: int, rng: np.random.Generator) -> np.ndarray:
    """Static parameters of ``n`` records, (n, 6) float32, columns :data:`STATIC_NAMES` (distributions in the module docstring)."""
    age = rng.uniform(18.0, 80.0, n)
    male = (rng.random(n) < 0.5).astype(float)
    intensity = rng.choice(INTENSITIES, n)
    rate = rng.choice(RATES, n)
    normal = rng.random(n) < 0.65
    threshold = np.where(normal, rng.normal(5.0, 5.0, n) + 0.3 * np.maximum(age - 40.0, 0.0), rng.uniform(25.0, 75.0, n))
    sweeps = rng.choice(SWEEPS, n)
    return np.stack([age, male, intensity, rate, np.clip(threshold, -10.0, 100.0), sweeps], axis=1).astype(np.float32)


def _wave_parameters(static: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected ``(latency ms, amplitude uV, present)`` of the five waves, each (N, 5), without individual jitter."""
    static = np.asarray(static, dtype=np.float64)
    age, male, intensity, rate, threshold = (static[:, i : i + 1] for i in range(5))
    sl = intensity - threshold
    effective = np.clip(intensity - np.maximum(threshold, 0.0) * np.clip(1.0 - sl / 50.0, 0.0, 1.0), 0.0, None)
    latency = (_BASE_LATENCY + 0.035 * (80.0 - np.minimum(effective, 90.0)) + _AGE_SLOPE * (age - 30.0)
               + _MALE_SHIFT * male + _RATE_SLOPE * np.maximum(rate - 11.0, 0.0))
    growth = 1.0 - np.exp(-effective / 25.0)
    amplitude = _BASE_AMPLITUDE * growth * np.clip(1.0 - 0.004 * (age - 30.0), 0.5, 1.2) * (1.0 - 0.1 * male)
    amplitude[:, 0] *= np.exp(-np.maximum(threshold[:, 0], 0.0) / 60.0) * np.clip(1.0 - 0.005 * (rate[:, 0] - 11.0), 0.5, 1.0)
    present = sl > _PRESENCE_SL
    return latency, amplitude, present


def expected_peaks(static: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the simulator says about waves I, III, V for given static parameters (no individual jitter).

    Args:
        static: (N, 6) in the order :data:`STATIC_NAMES`.

    Returns:
        ``(peaks, mask)``: (N, 6) latencies (ms) then amplitudes (uV) of I, III, V (NaN where absent)
        and the (N, 6) presence mask.
    """
    latency, amplitude, present = _wave_parameters(static)
    mask = np.concatenate([present[:, _REPORTED]] * 2, axis=1)
    peaks = np.concatenate([latency[:, _REPORTED], amplitude[:, _REPORTED]], axis=1)
    return np.where(mask, peaks, np.nan).astype(np.float32), mask


def _coloured_noise(n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """(n, length) unit-rms noise with a 1/f power spectrum between 100 and 3000 Hz."""
    pad = 4 * length  # generate a longer stretch so the band limits act like a filter on a continuous EEG
    freqs = np.fft.rfftfreq(pad, 1.0 / SAMPLING_RATE_HZ)
    gain = np.where((freqs >= 100.0) & (freqs <= 3000.0), 1.0 / np.sqrt(np.maximum(freqs, 1.0)), 0.0)
    spectrum = (rng.standard_normal((n, freqs.size)) + 1j * rng.standard_normal((n, freqs.size))) * gain
    noise = np.fft.irfft(spectrum, n=pad, axis=1)[:, :length]
    return noise / noise.std(axis=1, keepdims=True)


def synthesize_signals(latency: np.ndarray, amplitude: np.ndarray, present: np.ndarray, static: np.ndarray,
                       rng: np.random.Generator, length: int = SIGNAL_LENGTH) -> np.ndarray:
    """Waveforms (N, length) in uV from per-record wave latencies/amplitudes/presence (each (N, 5)) plus noise."""
    t = time_axis_ms(length)[None, None, :]
    n = latency.shape[0]
    amp = np.where(present, amplitude, 0.0)[:, :, None]
    lat = latency[:, :, None]
    effective_growth = np.clip(amplitude[:, 4:5] / _BASE_AMPLITUDE[4], 0.05, 1.2)[:, :, None]
    width = _WIDTH_MS[None, :, None] * (1.0 + 0.6 * (1.0 - np.minimum(effective_growth, 1.0)))
    peaks = amp * np.exp(-0.5 * ((t - lat) / width) ** 2)
    troughs = -0.45 * amp * np.exp(-0.5 * ((t - lat - 2.2 * width) / (1.3 * width)) ** 2)
    troughs[:, 1] = 0.0
    troughs[:, 3] = 0.0
    sn10 = -0.6 * amp[:, 4] * np.exp(-0.5 * ((t[:, 0] - lat[:, 4] - 1.1) / 0.6) ** 2)  # slow negativity after V
    evoked = peaks.sum(axis=1) + troughs.sum(axis=1) + sn10
    sweeps = static[:, 5:6].astype(np.float64)
    eeg = 3.0 / np.sqrt(sweeps) * _coloured_noise(n, length, rng)
    t_ms = time_axis_ms(length)[None, :]
    mains = sum(rng.uniform(0.0, a, (n, 1)) * np.sin(2 * np.pi * f * t_ms / 1000.0 + rng.uniform(0, 2 * np.pi, (n, 1))) for f, a in ((50.0, 0.04), (150.0, 0.015)))
    artefact = rng.normal(0.0, 0.15, (n, 1)) * np.exp(-t_ms / 0.15)
    drift = rng.normal(0.0, 0.03, (n, 1)) * (t_ms / t_ms[0, -1] - 0.5)
    return (evoked + eeg + mains + artefact + drift).astype(np.float32)


def simulate_abr_dataset(n: int, seed: int = 0, length: int = SIGNAL_LENGTH) -> ABRDataset:
    """``n`` simulated ABR records (signals, static parameters, peak targets with absent peaks masked).

    Deterministic for a given ``(n, seed)``.

    Example:
        >>> data = simulate_abr_dataset(500, seed=1)
        >>> data.signals.shape, data.static.shape, data.peaks.shape
        ((500, 200), (500, 6), (500, 6))
    """
    if n < 1:
        raise ValueError(f"simulate_abr_dataset: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    static = simulate_static(n, rng)
    latency, amplitude, present = _wave_parameters(static)
    jitter_sd = np.linspace(0.08, 0.12, 5)
    latency = latency + rng.normal(0.0, 1.0, (n, 1)) * jitter_sd * 0.7 + rng.normal(0.0, 1.0, (n, 5)) * jitter_sd * 0.7
    amplitude = amplitude * np.exp(rng.normal(0.0, 0.2, (n, 1)))
    signals = synthesize_signals(latency, amplitude, present, static, rng, length)
    mask = np.concatenate([present[:, _REPORTED]] * 2, axis=1)
    peaks = np.concatenate([latency[:, _REPORTED], amplitude[:, _REPORTED]], axis=1)
    assert len(PEAK_NAMES) == peaks.shape[1] and len(STATIC_NAMES) == static.shape[1]
    return ABRDataset(signals, static, np.where(mask, peaks, np.nan), mask)
