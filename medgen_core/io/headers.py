"""Header-only parsing of NIfTI, NRRD and MetaImage files: what a file declares, before any voxel is read.

Used by the readers (to check sizes, types and geometry first, see :mod:`medgen_core.io.header_checks`)
and by :func:`medgen_core.io.file_sets.input_file_set` (to find detached voxel-data files). Every
read here is bounded by :data:`~medgen_core.io.limits.MAX_HEADER_BYTES`.

Detached data files are resolved relative to the header's folder, in every form the formats allow:
NRRD ``data file: NAME``, ``data file: LIST`` (one name per following header line) and
``data file: FORMAT MIN MAX STEP [SUBDIM]`` (``FORMAT`` with one ``%d``-style field, ``MAX`` inclusive);
MetaImage ``ElementDataFile = NAME``, ``= LIST [ND]`` and ``= FORMAT MIN MAX STEP``; the ``.img`` of a
NIfTI ``.hdr``/``.img`` pair.
"""

from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medgen_core.errors import ImageReadError
from medgen_core.io.limits import MAX_HEADER_BYTES

__all__ = ["Header", "read_meta_header", "read_nifti_header", "read_nrrd_header"]

#: Largest number of files a LIST or pattern data-file field may name.
MAX_DATA_FILES = 100_000
_PATTERN = re.compile(r"^[^%]*%[-+ 0#]*\d*[di][^%]*$")


@dataclass
class Header:
    """What a header declares.

    Attributes:
        path: The header file.
        fields: Parsed fields (pynrrd values for NRRD, strings for MetaImage, the nibabel header for NIfTI).
        data_files: Detached voxel-data files, in reading order; empty when the data follow the header.
        data_offset: Where attached data start in ``path`` (bytes).
        text: Raw field text by field name (NRRD/MetaImage), for checks that need the literal value.
    """

    path: Path
    fields: Any
    data_files: list[Path] = field(default_factory=list)
    data_offset: int = 0
    text: dict[str, str] = field(default_factory=dict)


def _read_head(path: Path, end: re.Pattern[bytes]) -> tuple[bytes, int | None]:
    """Read ``path`` until ``end`` matches (or EOF), at most MAX_HEADER_BYTES.

    Returns the bytes read and the offset just past the match (``None`` if EOF came first).
    """
    head = bytearray()
    with open(path, "rb") as handle:
        while len(head) <= MAX_HEADER_BYTES:
            chunk = handle.read(65536)
            if not chunk:
                return bytes(head), None
            start = max(0, len(head) - 4096)
            head += chunk
            match = end.search(head, start)
            if match is not None:
                return bytes(head), match.end()
    raise ImageReadError(f"{path}: header is longer than {MAX_HEADER_BYTES} bytes (or has no end); expected a header")


_NRRD_END = re.compile(rb"\r?\n\r?\n")
_META_END = re.compile(rb"(?:^|\n)[ \t]*ElementDataFile[ \t]*=[^\n]*(?:\n|$)")


def _expand_pattern(header: Path, spec: str, fmt_name: str) -> list[Path]:
    """``FORMAT MIN MAX STEP [SUBDIM]`` -> the files it names (MAX inclusive)."""
    parts = spec.split()
    try:
        pattern, lo, hi, step = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
    except (IndexError, ValueError) as err:
        raise ImageReadError(f"{header}: {fmt_name} {spec!r} is not 'FORMAT MIN MAX STEP'") from err
    if not _PATTERN.match(pattern) or step == 0 or (hi - lo) * step < 0:
        raise ImageReadError(f"{header}: {fmt_name} {spec!r}: expected one %d field and a step towards MAX")
    count = (hi - lo) // step + 1
    if count > MAX_DATA_FILES:
        raise ImageReadError(f"{header}: {fmt_name} {spec!r} names {count} files; at most {MAX_DATA_FILES} allowed")
    return [_data_path(header, pattern % i) for i in range(lo, hi + (1 if step > 0 else -1), step)]


def _data_path(header: Path, name: str) -> Path:
    name = name.strip()
    candidate = Path(name)
    return candidate if candidate.is_absolute() else header.parent / candidate


def _data_file_list(header: Path, value: str, rest: list[str], fmt_name: str) -> list[Path]:
    """Resolve a data-file field (single name, LIST + following lines, or a pattern)."""
    value = value.strip()
    if value.split()[:1] == ["LIST"]:
        names = [line.strip() for line in rest if line.strip()]
        if len(names) > MAX_DATA_FILES:
            raise ImageReadError(f"{header}: {fmt_name} LIST names {len(names)} files; at most {MAX_DATA_FILES} allowed")
        return [_data_path(header, n) for n in names]
    if "%" in value and len(value.split()) >= 4:
        return _expand_pattern(header, value, fmt_name)
    return [_data_path(header, value)]


# -- NRRD ---------------------------------------------------------------------------------------


