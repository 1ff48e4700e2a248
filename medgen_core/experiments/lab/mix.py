"""Encoder/decoder mixing across two trained autoencoders.

:func:`check_mixable` compares the encoder's and the decoder's declared signatures (latent shape,
conditioning strategy, number of classes, image size and channels) and raises one
:class:`~medgen_core.errors.LabError` listing every mismatch. :func:`mix_models` builds
"encoder of A, decoder of B", optionally with a linear map ``z_B ~ z_A W + b`` fitted by least squares
on training slices (``align="linear"``): two independently trained autoencoders have unrelated latent
coordinates even when the shapes agree, and the fitted map shows how much of the gap is only a change of
coordinates. :func:`run_mixing` measures all of it on the held-out slab.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from medgen_core.data.lab_slices import LabSlices
from medgen_core.errors import LabError
from medgen_core.experiments.lab.evaluate import batched, psnr_ssim, save_image_grid, stamp_file, write_json
from medgen_core.networks.conditional_autoencoder import class_weights

__all__ = ["MixedAutoencoder", "check_mixable", "fit_latent_map", "mix_models", "run_mixing"]

_KEYS = ("latent_shape", "conditioning", "num_classes", "image_size", "channels", "spatial_dims")


def _signature(part: nn.Module, role: str, name: str) -> dict[str, Any]:
    sig = getattr(part, "signature", None)
    if not callable(sig):
        raise LabError(f"{name}: its {role} ({type(part).__name__}) declares no signature(); mixing needs ConditionalEncoder/ConditionalDecoder parts")
    return sig()


def check_mixable(encoder: nn.Module, decoder: nn.Module, encoder_name: str = "model A", decoder_name: str = "model B") -> None:
    """Raise :class:`LabError` naming every property in which ``encoder`` and ``decoder`` disagree."""
    a, b = _signature(encoder, "encoder", encoder_name), _signature(decoder, "decoder", decoder_name)
    why = {
        "latent_shape": "the decoder cannot read latents of another shape",
        "conditioning": "the class is carried differently, so the latent does not hold the same information",
        "num_classes": "class ids would mean different things",
        "image_size": "the decoder would produce images of another size",
        "channels": "image channels differ",
        "spatial_dims": "2D and 3D parts cannot be combined",
    }
    problems = [f"{k}: encoder {a.get(k)!r} vs decoder {b.get(k)!r} ({why[k]})" for k in _KEYS if a.get(k) != b.get(k)]
    if problems:
        raise LabError(f"cannot combine the encoder of {encoder_name} with the decoder of {decoder_name}: " + "; ".join(problems)
                       + ". Pick two models with the same latent_size, conditioning and class list.")


class MixedAutoencoder(nn.Module):
    """``decoder(map(encoder(x, c)), c)`` with an optional affine latent map ``z W + b``."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.num_classes, self.image_size = decoder.num_classes, decoder.image_size
        self.register_buffer("weight", weight if weight is not None else torch.eye(encoder.latent_size))
        self.register_buffer("bias", bias if bias is not None else torch.zeros(encoder.latent_size))

    def forward(self, image: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        w = class_weights(class_labels, self.num_classes, image.shape[0], image.device)
        z = self.encoder.encode_weighted(image, w) @ self.weight + self.bias
        return self.decoder.decode_weighted(z, w)


@torch.no_grad()
def fit_latent_map(encoder_a: nn.Module, encoder_b: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``(W, b)`` with ``encoder_b(x) ~ encoder_a(x) W + b`` over ``images``/``labels``."""
    za = batched(lambda x, y: encoder_a(x, y), images, labels)
    zb = batched(lambda x, y: encoder_b(x, y), images, labels)
    design = torch.cat([za, torch.ones(za.shape[0], 1)], dim=1).double()
    solution = torch.linalg.lstsq(design, zb.double()).solution.float()
    return solution[:-1], solution[-1]


def mix_models(model_a: nn.Module, model_b: nn.Module, align: str = "none", fit_images: torch.Tensor | None = None,
               fit_labels: torch.Tensor | None = None, names: tuple[str, str] = ("model A", "model B")) -> MixedAutoencoder:
    """Encoder of ``model_a`` with the decoder of ``model_b`` (checked with :func:`check_mixable`).

    Args:
        model_a, model_b: autoencoders with ``encoder`` and ``decoder`` parts.
        align: ``"none"`` or ``"linear"`` (fit the latent map on ``fit_images``/``fit_labels``).
    """
    if align not in ("none", "linear"):
        raise LabError(f"mixing: align must be 'none' or 'linear', got {align!r}")
    check_mixable(model_a.encoder, model_b.decoder, *names)
    if align == "none":
        return MixedAutoencoder(model_a.encoder, model_b.decoder).eval()
    if fit_images is None or fit_labels is None:
        raise LabError("mixing with align='linear' needs fit_images and fit_labels (training slices) to fit the latent map")
    weight, bias = fit_latent_map(model_a.encoder, model_b.encoder, fit_images, fit_labels)
    return MixedAutoencoder(model_a.encoder, model_b.decoder, weight, bias).eval()


@torch.no_grad()
def run_mixing(model_a: nn.Module, model_b: nn.Module, data: LabSlices, out_dir: str | Path, names: tuple[str, str] = ("A", "B"),
               settings: Mapping[str, Any] | None = None, examples: int = 4, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Held-out PSNR/SSIM of A, B, enc A + dec B and enc B + dec A (raw and linearly aligned);
    writes ``mixing.json`` and ``mixing.png`` (example reconstructions; with ``provenance``, see
    :func:`~medgen_core.experiments.lab.evaluate.stamp_file`, also its sidecar) to ``out_dir``."""
    model_a.eval()
    model_b.eval()
    pairs = {
        f"{names[0]}": model_a,
        f"{names[1]}": model_b,
        f"enc {names[0]} + dec {names[1]}": mix_models(model_a, model_b, "none", names=names),
        f"enc {names[0]} + dec {names[1]}, linear map": mix_models(model_a, model_b, "linear", data.train_images, data.train_labels, names),
        f"enc {names[1]} + dec {names[0]}": mix_models(model_b, model_a, "none", names=names[::-1]),
        f"enc {names[1]} + dec {names[0]}, linear map": mix_models(model_b, model_a, "linear", data.train_images, data.train_labels, names[::-1]),
    }
    x, y = data.test_images, data.test_labels
    results, rows = {}, []
    pick = torch.linspace(0, x.shape[0] - 1, min(examples, x.shape[0])).long()
    for label, net in pairs.items():
        recon = batched(lambda a, b: net(a, b), x, y)
        psnr, ssim = psnr_ssim(recon, x)
        results[label] = {"psnr": round(psnr, 3), "ssim": round(ssim, 4)}
        rows.append([recon[i, 0].clamp(0, 1).numpy() for i in pick])
    rows.insert(0, [x[i, 0].numpy() for i in pick])
    out = Path(out_dir)
    summary = {"experiment": "encoder_decoder_mixing", "models": list(names), "signature": model_a.encoder.signature(),
               "heldout_slices": int(x.shape[0]), "results": results, "settings": dict(settings or {})}
    write_json(summary, out / "mixing.json")
    row_labels = ["held-out input", *[f"{k}\n{v['psnr']:.1f} dB".replace(" + ", "\n+ ").replace(", linear map", "\n(linear map)") for k, v in results.items()]]
    png = save_image_grid(rows, out / "mixing.png", row_labels=row_labels, col_labels=[f"z={int(data.test_z[i])}" for i in pick],
                          title="encoder/decoder mixing (held-out slab)")
    if provenance is not None:
        stamp_file(png, provenance, "encoder_decoder_mixing_figure", {"models": list(names), "examples": [int(data.test_z[i]) for i in pick]})
    return summary
