"""Training of :class:`~medgen_core.networks.cvae.SignalCVAE` (joint or legacy mode) on ABR-like records.

Epochs of shuffled mini-batches; loss = signal MSE + weighted static MSE + beta * KL + weighted masked
peak loss (:func:`medgen_core.losses.cvae.cvae_loss`), with beta warmed up linearly
(:class:`~medgen_core.losses.cvae.BetaWarmup`, per epoch, fractional within an epoch). Before training
the network's normalisation buffers are fitted on the training set; after training its observation
model (residual spectrum of the signal, residual sd of static parameters and peaks, on the training
set's posterior means) is fitted, so samples carry realistic noise, and so is the latent sampling prior
(a Gaussian mixture on the training set's aggregate posterior, :func:`fit_latent_prior`).

Outputs in ``output_dir``: ``model.pt`` (``state_dict``, CPU tensors), ``checkpoint.pt`` (resumable:
network, optimiser, epoch; read with ``weights_only=True``), ``train_log.csv`` (epoch, loss terms, beta,
validation loss) and ``loss_curve.png``. Under ``torchrun`` the network is DDP-wrapped, each rank trains
on its own shard of records (``data_shards.json``), logged losses are averaged over ranks and rank 0
alone writes, as in the other MedGen trainers.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from medgen_core.data.abr_dataset import ABRDataset
from medgen_core.losses.cvae import BetaWarmup, CVAELossWeights, cvae_loss
from medgen_core.networks.cvae import SignalCVAE
from medgen_core.training.base import CSVLogger, atomic_torch_save, load_checkpoint, plot_curves
from medgen_core.training.distributed import mean_over_ranks, resolve_distributed, shard_indices, wrap_ddp

__all__ = ["CVAETrainer", "CVAETrainingConfig", "fit_latent_prior", "fit_observation_model", "normalized_tensors"]

logger = logging.getLogger(__name__)
_TERMS = ("loss", "signal_mse", "static_mse", "kl", "peak_mse", "presence_bce")


@dataclass
class CVAETrainingConfig:
    """Settings of one CVAE training run.

    Args:
        epochs: passes over the training records.
        batch_size: records per step (per process in distributed mode).
        lr: AdamW learning rate (cosine decay to 5% over the run).
        max_beta: final KL weight; warmup_epochs: epochs of the linear beta warm-up from 0.
        static_weight, peak_weight, presence_weight: loss weights (:class:`CVAELossWeights`).
        weight_decay: AdamW weight decay.
        checkpoint_every: epochs between resumable checkpoints.
        prior_components: Gaussian-mixture components of the latent sampling prior fitted after training
            (:func:`fit_latent_prior`); 0 keeps ``N(0, I)``.
        seed: random seed (shuffling, posterior samples).
    """

    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    max_beta: float = 0.005
    warmup_epochs: int = 10
    static_weight: float = 1.0
    peak_weight: float = 1.0
    presence_weight: float = 0.1
    weight_decay: float = 1e-4
    checkpoint_every: int = 5
    prior_components: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError(f"CVAETrainingConfig: epochs >= 0, batch_size >= 1 and checkpoint_every >= 1 needed, got {self.epochs}, {self.batch_size}, {self.checkpoint_every}")


def normalized_tensors(network: SignalCVAE, data: ABRDataset, device: torch.device | str = "cpu") -> dict[str, torch.Tensor | None]:
    """``{"signal" (N, L), "static" (N, S), "peaks" (N, P) or None, "mask" (N, P) or None}`` in the network's normalised units."""
    with torch.no_grad():
        signal = network.normalize_signal(torch.as_tensor(data.signals).to(device))
        static = network.normalize_static(torch.as_tensor(data.static).to(device))
        peaks = mask = None
        if data.peaks is not None and network.num_peaks:
            mask = torch.as_tensor(data.peak_mask).to(device)
            peaks = network.normalize_peaks(torch.nan_to_num(torch.as_tensor(data.peaks).to(device)))
    return {"signal": signal, "static": static, "peaks": peaks, "mask": mask}


