"""``medgen lab``: the latent-space lab on a conditional-autoencoder bundle (default ``brain_slice_autoencoder``).

    medgen lab sweep --out DIR [--latent-sizes 8,16,32,64,128] [--iterations N] [--conditioning film]
    medgen lab interpolate --out DIR [--variant autoencoder] [--steps 7]
    medgen lab mix --out DIR [--encoder autoencoder] [--decoder autoencoder_b]   # a variant, or a sweep's model.pt
    medgen lab restore --out DIR [--pretrained | --iterations N] [--kinds blur,noise] [--levels 0,0.5,1]

The bundle's ``configs/inference.json`` and ``configs/lab.json`` (or ``--config FILE``) are read together
through MONAI's ConfigParser: they are the factories of the networks (``network_def``,
``restoration#network_def``), the training settings and the experiment settings. Shipped weights are
checked against the sha256 in the bundle metadata; a ``model.pt`` path (e.g. from a sweep) is loaded
with ``weights_only=True``. Every generated image carries provenance.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgen_core.cli._common import add_device_argument, check_device, positive_int, resolve_device
from medgen_core.errors import LabError, WeightsError

if TYPE_CHECKING:  # torch, MONAI and the lab are imported where used: 'medgen lab --help' stays fast
    import torch

__all__ = ["LabContext", "register"]

DEFAULT_BUNDLE = "brain_slice_autoencoder"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("lab", help="latent-space lab: bottleneck sweep, interpolation, encoder/decoder mixing, restoration",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("sweep", "interpolate", "mix", "restore"))
    p.add_argument("--bundle", default=DEFAULT_BUNDLE, help=f"bundle name or folder (default {DEFAULT_BUNDLE})")
    p.add_argument("--config", type=Path, default=None, help="lab config instead of the bundle's configs/lab.json")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_device_argument(p, default="cpu", what="torch device")
    p.add_argument("--iterations", type=int, default=None, help="sweep/restore: training iterations (overrides the config)")
    p.add_argument("--latent-sizes", default=None, help="sweep: comma-separated latent sizes, e.g. 8,16,32")
    p.add_argument("--conditioning", default=None, choices=("onehot", "embedding", "film"), help="sweep: conditioning strategy")
    p.add_argument("--variant", default="autoencoder", help="interpolate: the autoencoder variant")
    p.add_argument("--steps", type=int, default=None, help="interpolate: frames per interpolation")
    p.add_argument("--encoder", default=None, help="mix: encoder model (variant name or model.pt path)")
    p.add_argument("--decoder", default=None, help="mix: decoder model (variant name or model.pt path)")
    for part in ("encoder", "decoder"):
        p.add_argument(f"--{part}-latent-size", type=positive_int, default=None, help=f"mix: latent size of a --{part} model.pt (default: the config's)")
        p.add_argument(f"--{part}-conditioning", default=None, choices=("onehot", "embedding", "film"), help=f"mix: conditioning of a --{part} model.pt")
    p.add_argument("--pretrained", action="store_true", help="restore: evaluate the bundle's shipped restoration network instead of training one")
    p.add_argument("--kinds", default=None, help="restore: comma-separated corruption kinds")
    p.add_argument("--levels", default=None, help="restore: comma-separated levels in [0, 1]")
    p.set_defaults(func=run)


def _numbers(text: str | None, kind: type, what: str) -> list | None:
    if text is None:
        return None
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise LabError(f"{what} must be comma-separated {kind.__name__}s, got {text!r}") from err


def _read_config(path: Path) -> Any:
    """The raw (unparsed) content of a JSON/YAML config file."""
    from monai.bundle import ConfigParser

    try:
        return ConfigParser.load_config_file(str(path))
    except Exception as err:  # noqa: BLE001 - JSON/YAML errors, unknown suffix
        raise LabError(f"{path}: not a readable JSON/YAML lab config ({type(err).__name__}: {err})") from None


class LabContext:
    """The bundle's merged ``inference.json`` + ``lab.json``, and the networks they define."""

    def __init__(self, bundle: str, config: Path | None, device: str) -> None:
        from medgen_core.bundles import get_bundle
        from medgen_core.bundles.bundle_config import open_bundle_config
        from medgen_core.bundles.config_safety import check_config
        from medgen_core.bundles.inspection import require_inspected
        from medgen_core.bundles.overrides import torch_device

        self.info = get_bundle(bundle)
        require_inspected(self.info)  # built-in bundles are trusted; any other is inspected before its configs are read
        root = self.info.path
        lab = config or root / "configs" / "lab.json"
        if not lab.is_file():
            raise LabError(f"{lab}: lab config not found (a lab bundle ships configs/lab.json)")
        if config is not None and config.is_file() and (problems := check_config(_read_config(config), str(config))):
            raise LabError(f"{config}: refusing this lab config, it would run code outside the allowed libraries: {'; '.join(problems[:3])}")
        self.meta = self.info.metadata
        self.device = torch_device(device)
        self.parser = open_bundle_config(self.info, ["inference", Path(lab)], device=self.device)
        self._data = None

    def get(self, key: str, **overrides: Any) -> Any:
        """Parsed config item ``key`` (freshly instantiated), after ``overrides``."""
        if overrides:
            self.parser.update(overrides)
        return self.parser.get_parsed_content(key, lazy=False)

    @property
    def data(self):
        if self._data is None:
            self._data = self.parser.get_parsed_content("lab_data")
        return self._data

    def variant(self, name: str) -> dict[str, str]:
        variants = self.meta.get("medgen", {}).get("variants", {})
        if name not in variants:
            raise LabError(f"bundle {self.info.name} has no variant {name!r}; it has {sorted(variants)}")
        return variants[name]

    def provenance(self, variant: str) -> dict[str, Any]:
        return {"generator_name": self.meta.get("name", self.info.name), "generator_version": self.meta.get("version", "0"),
                "bundle_id": f"{self.meta.get('name', self.info.name)}@{self.meta.get('version', '0')}",
                "weights_sha256": self.variant(variant)["sha256"]}

    def autoencoder(self, spec: str, latent_size: int | None = None, conditioning: str | None = None) -> torch.nn.Module:
        """A trained autoencoder: a variant of the bundle (sha256-checked) or a ``model.pt`` path."""
        from medgen_core.bundles.weights import load_state_dict_safely, load_verified_network

        overrides = {k: v for k, v in (("latent_size", latent_size), ("conditioning", conditioning)) if v is not None}
        defaults = {"latent_size": self.parser["latent_size"], "conditioning": self.parser["conditioning"]}
        net = self.get("network_def", **{**defaults, **overrides})
        self.parser.update(defaults)
        path = Path(spec)
        if spec.endswith((".pt", ".pth")) or path.is_file():
            try:
                net.load_state_dict(load_state_dict_safely(path), strict=True)
            except RuntimeError as err:
                raise WeightsError(f"weights file {path} does not fit the autoencoder (latent_size {net.latent_size}, conditioning "
                                   f"{net.conditioning}); give --encoder/--decoder-latent-size and -conditioning: {str(err).splitlines()[0]}") from err
            return net.eval()
        entry = self.variant(spec)
        return load_verified_network(net, self.info.path / entry["file"], entry["sha256"], "cpu")


