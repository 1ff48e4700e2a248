"""Generator backends behind one small interface, used by :class:`GenerativeAugmentationManager`.

A backend turns a request into a batch of synthetic 2D images ``(N, 1, H, W)`` in ``[0, 1]``:

- ``sample(n, ...)``: from noise (optionally conditioned on a class name / prompt);
- ``vary(images, strength, ...)``: image-to-image variants of ``(N, 1, H, W)`` images in ``[0, 1]``;
- ``from_labels(labels, ...)``: images from label maps ``(N, 1, H, W)`` (integer classes).

A backend implements the subset it can (``capabilities``); asking for another raises a clear
``AugmentationError``. Each backend knows its identity for provenance (``name``, ``version``,
``weights_sha256``, ``source``) and can ``release()`` its memory (the manager calls it on eviction).

Backends here know nothing about bundles: backends made from MONAI bundles are built in
:mod:`medgen_core.bundles.generators` and plugged in through a :class:`BackendLoader`.
"""

from __future__ import annotations

import gc
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from medgen_core.errors import AugmentationError

__all__ = [
    "BackendLoader",
    "DiffusersBackend",
    "DiffusersLoader",
    "GeneratorBackend",
    "GeneratorIdentity",
    "directory_sha256",
    "free_memory",
    "require_pipeline_libraries",
]


