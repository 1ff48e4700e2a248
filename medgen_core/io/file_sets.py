"""Which files an input consists of, and whether an output path may be written.

An input is more than the path the user typed: an ``.mhd`` or ``.nhdr`` header names detached voxel
data (``.raw``, ``.zraw``, a LIST of slice files, a ``%03d`` pattern), a NIfTI ``.hdr`` has its
``.img``, a DICOM folder holds many files. :func:`input_file_set` returns all of them, and
:func:`check_output_path` refuses an output that is any of them, compared both by resolved path and by
``(st_dev, st_ino)``, so a symlink or a hardlink to an input is caught too. It also refuses an output
that is an existing folder, not a regular file (``/dev/null``), a symlink loop, or inside a folder
that cannot be written (no write permission, a read-only file system, or, for root, a folder with
every write bit cleared), so such requests fail before any compute with one line naming the file.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from medgen_core.errors import ImageReadError, ImageWriteError
from medgen_core.io.volume import format_of

__all__ = ["check_output_folder", "check_output_path", "folder_is_writable", "input_file_set", "same_file"]

logger = logging.getLogger(__name__)


def input_file_set(path: str | Path) -> list[Path]:
    """The header plus every detached data file of an image, or every DICOM file of a series folder.

    A header that cannot be parsed contributes only itself (the reader will refuse it anyway).

    Example:
        >>> input_file_set("scan.mhd")  # doctest: +SKIP
        [PosixPath('scan.mhd'), PosixPath('scan.zraw')]
    """
    from medgen_core.io import dicom_series, headers

    path = Path(path)
    if path.is_dir():
        try:
            return dicom_series.dicom_files(path)
        except ImageReadError:  # a broken DICOM file: count every file of the folder as part of the input
            return sorted(p for p in path.iterdir() if p.is_file())
    files = [path]
    known = format_of(path)
    try:
        if path.is_file() and known is not None:
            if known[0] == "nrrd":
                files += headers.read_nrrd_header(path).data_files
            elif known[0] == "mha":
                files += headers.read_meta_header(path).data_files
            elif known[0] == "nifti":
                pair = headers.nifti_pair_data(path)
                files += [pair] if pair is not None else []
    except (ImageReadError, OSError, ValueError) as err:
        logger.debug("%s: header not parsed for its file set (%s)", path, err)
    unique: list[Path] = []
    for item in files:
        if item not in unique:
            unique.append(item)
    return unique


def same_file(a: str | Path, b: str | Path) -> bool:
    """True if ``a`` and ``b`` resolve to the same path or are the same inode (symlinks, hardlinks)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _stat_error(path: Path) -> OSError | None:
    try:
        os.stat(path)
    except OSError as err:
        return err
    return None


def folder_is_writable(folder: Path) -> bool:
    """Writable for this process; for root, also requires a write bit (a folder marked read-only stays so)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return bool(os.stat(folder).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return True


def _check_destination(path: Path, *, folder: bool) -> None:
    """Symlink loops, wrong kind of existing entry, and an unwritable (nearest existing) parent folder."""
    err = _stat_error(path) if path.is_symlink() else None
    if err is not None and err.errno == errno.ELOOP:
        raise ImageWriteError(f"{path}: is a symlink loop; expected a file path that can be written")
    if path.exists():
        if folder and not path.is_dir():
            raise ImageWriteError(f"{path}: exists and is not a folder; expected a folder for the output series")
        if not folder and path.is_dir():
            raise ImageWriteError(f"{path}: is a directory; expected a file path")
        if not folder and not path.is_file():
            raise ImageWriteError(f"{path}: exists and is not a regular file (device, FIFO or socket); "
                                  "expected a file path")
    parent = path.parent if not (folder and path.is_dir()) else path
    while True:
        err = _stat_error(parent)
        if err is None:
            break
        if err.errno == errno.ELOOP:
            raise ImageWriteError(f"{path}: folder {parent} is a symlink loop; expected a folder that can be written")
        if err.errno == errno.ENOTDIR:
            raise ImageWriteError(f"{path}: {parent} is not a folder; expected the output inside a folder")
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ImageWriteError(f"{path}: {parent} is not a folder; expected the output inside a folder")
    if not folder_is_writable(parent):
        raise ImageWriteError(f"{path}: folder {parent} is read-only; choose an output in a writable folder")


def _input_members(inputs: Iterable[str | Path | None]) -> list[tuple[Path, Path]]:
    """``(input, member)`` for every file of every input."""
    return [(Path(item), member) for item in inputs if item is not None and str(item) != ""
            for member in input_file_set(item)]


def check_output_path(inputs: Iterable[str | Path | None], output: str | Path) -> None:
    """Refuse an output file that would overwrite any file of any input, or cannot be written.

    Call it before any compute (the CLI does); :func:`~medgen_core.io.write_volume` calls it again.

    Args:
        inputs: Input paths (files or DICOM folders; ``None`` entries are ignored).
        output: The output file path.

    Raises:
        ImageWriteError: The output is an input file or one of its detached data files (also through a
            symlink or hardlink), an existing folder, not a regular file, a symlink loop, or in a
            folder that cannot be written.
    """
    output = Path(output)
    for item, member in _input_members(inputs):
        if same_file(member, output):
            if same_file(member, item):
                what = "the input file"
            elif item.is_dir():
                what = f"a file of the input DICOM folder {item}:"
            else:
                what = f"the voxel data file of the input {item}:"
            raise ImageWriteError(f"{output}: output path is {what} {member}; refusing to overwrite an input "
                                  "(choose a different output path)")
    _check_destination(output, folder=False)


def check_output_folder(inputs: Iterable[str | Path | None], folder: str | Path) -> None:
    """Refuse an output folder (e.g. for a DICOM series) that is or holds an input, or cannot be written.

    Raises:
        ImageWriteError: The folder is an input folder, holds a file of an input, exists as a file, is a
            symlink loop, or cannot be written.
    """
    folder = Path(folder)
    inputs = list(inputs)
    for item in inputs:
        if item is not None and Path(item).is_dir() and same_file(item, folder):
            raise ImageWriteError(f"{folder}: is the input folder {item}; refusing to write into an input "
                                  "(choose a new folder)")
    if folder.is_dir():
        for item, member in _input_members(inputs):
            if same_file(member.parent, folder):
                raise ImageWriteError(f"{folder}: holds {member.name}, a file of the input {item}; refusing to "
                                      "write into an input's folder (choose a new folder)")
    _check_destination(folder, folder=True)
