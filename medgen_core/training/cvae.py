"""Training of :class:`~medgen_core.networks.cvae.SignalCVAE` (joint or legacy mode) on ABR-like records.

Epochs of shuffled mini-batches; loss = signal MSE + weighted static MSE + beta * KL + weighted masked
peak loss (:func:`medgen_core.losses.cvae.cvae_loss`), with beta warmed up linearly
(:class:`~medgen_core.losses.cvae.BetaWarmup`, per epoch, fractional within an epoch). Before training
the network's normalisation buffers are fitted on the training set; after training its observation
model (residual spectrum of the signal, residual sd of static parameters and peaks, on the training
set's posterior means) is fitted, so samples carry realistic noise, and so is the latent sampling prior
(a Gaussian mixture on the training set's aggregate posterior, :func:`fit_latent_prior`).

The engine is MONAI's :class:`~monai.engines.SupervisedTrainer` with :class:`CVAEIteration` (the bundle's
``configs/train.json``, or :func:`train_cvae` for Python callers such as ``medgen cvae train``), the shared handlers of
:mod:`medgen_core.training.engines` (cosine learning rate to 5% per iteration, checkpoints and resume, logs, loss curve)
and a MONAI :class:`~monai.engines.SupervisedEvaluator` (:class:`CVAEValidation`, run by ``ValidationHandler`` after
every epoch: ``val_loss`` with the posterior mean and the epoch's beta). The sampling model is fitted when the engine
completes, just before ``model.pt`` is written (:func:`sampling_model_fit`).

Outputs in ``output_dir``: ``model.pt`` (``state_dict``, CPU tensors), ``checkpoint_epoch=N.pt`` (resumable, read with
``weights_only=True``), ``train_log.csv`` (``step,tag,value``: loss terms, beta and lr per iteration, ``val_loss`` per
epoch at its last iteration) and ``loss_curve.png``. Under ``torchrun`` the network is DDP-wrapped, each rank trains on
its own shard of records (``data_shards.json``) and rank 0 alone writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from medgen_core.data.abr_dataset import ABRDataset
from medgen_core.losses.cvae import BetaWarmup, CVAELossWeights, cvae_loss
from medgen_core.networks.cvae import SignalCVAE
from medgen_core.training.base import unwrap
from medgen_core.training.distributed import rank_and_world_size, shard_indices
from medgen_core.training.engines import RandomBatches, WarmupCosineSchedule, mean_of, standard_handlers

__all__ = ["CVAEBatches", "CVAEIteration", "CVAETrainingConfig", "CVAEValidation", "TrainingForward", "fit_latent_prior", "fit_observation_model",
           "normalized_tensors", "prepare_cvae", "sampling_model_fit", "train_cvae"]
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


class TrainingForward(nn.Module):
    """``(signal_n (B, L), static_n (B, S)) -> (signal, static, peak values, presence logits, mu, logvar)`` with a
    posterior sample: the one forward per update that DDP wraps; ``net`` is the :class:`SignalCVAE`."""

    def __init__(self, net: SignalCVAE) -> None:
        super().__init__()
        self.net = net

    def forward(self, signal_n: torch.Tensor, static_n: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mu, logvar = self.net.encode(signal_n, static_n)
        return (*self.net.decode(self.net.reparameterize(mu, logvar), static_n), mu, logvar)


def prepare_cvae(network: SignalCVAE, train_data: ABRDataset) -> SignalCVAE:
    """Check that ``train_data`` fits ``network``, fit its normalisation buffers on it, and freeze the part the mode does
    not use (legacy: static head; joint: condition projection), so every trainable parameter gets a gradient (DDP)."""
    if not isinstance(network, SignalCVAE):
        raise TypeError(f"prepare_cvae: network must be a SignalCVAE, got {type(network).__name__}")
    if train_data.signals.shape[1] != network.signal_length or train_data.static.shape[1] != network.num_static:
        raise ValueError(f"the records have {train_data.signals.shape[1]} samples and {train_data.static.shape[1]} static parameters; "
                         f"the network expects {network.signal_length} and {network.num_static}")
    network.set_normalization(torch.as_tensor(train_data.signals), torch.as_tensor(train_data.static),
                              None if train_data.peaks is None else torch.nan_to_num(torch.as_tensor(train_data.peaks)),
                              None if train_data.peak_mask is None else torch.as_tensor(train_data.peak_mask))
    for p in (network.condition if network.joint_generation else network.static_head).parameters():
        p.requires_grad_(False)
    return network


class CVAEBatches(RandomBatches):
    """One epoch of shuffled mini-batches of ``data`` in ``network``'s normalised units: ``{"signal", "static",
    "peaks", "mask"}`` (the peak entries only when the records have peaks); ``len(data) // batch_size`` batches (at
    least one), a new permutation at every :meth:`reseed` (each epoch). Under a process group each rank uses its own
    shard of the records (``data_shards.json``). Load with ``DataLoader(batch_size=None)``."""

    def __init__(self, network: SignalCVAE, data: ABRDataset, batch_size: int, seed: int = 0, shard_record: str | Path | None = None) -> None:
        rank, world = rank_and_world_size()
        if batch_size < 1:
            raise ValueError(f"CVAEBatches: batch_size must be >= 1, got {batch_size}.")
        if world > 1:
            record = Path(shard_record) if shard_record and rank == 0 else None
            if record is not None:
                record.parent.mkdir(parents=True, exist_ok=True)
            data = data.subset(np.asarray(shard_indices(len(data), seed, record, "CVAEBatches")))
        net = unwrap(network)
        self.tensors = {k: v.cpu() for k, v in normalized_tensors(net.net if isinstance(net, TrainingForward) else net, data).items() if v is not None}
        self.n, self.batch_size = int(self.tensors["signal"].shape[0]), int(batch_size)
        super().__init__(max(self.n // self.batch_size, 1), seed + rank)
        self.reseed(seed + rank)

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        self.order = torch.randperm(self.n, generator=self.g)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_batches:
            raise IndexError(index)
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return {k: v[idx] for k, v in self.tensors.items()}


class CVAEIteration:
    """One CVAE update on ``engine`` (a :class:`~monai.engines.SupervisedTrainer` whose ``network`` is a
    :class:`TrainingForward`, optionally DDP-wrapped): the loss of :func:`medgen_core.losses.cvae.cvae_loss` with beta
    warmed up per (fractional) epoch, one optimiser step. Logged terms: the loss terms, ``beta`` and ``lr``."""

    TERMS = ("loss", "signal_mse", "static_mse", "kl", "peak_mse", "presence_bce")

    def __init__(self, config: "CVAETrainingConfig", steps_per_epoch: int) -> None:
        self.beta = BetaWarmup(config.max_beta, config.warmup_epochs)
        self.weights = CVAELossWeights(config.static_weight, config.peak_weight, config.presence_weight)
        self.steps = max(int(steps_per_epoch), 1)

    def __call__(self, engine: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        device = engine.state.device
        t = {k: v.to(device) for k, v in batch.items()}
        progress = (engine.state.epoch - 1) + ((engine.state.iteration - 1) % self.steps) / self.steps
        beta = self.beta(progress)
        engine.network.train()
        *outputs, mu, logvar = engine.network(t["signal"], t["static"])  # one (DDP-wrapped) forward per update
        joint = unwrap(engine.network).net.joint_generation
        terms = cvae_loss(tuple(outputs), mu, logvar, t["signal"], t["static"], t.get("peaks"), t.get("mask"), beta, self.weights, joint=joint)
        engine.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        engine.optimizer.step()
        logged = {k: float(terms[k].detach()) for k in self.TERMS}
        logged.update(beta=beta, lr=float(engine.optimizer.param_groups[0]["lr"]))
        return {"loss": terms["loss"].detach(), "terms": logged}


class CVAEValidation:
    """The evaluator's step: the loss on validation records with the posterior mean and the beta of the trainer's
    epoch (the evaluator's ``state.epoch``, set by MONAI's ``ValidationHandler``). Returns ``{"loss": float}``."""

    def __init__(self, config: "CVAETrainingConfig") -> None:
        self.beta = BetaWarmup(config.max_beta, config.warmup_epochs)
        self.weights = CVAELossWeights(config.static_weight, config.peak_weight, config.presence_weight)

    @torch.no_grad()
    def __call__(self, engine: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        t = {k: v.to(engine.state.device) for k, v in batch.items()}
        net = unwrap(engine.network).net
        was_training = net.training
        net.eval()
        mu, logvar = net.encode(t["signal"], t["static"])
        terms = cvae_loss(net.decode(mu, t["static"]), mu, logvar, t["signal"], t["static"], t.get("peaks"), t.get("mask"),
                          self.beta(engine.state.epoch), self.weights, joint=net.joint_generation)
        net.train(was_training)
        return {"loss": float(terms["loss"])}


def sampling_model_fit(network: SignalCVAE, train_data: ABRDataset, prior_components: int, seed: int = 0) -> Callable[[Any], None]:
    """``engine -> None``: fit the observation model and the latent prior on ``train_data`` (before ``model.pt`` is written)."""

    def fit(engine: Any) -> None:
        network.eval()
        fit_observation_model(network, train_data)
        fit_latent_prior(network, train_data, prior_components, seed)

    return fit


def train_cvae(network: SignalCVAE, train_data: ABRDataset, config: "CVAETrainingConfig", output_dir: str | Path,
               val_data: ABRDataset | None = None, device: str | torch.device = "cpu", resume: bool = True) -> Path:
    """Train ``network`` on ``train_data`` with the bundle's engine (MONAI's SupervisedTrainer, :class:`CVAEIteration`,
    the shared handlers; with ``val_data``, a SupervisedEvaluator run after every epoch), fit the sampling model and
    write ``model.pt``; returns its path. A run with checkpoints in ``output_dir`` resumes."""
    from monai.engines import SupervisedEvaluator, SupervisedTrainer
    from monai.handlers import StatsHandler, TensorBoardStatsHandler, ValidationHandler

    from medgen_core.training.engines import summary_writer

    device = torch.device(device)
    output_dir = Path(output_dir)
    net = prepare_cvae(network, train_data).to(device)
    forward = TrainingForward(net)
    batches = CVAEBatches(net, train_data, config.batch_size, config.seed, output_dir / "data_shards.json")
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=0)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay)
    steps = len(batches)
    scheduler = WarmupCosineSchedule(optimizer, max(config.epochs * steps, 1), floor=0.05)
    extra: list[Any] = []
    if val_data is not None:
        val = torch.utils.data.DataLoader(CVAEBatches(net, val_data, max(len(val_data), 1)), batch_size=None)
        evaluator = SupervisedEvaluator(device=device, val_data_loader=val, network=forward, iteration_update=CVAEValidation(config),
                                        key_val_metric={"val_loss": mean_of("loss")}, decollate=False,
                                        val_handlers=[StatsHandler(iteration_log=False, name="medgen.validation"),
                                                      TensorBoardStatsHandler(summary_writer=summary_writer(output_dir), iteration_log=False,
                                                                              global_epoch_transform=lambda epoch: epoch * steps)])
        extra.append(ValidationHandler(validator=evaluator, interval=1, epoch_level=True))
    handlers = standard_handlers(output_dir, {"network": net, "optimizer": optimizer, "lr_scheduler": scheduler}, {"model.pt": net},
                                 lr_scheduler=scheduler, seed=config.seed, dataset=batches, log_every=1, resume=resume, title="CVAE loss terms",
                                 before_export=[sampling_model_fit(net, train_data, config.prior_components, config.seed)], extra=extra,
                                 save_interval=config.checkpoint_every)
    trainer = SupervisedTrainer(device=device, max_epochs=max(config.epochs, 1), train_data_loader=loader, network=forward, optimizer=optimizer,
                                loss_function=nn.MSELoss(), iteration_update=CVAEIteration(config, steps), train_handlers=handlers, decollate=False)
    trainer.run()
    net.eval()
    return output_dir / "model.pt"