@torch.no_grad()
def fit_observation_model(network: SignalCVAE, data: ABRDataset, batch_size: int = 512) -> None:
    """Fit the network's sampling noise from posterior-mean residuals on ``data``: the signal's mean
    residual power per rfft frequency (a stationary coloured Gaussian) and the residual sd of every
    static parameter (joint mode) and present peak."""
    was_training = network.training
    network.eval()
    device = next(network.parameters()).device
    t = normalized_tensors(network, data, device)
    power = torch.zeros_like(network.signal_noise_spectrum)
    static_sq = torch.zeros_like(network.static_noise_std)
    peak_sq = torch.zeros(network.num_peaks, device=device)
    peak_n = torch.zeros(network.num_peaks, device=device)
    n = t["signal"].shape[0]
    for i in range(0, n, batch_size):
        sig, stat = t["signal"][i : i + batch_size], t["static"][i : i + batch_size]
        mu, _ = network.encode(sig, stat)
        out_sig, out_stat, out_peaks, _ = network.decode(mu, stat)
        power += (torch.fft.rfft(sig - out_sig, dim=1).abs() ** 2).sum(0)
        static_sq += ((stat - out_stat) ** 2).sum(0)
        if t["peaks"] is not None:
            m = t["mask"][i : i + batch_size]
            peak_sq += torch.where(m, (t["peaks"][i : i + batch_size] - out_peaks) ** 2, torch.zeros_like(out_peaks)).sum(0)
            peak_n += m.sum(0)
    network.signal_noise_spectrum.copy_((power / n).sqrt())
    network.static_noise_std.copy_((static_sq / n).sqrt() if network.joint_generation else torch.zeros_like(static_sq))
    if network.num_peaks:
        network.peak_noise_std[: network.num_peaks].copy_((peak_sq / peak_n.clamp_min(1)).sqrt())
    network.train(was_training)


