"""Conditional VAE for 1D signals with static parameters and peak targets (joint or legacy generation).

Encoder ``q(z | signal, static)``: a 1D convolutional stack (MONAI ``Convolution`` blocks, stride 2)
over the signal, flattened and concatenated with the static parameters, then an MLP giving the
posterior mean and log-variance. Decoder: a shared MLP trunk over ``z`` and three heads:

* signal: linear to ``(C, L/8)``, three stride-2 transposed convolutions, a 1x1 convolution -> ``(L,)``;
* static parameters: linear -> ``(S,)``;
* peaks (optional, ``num_peaks > 0``): linear -> ``(P,)`` values and ``(P,)`` presence logits.

**Joint mode** (``joint_generation=True``): the decoder sees ``z`` alone, so signal, static parameters
and peaks are generated together from noise. **Legacy mode**: the trunk is also conditioned on the given
static parameters (added to its first layer through a linear projection) and the static head is not
used (the given parameters are passed through). Both modes have the same parameters, so the
:attr:`SignalCVAE.joint_generation` setter switches a network between them (a network trained in one
mode should be sampled in that mode).

Sampling ``z``: the standard normal prior, or (default after training) a Gaussian mixture fitted to
the aggregate posterior of the training set, stored in buffers ("ex-post density estimation", Ghosh et
al., *From Variational to Deterministic Autoencoders*, ICLR 2020), which removes the prior "holes" of a
VAE trained with a small KL weight.

Units: the network stores the data normalisation as buffers (:meth:`SignalCVAE.set_normalization`),
so :meth:`SignalCVAE.forward`, :meth:`SignalCVAE.pack` and the samplers work in physical units
(microvolts, years, dB ...), while :meth:`encode`/:meth:`decode` work on normalised tensors. The
observation model used when sampling (a stationary coloured Gaussian for the signal, independent
Gaussians for static parameters and peaks) is stored in buffers too, fitted after training.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

__all__ = ["SignalCVAE"]

_ACT = "GELU"


class SignalCVAE(nn.Module):
    """Joint/legacy conditional VAE over ``(signal (B, L), static (B, S), peaks (B, P))``.

    Args:
        signal_length: ``L``, divisible by 8.
        num_static: ``S`` static parameters.
        num_peaks: ``P`` peak targets (0 disables the peak head).
        latent_dim: size of ``z``.
        channels: three channel counts of the encoder convolutions (reversed in the decoder).
        hidden: width of the encoder MLP and the decoder trunk.
        joint_generation: joint (True) or legacy (False) mode.

    ``forward`` takes one packed tensor ``(B, 1, L + S)`` (signal then static, physical units) and returns
    ``(B, 1, L + S + 2P)``: reconstructed signal, static parameters (legacy: the given ones), peak values
    and peak presence probabilities, using the posterior mean in eval mode and a posterior sample in
    training mode.
    """

    __jit_unused_properties__ = ["joint_generation"]
    MAX_LEVELS = 16
    MAX_PRIOR_COMPONENTS = 16
    __jit_ignored_attributes__ = ["_hyperparameters"]

    def __init__(self, signal_length: int = 200, num_static: int = 6, num_peaks: int = 6, latent_dim: int = 32,
                 channels: Tuple[int, int, int] = (16, 32, 64), hidden: int = 256, joint_generation: bool = True) -> None:
        super().__init__()
        if signal_length % 8 or signal_length < 8:
            raise ValueError(f"SignalCVAE: signal_length must be a positive multiple of 8 (three stride-2 levels), got {signal_length}")
        if num_static < 1 or num_peaks < 0 or latent_dim < 1 or len(channels) != 3:
            raise ValueError("SignalCVAE: needs num_static >= 1, num_peaks >= 0, latent_dim >= 1 and three channel counts")
        self.signal_length, self.num_static, self.num_peaks, self.latent_dim = signal_length, num_static, num_peaks, latent_dim
        self._joint_generation = bool(joint_generation)
        c1, c2, c3 = (int(c) for c in channels)
        self._hyperparameters = {"signal_length": signal_length, "num_static": num_static, "num_peaks": num_peaks,
                                 "latent_dim": latent_dim, "channels": [c1, c2, c3], "hidden": hidden}
        self.bottom = signal_length // 8
        self.bottom_channels = c3

        def conv(cin: int, cout: int, transposed: bool = False) -> Convolution:
            return Convolution(1, cin, cout, strides=2, kernel_size=5 if not transposed else 4, act=_ACT, norm=None,
                               is_transposed=transposed, padding=2 if not transposed else 1, output_padding=0 if transposed else None)

        self.encoder_conv = nn.Sequential(conv(1, c1), conv(c1, c2), conv(c2, c3), nn.Flatten())
        self.encoder_mlp = nn.Sequential(nn.Linear(c3 * self.bottom + num_static, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.to_posterior = nn.Linear(hidden, 2 * latent_dim)
        self.trunk_in = nn.Linear(latent_dim, hidden)
        self.condition = nn.Linear(num_static, hidden)  # legacy mode only
        self.trunk = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.signal_in = nn.Linear(hidden, c3 * self.bottom)
        self.signal_up = nn.Sequential(conv(c3, c2, True), conv(c2, c1, True), conv(c1, c1, True),
                                       Convolution(1, c1, 1, kernel_size=1, conv_only=True))
        self.static_head = nn.Linear(hidden, num_static)
        self.peak_head = nn.Linear(hidden, 2 * num_peaks) if num_peaks else None
        # normalisation (physical = normalised * std + mean) and the fitted observation model
        self.register_buffer("signal_scale", torch.ones(1))
        self.register_buffer("static_mean", torch.zeros(num_static))
        self.register_buffer("static_std", torch.ones(num_static))
        self.register_buffer("static_min", torch.full((num_static,), -1e9))
        self.register_buffer("static_max", torch.full((num_static,), 1e9))
        self.register_buffer("peak_mean", torch.zeros(max(num_peaks, 1)))
        self.register_buffer("peak_std", torch.ones(max(num_peaks, 1)))
        # discrete static parameters (at most MAX_LEVELS distinct training values): their levels, NaN-padded
        self.register_buffer("static_levels", torch.full((num_static, self.MAX_LEVELS), float("nan")))
        # latent sampling distribution: a Gaussian mixture (weights, means, Cholesky factors); N(0, I) until fitted
        weights = torch.zeros(self.MAX_PRIOR_COMPONENTS)
        weights[0] = 1.0
        self.register_buffer("prior_weights", weights)
        self.register_buffer("prior_means", torch.zeros(self.MAX_PRIOR_COMPONENTS, latent_dim))
        self.register_buffer("prior_chol", torch.eye(latent_dim).repeat(self.MAX_PRIOR_COMPONENTS, 1, 1))
        self.register_buffer("signal_noise_spectrum", torch.zeros(signal_length // 2 + 1))
        self.register_buffer("static_noise_std", torch.zeros(num_static))
        self.register_buffer("peak_noise_std", torch.zeros(max(num_peaks, 1)))

    # -- mode ---------------------------------------------------------------------------------------
    @property
    def joint_generation(self) -> bool:
        """True: decode from ``z`` alone (joint); False: decode conditioned on given static parameters (legacy)."""
        return self._joint_generation

    @joint_generation.setter
    def joint_generation(self, value: bool) -> None:
        self._joint_generation = bool(value)

    def hyperparameters(self) -> dict:
        """The constructor arguments (JSON-serialisable), mode included: ``SignalCVAE(**net.hyperparameters())`` rebuilds it."""
        return {**self._hyperparameters, "joint_generation": self._joint_generation}

    # -- normalisation ------------------------------------------------------------------------------
    @torch.no_grad()
    def set_normalization(self, signals: torch.Tensor, static: torch.Tensor, peaks: Optional[torch.Tensor] = None,
                          peak_mask: Optional[torch.Tensor] = None) -> None:
        """Fit the buffers from training data: signal rms ``(N, L)``, per-column static mean/std/range ``(N, S)``
        and peak mean/std over present entries ``(N, P)``."""
        self.signal_scale.copy_(signals.float().std().clamp_min(1e-6).reshape(1))
        static = static.float()
        self.static_mean.copy_(static.mean(0))
        self.static_std.copy_(static.std(0).clamp_min(1e-6))
        self.static_min.copy_(static.min(0).values)
        self.static_max.copy_(static.max(0).values)
        self.static_levels.fill_(float("nan"))
        for j in range(self.num_static):
            levels = torch.unique(static[:, j])
            if levels.numel() <= self.MAX_LEVELS:
                self.static_levels[j, : levels.numel()] = levels
        if self.num_peaks and peaks is not None and peak_mask is not None:
            mask = peak_mask.bool()
            values = torch.where(mask, peaks.float(), torch.zeros_like(peaks, dtype=torch.float32))
            count = mask.sum(0).clamp_min(1)
            mean = values.sum(0) / count
            var = (torch.where(mask, values - mean, torch.zeros_like(values)) ** 2).sum(0) / count
            self.peak_mean.copy_(mean)
            self.peak_std.copy_(var.sqrt().clamp_min(1e-6))

    def snap_static(self, static: torch.Tensor) -> torch.Tensor:
        """Static parameters (B, S), physical units, with every discrete column moved to its nearest training level."""
        out = static.clone()
        for j in range(self.num_static):
            levels = self.static_levels[j][torch.isfinite(self.static_levels[j])]
            if levels.numel() > 0:
                out[:, j] = levels[(static[:, j : j + 1] - levels[None, :]).abs().argmin(dim=1)]
        return out

    def normalize_signal(self, signal: torch.Tensor) -> torch.Tensor:
        return signal / self.signal_scale

    def normalize_static(self, static: torch.Tensor) -> torch.Tensor:
        return (static - self.static_mean) / self.static_std

    def normalize_peaks(self, peaks: torch.Tensor) -> torch.Tensor:
        return (peaks - self.peak_mean[: self.num_peaks]) / self.peak_std[: self.num_peaks]

    def denormalize(self, signal_n: torch.Tensor, static_n: torch.Tensor, peaks_n: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Physical units of normalised ``(signal (B, L), static (B, S), peaks (B, P))``."""
        signal = signal_n * self.signal_scale
        static = static_n * self.static_std + self.static_mean
        peaks = peaks_n * self.peak_std[: self.num_peaks] + self.peak_mean[: self.num_peaks]
        return signal, static, peaks

    # -- encoder / decoder (normalised tensors) -----------------------------------------------------
    def encode(self, signal_n: torch.Tensor, static_n: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mu, logvar)``, each (B, latent_dim), of signal (B, L) and static (B, S)."""
        h = self.encoder_conv(signal_n.unsqueeze(1))
        h = self.encoder_mlp(torch.cat([h, static_n], dim=1))
        mu, logvar = self.to_posterior(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor, static_n: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(signal (B, L), static (B, S), peak values (B, P), peak presence logits (B, P))`` from z (B, latent_dim).

        Legacy mode needs ``static_n`` (it is returned as the static output); joint mode ignores it.
        """
        h = self.trunk_in(z)
        if not self._joint_generation:
            if static_n is None:
                raise ValueError("SignalCVAE.decode: legacy mode (joint_generation=False) needs the static parameters")
            h = h + self.condition(static_n)
        h = self.trunk(h)
        signal = self.signal_up(self.signal_in(h).reshape(-1, self.bottom_channels, self.bottom)).squeeze(1)
        if self._joint_generation or static_n is None:
            static_out = self.static_head(h)
        else:
            static_out = static_n
        peak_head = self.peak_head
        if peak_head is not None:
            values, logits = peak_head(h).chunk(2, dim=1)
        else:
            values = logits = h.new_zeros((h.shape[0], 0))
        return signal, static_out, values, logits

    def sample_latent(self, n: int, generator: torch.Generator, fitted_prior: bool = True) -> torch.Tensor:
        """``(n, latent_dim)`` latents: from the fitted Gaussian-mixture prior (ex-post density estimate of the
        aggregate posterior, see :func:`medgen_core.training.cvae.fit_latent_prior`) or from ``N(0, I)``; CPU."""
        eps = torch.randn((n, self.latent_dim), generator=generator)
        if not fitted_prior:
            return eps
        k = torch.multinomial(self.prior_weights.cpu(), n, replacement=True, generator=generator)
        return self.prior_means.cpu()[k] + torch.einsum("nij,nj->ni", self.prior_chol.cpu()[k], eps)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    # -- packed interface (bundles, TorchScript) ----------------------------------------------------
    def pack(self, signal: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        """``(B, 1, L + S)`` network input from signal (B, L) and static (B, S), physical units."""
        return torch.cat([signal, static], dim=1).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Packed ``(B, 1, L + S)`` in, packed ``(B, 1, L + S + 2P)`` out (see the class docstring)."""
        flat = x.reshape(x.shape[0], -1)
        signal_n = self.normalize_signal(flat[:, : self.signal_length])
        static_n = self.normalize_static(flat[:, self.signal_length : self.signal_length + self.num_static])
        mu, logvar = self.encode(signal_n, static_n)
        z = self.reparameterize(mu, logvar) if self.training else mu
        sig, stat, peaks, logits = self.decode(z, static_n)
        signal, static, peak_values = self.denormalize(sig, stat, peaks)
        return torch.cat([signal, static, peak_values, torch.sigmoid(logits)], dim=1).unsqueeze(1)
