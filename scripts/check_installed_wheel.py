#!/usr/bin/env python
"""Check MedGen as a user gets it from the wheel: build it, install it in a fresh virtual environment, run it elsewhere.

Steps (each must pass; the first failure stops with one line naming the step, then the tail of its output):

1. build: ``pip wheel --no-deps`` of a clean copy of the build inputs (pyproject.toml, setup.py, README.md,
   LICENSE, medgen_core/, monai_bundles/), so that stale ``build/`` folders cannot leak into it; or take
   ``--wheel``. The wheel must carry every bundle file that ``medgen bundle pack`` would ship and no
   ``eval/``, ``runs/`` or ``__pycache__``; its size is printed.
2. venv: a fresh virtual environment (no system site packages) in a temporary folder; ``torch==2.13.0``
   first, then the plain wheel, no extras, as a user installs it (``--extras data`` adds one).
3. from an unrelated folder, with HOME in the temporary folder and no MEDGEN_* or PYTHONPATH variables:
   ``medgen_core`` and ``medgen_bundles`` import from the venv, nilearn (the demo's MNI152 sample) is there and
   transformers (the ``sd`` extra) is not; the installed bundles equal the clone's
   byte for byte; ``medgen bundle list --json`` lists all seven, source ``package``, weights verified;
   ``medgen upscale`` of a small NIfTI and ``medgen provenance verify`` of the result; ``medgen demo`` and
   verify of its output; ``python -m monai.bundle run`` with ``--bundle_root`` at the installed SR bundle,
   and verify of its output.

    python scripts/check_installed_wheel.py                      # build, install, check, clean up (about 5 min; the demo 1.5)
    python scripts/check_installed_wheel.py --wheel dist/medgen-0.1.0-py3-none-any.whl --keep --work /tmp/w

Run by .ci/run after the test suite, and by scripts/release_check.py (which builds the wheel from the sdist).
Exit code 0 when every step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _venv import DEFAULT_TORCH, CheckFailed, Installed, clean_env, finish, install, run, tail, working_folder  # noqa: E402

__all__ = ["REPO", "CheckFailed", "Installed", "build_wheel", "check_installed", "check_wheel_contents", "install", "run", "stage_sources"]

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "medgen_core", "monai_bundles")
JUNK = ("eval", "runs", "__pycache__", ".ipynb_checkpoints", ".git", ".DS_Store", "*.pyc", ".tmp-*", "*.egg-info", "build", "dist")
SR_BUNDLE = "brain_mri_super_resolution"

_INSTALLED_FILES = r"""
import hashlib, json, sys
from pathlib import Path
import medgen_bundles, medgen_core
from medgen_core.bundles.catalog import package_bundle_dir
from medgen_core.bundles.conformance import bundle_files
clone, pkg = Path(sys.argv[1]), package_bundle_dir()
def digests(root, files):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
import importlib.util
report = {"medgen_core": medgen_core.__file__, "medgen_bundles": medgen_bundles.__file__, "package_dir": str(pkg), "bundles": {},
          "packages": {name: importlib.util.find_spec(name) is not None for name in ("nilearn", "transformers")}}
for meta in sorted(clone.glob("*/configs/metadata.json")):
    name = meta.parents[1].name
    want = digests(clone / name, bundle_files(clone / name))
    have = digests(pkg / name, [p for p in (pkg / name).rglob("*") if p.is_file()]) if (pkg / name).is_dir() else {}
    report["bundles"][name] = {"missing": sorted(set(want) - set(have)), "extra": sorted(set(have) - set(want)),
                               "different": sorted(k for k in set(want) & set(have) if want[k] != have[k]), "files": len(have)}
print(json.dumps(report))
"""

_SMALL_NIFTI = r"""
import sys
import nibabel as nib
import numpy as np
x, y, z = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 40), np.linspace(-1, 1, 6), indexing="ij")
vol = (100 * np.exp(-(x**2 + y**2 + 0.5 * z**2) * 2) + 10).astype(np.float32)
nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 3.0, 1.0])), sys.argv[1])
"""


def stage_sources(repo: Path, dest: Path) -> Path:
    """Copy the build inputs of ``repo`` into ``dest`` (no local outputs, caches or old build folders)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in BUILD_INPUTS:
        src = repo / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns(*JUNK))
        elif src.is_file():
            shutil.copy2(src, dest / name)
        else:
            raise CheckFailed(f"build: {src} is missing (a build input)")
    return dest


