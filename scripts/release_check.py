#!/usr/bin/env python
"""The release checklist, as a script: what must hold before a MedGen release is tagged.

1. sdist and wheel: ``python -m build`` of a clean copy of the sources (the wheel is built *from the sdist*,
   so a file missing from the sdist fails here); the sdist holds every bundle file, neither holds local
   outputs or caches; sizes printed.
2. the installed-wheel checks of scripts/check_installed_wheel.py in a fresh venv (torch==2.13.0 first, then the
   plain wheel):
   imports, package data, ``bundle list``, ``upscale``, ``provenance verify``, ``demo``, ``monai.bundle run``.
3. the zoo checks: ``medgen bundle check NAME --json`` for every installed bundle (a table per bundle).
4. sharing: ``medgen bundle pack`` of every bundle, then ``medgen bundle install PACK --sha256 <its checksum
   in the local zoo index> --allow-builtin-name`` into a temporary user folder (MEDGEN_BUNDLE_DIR); the
   installed copies equal the packaged ones byte for byte, ``bundle list`` shows each as hidden behind the
   built-in, and the installed SR copy upscales by its folder; a pack with one weight byte changed is
   refused with one line and leaves nothing in its user folder.

    python scripts/release_check.py                  # everything (the zoo checks dominate: tens of minutes on 2 cores)
    python scripts/release_check.py --skip-zoo --keep --work /tmp/release

Exit code 0 when every step passed, 1 otherwise (each failure is listed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _venv import CheckFailed, Installed, finish, install, run, working_folder  # noqa: E402  (the script's own folder)
from check_installed_wheel import REPO, check_installed, check_wheel_contents, stage_sources  # noqa: E402

_COMPARE = r"""
import hashlib, json, sys
from pathlib import Path
from medgen_core.bundles.catalog import package_bundle_dir
pkg, user = package_bundle_dir(), Path(sys.argv[1])
def digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}
print(json.dumps({d.name: digests(d) == digests(pkg / d.name) for d in sorted(user.iterdir()) if d.is_dir() and not d.name.startswith(".")}))
"""


def build_dists(work: Path) -> tuple[Path, Path]:
    """sdist and wheel (built from the sdist) of a clean copy of the sources, with ``build`` from its own venv."""
    src = stage_sources(REPO, work / "src")
    tools = work / "buildenv"
    run([sys.executable, "-m", "venv", str(tools)], "build: python -m venv (build tools)")
    python = tools / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run([python, "-m", "pip", "install", "-q", "build"], "build: pip install build")
    out = work / "dist"
    run([python, "-m", "build", "--outdir", str(out), str(src)], "build: python -m build (sdist, then the wheel from it)")
    sdists, wheels = sorted(out.glob("medgen-*.tar.gz")), sorted(out.glob("medgen-*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        raise CheckFailed(f"build: expected one sdist and one wheel in {out}, found {len(sdists)} and {len(wheels)}")
    return sdists[0], wheels[0]


def check_sdist(sdist: Path, src: Path) -> int:
    """Every file of the staged ``monai_bundles/`` (and the build inputs) is in the sdist; no local outputs or caches."""
    with tarfile.open(sdist) as tf:
        names = {"/".join(m.name.split("/")[1:]) for m in tf.getmembers() if m.isfile()}
    wanted = {p.relative_to(src).as_posix() for p in (src / "monai_bundles").rglob("*") if p.is_file()}
    wanted |= {"pyproject.toml", "setup.py", "README.md", "LICENSE"}
    missing = sorted(wanted - names)
    junk = sorted(n for n in names if "__pycache__" in n.split("/") or n.endswith(".pyc")
                  or (n.startswith("monai_bundles/") and len(n.split("/")) > 3 and n.split("/")[2] in ("eval", "runs")))
    if missing or junk:
        raise CheckFailed(f"sdist {sdist.name}: missing {missing[:5]} ({len(missing)}), local outputs or caches {junk[:5]}")
    return len([n for n in names if n.startswith("monai_bundles/")])


def zoo_checks(inst: Installed, names: list[str]) -> dict[str, list[dict]]:
    """``medgen bundle check NAME --json`` for each bundle (exit 1 = some check failed, reported, not raised)."""
    results = {}
    for name in names:
        t = time.monotonic()
        done = inst.medgen("bundle", "check", name, "--json", what=f"medgen bundle check {name}", ok_codes=(0, 1), timeout=3600)
        try:
            results[name] = json.loads(done.stdout)
        except json.JSONDecodeError:
            raise CheckFailed(f"medgen bundle check {name} --json: the output is not JSON", done.stdout[-2000:] + done.stderr[-2000:]) from None
        failed = [r["check"] for r in results[name] if not r["passed"]]
        print(f"  {name:<28} {len(results[name]) - len(failed)}/{len(results[name])} passed"
              f"{'; FAILED: ' + ', '.join(failed) if failed else ''} [{time.monotonic() - t:.0f} s]")
    return results


def _flip_weight_byte(archive: Path, dest: Path) -> str:
    """Copy ``archive`` to ``dest`` with one byte of a weight member changed (the manifest kept)."""
    with zipfile.ZipFile(archive) as zin, zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        member = next(n for n in zin.namelist() if "/models/" in n and n.endswith(".pt"))
        for item in zin.infolist():
            data = bytearray(zin.read(item.filename))
            if item.filename == member:
                data[len(data) // 2] ^= 0x01
            zout.writestr(item.filename, bytes(data))
    return member


def sharing(inst: Installed, names: list[str], work: Path) -> None:
    """Pack every bundle, install the packs (checksums from the local zoo index) into a temporary user folder, and refuse a changed pack."""
    user, packs = work / "user_bundles", work / "packs"
    env = {"MEDGEN_BUNDLE_DIR": str(user)}
    for name in names:
        inst.medgen("bundle", "pack", name, "--out", packs, what=f"medgen bundle pack {name}", extra_env=env)
    index = json.loads((user / "model_info.json").read_text(encoding="utf-8"))
    archives = {entry["name"]: Path(entry["source"]) for entry in index.values()}
    if sorted(archives) != sorted(names):
        raise CheckFailed(f"pack: the local zoo index lists {sorted(archives)}, expected {names}")
    print(f"  packed {len(archives)} bundles into {packs} ({sum(p.stat().st_size for p in archives.values()) / 1e6:.1f} MB)")
    for entry in index.values():
        inst.medgen("bundle", "install", entry["source"], "--sha256", entry["checksum"], "--allow-builtin-name",
                    what=f"medgen bundle install {Path(entry['source']).name}", extra_env=env)
    same = json.loads(inst.py("-c", _COMPARE, user, what="compare installed packs with the package").stdout)
    if sorted(same) != sorted(names) or not all(same.values()):
        raise CheckFailed(f"install: the installed packs differ from the packaged bundles: {same}")
    listing = json.loads(inst.medgen("bundle", "list", "--json", what="medgen bundle list --json (with the user folder)", extra_env=env).stdout)
    wrong = [b["name"] for b in listing["bundles"] if b["source"] != "package" or b["hidden"] != [str(user / b["name"])]]
    if wrong:
        raise CheckFailed(f"bundle list: these built-ins do not show their user copy as hidden: {wrong}")
    print(f"  installed all {len(names)} packs into {user} (sha256 checked, byte-equal; listed as hidden behind the built-ins)")
    small = inst.cwd / "small.nii.gz"
    out = inst.cwd / "user_copy_x2.nii.gz"
    sr = user / "brain_mri_super_resolution"
    inst.medgen("upscale", small, out, "--bundle", sr, what="medgen upscale --bundle <installed copy>", extra_env=env)
    inst.medgen("provenance", "verify", out, what="medgen provenance verify (installed copy's output)", extra_env=env)
    print(f"  medgen upscale --bundle {sr}: intact")
    # a pack whose hash does not match: one line, nothing installed
    smallest = min(archives.values(), key=lambda p: p.stat().st_size)
    bad = work / "changed" / smallest.name
    bad.parent.mkdir(parents=True, exist_ok=True)
    member = _flip_weight_byte(smallest, bad)
    bad_user = work / "user_bundles_bad"
    done = inst.medgen("bundle", "install", bad, what="medgen bundle install <changed pack> (must be refused)", ok_codes=(2,),
                       extra_env={"MEDGEN_BUNDLE_DIR": str(bad_user)})
    lines = done.stderr.strip().splitlines()
    left = [p.name for p in bad_user.iterdir()] if bad_user.exists() else []
    if len(lines) != 1 or member not in lines[0] or "does not match" not in lines[0] or left:
        raise CheckFailed(f"changed pack: expected one line naming {member} and an empty user folder; got {len(lines)} line(s), left {left}",
                          done.stderr)
    print(f"  changed pack {bad.name} refused in one line ({member}: sha256 does not match), nothing installed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="working folder (default: a new temporary folder, removed afterwards unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--skip-zoo", action="store_true", help="skip step 3 (the zoo checks)")
    args = parser.parse_args(argv)
    work = working_folder(args.work, "medgen-release-")
    start = time.monotonic()
    failures: list[str] = []
    try:
        t = time.monotonic()
        print("1. sdist and wheel")
        sdist, wheel = build_dists(work)
        n_sdist = check_sdist(sdist, work / "src")
        counts = check_wheel_contents(wheel, work / "src")
        print(f"  {sdist.name}: {sdist.stat().st_size / 1e6:.1f} MB ({n_sdist} bundle files); {wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB "
              f"({sum(counts.values())} bundle files) [{time.monotonic() - t:.0f} s]")
        print("2. installed-wheel checks")
        t = time.monotonic()
        inst = install(wheel, work / "installed")
        check_installed(inst, work / "src")
        print(f"  [{time.monotonic() - t:.0f} s]")
        names = sorted(counts)
        if not args.skip_zoo:
            print("3. zoo checks (medgen bundle check NAME --json)")
            for name, results in zoo_checks(inst, names).items():
                failures += [f"zoo check {name}: {r['check']}: {r['message'][:300]}" for r in results if not r["passed"]]
        print("4. pack, install the packs into a temporary user folder, refuse a changed pack")
        sharing(inst, names, work)
    except CheckFailed as err:
        failures.append(str(err))
        if err.details.strip():
            print(err.details[-4000:], file=sys.stderr)
    except subprocess.SubprocessError as err:
        failures.append(f"{type(err).__name__}: {err}")
    return finish("release check", failures, work, start, keep=args.keep, given=args.work is not None)


if __name__ == "__main__":
    sys.exit(main())