def _sweep(ctx: LabContext, args: argparse.Namespace) -> str:
    from medgen_core.experiments.lab import run_bottleneck_sweep

    sizes = _numbers(args.latent_sizes, int, "--latent-sizes") or ctx.parser["sweep"]["latent_sizes"]
    conditioning = args.conditioning or ctx.parser["sweep"]["conditioning"]
    overrides = {"sweep#train_config#iterations": args.iterations} if args.iterations is not None else {}
    config = ctx.get("sweep#train_config", **overrides)
    defaults = {"latent_size": ctx.parser["latent_size"], "conditioning": ctx.parser["conditioning"]}

    def make_network(n: int) -> torch.nn.Module:
        return ctx.get("network_def", latent_size=int(n), conditioning=conditioning)

    summary = run_bottleneck_sweep(make_network, ctx.data, sizes, config, args.out, ctx.device,
                                   settings={"bundle": ctx.info.name, "network_def": ctx.parser.get("network_def")})
    ctx.parser.update(defaults)
    best = max(summary["results"], key=lambda r: r["heldout"]["psnr"])
    return f"sweep over latent sizes {sizes}: best held-out PSNR {best['heldout']['psnr']:.2f} dB at {best['latent_size']}; {args.out / 'sweep.json'}, {args.out / 'sweep.png'}"