@torch.no_grad()
def fit_latent_prior(network: SignalCVAE, data: ABRDataset, components: int = 10, seed: int = 0) -> None:
    """Fit the network's latent sampling prior to the aggregate posterior of ``data``: a full-covariance
    Gaussian mixture (scikit-learn ``GaussianMixture``, ``components`` <= 16) on one posterior sample per
    record. Without scikit-learn, one full-covariance Gaussian (mean and covariance of the samples)."""
    if components < 1:
        return
    if components > network.MAX_PRIOR_COMPONENTS:
        raise ValueError(f"fit_latent_prior: at most {network.MAX_PRIOR_COMPONENTS} components, got {components}")
    was_training = network.training
    network.eval()
    device = next(network.parameters()).device
    t = normalized_tensors(network, data, device)
    mu, logvar = network.encode(t["signal"], t["static"])
    g = torch.Generator().manual_seed(seed)
    z = (mu.cpu() + torch.randn(mu.shape, generator=g) * torch.exp(0.5 * logvar.cpu())).double().numpy()
    dim = z.shape[1]
    try:
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(min(components, max(z.shape[0] // (2 * dim), 1)), covariance_type="full", reg_covar=1e-4, random_state=seed).fit(z)
        weights, means, covs = gm.weights_, gm.means_, gm.covariances_
    except ImportError:
        weights, means, covs = np.ones(1), z.mean(0, keepdims=True), np.cov(z, rowvar=False)[None] + 1e-4 * np.eye(dim)
    k = len(weights)
    network.prior_weights.zero_()
    network.prior_weights[:k] = torch.as_tensor(weights / weights.sum(), dtype=torch.float32)
    network.prior_means.zero_()
    network.prior_means[:k] = torch.as_tensor(means, dtype=torch.float32)
    network.prior_chol.copy_(torch.eye(dim).repeat(network.MAX_PRIOR_COMPONENTS, 1, 1))
    network.prior_chol[:k] = torch.linalg.cholesky(torch.as_tensor(covs, dtype=torch.float64)).float()
    network.train(was_training)


class _TrainingForward(nn.Module):
    """``(signal_n (B, L), static_n (B, S)) -> (signal, static, peak values, presence logits, mu, logvar)`` with a
    posterior sample: the one forward per update that DDP wraps."""

    def __init__(self, net: SignalCVAE) -> None:
        super().__init__()
        self.net = net

    def forward(self, signal_n: torch.Tensor, static_n: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mu, logvar = self.net.encode(signal_n, static_n)
        return (*self.net.decode(self.net.reparameterize(mu, logvar), static_n), mu, logvar)


class CVAETrainer:
    """Trains a :class:`SignalCVAE` and writes model, checkpoint, CSV log and loss-curve PNG to ``output_dir``.

    Args:
        network: the CVAE; its ``joint_generation`` flag decides the mode.
        train_data: training records (:class:`ABRDataset`, physical units).
        config: :class:`CVAETrainingConfig`.
        output_dir: where outputs go.
        val_data: optional held-out records; their loss is logged every epoch (``val_loss``).
        device: torch device. Defaults to CPU.
        distributed: train with DDP. ``None`` (default) means "if a process group is initialised".
    """

    def __init__(self, network: SignalCVAE, train_data: ABRDataset, config: CVAETrainingConfig, output_dir: str | Path,
                 val_data: ABRDataset | None = None, device: str | torch.device = "cpu", distributed: bool | None = None) -> None:
        if not isinstance(network, SignalCVAE):
            raise TypeError(f"CVAETrainer: network must be a SignalCVAE, got {type(network).__name__}")
        if train_data.signals.shape[1] != network.signal_length or train_data.static.shape[1] != network.num_static:
            raise ValueError(f"CVAETrainer: records have {train_data.signals.shape[1]} samples and {train_data.static.shape[1]} static parameters; "
                             f"the network expects {network.signal_length} and {network.num_static}")
        self.config, self.device = config, torch.device(device)
        self.net = network.to(self.device)
        self.distributed, self.rank, self.world_size = resolve_distributed(distributed, "CVAETrainer")
        self.is_main = self.rank == 0
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed + self.rank)
        self.g = torch.Generator().manual_seed(config.seed + self.rank)
        self.full_train = train_data
        self.net.set_normalization(torch.as_tensor(train_data.signals), torch.as_tensor(train_data.static),
                                   None if train_data.peaks is None else torch.nan_to_num(torch.as_tensor(train_data.peaks)),
                                   None if train_data.peak_mask is None else torch.as_tensor(train_data.peak_mask))
        local = train_data
        if self.distributed:
            record = self.output_dir / "data_shards.json" if self.is_main else None
            local = train_data.subset(np.asarray(shard_indices(len(train_data), config.seed, record, "CVAETrainer")))
        self.train_t = normalized_tensors(self.net, local, self.device)
        self.val_t = normalized_tensors(self.net, val_data, self.device) if val_data is not None else None
        self.beta = BetaWarmup(config.max_beta, config.warmup_epochs)
        self.weights = CVAELossWeights(config.static_weight, config.peak_weight, config.presence_weight)
        # the part the mode does not use (legacy: static head; joint: condition projection) stays frozen,
        # so every trainable parameter gets a gradient (what DDP requires)
        for p in (self.net.condition if self.net.joint_generation else self.net.static_head).parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.AdamW([p for p in self.net.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay)
        step = _TrainingForward(self.net)
        self.model = wrap_ddp(step, self.device) if self.distributed else step
        self.epoch = 0
        fields = ["epoch", *_TERMS, "beta", "lr"] + (["val_loss"] if val_data is not None else [])
        self.log = CSVLogger(self.output_dir / "train_log.csv", fields) if self.is_main else None

    # -- checkpointing ------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        state = {"epoch": self.epoch, "net": self.net.state_dict(), "opt": self.opt.state_dict(), "config": asdict(self.config),
                 "joint_generation": self.net.joint_generation}
        atomic_torch_save(state, self.output_dir / "checkpoint.pt")

    def resume(self) -> bool:
        """Resume from ``checkpoint.pt`` if present (refusing one from the other mode); returns whether it did."""
        path = self.output_dir / "checkpoint.pt"
        if not path.exists():
            return False
        state = load_checkpoint(path)
        if bool(state.get("joint_generation", self.net.joint_generation)) != self.net.joint_generation:
            raise ValueError(f"CVAETrainer: {path} was trained with joint_generation={state['joint_generation']}, "
                             f"but the network has joint_generation={self.net.joint_generation}; use another output_dir")
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.epoch = int(state["epoch"])
        self.g.manual_seed(self.config.seed + self.rank + 1000 * self.epoch)
        logger.info("resumed from %s at epoch %d", path, self.epoch)
        return True

    # -- steps --------------------------------------------------------------------------------------
    def _lr(self, progress: float) -> float:
        c = self.config
        return float(c.lr * (0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * min(progress, 1.0)))))

    def train_epoch(self) -> dict[str, float]:
        """One pass over this rank's shuffled records; returns the mean loss terms."""
        c = self.config
        self.net.train()
        n = self.train_t["signal"].shape[0]
        order = torch.randperm(n, generator=self.g)
        steps = max(n // c.batch_size, 1)
        sums = dict.fromkeys(_TERMS, 0.0)
        lr = self._lr(self.epoch / max(c.epochs, 1))
        for s in range(steps):
            lr = self._lr((self.epoch + s / steps) / max(c.epochs, 1))
            for group in self.opt.param_groups:
                group["lr"] = lr
            idx = order[s * c.batch_size : (s + 1) * c.batch_size].to(self.device)
            terms = self._step_terms(idx, self.beta(self.epoch + s / steps))
            self.opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            self.opt.step()
            for k in _TERMS:
                sums[k] += float(terms[k].detach())
        return {**{k: v / steps for k, v in sums.items()}, "beta": self.beta(self.epoch + 1), "lr": lr}

    def _step_terms(self, idx: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
        t = self.train_t
        sig, stat = t["signal"][idx], t["static"][idx]
        peaks = t["peaks"][idx] if t["peaks"] is not None else None
        mask = t["mask"][idx] if t["mask"] is not None else None
        *outputs, mu, logvar = self.model(sig, stat)  # one (DDP-wrapped) forward per update
        return cvae_loss(tuple(outputs), mu, logvar, sig, stat, peaks, mask, beta, self.weights, joint=self.net.joint_generation)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Loss on the validation records with the posterior mean and the current beta."""
        self.net.eval()
        t = self.val_t
        mu, logvar = self.net.encode(t["signal"], t["static"])
        terms = cvae_loss(self.net.decode(mu, t["static"]), mu, logvar, t["signal"], t["static"], t["peaks"], t["mask"],
                          self.beta(self.epoch), self.weights, joint=self.net.joint_generation)
        self.net.train()
        return float(terms["loss"])

    def export_state(self) -> dict[str, torch.Tensor]:
        """The weights to ship: ``state_dict`` as contiguous CPU tensors."""
        return {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}

    def run(self, resume: bool = True) -> Path:
        """Train to ``config.epochs`` (resuming if asked), fit the observation model and return ``model.pt``'s path."""
        if resume:
            self.resume()
        c = self.config
        with tqdm(total=c.epochs, initial=min(self.epoch, c.epochs), desc="CVAE", unit="epoch", disable=not self.is_main) as bar:
            while self.epoch < c.epochs:
                stats = self.train_epoch()
                self.epoch += 1
                stats = mean_over_ranks(stats, self.device) if self.distributed else stats
                if self.val_t is not None:
                    stats["val_loss"] = self.validation_loss()
                bar.update(1)
                bar.set_postfix({"loss": f"{stats['loss']:.4f}"})
                if self.log is not None:
                    self.log.log({"epoch": self.epoch, **stats})
                if self.is_main and (self.epoch % c.checkpoint_every == 0 or self.epoch == c.epochs):
                    self.save_checkpoint()
        self.net.eval()
        fit_observation_model(self.net, self.full_train)
        fit_latent_prior(self.net, self.full_train, c.prior_components, c.seed)
        model_path = self.output_dir / "model.pt"
        if self.is_main:
            atomic_torch_save(self.export_state(), model_path)
            if self.log is not None and self.log.read()["epoch"]:
                plot_curves(self.log, self.output_dir / "loss_curve.png", x="epoch", title="CVAE loss terms")
        if self.distributed:
            dist.barrier()
        return model_path