def read_nrrd_header(path: Path) -> Header:
    """Parse an NRRD header (``.nrrd`` or detached ``.nhdr``) with pynrrd, bounded, LIST/pattern data files included.

    Raises:
        ImageReadError: Not an NRRD file, or a field pynrrd cannot parse.
    """
    import nrrd

    head, end = _read_head(path, _NRRD_END)
    head = head[:end] if end is not None else head
    if not head.startswith(b"NRRD000"):
        raise ImageReadError(f"{path}: cannot read as NRRD: no 'NRRD000x' magic line (not an NRRD file, or corrupt)")
    lines = head.decode("ascii", "replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    fields_lines, rest, data_spec = [lines[0]], [], None
    text: dict[str, str] = {}
    for i, line in enumerate(lines[1:], start=1):
        if line.startswith("#") or ":" not in line:
            fields_lines.append(line)
            continue
        key, value = re.split(r":=?", line, maxsplit=1)
        text[key.strip()] = value.strip()
        fields_lines.append(line)
        if key.strip() in ("data file", "datafile"):
            data_spec = value.strip()
            if data_spec.split()[:1] == ["LIST"]:
                rest = lines[i + 1:]
                break
    try:
        fields = nrrd.read_header(fields_lines)
    except Exception as err:  # pynrrd raises NRRDError, ValueError, IndexError ...
        raise ImageReadError(f"{path}: cannot read as NRRD: bad header field ({type(err).__name__}: {_first_line(err)})") from err
    data_files = _data_file_list(path, data_spec, rest, "data file") if data_spec else []
    return Header(path=path, fields=fields, data_files=data_files, data_offset=len(head), text=text)


# -- MetaImage ----------------------------------------------------------------------------------


def read_meta_header(path: Path) -> Header:
    """Parse a MetaImage header (``.mha``/``.mhd``): ``Key = Value`` lines up to ``ElementDataFile``.

    Raises:
        ImageReadError: No ``ElementDataFile`` line within the header limit.
    """
    head, end = _read_head(path, _META_END)
    if end is None:
        raise ImageReadError(f"{path}: cannot read as MHA: no 'ElementDataFile = ...' line (not a MetaImage file, "
                             "or corrupt)")
    text: dict[str, str] = {}
    for line in head[:end].decode("latin-1").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            text[key.strip()] = value.strip()
    spec = text.get("ElementDataFile", "")
    data_files: list[Path] = []
    if spec.upper() != "LOCAL" and spec:
        rest: list[str] = []
        if spec.split()[0] == "LIST":
            with open(path, "rb") as handle:
                handle.seek(end)
                rest = handle.read(MAX_HEADER_BYTES).decode("latin-1").splitlines()
        data_files = _data_file_list(path, spec, rest, "ElementDataFile")
    return Header(path=path, fields=text, data_files=data_files, data_offset=end, text=text)


# -- NIfTI --------------------------------------------------------------------------------------


def nifti_pair_data(path: Path) -> Path | None:
    """The ``.img`` of a NIfTI/Analyze ``.hdr`` (or the ``.hdr`` of an ``.img``), if it exists."""
    name = path.name
    for old, new in ((".hdr", ".img"), (".img", ".hdr"), (".HDR", ".IMG"), (".IMG", ".HDR")):
        for gz in ("", ".gz"):
            if name.endswith(old + gz):
                other = path.with_name(name[: len(name) - len(old + gz)] + new + gz)
                if other.exists():
                    return other
    return None


def _open_maybe_gzip(path: Path):  # type: ignore[no-untyped-def]
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def read_nifti_header(path: Path) -> Header:
    """Parse the fixed NIfTI-1/-2 header block only (no extensions, no nibabel fixes), bounded.

    ``fields`` is an unchecked ``Nifti1Header``/``Nifti2Header``: values are as stored (a zero pixdim
    stays zero). For a ``.hdr``/``.img`` pair ``data_files`` is the ``.img``.

    Raises:
        ImageReadError: Too short, not NIfTI (e.g. Analyze 7.5 without the NIfTI magic), or corrupt gzip.
    """
    import nibabel as nib

    header_path = path
    if path.name.lower().removesuffix(".gz").endswith(".img"):
        header_path = nifti_pair_data(path) or path
    try:
        with _open_maybe_gzip(header_path) as handle:
            block = handle.read(540)
    except (OSError, EOFError) as err:
        raise ImageReadError(f"{path}: cannot read as NIFTI ({type(err).__name__}: {_first_line(err)}); the file may be "
                             "truncated or corrupt") from err
    if len(block) < 348:
        raise ImageReadError(f"{path}: cannot read as NIFTI: {len(block)} bytes, shorter than a NIfTI header (348 "
                             "bytes); the file may be truncated or corrupt")
    size_le, size_be = int(np.frombuffer(block[:4], "<i4")[0]), int(np.frombuffer(block[:4], ">i4")[0])
    sizeof = size_le if size_le in (348, 540) else size_be
    klass = {348: nib.Nifti1Header, 540: nib.Nifti2Header}.get(sizeof)
    if klass is None or len(block) < sizeof:
        raise ImageReadError(f"{path}: cannot read as NIFTI: header size field {size_le}, expected 348 or 540 (not a "
                             "NIfTI file, or corrupt)")
    hdr = klass.from_fileobj(io.BytesIO(block[:sizeof]), check=False)
    magic = bytes(hdr["magic"]).rstrip(b"\x00")
    if magic not in (b"n+1", b"ni1", b"n+2", b"ni2"):
        raise ImageReadError(f"{path}: header has no NIfTI magic (Analyze 7.5 or corrupt); expected NIfTI-1 or NIfTI-2 "
                             "(Analyze carries no orientation)")
    data_files: list[Path] = []
    if magic in (b"ni1", b"ni2"):
        data = nifti_pair_data(header_path)
        if data is None:
            raise ImageReadError(f"{path}: NIfTI pair header without its .img data file")
        data_files = [data]
    return Header(path=header_path, fields=hdr, data_files=data_files, data_offset=int(hdr["vox_offset"]) if np.isfinite(hdr["vox_offset"]) else -1)


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300]
