"""Safe weight loading: check the sha256 recorded in the bundle's metadata, then load tensors only.

A ``.pt`` file is a pickle; ``torch.load(weights_only=True)`` refuses any object that is not a
tensor, number, string or container, so a checkpoint carrying code is refused rather than executed.
``.safetensors`` files hold no code at all.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn as nn

from medgen_core.errors import WeightsError
from medgen_core.provenance import sha256_file

__all__ = ["verify_weights_file", "load_state_dict_safely", "load_verified_network"]


def verify_weights_file(path: str | Path, expected_sha256: str | None) -> str:
    """Return the file's sha256 after checking it equals ``expected_sha256`` (required, 64 hex digits)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist (expected the bundle's trained weights there).")
    if not expected_sha256 or len(str(expected_sha256)) != 64:
        raise WeightsError(f"weights file {path}: no sha256 is recorded in the bundle metadata, so it cannot be verified; refusing to load it.")
    actual = sha256_file(path)
    if actual != str(expected_sha256).lower():
        raise WeightsError(
            f"weights file {path} does not match the sha256 recorded in the bundle metadata "
            f"(expected {expected_sha256}, found {actual}): it was changed or corrupted; refusing to load it."
        )
    return actual


def load_state_dict_safely(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict of tensors from ``.pt``/``.pth`` (``weights_only=True``) or ``.safetensors``."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"weights file {path} carries a pickle payload that is not plain tensors (possible code execution); refusing to load it: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise WeightsError(f"weights file {path} could not be read as a PyTorch checkpoint: {err}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} is not a state dict of tensors.")
    return state


def load_verified_network(network: nn.Module, path: str | Path, expected_sha256: str | None, device: str | torch.device = "cpu") -> nn.Module:
    """Verify ``path`` against ``expected_sha256``, load it into ``network`` (strictly) and return it in eval mode."""
    verify_weights_file(path, expected_sha256)
    state = load_state_dict_safely(path)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise WeightsError(f"weights file {path} does not fit network {type(network).__name__}: {first}") from err
    return network.to(device).eval()
