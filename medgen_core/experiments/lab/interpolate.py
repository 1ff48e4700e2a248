"""Latent interpolation between two slices, within a class or across classes.

Both slices are encoded with their own class; frame ``t`` (``t`` from 0 to 1) decodes
``z_t = (1 - t) z_a + t z_b`` with the class condition mixed the same way (soft class weights
``(1 - t) e_a + t e_b``, which every conditioning strategy accepts). Frame 0 is therefore exactly the
reconstruction of slice A and the last frame that of slice B.

Outputs: a PNG strip (input A, frames, input B) and the frames as one NIfTI volume ``(S, S, steps)``
written through :func:`medgen_core.provenance.write_generated_volume` (marked AI-generated, with a
provenance sidecar); the PNG gets a sidecar too (:func:`medgen_core.provenance.write_sidecar`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medgen_core.io import Volume
from medgen_core.errors import LabError
from medgen_core.experiments.lab.evaluate import save_image_grid
from medgen_core.provenance import GenerationMetadata, write_generated_volume, write_sidecar

__all__ = ["InterpolationResult", "interpolate_latents", "write_interpolation"]


@dataclass
class InterpolationResult:
    """``frames (steps, 1, S, S)`` in [0, 1] at positions ``ts``; the files written (when written)."""

    frames: torch.Tensor
    ts: list[float]
    volume_path: Path | None = None
    png_path: Path | None = None


@torch.no_grad()
def interpolate_latents(network: torch.nn.Module, image_a: torch.Tensor, class_a: int, image_b: torch.Tensor, class_b: int,
                        steps: int = 7) -> InterpolationResult:
    """Decode ``steps`` points on the line between the latents of ``image_a`` and ``image_b``.

    Args:
        network: a :class:`~medgen_core.networks.conditional_autoencoder.ConditionalAutoencoder`
            (encoder/decoder with ``encode_weighted`` / ``decode_weighted``).
        image_a, image_b: slices ``(1, S, S)`` or ``(1, 1, S, S)`` in [0, 1].
        class_a, class_b: their classes in ``[0, K)``.
        steps: number of frames (>= 2), endpoints included.
    """
    if steps < 2:
        raise LabError(f"latent interpolation needs at least 2 steps (the two endpoints), got {steps}")
    k = int(network.num_classes)
    for name, c in (("class_a", class_a), ("class_b", class_b)):
        if not 0 <= int(c) < k:
            raise LabError(f"latent interpolation: {name} = {c} is not a class of this model (0..{k - 1})")
    a, b = (img.reshape(1, 1, *img.shape[-2:]).float() for img in (image_a, image_b))
    size = int(network.image_size)
    if a.shape[-2:] != (size, size) or b.shape[-2:] != (size, size):
        raise LabError(f"latent interpolation: the slices are {tuple(a.shape[-2:])} and {tuple(b.shape[-2:])}, the model expects {size}x{size}")
    network.eval()
    wa, wb = (F.one_hot(torch.tensor([int(c)]), k + 1).float() for c in (class_a, class_b))
    za, zb = network.encoder.encode_weighted(a, wa), network.encoder.encode_weighted(b, wb)
    ts = torch.linspace(0.0, 1.0, steps)
    z = (1 - ts)[:, None] * za + ts[:, None] * zb
    w = (1 - ts)[:, None] * wa + ts[:, None] * wb
    frames = network.decoder.decode_weighted(z, w)
    return InterpolationResult(frames=frames, ts=[round(float(t), 4) for t in ts])


def write_interpolation(result: InterpolationResult, image_a: torch.Tensor, image_b: torch.Tensor, out_dir: str | Path, name: str,
                        provenance: Mapping[str, Any], parameters: Mapping[str, Any], input_paths: Sequence[str | Path] = (),
                        pixel_mm: float = 4.0, labels: tuple[str, str] = ("A", "B")) -> InterpolationResult:
    """Write ``<name>.nii.gz`` (frames along z, with provenance) and ``<name>.png`` (the strip, with a sidecar).

    Args:
        result: from :func:`interpolate_latents`.
        image_a, image_b: the two inputs (shown at the ends of the strip).
        out_dir: output folder.
        name: file stem.
        provenance: ``generator_name``, ``generator_version`` and optionally ``bundle_id``, ``weights_sha256``.
        parameters: recorded in the provenance record (indices, classes, steps, ...).
        input_paths: source files (the MNI152 template the slices came from).
        pixel_mm: in-plane pixel size of the slices (the z axis of the volume is the interpolation step).
        labels: captions of the two inputs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = result.frames[:, 0].cpu().numpy()  # (steps, S, S)
    volume = Volume(np.ascontiguousarray(np.moveaxis(frames, 0, 2)), np.diag([pixel_mm, pixel_mm, pixel_mm, 1.0]))
    record = dict(generator_name=provenance["generator_name"], generator_version=provenance["generator_version"],
                  bundle_id=provenance.get("bundle_id"), weights_sha256=provenance.get("weights_sha256"), seed=provenance.get("seed"))
    params = {**dict(parameters), "t": result.ts, "z_axis": "interpolation step t (not space)"}
    meta = GenerationMetadata.create(task="latent_interpolation", input_paths=list(input_paths), parameters=params, **record)
    result.volume_path = write_generated_volume(volume, out / f"{name}.nii.gz", meta)
    row = [image_a.reshape(image_a.shape[-2:]).cpu().numpy(), *frames, image_b.reshape(image_b.shape[-2:]).cpu().numpy()]
    cols = [f"input {labels[0]}", *[f"t={t:.2f}" for t in result.ts], f"input {labels[1]}"]
    result.png_path = save_image_grid([row], out / f"{name}.png", col_labels=cols, title=f"latent interpolation {labels[0]} -> {labels[1]}")
    meta_png = GenerationMetadata.create(task="latent_interpolation_figure", input_paths=list(input_paths), parameters=params, **record)
    write_sidecar(result.png_path, meta_png)
    return result
