"""MedGen bundles as generative-augmentation backends (the bundle side of :mod:`medgen_core.augmentation`).

- ``medgen.action == "translate"`` with ``input_mode == "labels"`` (e.g. ``brain_tissue_to_t1_pix2pix``):
  images from label maps (``from_labels``);
- ``medgen.action == "augment"`` (e.g. ``brain_slice_ddpm``): class-conditional diffusion sampling
  (``sample``) and SDEdit image-to-image variants (``vary``).

Before anything in a bundle's config is evaluated, its configs are checked against the same allowlist
as ``medgen bundle install`` (a config can execute code, :func:`~medgen_core.bundles.inspection.require_inspected`;
built-in bundles are trusted); a bundle that fails is refused unless the loader was built with
``trust=True``. The bundle root reaches the config as a literal. Weights are sha256-verified and
loaded with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medgen_core.augmentation.backends import BackendLoader, GeneratorBackend, GeneratorIdentity
from medgen_core.bundles.bundle_config import open_bundle_config
from medgen_core.bundles.catalog import get_bundle
from medgen_core.bundles.inspection import require_inspected
from medgen_core.bundles.overrides import literal
from medgen_core.bundles.weights import load_verified_network
from medgen_core.errors import AugmentationError, BundleError

__all__ = ["BundleGeneratorLoader", "DiffusionBundleBackend", "TranslationBundleBackend", "bundle_loaders", "bundle_network"]


def bundle_network(bundle_dir: str | Path, variant: str | None = None, device: str | torch.device = "cpu",
                   trust: bool = False) -> tuple[torch.nn.Module, Any, dict]:
    """``(network, parser, variant_entry)``: the bundle's ``network_def`` with verified weights, in eval mode.

    ``variant`` defaults to the first variant in the metadata; ``parser`` is the parsed inference config
    (for reading other settings). The configs are inspected first unless the bundle is built in or ``trust``.
    """
    info = get_bundle(bundle_dir)
    variants = info.variants
    if not variants:
        raise BundleError(f"bundle {info.name}: metadata lists no weight variants (medgen.variants)")
    name = variant or next(iter(variants))
    if name not in variants:
        raise BundleError(f"bundle {info.name}: no variant {name!r}; variants: {sorted(variants)}")
    parser = open_bundle_config(info, "inference", trust=trust)
    if "variant" in parser.config:
        parser["variant"] = literal(name)  # a network_def that depends on the variant (e.g. its scale) follows the request
    entry = variants[name]
    network = load_verified_network(parser.get_parsed_content("network_def"), info.path / entry["file"], entry["sha256"], device)
    return network.eval(), parser, {**entry, "name": name}


def _identity(bundle_dir: Path, entry: dict, kind: str) -> GeneratorIdentity:
    info = get_bundle(bundle_dir)
    return GeneratorIdentity(name=info.name, version=info.version, kind=kind, source=str(info.path), weights_sha256=entry["sha256"],
                             extra={"bundle_id": info.bundle_id, "variant": entry["name"]})


class TranslationBundleBackend(GeneratorBackend):
    """A label-map -> image translation bundle (2D, e.g. Pix2Pix): ``from_labels`` only."""

    capabilities = ("labels",)

    def __init__(self, bundle_dir: str | Path, device: torch.device | str = "cpu", trust: bool = False) -> None:
        from medgen_core.inference.translate import network_size_multiple

        bundle_dir = Path(bundle_dir)
        info = get_bundle(bundle_dir)
        medgen = info.metadata.get("medgen", {})
        if medgen.get("input_mode") != "labels":
            raise AugmentationError(f"bundle {info.name}: only label-map translation bundles (medgen.input_mode 'labels') can generate "
                                    f"augmentation samples; this one has input_mode {medgen.get('input_mode')!r}")
        self.network, parser, entry = bundle_network(bundle_dir, device=device, trust=trust)
        self.num_classes = int(parser.get_parsed_content("num_classes")) if "num_classes" in parser.config else 4
        self.multiple = network_size_multiple(self.network)
        super().__init__(_identity(bundle_dir, entry, "translation"), torch.device(device))

    @torch.no_grad()
    def from_labels(self, labels: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        labels = torch.as_tensor(labels)
        if labels.dim() != 4 or labels.shape[1] != 1:
            raise AugmentationError(f"{self.identity.name}: label maps must be (N, 1, H, W), got {tuple(labels.shape)}")
        ints = labels.round().long()
        if ints.min() < 0 or ints.max() >= self.num_classes:
            raise AugmentationError(f"{self.identity.name}: labels must be integers 0..{self.num_classes - 1}, "
                                    f"found {int(ints.min())}..{int(ints.max())}")
        h, w = ints.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        onehot = F.one_hot(ints[:, 0], self.num_classes).permute(0, 3, 1, 2).float()
        onehot = F.pad(onehot, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        onehot[:, 0] += (onehot.sum(1) == 0).float()  # padding is background
        out = self.network(onehot.to(self.device)).float().cpu()
        out = out[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        return ((out + 1) / 2).clamp(0, 1)

    def modules(self) -> list[torch.nn.Module]:
        return [self.network] if self.network is not None else []

    def release(self) -> None:
        self.network = None


class DiffusionBundleBackend(GeneratorBackend):
    """A class-conditional diffusion bundle (``medgen.action == "augment"``): ``sample`` and ``vary``."""

    capabilities = ("sample", "vary")

    def __init__(self, bundle_dir: str | Path, device: torch.device | str = "cpu", trust: bool = False) -> None:
        from medgen_core.inference.diffusion_sampling import DiffusionSampler

        bundle_dir = Path(bundle_dir)
        self.network, parser, entry = bundle_network(bundle_dir, device=device, trust=trust)
        cfg = parser.config

        def value(key: str, default: Any) -> Any:
            return parser.get_parsed_content(key) if key in cfg else default

        self.class_names = [str(c) for c in value("class_names", [])]
        size = value("image_size", [128, 128])
        self.sampler = DiffusionSampler(self.network, num_train_timesteps=int(value("num_train_timesteps", 1000)),
                                        image_size=tuple(int(s) for s in size), num_classes=len(self.class_names) or None,
                                        prediction_type=str(value("prediction_type", "epsilon")))
        super().__init__(_identity(bundle_dir, entry, "monai_diffusion"), torch.device(device))
        self.identity.extra["class_names"] = self.class_names

    def _class_ids(self, class_name: str | None, n: int) -> torch.Tensor | None:
        if not self.class_names:
            return None
        if class_name not in self.class_names:
            raise AugmentationError(f"{self.identity.name}: unknown class {class_name!r}; this generator knows {self.class_names}")
        return torch.full((n,), self.class_names.index(class_name), dtype=torch.long)

    def sample(self, n: int, *, class_name: str | None = None, prompt: str | None = None, steps: int = 20,
               guidance_scale: float = 1.0, generator: torch.Generator | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.sampler.sample(n, self._class_ids(class_name, n), steps=steps, guidance_scale=guidance_scale, generator=generator)

    def vary(self, images: torch.Tensor, *, strength: float = 0.5, class_name: str | None = None, prompt: str | None = None,
             steps: int = 20, guidance_scale: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        size = self.sampler.image_size
        x = images.float()
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out = self.sampler.vary(x, strength, self._class_ids(class_name, x.shape[0]), steps=steps, guidance_scale=guidance_scale,
                                generator=generator)
        return F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False) if out.shape[-2:] != images.shape[-2:] else out

    def modules(self) -> list[torch.nn.Module]:
        return [self.network] if self.network is not None else []

    def release(self) -> None:
        self.network = None
        self.sampler = None


class BundleGeneratorLoader:
    """Recognises MedGen bundle folders (``configs/metadata.json``) and loads them as backends.

    Args:
        trust: skip the config allowlist check (only for bundles you trust: a config can run code).
    """

    kind = "monai_bundle"

    def __init__(self, trust: bool = False) -> None:
        self.trust = trust

    def can_load(self, path: Path) -> bool:
        return (path / "configs" / "metadata.json").is_file()

    def load(self, path: Path, device: torch.device) -> GeneratorBackend:
        path = path.resolve()  # a {modality} link to a bundle: name the bundle, not the link
        try:
            require_inspected(path, trust=self.trust)  # a built-in reached through --bundle's scratch link is still built in
        except BundleError as err:
            raise AugmentationError(f"{path}: refusing to load this bundle as a generator: {err} (--trust loads it anyway)") from None
        action = get_bundle(path).medgen_task
        if action == "translate":
            return TranslationBundleBackend(path, device, trust=self.trust)
        if action in ("augment", "sample"):
            return DiffusionBundleBackend(path, device, trust=self.trust)
        raise AugmentationError(f"{path}: bundle action {action!r} cannot generate augmentation samples (need 'translate' or 'augment')")


def bundle_loaders(trust: bool = False) -> list[BackendLoader]:
    """Loaders for :class:`~medgen_core.augmentation.GenerativeAugmentationManager` that add MedGen bundles."""
    return [BundleGeneratorLoader(trust)]
