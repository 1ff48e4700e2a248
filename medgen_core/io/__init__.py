"""Reading and writing 3D medical images (NIfTI, NRRD, MetaImage, DICOM).

All readers return a :class:`Volume` (float32 ``(X, Y, Z)`` array + 4x4 RAS+ affine, the nibabel
convention) and raise :class:`~medgen_core.errors.ImageReadError` with a message naming the file.
:func:`write_volume` writes NIfTI or NRRD atomically and never overwrites an input. Generated
images are written through :func:`medgen_core.provenance.write_generated_volume` instead.
"""

from medgen_core.io.readers import SUPPORTED_READ_SUFFIXES, read_volume
from medgen_core.io.volume import LPS_TO_RAS, Volume, format_of, lps_to_ras, ras_to_lps
from medgen_core.io.writers import SUPPORTED_WRITE_SUFFIXES, atomic_path, write_volume

__all__ = [
    "LPS_TO_RAS",
    "SUPPORTED_READ_SUFFIXES",
    "SUPPORTED_WRITE_SUFFIXES",
    "Volume",
    "atomic_path",
    "format_of",
    "lps_to_ras",
    "ras_to_lps",
    "read_volume",
    "write_volume",
]
