"""A signal CVAE for sampling and evaluation: from a bundle (its inference config's ``network``) or a ``medgen cvae train`` folder."""

from __future__ import annotations

import json
from pathlib import Path

from medgen_core.bundles.bundle_config import open_bundle_config
from medgen_core.bundles.catalog import get_bundle
from medgen_core.bundles.weights import load_state_dict_safely
from medgen_core.data.abr_dataset import SignalDataError
from medgen_core.networks.cvae import SignalCVAE
from medgen_core.provenance import sha256_file

__all__ = ["load_cvae"]


def load_cvae(bundle: str | None, model_dir: Path | None, mode: str, device: str = "cpu") -> tuple[SignalCVAE, dict]:
    """The network and its provenance fields (``generator_name``, ``generator_version``, ``bundle_id``, ``weights_sha256``)."""
    if bundle is not None:
        info = get_bundle(bundle)
        parser = open_bundle_config(info, "inference", overrides={"mode": mode}, device=device)  # a non-built-in bundle is inspected first
        net = parser.get_parsed_content("network")  # a WeightsError inside the config comes out as itself
        return net, {"generator_name": info.name, "generator_version": info.version, "bundle_id": info.bundle_id,
                     "weights_sha256": parser.get_parsed_content("weights_sha256")}
    config_path, weights = model_dir / "model_config.json", model_dir / "model.pt"
    if not config_path.is_file() or not weights.is_file():
        raise SignalDataError(f"{model_dir}: expected a 'medgen cvae train' folder with model.pt and model_config.json")
    hyper = json.loads(config_path.read_text(encoding="utf-8"))
    if hyper.get("joint_generation", True) != (mode == "joint"):
        raise SignalDataError(f"{model_dir}: the model was trained in {'joint' if hyper.get('joint_generation', True) else 'legacy'} mode; "
                              f"sample it with --mode {'joint' if hyper.get('joint_generation', True) else 'legacy'}")
    net = SignalCVAE(**hyper)
    net.load_state_dict(load_state_dict_safely(weights), strict=True)
    return net.to(device).eval(), {"generator_name": "signal_cvae", "generator_version": "local", "bundle_id": None,
                                   "weights_sha256": sha256_file(weights)}
