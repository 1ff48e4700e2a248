"""Fast DDIM sampling and SDEdit image-to-image variants from a (class-conditional) MONAI ``DiffusionModelUNet``.

The network must have been trained as by :class:`medgen_core.training.diffusion.DiffusionTrainer`:
noise (epsilon) prediction under MONAI's linear-beta schedule, images in [-1, 1], class ids ``0..K-1``
plus the null class ``K`` (``num_class_embeds = K + 1``), optionally in a ``f x f`` space-to-depth
layout (``in_channels = out_channels = f*f``).

Sampling uses MONAI's :class:`~monai.networks.schedulers.DDIMScheduler` with ``eta = 0`` (deterministic:
all randomness is the initial noise, drawn on the CPU from the caller's ``torch.Generator``, so a seed
gives the same images on any device and for any batch size). The timesteps are "trailing":
``t_k = (n - k) * (T // n) - 1`` for ``k = 0..n-1``, so the first step starts from pure noise at
``t = T - 1`` and every step lands exactly on the previous step's timestep (MONAI's ``DDIMScheduler.step``
moves by ``T // n``); the last step returns the model's clean-image prediction.

Speed on a CPU comes from a small UNet, space-to-depth, batching, ``channels_last`` and bfloat16
autocast where the CPU supports it natively (AVX512-BF16 / AMX); see
``benchmarks/benchmark_ddpm_sampling.py``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.schedulers import DDIMScheduler

from medgen_core.io import Volume

__all__ = ["DiffusionSampler", "bf16_is_fast", "class_ids_for", "sample_output_paths", "slice_volume_items"]


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 autocast is a speed-up on ``device``: CUDA with bf16, or a CPU with native bf16 (oneDNN)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # pragma: no cover - depends on the build
            return False
    return False


def _ddim_timesteps(steps: int, stride: int) -> list[int]:
    """``[steps*stride - 1, (steps-1)*stride - 1, ..., stride - 1]``."""
    return [(steps - k) * stride - 1 for k in range(steps)]


class DiffusionSampler:
    """Batched DDIM sampling (``sample``) and SDEdit variants (``vary``) of ``(n, 1, H, W)`` slices in [0, 1].

    Args:
        network: a trained ``DiffusionModelUNet`` (``spatial_dims=2``); it is put in eval mode on ``device``
            (and in ``channels_last`` memory format when ``channels_last``).
        num_train_timesteps: ``T`` of the training schedule.
        image_size: ``(H, W)`` of the generated slices.
        num_classes: ``K`` real classes (the network's ``num_class_embeds`` must be ``K + 1``); None reads
            it from the network (``num_class_embeds - 1``, or no conditioning when it has no class embedding).
        device: torch device; defaults to the network's.
        bf16: bfloat16 autocast for the network; None = when :func:`bf16_is_fast` (the scheduler arithmetic
            always stays in float32).
        batch_size: slices per network call (guidance doubles the batch inside a call).
        channels_last: use the ``channels_last`` memory format (faster convolutions with oneDNN / cuDNN).
        prediction_type: the network's training target, ``"epsilon"``, ``"v_prediction"`` or ``"sample"``
            (:class:`~medgen_core.training.diffusion.DiffusionTrainingConfig`); classifier-free guidance
            combines the outputs linearly whichever it is.
    """

    def __init__(
        self,
        network: nn.Module,
        num_train_timesteps: int = 1000,
        image_size: tuple[int, int] | Sequence[int] = (128, 128),
        num_classes: int | None = None,
        device: str | torch.device | None = None,
        bf16: bool | None = None,
        batch_size: int = 16,
        channels_last: bool = True,
        prediction_type: str = "epsilon",
    ) -> None:
        from medgen_core.networks.diffusion import PREDICTION_TYPES, null_class_id, space_to_depth_factor

        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"DiffusionSampler: prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")
        self.prediction_type = prediction_type

        self.factor = space_to_depth_factor(network)
        embeds = getattr(network, "num_class_embeds", None)
        if num_classes is not None:
            if embeds is None or int(embeds) != int(num_classes) + 1:
                raise ValueError(f"DiffusionSampler: num_classes={num_classes} needs a network with num_class_embeds={int(num_classes) + 1} "
                                 f"(the classes plus the null class), but it has num_class_embeds={embeds}.")
            self.num_classes: int | None = int(num_classes)
        else:
            self.num_classes = null_class_id(network)
        size = tuple(int(s) for s in image_size)
        if len(size) != 2 or min(size) < 1 or size[0] % self.factor or size[1] % self.factor:
            raise ValueError(f"DiffusionSampler: image_size must be (H, W) divisible by the space-to-depth factor {self.factor}, got {image_size}.")
        if int(num_train_timesteps) < 2:
            raise ValueError(f"DiffusionSampler: num_train_timesteps must be >= 2, got {num_train_timesteps}.")
        if int(batch_size) < 1:
            raise ValueError(f"DiffusionSampler: batch_size must be >= 1, got {batch_size}.")
        self.image_size: tuple[int, int] = size  # type: ignore[assignment]
        self.num_train_timesteps = int(num_train_timesteps)
        self.batch_size = int(batch_size)
        if device is None:
            first = next(itertools.chain(network.parameters(), network.buffers()), None)
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.bf16 = bf16_is_fast(self.device) if bf16 is None else bool(bf16)
        self.channels_last = channels_last
        self.network = network.to(self.device).eval()
        if channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.scheduler = DDIMScheduler(num_train_timesteps=self.num_train_timesteps, clip_sample=True, set_alpha_to_one=True,
                                       prediction_type=prediction_type)

    # -- validation -------------------------------------------------------------------------------
    def _labels(self, class_ids: torch.Tensor | Sequence[int] | None, n: int) -> torch.Tensor | None:
        """Class ids ``(n,)`` (the null class where none are given), or None for an unconditional network."""
        if self.num_classes is None:
            if class_ids is not None:
                raise ValueError("DiffusionSampler: class_ids were given but the network is unconditional (no class embedding).")
            return None
        if class_ids is None:
            return torch.full((n,), self.num_classes, dtype=torch.long)
        ids = torch.as_tensor(class_ids)
        if ids.dim() == 0:
            ids = ids.expand(n)
        if ids.shape != (n,) or ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"DiffusionSampler: class_ids must be an integer tensor of shape ({n},), got {tuple(ids.shape)} {ids.dtype}.")
        if n and (int(ids.min()) < 0 or int(ids.max()) >= self.num_classes):
            raise ValueError(f"DiffusionSampler: class_ids must be in [0, {self.num_classes}), got {int(ids.min())}..{int(ids.max())}.")
        return ids.long().cpu()

    def _check_steps(self, steps: int, guidance_scale: float) -> None:
        if not 1 <= int(steps) <= self.num_train_timesteps:
            raise ValueError(f"DiffusionSampler: steps must be in [1, {self.num_train_timesteps}], got {steps}.")
        if not (math.isfinite(float(guidance_scale)) and float(guidance_scale) >= 0.0):
            raise ValueError(f"DiffusionSampler: guidance_scale must be a finite number >= 0, got {guidance_scale}.")

    # -- core -------------------------------------------------------------------------------------
    def _to_model(self, images: torch.Tensor) -> torch.Tensor:
        """``(n, 1, H, W)`` in [-1, 1] -> the network's layout ``(n, f*f, H/f, W/f)``."""
        return F.pixel_unshuffle(images, self.factor) if self.factor > 1 else images

    def _from_model(self, x: torch.Tensor) -> torch.Tensor:
        """The network's layout -> ``(n, 1, H, W)`` in [0, 1] (float32, CPU)."""
        x = F.pixel_shuffle(x, self.factor) if self.factor > 1 else x
        return ((x.float().cpu() + 1.0) / 2.0).clamp_(0.0, 1.0).contiguous()

    def _eps(self, x: torch.Tensor, t: int, labels: torch.Tensor | None, guidance_scale: float) -> torch.Tensor:
        """Predicted noise (float32) for ``x`` at timestep ``t``, with classifier-free guidance when asked."""
        guided = labels is not None and guidance_scale != 1.0 and bool((labels != self.num_classes).any())
        if guided:
            null = torch.full_like(labels, self.num_classes)
            x_in, y_in = torch.cat([x, x]), torch.cat([labels, null])
        else:
            x_in, y_in = x, labels
        if self.channels_last:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        timesteps = torch.full((x_in.shape[0],), t, dtype=torch.long, device=self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            eps = self.network(x_in, timesteps, class_labels=y_in).float()
        if guided:
            cond, uncond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        return eps.contiguous()

    def _denoise(self, x: torch.Tensor, labels: torch.Tensor | None, steps: int, kept: int, guidance_scale: float) -> torch.Tensor:
        """Run the last ``kept`` of ``steps`` trailing DDIM steps on ``x`` (network layout), chunk by chunk."""
        self.scheduler.set_timesteps(steps)  # DDIMScheduler.step then moves by T // steps, our stride
        timesteps = _ddim_timesteps(kept, self.num_train_timesteps // steps)
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            xc = x[start : start + self.batch_size].to(self.device)
            yc = labels[start : start + self.batch_size].to(self.device) if labels is not None else None
            for t in timesteps:
                eps = self._eps(xc, t, yc, guidance_scale)
                xc, _ = self.scheduler.step(eps, t, xc)
            out.append(self._from_model(xc))
        return torch.cat(out) if out else torch.zeros((0, 1, *self.image_size))

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        class_ids: torch.Tensor | Sequence[int] | None = None,
        steps: int = 10,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``n`` new slices ``(n, 1, H, W)`` in [0, 1] from noise (DDIM, ``eta = 0``).

        Args:
            n: number of slices.
            class_ids: int64 ``(n,)`` in ``[0, K)`` (or one int for all); None samples unconditionally (null class).
            steps: DDIM steps (1..T); 10 is a good speed/quality trade-off.
            guidance_scale: classifier-free guidance weight ``w`` (``eps = eps_null + w (eps_class - eps_null)``);
                1 = plain conditional sampling, > 1 follows the class more closely (twice the network work).
            generator: CPU ``torch.Generator`` for the initial noise (the only randomness); None uses the global RNG.
        """
        if int(n) < 0:
            raise ValueError(f"DiffusionSampler.sample: n must be >= 0, got {n}.")
        self._check_steps(steps, guidance_scale)
        labels = self._labels(class_ids, int(n))
        noise = torch.randn((int(n), 1, *self.image_size), generator=generator)
        return self._denoise(self._to_model(noise), labels, int(steps), int(steps), float(guidance_scale))

    @torch.inference_mode()
    def vary(
        self,
        images: torch.Tensor,
        strength: float = 0.5,
        class_ids: torch.Tensor | Sequence[int] | None = None,
        steps: int = 10,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """SDEdit variants ``(N, 1, H, W)`` in [0, 1] of ``images`` ``(N, 1, H, W)`` in [0, 1].

        The images are noised to timestep ``t0 ~ strength * T`` (``scheduler.add_noise``) and denoised with
        the last ``round(strength * steps)`` (at least 1) of the ``steps`` DDIM steps; ``strength`` is thus
        rounded to a multiple of ``1 / steps``. Small strength keeps the input's layout and changes
        detail; ``strength = 1`` starts from (almost) pure noise, like :meth:`sample`.

        Args:
            images: slices of size ``image_size``, values in [0, 1].
            strength: in (0, 1].
            class_ids, steps, guidance_scale, generator: as in :meth:`sample`.
        """
        images = torch.as_tensor(images)
        if images.dim() != 4 or images.shape[1] != 1 or tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"DiffusionSampler.vary: images must be (N, 1, {self.image_size[0]}, {self.image_size[1]}), got {tuple(images.shape)}.")
        if images.numel() and (not torch.isfinite(images).all() or float(images.min()) < 0.0 or float(images.max()) > 1.0):
            raise ValueError("DiffusionSampler.vary: images must be finite and in [0, 1].")
        if not (math.isfinite(float(strength)) and 0.0 < float(strength) <= 1.0):
            raise ValueError(f"DiffusionSampler.vary: strength must be in (0, 1], got {strength}.")
        self._check_steps(steps, guidance_scale)
        n = images.shape[0]
        labels = self._labels(class_ids, n)
        stride = self.num_train_timesteps // int(steps)
        kept = max(1, min(int(steps), round(float(strength) * int(steps))))
        t0 = kept * stride - 1
        x0 = self._to_model(images.float().cpu() * 2.0 - 1.0)
        noise = self._to_model(torch.randn((n, 1, *self.image_size), generator=generator))
        x_t = self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=torch.full((n,), t0, dtype=torch.long))
        return self._denoise(x_t, labels, int(steps), kept, float(guidance_scale))


# -- bundle helpers ------------------------------------------------------------------------------


def class_ids_for(class_name: str | None, class_names: Sequence[str], n: int) -> torch.Tensor | None:
    """``(n,)`` int64 ids of ``class_name`` in ``class_names``; None (unconditional) when ``class_name`` is None or ``""``."""
    if class_name in (None, ""):
        return None
    names = [str(c) for c in class_names]
    if class_name not in names:
        raise ValueError(f"unknown class_name {class_name!r}; this generator knows {names} (or '' for unconditional sampling).")
    return torch.full((int(n),), names.index(str(class_name)), dtype=torch.long)


def sample_output_paths(output_dir: str | Path, output_file: str | Path | None, prefix: str, n: int, suffix: str = ".nii.gz") -> list[Path]:
    """Where ``n`` samples go: ``output_file`` itself when ``n == 1``, ``<output_file stem>_<i>`` next to
    it when ``n > 1``, else ``<output_dir>/<prefix>_<i:03d><suffix>``."""
    if output_file:
        path = Path(output_file)
        if n == 1:
            return [path]
        name = path.name
        ext = next((e for e in (".nii.gz", ".nii", ".nrrd") if name.lower().endswith(e)), path.suffix)
        stem = name[: len(name) - len(ext)] if ext else name
        return [path.with_name(f"{stem}_{i:03d}{ext}") for i in range(n)]
    return [Path(output_dir) / f"{prefix}_{i:03d}{suffix}" for i in range(n)]


def slice_volume_items(
    images: torch.Tensor, affine: np.ndarray | Sequence[Sequence[float]], output_dir: str | Path, output_file: str | Path | None, prefix: str
) -> list[dict[str, object]]:
    """``[{"pred": Volume (H, W, 1), "output": path}, ...]`` for generated slices ``(n, 1, H, W)``, ready for
    :class:`~medgen_core.transforms.volume_io.SaveGeneratedVolumed` (which stamps the provenance)."""
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"slice_volume_items: images must be (n, 1, H, W), got {tuple(images.shape)}.")
    paths = sample_output_paths(output_dir, output_file, prefix, images.shape[0])
    affine = np.asarray(affine, dtype=np.float64)
    return [{"pred": Volume(array=img[0].numpy()[:, :, None], affine=affine), "output": str(p)} for img, p in zip(images, paths)]
