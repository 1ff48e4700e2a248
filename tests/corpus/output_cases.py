"""Output paths: the input in disguise, places that cannot be written, previews, crashes and races.

An input is never changed (the runner checks every file's sha256 and mtime); a refused output leaves
nothing behind; a writer killed at any rename leaves the old pair or the new pair, never a mix.
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import OUT, error, generated, ok, upscale
from .files import mhd, nifti, nrrd_bytes, nrrd_fields, voxel_bytes
from .model import Action, Case, Status, Success
from .processes import concurrent_writers, killed_writer

__all__ = ["CASES"]

SCAN = "scan.nii.gz"
PAIR = (OUT, OUT + ".generated.json")


def _scan() -> str:
    nifti(SCAN)
    return SCAN


def _read_only(folder: str) -> Path:
    path = Path(folder)
    path.mkdir()
    path.chmod(0o555)  # medgen refuses by the mode bits, so the case holds for root too (root could still write)
    return path


def _case(case_id: str, doc: str, build, expected, **kwargs) -> Case:
    return Case(case_id, "output", doc, build, expected, **kwargs)


def _symlink_to_input(folder: Path) -> Action:
    os.symlink(_scan(), OUT)
    return upscale(SCAN, OUT)


def _hardlink_to_input(folder: Path) -> Action:
    os.link(_scan(), OUT)
    return upscale(SCAN, OUT)


def _mhd_data(folder: Path) -> Action:
    mhd("scan.mhd", data_file="scan_data.nii")
    return upscale("scan.mhd", "scan_data.nii")


def _nhdr_data(folder: Path) -> Action:
    Path("scan.nhdr").write_bytes(nrrd_bytes(nrrd_fields(data_file="scan_voxels.nrrd"), b""))
    Path("scan_voxels.nrrd").write_bytes(voxel_bytes())
    return upscale("scan.nhdr", "scan_voxels.nrrd")


def _through_folder_link(folder: Path) -> Action:
    Path("data").mkdir()
    nifti("data/scan.nii.gz")
    os.symlink("data", "link")
    return upscale("data/scan.nii.gz", "link/scan.nii.gz")


def _loop(folder: Path) -> Action:
    os.symlink("loop.nii.gz", OUT)
    os.symlink(OUT, "loop.nii.gz")
    return upscale(_scan(), OUT)


def _parent_is_file(folder: Path) -> Action:
    Path("notadir").write_text("a file, not a folder")
    return upscale(_scan(), "notadir/out.nii.gz")


def _existing_dir(folder: Path) -> Action:
    Path("exists.nii.gz").mkdir()
    return upscale(_scan(), "exists.nii.gz")


def _read_only_output(folder: Path) -> Action:
    _read_only("locked")
    return upscale(_scan(), "locked/out.nii.gz")


def _read_only_preview(folder: Path) -> Action:
    _read_only("locked")
    return upscale(_scan(), OUT, "--preview", "locked/preview.png")


def _preview_dir(folder: Path) -> Action:
    Path("shots.png").mkdir()
    return upscale(_scan(), OUT, "--preview", "shots.png")


def _rewrite(folder: Path) -> Action:
    generated(OUT, SCAN)
    return upscale(SCAN, OUT, "--degradation", "gaussian")


def _killed(after: int):
    def build(folder: Path) -> Action:
        generated(OUT, SCAN)  # the old pair
        return killed_writer(upscale(SCAN, OUT, "--degradation", "gaussian"), after)

    return build


def _racing(folder: Path) -> Action:
    _scan()
    return concurrent_writers(upscale(SCAN, OUT, "--degradation", "gaussian"), upscale(SCAN, OUT, "--degradation", "block"))


CASES: list[Case] = [
    _case("output_symlink_to_input", "out.nii.gz is a symbolic link to the input: refused, input untouched", _symlink_to_input,
          error(OUT, "input")),
    _case("output_hardlink_to_input", "out.nii.gz is a hard link to the input: refused, input untouched", _hardlink_to_input,
          error(OUT, "input")),
    _case("output_is_mhd_data_file", "output = the detached voxel file of the .mhd input (named .nii): refused", _mhd_data,
          error("scan_data.nii", "input")),
    _case("output_is_nhdr_data_file", "output = the detached data file of the .nhdr input (named .nrrd): refused", _nhdr_data,
          error("scan_voxels.nrrd", "input")),
    _case("output_same_path_as_input", "output path = input path: refused", lambda f: upscale(_scan(), SCAN), error(SCAN, "input")),
    _case("output_input_via_folder_link", "output reaches the input through a symlinked folder: refused", _through_folder_link,
          error("scan.nii.gz", "input")),
    _case("output_symlink_loop", "the output path is a symlink loop: one line, no traceback", _loop,
          error(OUT, "symlink", "link", "loop")),
    _case("output_parent_is_file", "the output's folder is a file: refused before any compute", _parent_is_file,
          error("notadir", "folder", "directory")),
    _case("output_existing_directory", "the output path is an existing folder: refused", _existing_dir,
          error("exists.nii.gz", "directory", "folder")),
    _case("output_read_only_folder", "the output's folder is read-only: refused before any compute", _read_only_output,
          error("locked", "read-only", "writable", "permission")),
    _case("output_unsupported_extension", "out.png as the image output: refused", lambda f: upscale(_scan(), "out.png"),
          error("out.png", "format", "extension")),
    _case("output_missing_folders", "the output's folders do not exist yet: created", lambda f: upscale(_scan(), "new/sub/out.nii.gz"),
          ok("new/sub/out.nii.gz")),
    _case("output_replaces_previous_pair", "an earlier output pair is replaced by the new one", _rewrite, ok(), may_change=PAIR),
    _case("preview_not_png", "--preview shot.jpg: refused before any compute (previews are PNG)",
          lambda f: upscale(_scan(), OUT, "--preview", "shot.jpg"), error("shot.jpg", "png", "PNG")),
    _case("preview_missing_folder", "--preview in a folder that does not exist yet: created, like the output's",
          lambda f: upscale(_scan(), OUT, "--preview", "figures/preview.png"), Success((*PAIR[:1], "figures/preview.png"), (OUT,))),
    _case("preview_read_only_folder", "--preview in a read-only folder: refused before any compute", _read_only_preview,
          error("locked", "read-only", "writable", "permission")),
    _case("preview_existing_directory", "--preview names an existing folder: refused before any compute", _preview_dir,
          error("shots.png", "directory", "folder")),
    _case("killed_writer_before_commit", "writer SIGKILLed before its first rename: the old pair stays intact", _killed(0),
          Status(OUT, ("intact",), True), may_change=PAIR, timeout_s=180),
    _case("killed_writer_after_one_rename", "writer SIGKILLed after its first rename: old or new pair, intact", _killed(1),
          Status(OUT, ("intact",), True), may_change=PAIR, timeout_s=180),
    _case("killed_writer_after_two_renames", "writer SIGKILLed after its second rename: old or new pair, intact", _killed(2),
          Status(OUT, ("intact",), True), may_change=PAIR, timeout_s=180),
    _case("two_concurrent_writers", "two writers of out.nii.gz interleave: the final pair is one writer's, intact", _racing,
          ok(), timeout_s=240),
]