@dataclass
class GeneratorIdentity:
    """Who made a synthetic sample (goes into its provenance record)."""

    name: str
    version: str
    kind: str  # "diffusers", "monai_diffusion", "translation"
    source: str  # directory the generator was loaded from
    weights_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class GeneratorBackend:
    """Base class: override the capabilities you support and list them in ``capabilities``."""

    capabilities: tuple[str, ...] = ()

    def __init__(self, identity: GeneratorIdentity, device: torch.device) -> None:
        self.identity = identity
        self.device = device

    def sample(self, n: int, *, class_name: str | None = None, prompt: str | None = None, steps: int = 20,
               guidance_scale: float = 1.0, generator: torch.Generator | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        """``n`` images ``(n, 1, H, W)`` in ``[0, 1]`` from noise."""
        raise AugmentationError(f"generator {self.identity.name} ({self.identity.kind}) cannot sample from noise")

    def vary(self, images: torch.Tensor, *, strength: float = 0.5, class_name: str | None = None, prompt: str | None = None,
             steps: int = 20, guidance_scale: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Image-to-image variants ``(N, 1, H, W)`` of ``images`` ``(N, 1, H, W)`` in ``[0, 1]``."""
        raise AugmentationError(f"generator {self.identity.name} ({self.identity.kind}) cannot make image-to-image variants")

    def from_labels(self, labels: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``(N, 1, H, W)`` in ``[0, 1]`` from integer label maps ``(N, 1, H, W)``."""
        raise AugmentationError(f"generator {self.identity.name} ({self.identity.kind}) cannot generate from label maps")

    def modules(self) -> list[torch.nn.Module]:
        """The torch modules holding this backend's weights (for memory accounting and release)."""
        return []

    def parameter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for m in self.modules() for p in m.parameters())

    def release(self) -> None:
        """Drop every reference to the weights so their memory can be freed."""


class BackendLoader(Protocol):
    """Recognises a generator directory and loads it as a backend."""

    kind: str

    def can_load(self, path: Path) -> bool: ...

    def load(self, path: Path, device: torch.device) -> GeneratorBackend: ...


def directory_sha256(path: str | Path, suffixes: tuple[str, ...] = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")) -> str:
    """One sha256 over every weight file under ``path`` (relative names and bytes, sorted by name)."""
    root = Path(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in suffixes):
        digest.update(str(f.relative_to(root)).encode())
        with f.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def free_memory() -> None:
    """Collect garbage and return cached GPU memory to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


#: Libraries a diffusers pipeline's components may come from that a plain ``pip install medgen`` lacks, and the extra that adds each.
PIPELINE_EXTRAS = {"transformers": "sd"}


def require_pipeline_libraries(path: Path) -> None:
    """Refuse, in one line, a pipeline whose ``model_index.json`` names a component library that is not installed
    (Stable Diffusion's text encoder and tokenizer come from ``transformers``, the ``[sd]`` extra)."""
    import importlib.util
    import json

    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # diffusers says what is wrong with the folder
    needs: dict[str, list[str]] = {}
    for component, spec in index.items() if isinstance(index, dict) else ():
        if isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], str) and spec[0] not in ("diffusers", "torch"):
            needs.setdefault(spec[0], []).append(f"{component} ({spec[1]})")
    for library, components in needs.items():
        if importlib.util.find_spec(library) is None:
            how = f"pip install 'medgen[{PIPELINE_EXTRAS[library]}]'" if library in PIPELINE_EXTRAS else f"pip install {library}"
            raise AugmentationError(f"{path}: this {index.get('_class_name', 'diffusers')} needs the package '{library}' for its "
                                    f"{', '.join(components)}, which is not installed; install it with: {how}")


def _to_gray(images: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, C)`` numpy-style or ``(N, C, H, W)`` -> ``(N, 1, H, W)`` float32 in [0, 1]."""
    if images.dim() == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)
    return images.float().mean(1, keepdim=True).clamp(0, 1)


class DiffusersBackend(GeneratorBackend):
    """A local diffusers pipeline directory (``model_index.json``), loaded strictly offline.

    Stable Diffusion directories give text-to-image (``sample``) and image-to-image (``vary``, sharing
    the same modules); an unconditional ``DDPMPipeline``/``DDIMPipeline`` gives ``sample``. fp16 on a
    GPU, fp32 on the CPU; the NSFW safety checker is disabled (it is meaningless for medical images).
    """

    def __init__(self, path: str | Path, device: torch.device | str = "cpu") -> None:
        path = Path(path)
        require_pipeline_libraries(path)
        import diffusers

        device = torch.device(device)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        try:
            pipe = diffusers.DiffusionPipeline.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype, safety_checker=None,
                                                               requires_safety_checker=False)
        except Exception as err:  # diffusers raises many types (OSError, ValueError, EnvironmentError)
            raise AugmentationError(f"{path}: not a loadable diffusers pipeline directory ({type(err).__name__}: {err})") from err
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(device)
        self.is_text_conditioned = hasattr(pipe, "tokenizer")
        self.img2img = None
        if self.is_text_conditioned:
            self.img2img = diffusers.StableDiffusionImg2ImgPipeline(**pipe.components)  # shares the modules
            self.img2img.set_progress_bar_config(disable=True)
        self.capabilities = ("sample", "vary") if self.img2img is not None else ("sample",)
        identity = GeneratorIdentity(name=path.name, version=str(pipe.config.get("_diffusers_version", "unknown")), kind="diffusers",
                                     source=str(path), weights_sha256=directory_sha256(path), extra={"pipeline": type(pipe).__name__})
        super().__init__(identity, device)

    def _generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        if generator is None or self.device.type == "cpu":
            return generator
        return torch.Generator(self.device).manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))

    def sample(self, n: int, *, class_name: str | None = None, prompt: str | None = None, steps: int = 20,
               guidance_scale: float = 1.0, generator: torch.Generator | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        kwargs: dict[str, Any] = {"num_inference_steps": steps, "generator": self._generator(generator), "output_type": "np"}
        if self.is_text_conditioned:
            kwargs.update(prompt=[prompt or ""] * n, guidance_scale=guidance_scale)
            if size is not None:
                kwargs.update(height=size[0], width=size[1])
        else:
            kwargs.update(batch_size=n)
        images = self.pipe(**kwargs).images
        return _to_gray(torch.as_tensor(images))

    def vary(self, images: torch.Tensor, *, strength: float = 0.5, class_name: str | None = None, prompt: str | None = None,
             steps: int = 20, guidance_scale: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.img2img is None:
            return super().vary(images, strength=strength)
        rgb = images.float().clamp(0, 1).repeat(1, 3, 1, 1).to(self.device, self.pipe.unet.dtype)
        out = self.img2img(prompt=[prompt or ""] * images.shape[0], image=rgb, strength=strength, num_inference_steps=steps,
                           guidance_scale=guidance_scale, generator=self._generator(generator), output_type="np").images
        return _to_gray(torch.as_tensor(out))

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in self.pipe.components.values() if isinstance(m, torch.nn.Module)] if self.pipe is not None else []

    def release(self) -> None:
        self.pipe = None
        self.img2img = None


class DiffusersLoader:
    """Loads directories holding a diffusers ``model_index.json``."""

    kind = "diffusers"

    def can_load(self, path: Path) -> bool:
        return (path / "model_index.json").is_file()

    def load(self, path: Path, device: torch.device) -> GeneratorBackend:
        return DiffusersBackend(path, device)