def build_wheel(repo: Path, work: Path) -> Path:
    """``pip wheel --no-deps`` of a clean copy of ``repo``; returns the wheel's path."""
    src = stage_sources(repo, work / "src")
    out = work / "dist"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(out)], "build: pip wheel --no-deps")
    wheels = sorted(out.glob("medgen-*.whl"))
    if len(wheels) != 1:
        raise CheckFailed(f"build: expected one medgen wheel in {out}, found {len(wheels)}")
    return wheels[0]


def check_wheel_contents(wheel: Path, repo: Path) -> dict[str, int]:
    """Every bundle folder of the clone is in the wheel under medgen_bundles/, with no local outputs or caches."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    bundles = sorted(p.parents[1].name for p in (repo / "monai_bundles").glob("*/configs/metadata.json"))
    def is_junk(name: str) -> bool:
        parts = name.split("/")
        return name.endswith(".pyc") or "__pycache__" in parts or (parts[0] == "medgen_bundles" and len(parts) > 3 and parts[2] in ("eval", "runs"))

    junk = [n for n in names if is_junk(n)]
    if junk:
        raise CheckFailed(f"wheel: {wheel.name} carries local outputs or caches: {', '.join(junk[:5])}")
    counts = {b: sum(n.startswith(f"medgen_bundles/{b}/") for n in names) for b in bundles}
    empty = [b for b, n in counts.items() if not n]
    if empty or "medgen_bundles/__init__.py" not in names:
        raise CheckFailed(f"wheel: {wheel.name} lacks the bundles {', '.join(empty) or '(medgen_bundles/__init__.py)'}")
    return counts


def _json(done: subprocess.CompletedProcess, what: str):
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as err:
        raise CheckFailed(f"{what}: the output is not JSON ({err})", tail(done.stdout)) from None


def check_installed(inst: Installed, sources: Path, demo: bool = True) -> None:
    """The checks of step 3 (see the module docstring), the installed bundles compared with ``sources/monai_bundles``;
    raises :class:`CheckFailed` at the first failure."""
    report = _json(inst.py("-c", _INSTALLED_FILES, sources / "monai_bundles", what="imports: installed packages"), "imports")
    for module in ("medgen_core", "medgen_bundles", "package_dir"):
        if not Path(report[module]).resolve().is_relative_to(inst.venv.resolve()):
            raise CheckFailed(f"imports: {module} comes from {report[module]}, not from the venv {inst.venv}")
    if report["packages"] != {"nilearn": True, "transformers": False}:
        raise CheckFailed(f"imports: a plain install must have nilearn (the demo's sample) and no transformers; found {report['packages']}")
    bad = {b: r for b, r in report["bundles"].items() if r["missing"] or r["extra"] or r["different"]}
    if bad or len(report["bundles"]) != 7:
        raise CheckFailed(f"package data: the installed bundles differ from the clone's ({len(report['bundles'])} bundles): "
                          + "; ".join(f"{b}: missing {r['missing'][:3]}, extra {r['extra'][:3]}, different {r['different'][:3]}" for b, r in bad.items()))
    print(f"  installed medgen_core {Path(report['medgen_core']).parent}; bundles {report['package_dir']} "
          f"({sum(r['files'] for r in report['bundles'].values())} files, equal to the clone's)")

    listing = _json(inst.medgen("bundle", "list", "--json", what="medgen bundle list --json"), "medgen bundle list --json")["bundles"]
    wanted = sorted(report["bundles"])
    names = sorted(b["name"] for b in listing)
    wrong = [f"{b['name']} (source {b['source']}, weights_ok {b['weights_ok']}, hidden {b['hidden']})" for b in listing
             if b["source"] != "package" or b["weights_ok"] is not True or b["hidden"]]
    if names != wanted or wrong:
        raise CheckFailed(f"medgen bundle list: expected {wanted} from the package with verified weights; got {names}; wrong: {wrong}")
    print(f"  medgen bundle list: {len(names)} bundles, source package, weights verified")

    small = inst.cwd / "small.nii.gz"
    inst.py("-c", _SMALL_NIFTI, small, what="make a small NIfTI")
    out = inst.cwd / "small_x2.nii.gz"
    inst.medgen("upscale", small, out, "--scale", "2", what="medgen upscale")
    inst.medgen("provenance", "verify", out, what="medgen provenance verify (upscale output)")
    print(f"  medgen upscale {small.name} -> {out.name}; provenance verify: intact")

    if demo:
        inst.medgen("demo", "--out", inst.cwd / "demo", what="medgen demo")
        inst.medgen("provenance", "verify", inst.cwd / "demo" / "mni_slab_gaussian_x2_medgen_sr.nii.gz", what="medgen provenance verify (demo output)")
        print("  medgen demo: done; provenance verify: intact")

    sr = next(Path(b["path"]) for b in listing if b["name"] == SR_BUNDLE)
    bundle_out = inst.cwd / "monai_run_x2.nii.gz"
    inst.py("-m", "monai.bundle", "run", "--config_file", sr / "configs" / "inference.json", "--meta_file", sr / "configs" / "metadata.json",
            "--bundle_root", sr, "--input_file", small, "--output_file", bundle_out, what="python -m monai.bundle run (installed SR bundle)")
    if not bundle_out.is_file():
        raise CheckFailed(f"python -m monai.bundle run: {bundle_out} was not written")
    inst.medgen("provenance", "verify", bundle_out, what="medgen provenance verify (monai.bundle run output)")
    print(f"  python -m monai.bundle run --bundle_root {sr}: wrote {bundle_out.name}; provenance verify: intact")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="check this wheel instead of building one")
    parser.add_argument("--work", type=Path, help="working folder (default: a new temporary folder, removed afterwards unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (venv, outputs)")
    parser.add_argument("--torch", default=DEFAULT_TORCH, help=f"torch requirement installed first (default {DEFAULT_TORCH})")
    parser.add_argument("--extras", default="", help="install the wheel with these extras, e.g. data (default: none, the plain wheel)")
    parser.add_argument("--no-demo", action="store_true", help="skip medgen demo")
    parser.add_argument("--reuse-venv", action="store_true", help="with --work: keep an existing WORK/venv (a re-run while debugging; not for CI)")
    args = parser.parse_args(argv)
    work = working_folder(args.work, "medgen-wheel-check-")
    start = time.monotonic()
    step, failures = "build", []
    try:
        t = time.monotonic()
        wheel = args.wheel.resolve() if args.wheel else build_wheel(REPO, work)
        sources = REPO if args.wheel else work / "src"  # what the wheel was built from
        counts = check_wheel_contents(wheel, sources)
        print(f"wheel {wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB, {len(counts)} bundles ({sum(counts.values())} files) "
              f"[{time.monotonic() - t:.0f} s]")
        step, t = "venv", time.monotonic()
        venv = work / "venv"
        if args.reuse_venv and (venv / ("Scripts" if os.name == "nt" else "bin") / "medgen").exists():
            inst = Installed(venv, work / "home", work / "elsewhere", clean_env(venv, work / "home"))
        else:
            inst = install(wheel, work, args.torch, extras=args.extras)
        print(f"fresh venv {inst.venv}: {args.torch}, then {wheel.name}{f'[{args.extras}]' if args.extras else ''} "
              f"[{time.monotonic() - t:.0f} s]")
        step, t = "installed", time.monotonic()
        print(f"from {inst.cwd} (HOME={inst.home}):")
        check_installed(inst, sources, demo=not args.no_demo)
        print(f"checks [{time.monotonic() - t:.0f} s]")
    except CheckFailed as err:
        failures.append(f"{step}: {err}")
        if err.details.strip():
            print(err.details, file=sys.stderr)
    return finish("installed-wheel checks", failures, work, start, keep=args.keep, given=args.work is not None)


if __name__ == "__main__":
    sys.exit(main())
