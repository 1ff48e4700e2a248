"""Sampling a trained :class:`~medgen_core.networks.cvae.SignalCVAE`.

* **joint**: ``z`` from the latent prior (the fitted Gaussian mixture by default, or ``N(0, I)``), decode signal, static parameters and peaks together (no inputs);
* **legacy**: given static parameters ``(M, S)``, ``n`` samples each (``z`` likewise, decoder
  conditioned on the parameters, which are returned unchanged).

By default a sample is drawn from the network's full generative model: the decoder mean plus its
fitted observation noise (stationary coloured Gaussian for the signal, Gaussian per static parameter
and peak); ``observation_noise=False`` returns the decoder means. Static parameters are clipped to
the training range and discrete ones (at most 16 distinct training values, e.g. sex, stimulus
intensity and rate) are moved to the nearest training level (a quantised likelihood); a peak is present where its presence probability is >= 0.5 (else NaN, masked).
All randomness comes from one ``torch.Generator``, so a seed gives the same samples.
"""

from __future__ import annotations

import numpy as np
import torch

from medgen_core.data.abr_dataset import ABRDataset
from medgen_core.networks.cvae import SignalCVAE

__all__ = ["coloured_noise", "sample_joint", "sample_legacy", "static_grid"]


def coloured_noise(spectrum: torch.Tensor, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """(n, length) stationary Gaussian noise whose rfft magnitude has expectation ``spectrum`` (length//2 + 1,)."""
    real = torch.randn((n, spectrum.numel()), generator=generator)
    imag = torch.randn((n, spectrum.numel()), generator=generator)
    coeffs = torch.complex(real, imag) * (spectrum.cpu() / np.sqrt(2.0))
    return torch.fft.irfft(coeffs, n=length, dim=1)


@torch.no_grad()
def _decode(network: SignalCVAE, z: torch.Tensor, static_n: torch.Tensor | None, generator: torch.Generator,
            observation_noise: bool) -> ABRDataset:
    device = next(network.parameters()).device
    sig, stat, peaks, logits = network.decode(z.to(device), None if static_n is None else static_n.to(device))
    n = sig.shape[0]
    if observation_noise:  # noise drawn on the CPU from the one generator, so samples do not depend on the device
        sig = sig + coloured_noise(network.signal_noise_spectrum, n, network.signal_length, generator).to(device)
        if network.joint_generation:
            stat = stat + (torch.randn(stat.shape, generator=generator) * network.static_noise_std.cpu()).to(device)
        peaks = peaks + (torch.randn(peaks.shape, generator=generator) * network.peak_noise_std[: network.num_peaks].cpu()).to(device)
    signal, static, peak_values = network.denormalize(sig, stat, peaks)
    if network.joint_generation:
        static = network.snap_static(torch.maximum(torch.minimum(static, network.static_max), network.static_min))
    signal, static, peak_values, logits = signal.cpu(), static.cpu(), peak_values.cpu(), logits.cpu()
    if network.num_peaks == 0:
        return ABRDataset(signal.numpy(), static.numpy())
    mask = torch.sigmoid(logits) >= 0.5
    return ABRDataset(signal.numpy(), static.numpy(), torch.where(mask, peak_values, torch.nan).numpy(), mask.numpy())


def sample_joint(network: SignalCVAE, n: int, seed: int = 0, observation_noise: bool = True, fitted_prior: bool = True) -> ABRDataset:
    """``n`` records (signal, static parameters, peaks) generated from noise by a joint-mode network
    (``z`` from the fitted latent mixture, or ``N(0, I)`` with ``fitted_prior=False``)."""
    if not network.joint_generation:
        raise ValueError("sample_joint: the network is in legacy mode (joint_generation=False); use sample_legacy with static parameters")
    if n < 1:
        raise ValueError(f"sample_joint: n must be >= 1, got {n}")
    network.eval()
    g = torch.Generator().manual_seed(int(seed))
    z = network.sample_latent(n, g, fitted_prior)
    return _decode(network, z, None, g, observation_noise)


def sample_legacy(network: SignalCVAE, static: np.ndarray, n: int = 1, seed: int = 0, observation_noise: bool = True,
                  fitted_prior: bool = True) -> ABRDataset:
    """``n`` records for each row of ``static`` (M, S) (physical units), M * n rows in all (row-major:
    all samples of the first parameter set first); the static output equals the input."""
    if network.joint_generation:
        raise ValueError("sample_legacy: the network is in joint mode; set joint_generation=False on a network trained in legacy mode")
    static = np.asarray(static, dtype=np.float32)
    if static.ndim != 2 or static.shape[1] != network.num_static or static.shape[0] < 1:
        raise ValueError(f"sample_legacy: static parameters must be (M, {network.num_static}) with M >= 1, got {static.shape}")
    if not np.isfinite(static).all():
        raise ValueError("sample_legacy: static parameters must be finite")
    if n < 1:
        raise ValueError(f"sample_legacy: n must be >= 1, got {n}")
    network.eval()
    g = torch.Generator().manual_seed(int(seed))
    given = torch.as_tensor(np.repeat(static, n, axis=0))
    z = network.sample_latent(given.shape[0], g, fitted_prior)
    with torch.no_grad():
        static_n = network.normalize_static(given.to(next(network.parameters()).device))
    out = _decode(network, z, static_n, g, observation_noise)
    out.static = np.repeat(static, n, axis=0)  # exactly the given values (no round trip through the normalisation)
    return out


def static_grid(base: np.ndarray, column: int, values: list[float] | np.ndarray) -> np.ndarray:
    """Copies of one static parameter set (S,) with ``column`` set to each of ``values``: (len(values), S)."""
    grid = np.repeat(np.asarray(base, dtype=np.float32)[None, :], len(values), axis=0)
    grid[:, column] = values
    return grid
