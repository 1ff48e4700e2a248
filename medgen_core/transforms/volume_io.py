"""Dictionary transforms that move whole volumes through a bundle's transform chain.

``LoadVolumed`` reads any supported file into a :class:`~medgen_core.io.Volume`;
``ApplyVolumeInfererd`` runs a volume-to-volume callable (e.g.
:class:`~medgen_core.inference.VolumeSuperResolver`); ``SaveGeneratedVolumed`` writes the result
through :func:`~medgen_core.provenance.write_generated_volume`, so a bundle's output always carries
provenance (sidecar + embedded), whichever runner executes the chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Hashable, Mapping

from monai.config import KeysCollection
from monai.transforms import MapTransform

from medgen_core.errors import ImageWriteError
from medgen_core.io import Volume, read_volume
from medgen_core.provenance import GenerationMetadata, write_generated_volume
from medgen_core.provenance.record import DERIVED_LABEL_DISCLOSURE

__all__ = ["LoadVolumed", "ApplyVolumeInfererd", "SaveGeneratedVolumed", "default_output_path"]


def default_output_path(input_path: str | Path, output_dir: str | Path, postfix: str, suffix: str = ".nii.gz") -> Path:
    """``<output_dir>/<input stem>_<postfix><suffix>`` (``.nii.gz``, ``.nrrd``... stripped from the stem)."""
    name = Path(input_path).name
    for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return Path(output_dir) / f"{name}_{postfix}{suffix}"


class LoadVolumed(MapTransform):
    """Replace each path under ``keys`` by the :class:`~medgen_core.io.Volume` read from it."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = read_volume(d[key])
        return d


class ApplyVolumeInfererd(MapTransform):
    """``d[output_key] = inferer(d[key])`` for a volume-to-volume callable."""

    def __init__(self, keys: KeysCollection, inferer: Callable[[Volume], Volume], output_key: str = "pred") -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"ApplyVolumeInfererd: expects exactly one key, got {self.keys}.")
        self.inferer, self.output_key = inferer, output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[self.output_key] = self.inferer(d[self.keys[0]])
        return d


class SaveGeneratedVolumed(MapTransform):
    """Write each generated volume under ``keys`` with provenance (the only way generated pixels leave a chain).

    Args:
        keys: generated volumes to write.
        generator_name, generator_version, task, bundle_id, weights_sha256, parameters, seed: the
            provenance record (see :class:`~medgen_core.provenance.GenerationMetadata`).
        disclosure: the record's disclosure; None = the synthetic-image one, ``"derived_label_map"`` =
            :data:`~medgen_core.provenance.record.DERIVED_LABEL_DISCLOSURE` (segmentations of real images).
        source_key: key of the input :class:`Volume` whose file is recorded (and hashed) as the source.
        output_path_key: key holding the output path; when absent or empty, the path is
            ``<output_dir>/<input stem>_<output_postfix><output_suffix>``.
        output_dir, output_postfix, output_suffix: used when no explicit output path is given.

    A volume with a ``generation_parameters`` mapping (e.g. :class:`~medgen_core.inference.generated.GeneratedVolume`)
    adds it to the record's ``parameters``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        generator_name: str,
        generator_version: str,
        task: str,
        bundle_id: str | None = None,
        weights_sha256: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        seed: int | None = None,
        disclosure: str | None = None,
        source_key: str = "image",
        output_path_key: str = "output",
        output_dir: str | Path = ".",
        output_postfix: str = "generated",
        output_suffix: str = ".nii.gz",
    ) -> None:
        super().__init__(keys)
        self.record = dict(
            generator_name=generator_name,
            generator_version=generator_version,
            task=task,
            bundle_id=bundle_id,
            weights_sha256=weights_sha256,
            parameters=dict(parameters or {}),
            seed=seed,
        )
        if disclosure == "derived_label_map":
            self.record["disclosure"] = DERIVED_LABEL_DISCLOSURE
        elif disclosure is not None:
            self.record["disclosure"] = str(disclosure)
        self.source_key, self.output_path_key = source_key, output_path_key
        self.output_dir, self.output_postfix, self.output_suffix = output_dir, output_postfix, output_suffix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = d.get(self.source_key)
        source_path = getattr(source, "path", None) or (source if isinstance(source, (str, Path)) else None)
        for key in self.key_iterator(d):
            out = d.get(self.output_path_key) or None
            if out is None:
                if source_path is None:
                    raise ImageWriteError(f"SaveGeneratedVolumed: no output path under '{self.output_path_key}' and no source file to name one after.")
                out = default_output_path(source_path, self.output_dir, self.output_postfix, self.output_suffix)
            inputs = {"source_image": source_path} if source_path is not None else {}
            record = dict(self.record)
            extra = getattr(d[key], "generation_parameters", None)  # figures decided while generating (e.g. the SR gate)
            if isinstance(extra, Mapping) and extra:
                record["parameters"] = {**record["parameters"], **extra}
            metadata = GenerationMetadata.create(input_paths=inputs, **record)
            d[f"{key}_path"] = write_generated_volume(d[key], out, metadata)
        return d
