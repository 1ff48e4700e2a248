"""Zip archives written byte by byte, so members can lie: odd names, symbolic links, bombs, false sizes."""

from __future__ import annotations

import functools
import hashlib
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Member", "bundle_members", "write_zip"]

_REGULAR = 0o100644
SYMLINK = 0o120777


@dataclass(frozen=True)
class Member:
    """One archive member.

    Args:
        name: The member name exactly as stored (may be absolute or hold ``..``).
        data: Uncompressed content (ignored when ``deflated`` is given).
        deflated: Pre-compressed raw deflate bytes with their CRC-32 and uncompressed size (bombs).
        mode: Unix mode stored in the external attributes (``SYMLINK`` makes a symbolic link).
        declared_size: Uncompressed size written in the headers instead of the true one (a lying member).
    """

    name: str
    data: bytes = b""
    deflated: tuple[bytes, int, int] | None = None
    mode: int = _REGULAR
    declared_size: int | None = None

    def payload(self) -> tuple[bytes, int, int]:
        """(compressed bytes, crc32, true uncompressed size)."""
        if self.deflated is not None:
            return self.deflated
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        return comp.compress(self.data) + comp.flush(), zlib.crc32(self.data), len(self.data)


def write_zip(path: str | Path, members: list[Member]) -> Path:
    """Write ``members`` (deflate) as a zip file with a central directory; sizes above 4 GiB are not supported."""
    stamp = time.localtime(time.time())
    dos_time = (stamp.tm_hour << 11) | (stamp.tm_min << 5) | (stamp.tm_sec // 2)
    dos_date = ((stamp.tm_year - 1980) << 9) | (stamp.tm_mon << 5) | stamp.tm_mday
    out, central = bytearray(), bytearray()
    for member in members:
        data, crc, size = member.payload()
        size = member.declared_size if member.declared_size is not None else size
        name = member.name.encode("utf-8")
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, dos_time, dos_date, crc, len(data), size, len(name), 0) + name + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 20, 20, 0, 8, dos_time, dos_date, crc, len(data), size,
                               len(name), 0, 0, 0, 0, member.mode << 16, offset) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    Path(path).write_bytes(bytes(out + central + end))
    return Path(path)


def bundle_members(folder: str | Path, name: str, extra: list[Member] = (), manifest: bool = True) -> list[Member]:
    """The members ``medgen bundle pack`` would write for ``folder`` (``<name>/...``), plus ``extra``, with a
    ``checksums.sha256`` that lists every member (a manifest an attacker recomputed)."""
    folder = Path(folder)
    members = [Member(f"{name}/{p.relative_to(folder).as_posix()}", p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]
    members += list(extra)
    if manifest:
        lines = []
        for m in members:
            if m.deflated is not None:
                digest = hashlib.sha256(zlib.decompress(m.deflated[0], -15)).hexdigest() if m.deflated[2] < (1 << 27) else _zeros_sha256(m.deflated[2])
            else:
                digest = hashlib.sha256(m.data).hexdigest()
            lines.append(f"{digest}  {m.name}\n")
        members.insert(0, Member("checksums.sha256", "".join(lines).encode()))
    return members


@functools.lru_cache(maxsize=4)
def _zeros_sha256(n: int) -> str:
    digest, chunk = hashlib.sha256(), bytes(1 << 24)
    while n:
        step = min(n, len(chunk))
        digest.update(memoryview(chunk)[:step])
        n -= step
    return digest.hexdigest()
