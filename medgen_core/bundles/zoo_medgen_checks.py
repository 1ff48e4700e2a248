"""MedGen's two checks beyond the Model Zoo's steps (run by :func:`medgen_core.bundles.zoo_verify.verify` in full mode):
``all_inputs_shape`` feeds every declared input (e.g. a diffusion UNet's timesteps and class labels) to the network and
checks the output's channels, dtype and evaluable spatial shape; ``torchscript_matches_eager`` compares the exported
module with the eager network and the trained weights (max abs difference <= :data:`TORCHSCRIPT_ATOL`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medgen_core.bundles.zoo_rules import (
    ZooCheckError, bundle_metadata, bundle_name, bundle_on_sys_path, declared_input_shape, default_device, inference_config, net_id,
    weights_names,
)

__all__ = ["TORCHSCRIPT_ATOL", "verify_all_inputs", "verify_torchscript_matches_eager"]

TORCHSCRIPT_ATOL = 1e-5


def _parsed_network(root: Path, device: str, weights: bool) -> Any:
    from medgen_core.bundles.bundle_config import open_bundle_config
    from medgen_core.bundles.weights import load_state_dict_safely

    name = bundle_name(root)
    # trust: like the zoo's own steps above, these checks run whatever bundle they are pointed at
    parser = open_bundle_config(root, inference_config(root), trust=True)
    net = parser.get_parsed_content(net_id(name))
    if weights:
        net.load_state_dict(load_state_dict_safely(root / "models" / weights_names(name)[0]), strict=True)
    return net.to(device).eval()


def _fake_input(spec: dict[str, Any], device: str, n: int = 1) -> Any:
    """A random tensor for one declared input: ``(1, C, *spatial)``; ``(1,)`` for a one-value-per-item input
    (one channel, spatial shape ``[1]``, e.g. diffusion timesteps); integers drawn from ``value_range``."""
    import torch
    from monai.bundle.scripts import _get_fake_spatial_shape
    from monai.utils import get_equivalent_dtype

    dtype = get_equivalent_dtype(spec.get("dtype", "float32"), torch.Tensor)
    spatial = _get_fake_spatial_shape(spec["spatial_shape"], n=n, p=1, any=1)
    shape = (1,) if int(spec["num_channels"]) == 1 and list(spatial) == [1] else (1, int(spec["num_channels"]), *spatial)
    if dtype.is_floating_point:
        return torch.rand(shape, dtype=dtype, device=device)
    value_range = list(spec.get("value_range") or [])
    lo, hi = value_range[:2] if len(value_range) >= 2 else (0, 1)
    return torch.randint(int(lo), int(hi) + 1, shape, dtype=dtype, device=device)


def verify_all_inputs(root: Path, device: str | None = None) -> str:
    """MedGen's check: every declared input (tensors at ``n = 1``, primitives as declared) fed by name, the
    image first; the ``pred`` output's channels, dtype and, where the declared shape evaluates, spatial size."""
    import torch
    from monai.bundle.scripts import _get_fake_spatial_shape
    from monai.utils import get_equivalent_dtype

    dev = default_device(device)
    fmt = bundle_metadata(root).get("network_data_format") or {}
    inputs, pred = fmt.get("inputs") or {}, (fmt.get("outputs") or {}).get("pred")
    if not isinstance(inputs.get("image"), dict) or not isinstance(pred, dict):
        raise ZooCheckError("network_data_format needs a tensor input 'image' and output 'pred'")
    args = {k: (_fake_input(v, dev) if isinstance(v, dict) else v) for k, v in inputs.items()}
    image = args.pop("image")
    with bundle_on_sys_path(root), torch.no_grad():
        out = _parsed_network(root, dev, weights=False)(image, **args)
    if not isinstance(out, torch.Tensor):
        raise ZooCheckError(f"the network returned {type(out).__name__}, not a tensor")
    problems = []
    if out.shape[1] != int(pred["num_channels"]):
        problems.append(f"output channels {out.shape[1]} != declared {pred['num_channels']}")
    if out.dtype != get_equivalent_dtype(pred["dtype"], torch.Tensor):
        problems.append(f"output dtype {out.dtype} != declared {pred['dtype']}")
    try:
        want = tuple(_get_fake_spatial_shape(pred["spatial_shape"], n=1, p=1, any=-1))
    except ValueError:  # names other than n and p (e.g. "scale*h"): not evaluable
        want = None
    if want is not None and len(want) == out.dim() - 2 and any(w != -1 and w != s for w, s in zip(want, out.shape[2:])):
        problems.append(f"output spatial shape {tuple(out.shape[2:])} != declared {pred['spatial_shape']} at n=1")
    fed = ", ".join(f"{k} {tuple(v.shape)}" if isinstance(v, torch.Tensor) else f"{k}={v!r}" for k, v in {"image": image, **args}.items())
    if problems:
        raise ZooCheckError(f"fed {fed}: " + "; ".join(problems))
    return f"fed {fed} on {dev}: output {tuple(out.shape)} {out.dtype}"


def verify_torchscript_matches_eager(root: Path, work_dir: Path, export: Callable[[Path, Path], str], device: str | None = None) -> str:
    """MedGen's check: the exported module (``verify_torchscript``'s file, made by ``export(root, work_dir)`` if
    absent) equals the eager network with the trained weights on random inputs of the declared shape at ``n = p = 1``
    and ``2``."""
    import torch

    ts_path = Path(work_dir) / "verify_model.ts"
    if not ts_path.is_file():
        export(root, work_dir)
    dev = default_device(device)
    meta = bundle_metadata(root)
    with bundle_on_sys_path(root):
        eager = _parsed_network(root, dev, weights=True)
    scripted = torch.jit.load(str(ts_path), map_location=dev).eval()
    diffs = []
    for shape in dict.fromkeys(declared_input_shape(meta, n=k, p=k, any_size=8 * k) for k in (1, 2)):  # distinct shapes
        x = torch.rand(shape, generator=torch.Generator().manual_seed(len(diffs))).to(dev)
        with torch.no_grad():
            want, got = eager(x), scripted(x)
        if want.shape != got.shape:
            raise ZooCheckError(f"TorchScript output shape {tuple(got.shape)} differs from eager {tuple(want.shape)} for input {shape}")
        diffs.append((shape, float((want - got).abs().max())))
    text = ", ".join(f"{d:.2g} at {s}" for s, d in diffs)
    if max(d for _, d in diffs) > TORCHSCRIPT_ATOL:
        raise ZooCheckError(f"TorchScript output differs from the eager network by more than {TORCHSCRIPT_ATOL:g}: {text}")
    return f"max |scripted - eager| {text}"
