"""Reading and writing 3D medical images (NIfTI, NRRD, MetaImage, DICOM).

All readers return a :class:`Volume` (float32 ``(X, Y, Z)`` array + 4x4 RAS+ affine, the nibabel
convention) and raise :class:`~medgen_core.errors.ImageReadError` with a message naming the file.
:func:`write_volume` writes NIfTI or NRRD atomically and never overwrites an input. Generated
images are written through :func:`medgen_core.provenance.write_generated_volume` instead.

Safety (issue 14): headers are checked before any voxel is read (size limit
:data:`~medgen_core.io.limits.DEFAULT_MAX_VOXELS` / ``MEDGEN_MAX_VOXELS``, bounded decompression, voxel
types, spacing and affine, DICOM slice positions); :func:`input_file_set` lists every file an input
consists of and :func:`check_output_path` / :func:`check_output_folder` refuse outputs that would
overwrite any of them, before any compute.
"""

from medgen_core.io.file_sets import check_output_folder, check_output_path, folder_is_writable, input_file_set, same_file
from medgen_core.io.limits import DEFAULT_MAX_VOXELS, MAX_VOXELS_ENV, max_voxels
from medgen_core.io.readers import SUPPORTED_READ_SUFFIXES, read_volume
from medgen_core.io.volume import LPS_TO_RAS, Volume, format_of, lps_to_ras, ras_to_lps
from medgen_core.io.writers import SUPPORTED_WRITE_SUFFIXES, atomic_path, write_volume

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "LPS_TO_RAS",
    "MAX_VOXELS_ENV",
    "SUPPORTED_READ_SUFFIXES",
    "SUPPORTED_WRITE_SUFFIXES",
    "Volume",
    "atomic_path",
    "check_output_folder",
    "check_output_path",
    "folder_is_writable",
    "format_of",
    "input_file_set",
    "lps_to_ras",
    "max_voxels",
    "ras_to_lps",
    "read_volume",
    "same_file",
    "write_volume",
]
