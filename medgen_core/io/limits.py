"""Resource limits for reading images: a cap on the declared size, and decompression that stops at it.

Every reader parses the header first and calls :func:`check_declared_size` before it reads (or
decompresses) any voxel data, so a header that declares a huge grid fails in milliseconds:

* :data:`DEFAULT_MAX_VOXELS` = ``2**29`` voxels, i.e. 2 GiB once converted to float32 (the in-memory
  type of :class:`~medgen_core.io.volume.Volume`). The raw data may take up to twice that for
  float64/int64 files. Override it with the environment variable ``MEDGEN_MAX_VOXELS`` (a positive
  integer, e.g. ``MEDGEN_MAX_VOXELS=4000000000``).
* :data:`MAX_HEADER_BYTES` = 16 MiB caps header text (NRRD, MetaImage) and the NIfTI header plus its
  extensions (``vox_offset``).

Compressed voxel data (``.nii.gz``, NRRD ``gzip``/``bzip2``, MetaImage ``CompressedData``) is only
ever decompressed up to the declared size: NIfTI is read through a :class:`BoundedStream`, and the
other compressed streams are first measured with :func:`measure_decompressed`, which discards its
output in 1 MiB pieces and stops one piece past the declared size. Data that decompresses to more
than the header declares (a decompression bomb, trailing garbage, a lying header) is refused, as is
data that decompresses to less (truncated). The measuring pass costs one extra decompression of
compressed NRRD/MetaImage files (measured: 1.05 s -> 1.78 s for a 256^3 float32 gzip NRRD); SimpleITK
itself also stops at the declared size, so memory stays bounded even without it.
"""

from __future__ import annotations

import bz2
import io
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from medgen_core.errors import ImageReadError, ImageTooLargeError

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "MAX_HEADER_BYTES",
    "MAX_VOXELS_ENV",
    "BoundedStream",
    "check_declared_size",
    "max_voxels",
    "measure_decompressed",
]

#: Largest number of voxels a header may declare (2**29 = 2 GiB of float32).
DEFAULT_MAX_VOXELS = 2**29
#: Environment variable that overrides :data:`DEFAULT_MAX_VOXELS`.
MAX_VOXELS_ENV = "MEDGEN_MAX_VOXELS"
#: Largest header (NRRD/MetaImage text, NIfTI header + extensions) read before any check.
MAX_HEADER_BYTES = 16 * 2**20
#: Piece size for decompressing (bounds the memory a compressed stream can take at once).
_CHUNK = 2**20


def max_voxels() -> int:
    """The voxel limit: ``MEDGEN_MAX_VOXELS`` if set, else :data:`DEFAULT_MAX_VOXELS`.

    Raises:
        ImageReadError: ``MEDGEN_MAX_VOXELS`` is set but is not a positive integer.
    """
    value = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_VOXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise ImageReadError(f"{MAX_VOXELS_ENV}={value!r}: expected a positive integer number of voxels")
    return limit


def check_declared_size(path: Path, shape: Sequence[int], itemsize: int) -> int:
    """Refuse a declared grid larger than :func:`max_voxels`; return its size in bytes.

    Args:
        path: The file (for the message).
        shape: The declared sizes of every axis (components included).
        itemsize: Bytes per stored value.

    Raises:
        ImageReadError: A size is negative.
        ImageTooLargeError: The grid has more voxels than the limit.
    """
    sizes = [int(s) for s in shape]
    if any(s < 0 for s in sizes):
        raise ImageReadError(f"{path}: header declares a negative size {tuple(sizes)}; expected sizes >= 1")
    n = math.prod(sizes)
    limit = max_voxels()
    if n > limit:
        raise ImageTooLargeError(
            f"{path}: header declares {' x '.join(map(str, sizes))} = {n} voxels "
            f"({n * max(itemsize, 4) / 2**30:.1f} GiB), over the limit of {limit} voxels; "
            f"set {MAX_VOXELS_ENV} to read larger images"
        )
    return n * int(itemsize)


class BoundedStream(io.RawIOBase):
    """A seekable read-only view of ``raw`` that never yields bytes at or past offset ``limit``.

    Handed to a library in place of the file, it guarantees that no more than the declared data
    is ever decompressed, whatever the library asks for.
    """

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        super().__init__()
        self._raw = raw
        self._limit = int(limit)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:  # the end is the limit: never decompress to the real end to find it
            offset, whence = self._limit + offset, io.SEEK_SET
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), self._limit - self._raw.tell())
        if n <= 0:
            return 0
        return self._raw.readinto(memoryview(buffer)[:n])  # type: ignore[attr-defined]


def _decompressor(codec: str):  # type: ignore[no-untyped-def]
    if codec == "bzip2":
        return bz2.BZ2Decompressor()
    if codec == "deflate":
        return zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate (DICOM Deflated transfer syntax)
    return zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header, detected


def _pieces(raw: BinaryIO, codec: str) -> Iterator[bytes]:
    """Decompress ``raw`` piece by piece (at most ``_CHUNK`` bytes each); members may follow each other."""
    decomp = _decompressor(codec)
    buf = b""
    while True:
        if not buf and (codec != "bzip2" or decomp.needs_input):
            buf = raw.read(_CHUNK)
            if not buf:
                if codec != "bzip2":
                    yield decomp.flush()
                return
        out = decomp.decompress(buf, _CHUNK)
        buf = decomp.unconsumed_tail if codec != "bzip2" else b""
        yield out
        if decomp.eof:
            buf = decomp.unused_data + buf
            while not buf.strip(b"\x00"):  # zero padding after the last member is allowed
                buf = raw.read(_CHUNK)
                if not buf:
                    return
            decomp = _decompressor(codec)


def measure_decompressed(path: Path, raw: BinaryIO, codec: str, declared: int, *, exact: bool = True) -> int:
    """Decompress ``raw`` (from its current position) without keeping the output, and check its size.

    Stops as soon as the output passes ``declared`` bytes, so memory and time stay bounded whatever
    the stream holds. Concatenated gzip/bzip2 members count as one stream.

    Args:
        path: The file (for the message).
        raw: Binary stream positioned at the start of the compressed data.
        codec: ``"gzip"`` / ``"zlib"`` (either header), ``"deflate"`` (raw) or ``"bzip2"``.
        declared: Bytes the header declares.
        exact: Also refuse fewer bytes than ``declared`` (``False``: ``declared`` is only a cap).

    Returns:
        The decompressed size.

    Raises:
        ImageReadError: The stream is corrupt, holds more than ``declared`` bytes (a decompression
            bomb or trailing data) or fewer (truncated).
    """
    total = 0
    try:
        for piece in _pieces(raw, codec):
            total += len(piece)
            if total > declared:
                raise ImageReadError(
                    f"{path}: compressed voxel data holds more than the {declared} bytes its header declares "
                    "(a decompression bomb or trailing data); refusing to read it"
                )
    except ImageReadError:
        raise
    except (zlib.error, OSError, EOFError, ValueError) as err:
        raise ImageReadError(f"{path}: compressed voxel data is corrupt ({type(err).__name__}: {err})") from err
    if exact and total < declared:
        raise ImageReadError(
            f"{path}: compressed voxel data holds {total} of the {declared} bytes its header declares; "
            "the file is truncated"
        )
    return total
