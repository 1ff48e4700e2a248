#!/usr/bin/env python
"""Train the CycleGAN T1 <-> T2w generators shipped in ``brain_t1_to_t2w_cyclegan`` (issue 17, item 3).

The recipe, and what each part fixes in the first weights (whose T1 -> T2w output was speckle):

- **Same grid and anatomy in both domains.** Domain B is dipy's T2w resampled within each slice's plane onto
  the MNI 2 mm grid (:mod:`medgen_core.data.dipy_t2w`: same field of view and pixel size; before, dipy's brain
  was 7 % smaller and placed elsewhere), brain only (no EPI ghosts), slices 0..4 only (5..9 are held out for
  evaluation). Domain A is the MNI T1 at 2 mm near the T2w slab's level (``--a-range``, outside the MNI held-out
  slab), not z = 8..152: the discriminator no longer asks the T1 -> T2w generator to turn cerebellum into
  ventricles.
- **Discriminator that cannot memorise 5 slices**: ``--d-layers 2`` (34 px = 68 mm receptive field instead of
  70 px = 140 mm, the whole brain at 2 mm), DiffAugment (Zhao et al. 2020; random translation by up to 1/8 and
  a cutout of 1/4 of the side, the same kind on real and fake inputs of D), random affine + flip of the data.
- **No identity loss** (``--lambda-identity 0``): it asks G_A to leave a T2w unchanged, pulling a contrast
  inversion towards identity.
- **Structure consistency** (``--lambda-structure``, after the structure-constrained CycleGANs of medical
  translation, e.g. Yang et al. 2018): 1 - the squared local normalised cross-correlation (MONAI
  ``LocalNormalizedCrossCorrelationLoss``, 7 x 7) of each input and its translation inside the input's brain. It is
  sign-free (a contrast inversion scores 1), so the discriminator still decides the contrast, but the tissue edges
  must stay where they were. Without it the first runs met the cycle loss by hiding the T1 in low-amplitude
  variations of the dark T2w parenchyma and drew bright blobs anywhere to fool the discriminator (speckle).
- **Noise before the cycle** (``--cycle-noise``, Bashkirova et al. 2019): Gaussian noise added to the translated
  image before it is translated back, so the generators cannot hide the input in a faint high-frequency
  pattern (the speckle) to pass the cycle loss.
- **Long enough**: ``--iterations`` (lr 2e-4 constant for the first half, then linear decay to 0), batch 1, one
  CPU thread; checkpoint every ``--checkpoint-every`` iterations (resumes), tqdm progress and a CSV log.

Unchanged from the paper: ResNet generators (the bundle's ``network_def``), InstanceNorm PatchGAN from MONAI's
``PatchDiscriminator``, LSGAN, cycle weight 10, image pools of 50, Adam (0.5, 0.999), N(0, 0.02) init.
Training metrics (``val_*`` in the log) use training slices only (domain A slices and dipy slices 0..4).

    OMP_NUM_THREADS=1 nohup python scripts/train_cyclegan.py --out runs/cyclegan_v2 --iterations 3000 > train.log 2>&1 &
    python scripts/train_cyclegan.py --out runs/cyclegan_v2 --install     # copy the final generators into the bundle
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from medgen_core.data.dipy_t2w import DIPY_T2W_TRAIN_SLICES, dipy_t2w_on_mni_grid
from medgen_core.data.samples import mni_training_axial_indices
from medgen_core.data.slices import mni_axial_slices_2mm, mni_slice_affine_2mm
from medgen_core.data.tissue_maps import mni_tissue_labels_on_grid
from medgen_core.networks.gan import ResnetGenerator, build_patch_discriminator
from medgen_core.networks.gan.patchgan import init_normal_
from medgen_core.training.base import atomic_torch_save, load_checkpoint
from medgen_core.training.image_pool import ImagePool

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_t1_to_t2w_cyclegan"
SIZE = 128


# ------------------------------------------------------------------------------------------------ data
def domain_a(a_range: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """MNI T1 2 mm slices ``(N, 1, 128, 128)`` in [0, 1] at the training indices within ``a_range`` (inclusive), and their labels."""
    lo, hi = a_range
    idx = [z for z in mni_training_axial_indices() if lo <= z <= hi]
    x, z = mni_axial_slices_2mm(SIZE, indices=idx)
    lab = torch.from_numpy(np.stack([mni_tissue_labels_on_grid(mni_slice_affine_2mm(int(k), SIZE), (SIZE, SIZE)) for k in z]).astype(np.int64))[:, None]
    return x * (lab > 0), lab


class Augment:
    """Random flip (left-right) and affine (rotation, scale, translation) of ``(1, H, W)`` images in [0, 1] (MONAI ``RandAffine``)."""

    def __init__(self, seed: int) -> None:
        from monai.transforms import Compose, RandAffine, RandFlip

        self.t = Compose([RandFlip(prob=0.5, spatial_axis=0),
                          RandAffine(prob=0.9, rotate_range=(np.deg2rad(10),), scale_range=((-0.08, 0.08),), translate_range=(6, 6),
                                     padding_mode="zeros", mode="bilinear")])
        self.t.set_random_state(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from monai.utils import convert_to_tensor

        return convert_to_tensor(self.t(x), track_meta=False).float().clamp(0, 1)


def diff_augment(x: torch.Tensor, g: torch.Generator, shift: float = 0.125, cutout: float = 0.25) -> torch.Tensor:
    """DiffAugment (translation + cutout) of ``x (B, 1, H, W)`` in [-1, 1], differentiable; background -1 fills."""
    b, _, h, w = x.shape
    out = []
    for i in range(b):
        img = x[i : i + 1]
        dy, dx = (int(v) for v in torch.randint(-int(h * shift), int(h * shift) + 1, (2,), generator=g))
        img = torch.nn.functional.pad(img + 1, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))  # 0 = background after +1
        img = img[..., max(-dy, 0) : max(-dy, 0) + h, max(-dx, 0) : max(-dx, 0) + w]
        ch, cw = int(h * cutout), int(w * cutout)
        cy, cx = int(torch.randint(0, h - ch + 1, (1,), generator=g)), int(torch.randint(0, w - cw + 1, (1,), generator=g))
        mask = torch.ones_like(img)
        mask[..., cy : cy + ch, cx : cx + cw] = 0
        out.append(img * mask - 1)
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------ model
def generator() -> nn.Module:
    """The bundle's ``network_def`` (configs/inference.json)."""
    cfg = json.loads((BUNDLE / "configs" / "inference.json").read_text(encoding="utf-8"))["network_def"]
    return ResnetGenerator(**{k: v for k, v in cfg.items() if k != "_target_"})


