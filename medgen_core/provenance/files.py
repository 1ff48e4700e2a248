"""Generated outputs that are not images (NPZ, CSV, JSON tables ...): written together with a signed
``<file>.generated.json`` provenance sidecar that binds the record to the file's sha256.

The counterpart of :func:`~medgen_core.provenance.stamp.write_generated_volume` for other formats:
the caller supplies a function that writes the content to a path; this module decides where
(a temporary file next to the destination), refuses to overwrite an input of the run, and commits
file and sidecar as one pair (:mod:`medgen_core.provenance.pairs`): a crash leaves the old pair or the new one.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable

from medgen_core.errors import ImageWriteError
from medgen_core.provenance.pairs import staged_pair
from medgen_core.provenance.record import GenerationMetadata, sha256_file
from medgen_core.provenance.stamp import file_output, refuse_inputs, stamp_record, write_sidecar_json

__all__ = ["write_generated_file"]

logger = logging.getLogger(__name__)


def write_generated_file(path: str | Path, write: Callable[[Path], Any], metadata: GenerationMetadata) -> Path:
    """Write a generated non-image file with ``write(tmp_path)`` and its signed provenance sidecar, as one pair.

    ``metadata.output`` is filled with the file name, its sha256 and format (``shape``/``spacing``/``affine`` None).

    Args:
        path: destination file (e.g. ``samples.npz``, ``samples.csv``).
        write: writes the whole content to the path it is given (keep the suffix: it gets ``.medgen-tmp-<pid>-<hex>-<name>``).
        metadata: the run's record.

    Returns:
        ``path``.

    Raises:
        ImageWriteError: ``path`` is one of the run's inputs or a directory, or the writer produced no file.
        ProvenanceError: the record is not serialisable, the key is unusable, or the sidecar could not be written
            (nothing is left then).
    """
    path = Path(path)
    for item in metadata.inputs:
        with contextlib.suppress(OSError):
            if Path(item["path"]).resolve() == path.resolve():
                raise ImageWriteError(f"{path}: is an input of this run ({item['role']}); refusing to overwrite it, choose another output path")
    refuse_inputs(path, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged_pair(path) as (tmp_file, tmp_sidecar):
        write(tmp_file)
        if not tmp_file.is_file():
            raise ImageWriteError(f"{path}: the writer produced no file")
        file_sha = sha256_file(tmp_file)
        metadata.output = file_output(path, file_sha)
        write_sidecar_json(tmp_sidecar, stamp_record(metadata), file_sha)
    logger.info("wrote generated file %s (%s) with signed provenance sidecar", path, metadata.generator)
    return path
