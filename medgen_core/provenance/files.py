"""Generated outputs that are not images (NPZ, CSV, JSON tables ...): written atomically, then marked
with a ``<file>.generated.json`` provenance sidecar that binds the record to the file's sha256.

The counterpart of :func:`~medgen_core.provenance.stamp.write_generated_volume` for other formats:
the caller supplies a function that writes the content to a path; this module decides where
(a temporary file next to the destination, renamed when complete), refuses to overwrite an input of
the run, and removes the output again if its sidecar cannot be written.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable

from medgen_core.errors import ImageWriteError
from medgen_core.io import atomic_path
from medgen_core.provenance.record import GenerationMetadata
from medgen_core.provenance.stamp import write_sidecar

__all__ = ["write_generated_file"]

logger = logging.getLogger(__name__)


def write_generated_file(path: str | Path, write: Callable[[Path], Any], metadata: GenerationMetadata) -> Path:
    """Write a generated non-image file with ``write(tmp_path)`` atomically, then its provenance sidecar.

    ``metadata.output`` is filled with the file name, its sha256 and format (``shape``/``spacing`` None).

    Args:
        path: destination file (e.g. ``samples.npz``, ``samples.csv``).
        write: writes the whole content to the path it is given (keep the suffix: it gets ``.tmp-<hex>-<name>``).
        metadata: the run's record.

    Returns:
        ``path``.

    Raises:
        ImageWriteError: ``path`` is one of the run's inputs, or the writer produced no file.
        ProvenanceError: the record is not serialisable or the sidecar could not be written (the file is removed).
    """
    path = Path(path)
    for item in metadata.inputs:
        with contextlib.suppress(OSError):
            if Path(item["path"]).resolve() == path.resolve():
                raise ImageWriteError(f"{path}: is an input of this run ({item['role']}); refusing to overwrite it, choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        write(tmp)
    try:
        write_sidecar(path, metadata)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    logger.info("wrote generated file %s (%s) with provenance sidecar", path, metadata.generator)
    return path