def tissue_ratios(x: torch.Tensor, lab: torch.Tensor) -> tuple[float, float]:
    """CSF/GM and GM/WM of the class means of ``x`` in [0, 1] (each set scaled by its 99.9th percentile)."""
    x = x / max(float(torch.quantile(x.flatten()[::7], 0.999)), 1e-6)
    m = [float(x[lab == c].mean()) for c in (1, 2, 3)]
    return m[0] / m[1], m[1] / m[2]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean().clamp_min(1e-12)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="run folder (checkpoint.pt, train_log.csv, samples/); resumes")
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--a-range", type=int, nargs=2, default=(48, 131), help="MNI z range of domain A (training indices only)")
    ap.add_argument("--d-features", type=int, default=64)
    ap.add_argument("--d-layers", type=int, default=2)
    ap.add_argument("--lambda-cycle", type=float, default=10.0)
    ap.add_argument("--lambda-identity", type=float, default=0.0)
    ap.add_argument("--lambda-structure", type=float, default=1.0, help="weight of 1 - squared local correlation (input vs translation, brain only)")
    ap.add_argument("--structure-kernel", type=int, default=7)
    ap.add_argument("--cycle-noise", type=float, default=0.03, help="sigma of the noise added before the back-translation ([-1, 1] units)")
    ap.add_argument("--no-diffaugment", action="store_true")
    ap.add_argument("--pool-size", type=int, default=50)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--sample-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-bf16", action="store_true", help="fp32 forward passes (default: bfloat16 autocast on the CPU, about 2x faster; weights and losses fp32)")
    ap.add_argument("--install", action="store_true", help="only copy the run's exported generators into the bundle's models/")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out
    if args.install:
        return install(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, indent=2) + "\n", encoding="utf-8")

    torch.manual_seed(args.seed)
    a_img, a_lab = domain_a(tuple(args.a_range))
    b_img, b_lab = dipy_t2w_on_mni_grid(DIPY_T2W_TRAIN_SLICES, SIZE)
    print(f"domain A: {len(a_img)} MNI T1 slices (z {args.a_range[0]}..{args.a_range[1]}, training indices); domain B: {len(b_img)} dipy T2w slices "
          f"{list(DIPY_T2W_TRAIN_SLICES)}", flush=True)
    nets = {"G_A": generator(), "G_B": generator(),
            "D_A": build_patch_discriminator(2, 1, args.d_features, args.d_layers, "INSTANCE"),
            "D_B": build_patch_discriminator(2, 1, args.d_features, args.d_layers, "INSTANCE")}
    for n in nets.values():
        init_normal_(n)
    opt_g = torch.optim.Adam([*nets["G_A"].parameters(), *nets["G_B"].parameters()], lr=args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam([*nets["D_A"].parameters(), *nets["D_B"].parameters()], lr=args.lr, betas=(0.5, 0.999))
    half = args.iterations // 2
    factor = lambda it: 1.0 if it < half else max(0.0, 1.0 - (it - half) / max(args.iterations - half, 1))  # noqa: E731
    sched = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt_g, opt_d)]
    pool_a, pool_b = ImagePool(args.pool_size, torch.Generator().manual_seed(args.seed + 1)), ImagePool(args.pool_size, torch.Generator().manual_seed(args.seed + 2))
    g_aug = torch.Generator().manual_seed(args.seed + 3)
    g_pick = torch.Generator().manual_seed(args.seed + 4)
    g_noise = torch.Generator().manual_seed(args.seed + 5)
    aug_a, aug_b = Augment(args.seed + 6), Augment(args.seed + 7)
    it = 0
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        for k, v in nets.items():
            v.load_state_dict(state["nets"][k])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        for s, sd in zip(sched, state["sched"]):
            s.load_state_dict(sd)
        it = int(state["iteration"])
        for gen, key in ((g_aug, "g_aug"), (g_pick, "g_pick"), (g_noise, "g_noise")):
            gen.set_state(state["rng"][key])
        for pool, key in ((pool_a, "pool_a"), (pool_b, "pool_b")):
            pool.images = [] if state[key] is None else [p[None].clone() for p in state[key]]
        aug_a, aug_b = Augment(args.seed + 6 + it), Augment(args.seed + 7 + it)
        print(f"resumed at iteration {it}", flush=True)

    from monai.losses import LocalNormalizedCrossCorrelationLoss, PatchAdversarialLoss
    from tqdm import tqdm

    adv = PatchAdversarialLoss(criterion="least_squares", reduction="mean")
    lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_size=args.structure_kernel, reduction="none", smooth_nr=0.0, smooth_dr=1e-4)

    def structure(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """1 - mean squared local correlation of input ``x`` and its translation ``y`` over the input's brain (sign-free)."""
        m = (x > -0.95).float()
        return 1.0 - (lncc(y, x).neg().clamp(0, 1) * m).sum() / m.sum().clamp_min(1.0)

    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.no_bf16)  # noqa: E731
    fields = ["iteration", "seconds", "lr", "g_a", "g_b", "cycle_a", "cycle_b", "idt", "struct", "d_a", "d_b", "val_csf_gm", "val_gm_wm", "val_cycle_psnr_a",
              "val_cycle_psnr_b"]
    log_path = out / "train_log.csv"
    new_log = not log_path.exists()
    log_f = log_path.open("a", newline="", encoding="utf-8")
    writer = csv.DictWriter(log_f, fieldnames=fields)
    if new_log:
        writer.writeheader()
    real_ratios = tissue_ratios(b_img, b_lab)
    val_idx = torch.linspace(0, len(a_img) - 1, 8).long()
    sums: dict[str, float] = {}
    n_sum = 0
    t0 = time.perf_counter()
    bar = tqdm(total=args.iterations, initial=it, desc="cyclegan", mininterval=30, file=sys.stderr)
    while it < args.iterations:
        for n in nets.values():
            n.train()
        i, j = int(torch.randint(len(a_img), (1,), generator=g_pick)), int(torch.randint(len(b_img), (1,), generator=g_pick))
        real_a = aug_a(a_img[i]).unsqueeze(0) * 2 - 1
        real_b = aug_b(b_img[j]).unsqueeze(0) * 2 - 1
        # generators (discriminators frozen)
        for d in (nets["D_A"], nets["D_B"]):
            d.requires_grad_(False)
        with autocast():
            fake_b, fake_a = nets["G_A"](real_a).float(), nets["G_B"](real_b).float()
        sigma = args.cycle_noise
        noisy_b = fake_b + sigma * torch.randn(fake_b.shape, generator=g_noise) if sigma > 0 else fake_b
        noisy_a = fake_a + sigma * torch.randn(fake_a.shape, generator=g_noise) if sigma > 0 else fake_a
        da = (lambda t: t) if args.no_diffaugment else (lambda t: diff_augment(t, g_aug))
        with autocast():
            rec_a, rec_b = nets["G_B"](noisy_b).float(), nets["G_A"](noisy_a).float()
            idt_b, idt_a = (nets["G_A"](real_b).float(), nets["G_B"](real_a).float()) if args.lambda_identity > 0 else (real_b, real_a)
            logit_a, logit_b = nets["D_A"](da(fake_b))[-1].float(), nets["D_B"](da(fake_a))[-1].float()
        cyc_a = (rec_a - real_a).abs().mean() * args.lambda_cycle
        cyc_b = (rec_b - real_b).abs().mean() * args.lambda_cycle
        idt = ((idt_b - real_b).abs().mean() + (idt_a - real_a).abs().mean()) * args.lambda_cycle * args.lambda_identity
        struct = (structure(real_a, fake_b) + structure(real_b, fake_a)) * args.lambda_structure if args.lambda_structure > 0 else torch.zeros(())
        g_a = adv(logit_a, target_is_real=True, for_discriminator=False)
        g_b = adv(logit_b, target_is_real=True, for_discriminator=False)
        opt_g.zero_grad(set_to_none=True)
        (g_a + g_b + cyc_a + cyc_b + idt + struct).backward()
        opt_g.step()
        # discriminators on real images and pooled fakes
        for d in (nets["D_A"], nets["D_B"]):
            d.requires_grad_(True)
        pb, pa = pool_b.query(fake_b.detach()), pool_a.query(fake_a.detach())
        with autocast():
            la = nets["D_A"](torch.cat([da(real_b), da(pb)]))[-1].float()
            lb = nets["D_B"](torch.cat([da(real_a), da(pa)]))[-1].float()
        d_a = 0.5 * (adv(la[:1], target_is_real=True, for_discriminator=True) + adv(la[1:], target_is_real=False, for_discriminator=True))
        d_b = 0.5 * (adv(lb[:1], target_is_real=True, for_discriminator=True) + adv(lb[1:], target_is_real=False, for_discriminator=True))
        opt_d.zero_grad(set_to_none=True)
        (d_a + d_b).backward()
        opt_d.step()
        for s in sched:
            s.step()
        it += 1
        bar.update(1)
        for k, v in (("g_a", g_a), ("g_b", g_b), ("cycle_a", cyc_a), ("cycle_b", cyc_b), ("idt", idt), ("struct", struct), ("d_a", d_a), ("d_b", d_b)):
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_sum += 1
        if it % args.checkpoint_every == 0 or it == args.iterations:
            row = {"iteration": it, "seconds": round(time.perf_counter() - t0, 1), "lr": opt_g.param_groups[0]["lr"], **{k: v / n_sum for k, v in sums.items()}}
            sums, n_sum = {}, 0
            for n in nets.values():
                n.eval()
            with torch.no_grad():  # training slices only
                xa = a_img[val_idx] * 2 - 1
                fb = nets["G_A"](xa)
                ra = nets["G_B"](fb)
                fa = nets["G_B"](b_img * 2 - 1)
                rb = nets["G_A"](fa)
            to01 = lambda t: ((t + 1) / 2).clamp(0, 1)  # noqa: E731
            csf_gm, gm_wm = tissue_ratios(to01(fb), a_lab[val_idx])
            row.update(val_csf_gm=round(csf_gm, 3), val_gm_wm=round(gm_wm, 3), val_cycle_psnr_a=round(psnr(to01(ra), to01(xa)), 2),
                       val_cycle_psnr_b=round(psnr(to01(rb), b_img), 2))
            writer.writerow({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()})
            log_f.flush()
            bar.write(f"it {it}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "iteration")
                      + f" (real T2w train slices: {real_ratios[0]:.2f} / {real_ratios[1]:.2f})")
            state = {"iteration": it, "nets": {k: v.state_dict() for k, v in nets.items()}, "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                     "sched": [s.state_dict() for s in sched], "rng": {"g_aug": g_aug.get_state(), "g_pick": g_pick.get_state(), "g_noise": g_noise.get_state()},
                     "pool_a": torch.cat(pool_a.images) if pool_a.images else None, "pool_b": torch.cat(pool_b.images) if pool_b.images else None}
            atomic_torch_save(state, ckpt)
            if it % args.sample_every == 0 or it == args.iterations:
                from medgen_core.utils.figures import save_montage

                k = len(val_idx) // 2
                save_montage([("T1 (train)", to01(xa)[k, 0].numpy()), ("G_A(T1)", to01(fb)[k, 0].numpy()), ("cycle", to01(ra)[k, 0].numpy()),
                              ("real T2w (train)", b_img[2, 0].numpy()), ("G_B(T2w)", to01(fa)[2, 0].numpy())],
                             out / "samples" / f"it_{it:05d}.png", title=f"iteration {it}", vmax=1.0)
    bar.close()
    log_f.close()
    for name, net in (("generator_a2b.pt", nets["G_A"]), ("generator_b2a.pt", nets["G_B"])):
        atomic_torch_save({k: v.detach().cpu() for k, v in net.state_dict().items()}, out / name)
    print(f"done: {it} iterations; exported {out / 'generator_a2b.pt'} and {out / 'generator_b2a.pt'}", flush=True)
    return 0


