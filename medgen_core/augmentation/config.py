"""What generative augmentation does, per modality and class: :class:`AugmentationConfig`.

Loadable from JSON/YAML files and from a bundle config section (any mapping). Generative augmentation
is OFF by default (``enabled: false``): the baseline is always training without it, and a single
master switch turns it on.

Example (JSON)::

    {"modality": "t1", "classes": ["inferior", "superior"], "enabled": true, "prob": 0.5,
     "mix_ratio_range": [0.1, 0.3], "inference_steps": 10, "per_class": {"superior": {"prob": 0.7}}}
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from medgen_core.errors import AugmentationError

__all__ = ["AugmentationConfig", "MIX_MODES"]

MIX_MODES = ("replace", "add")


@dataclass
class AugmentationConfig:
    """Settings of generative augmentation for one modality.

    Args:
        modality: e.g. ``"t1"``; generators live at ``base_dir/{modality}_{class}``.
        classes: class (or phase) names; a generator per class.
        enabled: master switch (default off).
        prob: chance that a training batch receives synthetic samples.
        mix_ratio_range: fraction of the batch made synthetic, drawn uniformly from ``[lo, hi]``.
        mix_mode: ``"replace"`` real samples or ``"add"`` synthetic ones to the batch.
        inference_steps: diffusion sampling steps.
        guidance_scale: classifier-free guidance scale (1 = none).
        strength: image-to-image strength in (0, 1] (how far variants move from their source).
        batch_limit: at most this many synthetic samples per batch.
        max_models: generators kept in memory at once (least recently used evicted).
        prompt_template: text prompt for text-conditioned generators; ``{modality}`` and ``{class_name}``
            are filled in.
        seed: seed of the augmentation's random stream.
        source: how synthetic samples are made: ``"sample"`` (from noise, class-conditioned),
            ``"vary"`` (image-to-image of the real sample) or ``"labels"`` (from the sample's label map).
        per_class: overrides of any field above for one class, e.g. ``{"wm": {"prob": 0.7}}``.
    """

    modality: str = "t1"
    classes: list[str] = field(default_factory=lambda: ["any"])
    enabled: bool = False
    prob: float = 0.5
    mix_ratio_range: tuple[float, float] = (0.1, 0.3)
    mix_mode: str = "replace"
    inference_steps: int = 20
    guidance_scale: float = 1.0
    strength: float = 0.5
    batch_limit: int = 8
    max_models: int = 3
    prompt_template: str = "{modality} MRI of the brain, {class_name}"
    seed: int = 0
    source: str = "sample"
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        self.mix_ratio_range = tuple(float(v) for v in self.mix_ratio_range)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise :class:`AugmentationError` naming the field, the value and what is expected."""
        problems = []
        if not self.modality or "/" in self.modality:
            problems.append(f"modality must be a plain name, got {self.modality!r}")
        if not self.classes:
            problems.append("classes must name at least one class")
        if not 0.0 <= self.prob <= 1.0:
            problems.append(f"prob must be in [0, 1], got {self.prob}")
        lo_hi = self.mix_ratio_range
        if len(lo_hi) != 2 or not 0.0 <= lo_hi[0] <= lo_hi[1] <= 1.0:
            problems.append(f"mix_ratio_range must be [lo, hi] with 0 <= lo <= hi <= 1, got {list(lo_hi)}")
        if self.mix_mode not in MIX_MODES:
            problems.append(f"mix_mode must be one of {MIX_MODES}, got {self.mix_mode!r}")
        if self.source not in ("sample", "vary", "labels"):
            problems.append(f"source must be 'sample', 'vary' or 'labels', got {self.source!r}")
        if int(self.inference_steps) < 1:
            problems.append(f"inference_steps must be >= 1, got {self.inference_steps}")
        if not 0.0 < self.strength <= 1.0:
            problems.append(f"strength must be in (0, 1], got {self.strength}")
        if int(self.batch_limit) < 1 or int(self.max_models) < 1:
            problems.append(f"batch_limit and max_models must be >= 1, got {self.batch_limit} and {self.max_models}")
        unknown = sorted(set(self.per_class) - set(self.classes))
        if unknown:
            problems.append(f"per_class names classes that are not in classes: {unknown}")
        fields = {f.name for f in dataclasses.fields(self)} - {"per_class", "classes", "modality"}
        for name, override in self.per_class.items():
            bad = sorted(set(override) - fields)
            if bad:
                problems.append(f"per_class[{name!r}] has unknown field(s) {bad}")
        if problems:
            raise AugmentationError("AugmentationConfig: " + "; ".join(problems))

    def for_class(self, class_name: str) -> AugmentationConfig:
        """This config with ``per_class[class_name]`` applied."""
        if class_name not in self.classes:
            raise AugmentationError(f"AugmentationConfig: unknown class {class_name!r}; classes are {self.classes}")
        override = self.per_class.get(class_name, {})
        return dataclasses.replace(self, per_class={}, **override) if override else self

    def prompt(self, class_name: str) -> str:
        return self.prompt_template.format(modality=self.modality, class_name=class_name.replace("_", " "))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mix_ratio_range"] = list(self.mix_ratio_range)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "config") -> AugmentationConfig:
        """Build from a mapping; unknown keys are an error (a typo must not silently do nothing)."""
        if not isinstance(data, Mapping):
            raise AugmentationError(f"{origin}: expected a mapping of augmentation settings, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AugmentationError(f"{origin}: unknown augmentation setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**dict(data))
        except AugmentationError as err:
            raise AugmentationError(f"{origin}: {err}") from err

    @classmethod
    def from_file(cls, path: str | Path, section: str | None = None) -> AugmentationConfig:
        """Load a ``.json`` or ``.yaml``/``.yml`` file; ``section`` picks a key inside it (e.g. ``"augmentation"``)."""
        path = Path(path)
        if not path.is_file():
            raise AugmentationError(f"{path}: augmentation config not found")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as err:
            raise AugmentationError(f"{path}: cannot parse augmentation config ({err})") from err
        if section is not None:
            if not isinstance(data, Mapping) or section not in data:
                raise AugmentationError(f"{path}: no section {section!r} in the config")
            data = data[section]
        return cls.from_dict(data, origin=str(path))

    @classmethod
    def from_bundle_config(cls, config_file: str | Path, key: str = "augmentation") -> AugmentationConfig:
        """The ``key`` section of a MONAI bundle config file (parsed with MONAI's ConfigParser, so
        ``@references`` inside the section resolve)."""
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(config_file))
        if key not in parser.config:  # type: ignore[operator]
            raise AugmentationError(f"{config_file}: no {key!r} section")
        return cls.from_dict(parser.get_parsed_content(key), origin=f"{config_file}#{key}")
