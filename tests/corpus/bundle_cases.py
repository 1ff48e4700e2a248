"""Hostile bundles on every route that runs, checks or installs one; every payload tries to create a marker.

Routes: ``--bundle FOLDER``, a bundle copied into the user folder, a bundle folder symlinked into it,
``medgen bundle check``, ``medgen bundle install`` (folder and zip), and a user bundle named like a
built-in. Expected: refused in one line (or, for ``check``, reported as failing) with nothing executed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .bundles import PAYLOADS, SR_BUNDLE, SR_WEIGHTS, copy_sr_bundle, edit_inference, flip_weight_byte, pickle_weights
from .common import OUT, error, ok, upscale
from .files import deflate_zeros, nifti
from .model import MARKER_PREFIX, Action, Case, ChecksFail, Error, Success
from .zips import SYMLINK, Member, bundle_members, write_zip

__all__ = ["CASES"]

SCAN = "scan.nii.gz"
USER_DIR = Path("home/.medgen/bundles")


def _marker(folder: Path, what: str) -> Path:
    return folder / f"{MARKER_PREFIX}_{what}"


def _hostile(folder: Path, where: Path, payload: str, name: str | None = None) -> Path:
    bundle = copy_sr_bundle(where, name)
    edit_inference(bundle, PAYLOADS[payload](str(_marker(folder, payload))))
    return bundle


def _case(case_id: str, doc: str, build, expected, **kwargs) -> Case:
    return Case(case_id, "bundle", doc, build, expected, **kwargs)


def _folder_control(folder: Path) -> Action:
    copy_sr_bundle("sr_copy")
    return upscale(nifti(SCAN).name, OUT, "--bundle", "sr_copy")


def _flipped(folder: Path) -> Action:
    flip_weight_byte(copy_sr_bundle("sr_copy"))
    return upscale(nifti(SCAN).name, OUT, "--bundle", "sr_copy")


def _pickled(folder: Path) -> Action:
    pickle_weights(copy_sr_bundle("sr_copy"), _marker(folder, "pickle"))
    return upscale(nifti(SCAN).name, OUT, "--bundle", "sr_copy")


def _folder_payload(payload: str):
    def build(folder: Path) -> Action:
        _hostile(folder, Path("evil_bundle"), payload)
        return upscale(nifti(SCAN).name, OUT, "--bundle", "evil_bundle")

    return build


def _user_payload(payload: str):
    def build(folder: Path) -> Action:
        _hostile(folder, USER_DIR / "hostile_sr", payload, name="hostile_sr")
        return upscale(nifti(SCAN).name, OUT, "--bundle", "hostile_sr")

    return build


def _user_symlink(folder: Path) -> Action:
    _hostile(folder, Path("elsewhere/linked_sr"), "dollar_import_os", name="linked_sr")
    USER_DIR.mkdir(parents=True)
    os.symlink(Path("../../../elsewhere/linked_sr"), USER_DIR / "linked_sr")
    return upscale(nifti(SCAN).name, OUT, "--bundle", "linked_sr")


def _shadow(folder: Path) -> Action:
    _hostile(folder, USER_DIR / SR_BUNDLE, "target_os_system")  # keeps the built-in's name
    return upscale(nifti(SCAN).name, OUT)


def _check(payload: str):
    def build(folder: Path) -> Action:
        _hostile(folder, Path("evil_bundle"), payload)
        return ["bundle", "check", "evil_bundle"]

    return build


CANDIDATE = "candidate_sr"  # not a built-in's name, so only the defect under test can refuse it


def _install_folder(change, name: str | None = CANDIDATE):
    def build(folder: Path) -> Action:
        key = name or SR_BUNDLE  # a bundle is keyed by its folder name (the metadata name is a label)
        change(folder, copy_sr_bundle(key, name))
        return ["bundle", "install", key]

    return build


def _zip_of(folder: Path, name: str, extra: list[Member] = (), prepare=None) -> str:
    """``name`` = a zip of a copy of the SR bundle (changed by ``prepare``) plus ``extra`` members, manifest recomputed."""
    work = copy_sr_bundle(folder / ".work" / CANDIDATE, CANDIDATE)
    if prepare is not None:
        prepare(folder, work)
    write_zip(name, bundle_members(work, CANDIDATE, list(extra)))
    shutil.rmtree(folder / ".work")
    return name


def _install_zip(name: str, extra_members=lambda folder: [], prepare=None):
    def build(folder: Path) -> Action:
        return ["bundle", "install", _zip_of(folder, name, extra_members(folder), prepare)]

    return build


def _bomb(folder: Path) -> Action:
    zeros = deflate_zeros(1 << 30)
    members = [Member(f"{CANDIDATE}/models/pad_{i:02d}.bin", deflated=(zeros[0], zeros[1], 1 << 30)) for i in range(12)]
    return ["bundle", "install", _zip_of(folder, "bomb.zip", members)]


def _size_lies(folder: Path) -> Action:
    members = bundle_members(copy_sr_bundle(folder / ".work" / CANDIDATE, CANDIDATE), CANDIDATE)
    shutil.rmtree(folder / ".work")
    lied = [Member(m.name, m.data, declared_size=100) if m.name.endswith(SR_WEIGHTS) else m for m in members]
    write_zip("lies.zip", lied)
    return ["bundle", "install", "lies.zip"]


def _builtin_name(folder: Path, bundle: Path) -> None:
    del folder, bundle  # a pristine copy keeps the built-in's name


CASES: list[Case] = [
    _case("bundle_folder_control", "a pristine copy of the SR bundle given as --bundle FOLDER runs", _folder_control, ok()),
    _case("bundle_flipped_weight_byte", "one bit of the weights flipped (sha256 unchanged in the metadata): refused", _flipped,
          error(Path(SR_WEIGHTS).name, "sha256")),
    _case("bundle_pickle_payload", "weights carrying a pickle payload, sha256 recomputed: refused, payload not run", _pickled,
          error(Path(SR_WEIGHTS).name, "pickle", "refus")),
    *[_case(f"bundle_folder_{p}", f"--bundle FOLDER whose inference.json reaches the OS ({p}): refused before running",
            _folder_payload(p), error("inference.json")) for p in PAYLOADS],
    _case("bundle_user_dir_target", "a hostile bundle copied into the user bundle folder (_target_ os.system): refused",
          _user_payload("target_os_system"), error("inference.json")),
    _case("bundle_user_dir_dotted_reader", "a hostile bundle in the user folder (reader given as 'os.system'): refused",
          _user_payload("dotted_reader_os"), error("inference.json")),
    _case("bundle_user_dir_symlink", "a hostile bundle folder symlinked into the user bundle folder: inspected and refused",
          _user_symlink, Error("", ("inference.json", "link"))),
    _case("bundle_user_shadows_builtin", "a hostile user bundle named like the built-in SR bundle: the built-in runs, the copy never",
          _shadow, ok()),
    _case("bundle_check_target", "bundle check of a config with _target_ os.system: reported failing, never executed",
          _check("target_os_system"), ChecksFail(("FAIL", "config_safety"))),
    _case("bundle_check_numpy_tofile", "bundle check of a config that writes a file with numpy tofile: failing, never executed",
          _check("numpy_tofile"), ChecksFail(("FAIL", "config_safety"))),
    _case("bundle_install_hostile_folder", "bundle install of a folder whose config reads a reader 'os.system': refused",
          _install_folder(lambda f, b: edit_inference(b, PAYLOADS["dotted_reader_os"](str(_marker(f, "install"))))),
          error("inference.json")),
    _case("bundle_install_flipped_byte", "bundle install of a folder with a flipped weight bit: refused",
          _install_folder(lambda f, b: flip_weight_byte(b)), error(Path(SR_WEIGHTS).name)),
    _case("bundle_install_builtin_name", "bundle install of a bundle named like a built-in: refused (it would replace the default model)",
          _install_folder(_builtin_name, name=None), error(SR_BUNDLE, "built-in", "builtin")),
    _case("bundle_install_folder_control", "bundle install of a pristine, renamed copy of the SR bundle folder: installed",
          _install_folder(lambda f, b: None), Success((f"{USER_DIR}/{CANDIDATE}/configs/metadata.json",)),
          may_change=(f"{USER_DIR}/*",)),
    _case("zip_install_control", "bundle install of a zip written like the hostile ones, but pristine: installed",
          _install_zip("pristine.zip"), Success((f"{USER_DIR}/{CANDIDATE}/configs/metadata.json",)), may_change=(f"{USER_DIR}/*",)),
    _case("zip_path_traversal", "archive member ../../../../../PWNED_traversal: refused, nothing extracted",
          _install_zip("traversal.zip", lambda f: [Member(f"{CANDIDATE}/../../../../../{MARKER_PREFIX}_traversal", b"x")]),
          error("traversal.zip", "..", "unsafe")),
    _case("zip_absolute_path", "archive member with an absolute path: refused",
          _install_zip("absolute.zip", lambda f: [Member(str(_marker(f, "absolute")), b"x")]), error("absolute.zip", "absolute")),
    _case("zip_symlink_member", "archive member that is a symbolic link: refused",
          _install_zip("symlink.zip", lambda f: [Member(f"{CANDIDATE}/models/link.pt", b"/etc/passwd", mode=SYMLINK)]),
          error("symlink.zip", "link")),
    _case("zip_bomb", "12 members of 1 GiB zeros in a 12 MB archive: refused before extracting", _bomb,
          error("bomb.zip"), max_memory_mb=300, timeout_s=120),
    _case("zip_member_size_lies", "a member whose header claims 100 bytes but holds 2.3 MB: one-line refusal", _size_lies,
          error("lies.zip")),
    _case("zip_not_an_archive", "random bytes named .zip: refused", lambda f: (Path("garbage.zip").write_bytes(os.urandom(4096)),
          ["bundle", "install", "garbage.zip"])[1], error("garbage.zip", "zip")),
    _case("zip_pickle_payload", "archive whose weights carry a pickle payload (metadata and manifest recomputed): refused",
          _install_zip("pickle.zip", prepare=lambda f, b: pickle_weights(b, _marker(f, "zip_pickle"))), error(Path(SR_WEIGHTS).name)),
    _case("bundle_name_payload", "--bundle given a $ expression as its name: no such bundle, nothing run",
          lambda f: upscale(nifti(SCAN).name, OUT, "--bundle", f"$__import__('os').system('touch {MARKER_PREFIX}_name')"),
          error(f"{MARKER_PREFIX}_name", "bundle")),
]