def install(out: Path) -> int:
    """Copy ``generator_a2b.pt`` (also as ``model.pt``) and ``generator_b2a.pt`` from ``out`` into the bundle's models/,
    record their sha256 (:func:`medgen_core.provenance.sha256_file`) and the run's recipe in ``configs/metadata.json``
    and rewrite ``large_files.yml``."""
    import shutil

    from medgen_core.bundles.large_files import write_large_files
    from medgen_core.provenance import sha256_file

    models = BUNDLE / "models"
    for src in ("generator_a2b.pt", "generator_b2a.pt", "args.json", "train_log.csv"):
        if not (out / src).exists():
            print(f"error: {out / src} does not exist; train first (without --install)", file=sys.stderr)
            return 2
    for src, dsts in (("generator_a2b.pt", ("generator_a2b.pt", "model.pt")), ("generator_b2a.pt", ("generator_b2a.pt",))):
        for dst in dsts:
            tmp = models / f".{dst}.tmp"
            shutil.copyfile(out / src, tmp)
            os.replace(tmp, models / dst)
            print(f"installed {models / dst}", flush=True)
    meta_path = BUNDLE / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    medgen = meta["medgen"]
    for variant in ("a2b", "b2a"):
        medgen["variants"][variant]["sha256"] = sha256_file(BUNDLE / medgen["variants"][variant]["file"])
    medgen["model_pt"]["sha256"] = sha256_file(BUNDLE / medgen["model_pt"]["file"])
    run = json.loads((out / "args.json").read_text(encoding="utf-8"))
    with (out / "train_log.csv").open(encoding="utf-8") as f:
        last = list(csv.DictReader(f))[-1]
    medgen["trained"] = True
    medgen["training"] = {"script": "scripts/train_cyclegan.py", "iterations": int(last["iteration"]), "batch_size": 1,
                          **{k: run[k] for k in ("a_range", "d_features", "d_layers", "lambda_cycle", "lambda_identity", "lambda_structure", "structure_kernel",
                                                            "cycle_noise", "lr", "seed")},
                          "diffaugment": not run["no_diffaugment"], "bf16_autocast": not run["no_bf16"], "domain_b_slices": list(DIPY_T2W_TRAIN_SLICES),
                          "device": "cpu", "threads": run["threads"]}
    tmp = meta_path.with_name(".metadata.json.tmp")
    tmp.write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    os.replace(tmp, meta_path)
    print(f"recorded sha256 in {meta_path}; wrote {write_large_files(BUNDLE)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
