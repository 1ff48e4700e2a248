"""The in-memory 3D image that every reader returns and every writer accepts.

Conventions (the same as nibabel):

* ``array`` has shape ``(X, Y, Z)`` in voxel *index* order (``array[i, j, k]``), dtype ``float32``.
* ``affine`` is a 4x4 matrix mapping a voxel index ``(i, j, k, 1)`` to world millimetres in
  **RAS+**: +x towards the patient's Right, +y Anterior, +z Superior.

DICOM, ITK (SimpleITK) and NRRD files written by this package use **LPS+** (+x Left, +y Posterior,
+z Superior). :data:`LPS_TO_RAS` is the one matrix that converts between the two; it is its own
inverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FORMAT_BY_SUFFIX", "LPS_TO_RAS", "Volume", "format_of", "lps_to_ras", "ras_to_lps"]

#: Flips x and y: ``affine_ras = LPS_TO_RAS @ affine_lps`` and ``affine_lps = LPS_TO_RAS @ affine_ras``.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: File name endings this package knows, longest first, and the format name each one means
#: (``.hdr``/``.img``: a NIfTI-1/-2 pair; Analyze 7.5 files without the NIfTI magic are refused).
FORMAT_BY_SUFFIX: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".hdr": "nifti",
    ".img": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
    ".dcm": "dicom",
}


def format_of(path: str | Path) -> tuple[str, str] | None:
    """Return ``(format, suffix)`` for a file name, e.g. ``("nifti", ".nii.gz")``, or ``None`` if unknown.

    The match is case-insensitive; a directory is not recognised here (see :func:`read_volume`).
    """
    name = Path(path).name.lower()
    for suffix, fmt in FORMAT_BY_SUFFIX.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            return fmt, suffix
    return None


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert a 4x4 voxel->LPS affine into a voxel->RAS affine.

    Args:
        affine_lps: 4x4 matrix whose columns 0-2 are the voxel axes scaled by spacing (in LPS mm)
            and whose column 3 is the origin (LPS mm).

    Returns:
        The 4x4 voxel->RAS affine (float64).
    """
    return LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


def ras_to_lps(affine_ras: np.ndarray) -> np.ndarray:
    """Convert a 4x4 voxel->RAS affine into a voxel->LPS affine (inverse of :func:`lps_to_ras`)."""
    return LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64)


@dataclass
class Volume:
    """A 3D scalar image with its voxel-to-world geometry.

    Args:
        array: Voxel values, shape ``(X, Y, Z)`` in index order. Converted to ``float32``
            (C-contiguous) on construction.
        affine: 4x4 voxel-index -> world (mm, RAS+) matrix. Converted to ``float64``.
        path: File the volume was read from, if any. Writers refuse to overwrite it.
        format: Short format name of the source, e.g. ``"nifti"``, ``"nrrd"``, ``"mha"``, ``"dicom"``.

    Raises:
        ValueError: If ``array`` is not 3D or ``affine`` is not a finite 4x4 matrix.

    Example:
        >>> import numpy as np
        >>> vol = Volume(np.zeros((4, 5, 6)), np.diag([0.5, 0.5, 2.0, 1.0]))
        >>> vol.shape, vol.spacing
        ((4, 5, 6), (0.5, 0.5, 2.0))
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    format: str | None = None

    def __post_init__(self) -> None:
        self.array = np.ascontiguousarray(self.array, dtype=np.float32)
        self.affine = np.array(self.affine, dtype=np.float64)
        if self.array.ndim != 3:
            raise ValueError(
                f"Volume: array must be 3D with shape (X, Y, Z), got ndim={self.array.ndim} "
                f"shape={tuple(self.array.shape)}"
            )
        if self.affine.shape != (4, 4) or not np.all(np.isfinite(self.affine)):
            raise ValueError(f"Volume: affine must be a finite 4x4 matrix, got shape {self.affine.shape}")
        if self.path is not None:
            self.path = Path(self.path)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel grid size ``(X, Y, Z)``."""
        x, y, z = (int(s) for s in self.array.shape)
        return (x, y, z)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each index axis: the column norms of ``affine[:3, :3]``."""
        x, y, z = (float(n) for n in np.linalg.norm(self.affine[:3, :3], axis=0))
        return (x, y, z)