def _pick(ctx: LabContext, spec: dict[str, Any]) -> tuple[torch.Tensor, int, str]:
    data = ctx.data
    split = spec.get("split", "test")
    images, labels, zs = (data.test_images, data.test_labels, data.test_z) if split == "test" else (data.train_images, data.train_labels, data.train_z)
    if "class" in spec:
        if spec["class"] not in data.class_names:
            raise LabError(f"interpolation: unknown class {spec['class']!r}; expected one of {list(data.class_names)}")
        idx = (labels == data.class_names.index(spec["class"])).nonzero().flatten()
        i = int(idx[len(idx) // 2])
    else:
        i = int(spec.get("index", 0))
        if not 0 <= i < images.shape[0]:
            raise LabError(f"interpolation: index {i} is outside the {split} split (0..{images.shape[0] - 1})")
    return images[i], int(labels[i]), f"{split} z={int(zs[i])} {data.class_names[int(labels[i])]}"


def _interpolate(ctx: LabContext, args: argparse.Namespace) -> str:
    from medgen_core.data.samples import mni152_t1_path
    from medgen_core.experiments.lab import interpolate_latents, write_interpolation

    cfg = ctx.parser["interpolation"]
    steps = args.steps or int(cfg["steps"])
    net = ctx.autoencoder(args.variant)
    lines = []
    for pair in cfg["pairs"]:
        (xa, ca, la), (xb, cb, lb) = _pick(ctx, pair["a"]), _pick(ctx, pair["b"])
        result = interpolate_latents(net, xa, ca, xb, cb, steps)
        params = {"variant": args.variant, "a": la, "b": lb, "class_a": ca, "class_b": cb, "steps": steps,
                  "latent_size": net.latent_size, "conditioning": net.conditioning}
        write_interpolation(result, xa, xb, args.out, f"interpolation_{pair['name']}", ctx.provenance(args.variant), params,
                            [mni152_t1_path()], labels=(la, lb))
        lines.append(f"{result.volume_path} ({steps} frames, provenance in {result.volume_path.name}.generated.json), {result.png_path}")
    return "interpolations: " + "; ".join(lines)


def _mix(ctx: LabContext, args: argparse.Namespace) -> str:
    from medgen_core.experiments.lab import run_mixing

    cfg = ctx.parser["mixing"]
    enc_spec, dec_spec = args.encoder or cfg["encoder_variant"], args.decoder or cfg["decoder_variant"]
    model_a = ctx.autoencoder(enc_spec, args.encoder_latent_size, args.encoder_conditioning)
    model_b = ctx.autoencoder(dec_spec, args.decoder_latent_size, args.decoder_conditioning)
    names = (Path(enc_spec).stem if enc_spec.endswith(".pt") else enc_spec, Path(dec_spec).stem if dec_spec.endswith(".pt") else dec_spec)
    if names[0] == names[1]:
        names = (f"{names[0]} (encoder side)", f"{names[1]} (decoder side)")
    prov = ctx.provenance(enc_spec) if not enc_spec.endswith(".pt") else {**ctx.provenance(cfg["encoder_variant"]), "weights_sha256": None}
    summary = run_mixing(model_a, model_b, ctx.data, args.out, names, settings={"encoder": enc_spec, "decoder": dec_spec, "bundle": ctx.info.name},
                         provenance=prov)
    res = summary["results"]
    mixed = f"enc {names[0]} + dec {names[1]}"
    return (f"mixing: {names[0]} {res[names[0]]['psnr']:.2f} dB, {names[1]} {res[names[1]]['psnr']:.2f} dB, {mixed} {res[mixed]['psnr']:.2f} dB "
            f"(linear map {res[mixed + ', linear map']['psnr']:.2f} dB); {args.out / 'mixing.json'}, {args.out / 'mixing.png'}")


def _restore(ctx: LabContext, args: argparse.Namespace) -> str:
    from medgen_core.bundles.weights import load_verified_network
    from medgen_core.experiments.lab import run_restoration
    from medgen_core.transforms.corruption import CORRUPTION_KINDS

    cfg = ctx.parser["restoration"]
    kinds = (args.kinds.split(",") if args.kinds else None) or list(cfg["kinds"])
    levels = _numbers(args.levels, float, "--levels") or list(cfg["levels"])
    bad = [k for k in kinds if k not in CORRUPTION_KINDS]
    if bad:
        raise LabError(f"restoration: unknown corruption kind(s) {bad}; choose from {list(CORRUPTION_KINDS)}")
    if any(not 0.0 <= float(v) <= 1.0 for v in levels):
        raise LabError(f"restoration: levels must be numbers in [0, 1], got {levels}")
    if args.pretrained and args.iterations is not None:
        raise LabError("--pretrained evaluates the shipped restoration network; it cannot be combined with --iterations")
    overrides = {"restoration#train_config#iterations": args.iterations} if args.iterations is not None else {}
    config = ctx.get("restoration#train_config", **overrides)
    network = ctx.get("restoration#network_def")
    if args.pretrained:
        entry = ctx.variant(str(cfg.get("variant", "restoration")))
        network = load_verified_network(network, ctx.info.path / entry["file"], entry["sha256"], "cpu")
    summary = run_restoration(network, ctx.data, config, args.out, kinds, levels, ctx.get("restoration#settings"), ctx.device,
                              train=not args.pretrained, extra={"bundle": ctx.info.name, "pretrained": args.pretrained},
                              provenance={**ctx.provenance(str(cfg.get("variant", "restoration"))), **({} if args.pretrained else {"weights_sha256": None})})
    last = summary["mean_over_kinds"][-1]
    return (f"restoration at level {last['level']:.2f} (mean over {', '.join(kinds)}): corrupted {last['corrupted_psnr']} dB -> restored "
            f"{last['restored_psnr']} dB; {args.out / 'restoration.json'}, {args.out / 'restoration.png'}")


def run(args: argparse.Namespace) -> int:
    if args.iterations is not None and args.iterations < 1:
        raise LabError(f"--iterations must be >= 1, got {args.iterations}")
    if args.steps is not None and args.steps < 2:
        raise LabError(f"--steps must be >= 2 (the two endpoints), got {args.steps}")
    if args.out.exists() and not args.out.is_dir():
        raise LabError(f"{args.out}: --out must be a folder, and this is a file")
    from medgen_core.experiments.lab.evaluate import write_json

    check_device(args.device)
    ctx = LabContext(args.bundle, args.config, resolve_device(args.device))
    created = not args.out.exists()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        message = {"sweep": _sweep, "interpolate": _interpolate, "mix": _mix, "restore": _restore}[args.action](ctx, args)
    except BaseException:
        if created and not any(args.out.iterdir()):  # a refused request leaves no empty folder behind
            args.out.rmdir()
        raise
    write_json({"action": args.action, "message": message}, args.out / f"{args.action}_summary.json")
    print(message)
    return 0
