"""Command-line values out of range, in every sub-command: one line ``medgen: error: ...`` with exit code 2,
before any model is loaded or any file is written (a malformed command line, such as a missing argument or an
unknown option: exit code 64). CUDA is hidden from every case (``CUDA_VISIBLE_DEVICES=""``).
"""

from __future__ import annotations

from pathlib import Path

from .common import OUT, error, upscale, usage_error
from .files import nifti
from .model import Action, Case

__all__ = ["CASES"]

SCAN = "scan.nii.gz"


def _case(case_id: str, doc: str, argv: list[str], expected, with_scan: bool = True, setup=None) -> Case:
    def build(folder: Path) -> Action:
        if with_scan:
            nifti(SCAN)
        if setup is not None:
            setup()
        return list(argv)

    return Case(case_id, "cli", doc, build, expected)


def _up(*options: str) -> list[str]:
    return upscale(SCAN, OUT, *options)


def _tr(*options: str) -> list[str]:
    return ["translate", SCAN, OUT, "--bundle", "brain_tissue_to_t1_pix2pix", *options]


def _file(name: str):
    return lambda: Path(name).write_text("a file")


DDPM = ("--bundle", "brain_slice_ddpm")
POSITIVE = (">= 1", "positive")

CASES: list[Case] = [
    # upscale
    _case("upscale_device_cuda_without_cuda", "--device cuda where torch sees no GPU: said so before loading a model",
          _up("--device", "cuda"), error("--device", "cuda")),
    _case("upscale_batch_size_zero", "--batch-size 0", _up("--batch-size", "0"), error("--batch-size", *POSITIVE)),
    _case("upscale_batch_size_negative", "--batch-size -3", _up("--batch-size", "-3"), error("--batch-size", *POSITIVE)),
    _case("upscale_batch_size_not_a_number", "--batch-size eight", _up("--batch-size", "eight"), error("--batch-size", "number")),
    _case("upscale_scale_three", "--scale 3 (models exist for 2 and 4)", _up("--scale", "3"), error("--scale", "choice")),
    _case("upscale_slice_axis_three", "--slice-axis 3 (a volume has axes 0, 1, 2)", _up("--slice-axis", "3"), error("--slice-axis", "choice")),
    _case("upscale_unknown_variant", "--variant x8_magic: the message lists the shipped variants", _up("--variant", "x8_magic"),
          error("x8_magic", "variant")),
    _case("upscale_missing_output", "upscale with an input and no output", ["upscale", SCAN], usage_error("output", "required")),
    _case("upscale_unknown_option", "an option upscale does not have", _up("--colour", "red"), usage_error("--colour", "unrecognized")),
    # translate
    _case("translate_batch_size_zero", "--batch-size 0", _tr("--batch-size", "0"), error("--batch-size", *POSITIVE)),
    _case("translate_device_cuda_without_cuda", "--device cuda without CUDA", _tr("--device", "cuda"), error("--device", "cuda")),
    _case("translate_direction_one_way_bundle", "--direction b2a on a one-way bundle", _tr("--direction", "b2a"),
          error("--direction", "one way", "two-way")),
    _case("translate_not_a_translation_bundle", "--bundle of a super-resolution bundle",
          ["translate", SCAN, OUT, "--bundle", "brain_mri_super_resolution"], error("brain_mri_super_resolution", "translation")),
    # augment
    _case("augment_n_zero", "--n 0", ["augment", *DDPM, "--out", "synth", "--n", "0"], error("--n", *POSITIVE), with_scan=False),
    _case("augment_n_negative", "--n -4", ["augment", *DDPM, "--out", "synth", "--n", "-4"], error("--n", *POSITIVE), with_scan=False),
    _case("augment_k_zero", "variants --k 0", ["augment", "variants", SCAN, *DDPM, "--out", "var", "--k", "0"], error("--k", *POSITIVE)),
    _case("augment_steps_zero", "--steps 0", ["augment", *DDPM, "--out", "synth", "--steps", "0"], error("--steps", *POSITIVE),
          with_scan=False),
    _case("augment_strength_above_one", "--strength 1.5", ["augment", "variants", SCAN, *DDPM, "--output", OUT, "--k", "1", "--strength", "1.5"],
          error("--strength", "(0, 1]")),
    _case("augment_strength_zero", "--strength 0 (nothing would change)",
          ["augment", "variants", SCAN, *DDPM, "--output", OUT, "--k", "1", "--strength", "0"], error("--strength", "(0, 1]")),
    _case("augment_strength_nan", "--strength nan", ["augment", "variants", SCAN, *DDPM, "--output", OUT, "--k", "1", "--strength", "nan"],
          error("--strength", "finite")),
    _case("augment_seed_negative", "--seed -1", ["augment", *DDPM, "--out", "synth", "--seed", "-1"], error("--seed", ">= 0"),
          with_scan=False),
    _case("augment_probs_above_one", "experiment --probs 1.5", ["augment", "experiment", *DDPM, "--out", "exp", "--probs", "1.5"],
          error("--probs", "[0, 1]"), with_scan=False),
    _case("augment_mix_range_reversed", "experiment --mix-ranges 0.6,0.2", ["augment", "experiment", *DDPM, "--out", "exp",
          "--mix-ranges", "0.6,0.2"], error("--mix-ranges", "LO <= HI"), with_scan=False),
    _case("augment_device_cuda_without_cuda", "--device cuda without CUDA", ["augment", *DDPM, "--out", "synth", "--device", "cuda"],
          error("--device", "cuda"), with_scan=False),
    # genseg
    _case("genseg_draws_zero", "benchmark --draws 0", ["genseg", "benchmark", "--out", "bench", "--draws", "0"], error("--draws", ">= 1"),
          with_scan=False),
    _case("genseg_lambda_negative", "benchmark --lambda-syn -1", ["genseg", "benchmark", "--out", "bench", "--lambda-syn", "-1"],
          error("--lambda-syn", ">= 0"), with_scan=False),
    _case("genseg_segment_device_cuda", "segment --device cuda without CUDA", ["genseg", "segment", SCAN, OUT, "--device", "cuda"],
          error("--device", "cuda")),
    _case("genseg_seed_negative", "benchmark --seed -2", ["genseg", "benchmark", "--out", "bench", "--seed", "-2"], error("--seed", ">= 0"),
          with_scan=False),
    # lab
    _case("lab_steps_one", "interpolate --steps 1 (needs the two endpoints)", ["lab", "interpolate", "--out", "lab", "--steps", "1"],
          error("--steps", ">= 2"), with_scan=False),
    _case("lab_iterations_zero", "sweep --iterations 0", ["lab", "sweep", "--out", "lab", "--iterations", "0"], error("--iterations", ">= 1"),
          with_scan=False),
    _case("lab_device_not_a_device", "--device gpu0 (not a torch device)", ["lab", "interpolate", "--out", "lab", "--device", "gpu0"],
          error("--device", "gpu0"), with_scan=False),
    _case("lab_device_cuda_without_cuda", "--device cuda without CUDA", ["lab", "interpolate", "--out", "lab", "--device", "cuda"],
          error("--device", "cuda"), with_scan=False),
    _case("lab_latent_size_zero", "mix --encoder-latent-size 0", ["lab", "mix", "--out", "lab", "--encoder", "sweep.pt",
          "--encoder-latent-size", "0"], error("--encoder-latent-size", *POSITIVE), with_scan=False),
    _case("lab_levels_above_one", "restore --levels 0,2", ["lab", "restore", "--out", "lab", "--levels", "0,2"], error("levels", "[0, 1]"),
          with_scan=False),
    # cvae
    _case("cvae_simulate_n_zero", "simulate --n 0", ["cvae", "simulate", "--n", "0", "--output", "sim.npz"], error("--n", *POSITIVE),
          with_scan=False),
    _case("cvae_simulate_seed_negative", "simulate --seed -1", ["cvae", "simulate", "--n", "4", "--seed", "-1", "--output", "sim.npz"],
          error("--seed", ">= 0"), with_scan=False),
    _case("cvae_sample_n_negative", "sample --n -2", ["cvae", "sample", "--bundle", "abr_joint_cvae", "--n", "-2", "--output", "s.npz"],
          error("--n", *POSITIVE), with_scan=False),
    _case("cvae_train_epochs_zero", "train --epochs 0", ["cvae", "train", "--data", "d.npz", "--out", "run", "--epochs", "0"],
          error("--epochs", *POSITIVE), with_scan=False),
    _case("cvae_train_batch_size_zero", "train --batch-size 0", ["cvae", "train", "--data", "d.npz", "--out", "run", "--batch-size", "0"],
          error("--batch-size", *POSITIVE), with_scan=False),
    _case("cvae_train_lr_negative", "train --lr -0.001", ["cvae", "train", "--data", "d.npz", "--out", "run", "--lr", "-0.001"],
          error("--lr", "> 0"), with_scan=False),
    _case("cvae_sample_device_cuda_without_cuda", "sample --device cuda without CUDA",
          ["cvae", "sample", "--bundle", "abr_joint_cvae", "--output", "s.npz", "--device", "cuda"], error("--device", "cuda"),
          with_scan=False),
    _case("cvae_sample_bad_output_suffix", "sample --output s.txt", ["cvae", "sample", "--bundle", "abr_joint_cvae", "--output", "s.txt"],
          error("s.txt", "format"), with_scan=False),
    # demo
    _case("demo_scale_three", "demo --scale 3", ["demo", "--out", "demo", "--scale", "3"], error("--scale", "choice"), with_scan=False),
    _case("demo_out_is_a_file", "demo --out naming an existing file", ["demo", "--out", "taken"], error("taken", "folder"), with_scan=False,
          setup=_file("taken")),
    # provenance
    _case("provenance_verify_empty_path", "provenance verify ''", ["provenance", "verify", ""], error("", "empty"), with_scan=False),
    _case("provenance_show_empty_path", "provenance show ''", ["provenance", "show", ""], error("", "empty"), with_scan=False),
    _case("provenance_verify_missing_file", "provenance verify of a file that does not exist", ["provenance", "verify", "absent.nii.gz"],
          error("absent.nii.gz", "not found", "exist"), with_scan=False),
    _case("provenance_trust_add_missing_key", "provenance trust add of a missing key file", ["provenance", "trust", "add", "absent.pub"],
          error("absent.pub"), with_scan=False),
    # bundle
    _case("bundle_check_unknown_check", "bundle check --only a check that does not exist",
          ["bundle", "check", "brain_mri_super_resolution", "--only", "magic"], error("--only", "choice"), with_scan=False),
    _case("bundle_install_missing_source", "bundle install of a file that does not exist", ["bundle", "install", "absent.zip"],
          error("absent.zip"), with_scan=False),
    _case("bundle_pack_out_is_a_file", "bundle pack --out naming an existing file", ["bundle", "pack", "brain_mri_super_resolution",
          "--out", "taken"], error("taken"), with_scan=False, setup=_file("taken")),
    _case("bundle_run_unknown_bundle", "bundle run of a bundle that does not exist", ["bundle", "run", "no_such_bundle", SCAN, OUT],
          error("no_such_bundle", "no bundle")),
    # top level
    _case("unknown_command", "a sub-command medgen does not have", ["frobnicate"], usage_error("frobnicate", "choice"), with_scan=False),
]
