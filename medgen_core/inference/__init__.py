"""Whole-volume inference: geometry of resampled grids and the super-resolution pipeline."""

from medgen_core.inference.geometry import upscaled_affine, voxel_corners_world
from medgen_core.inference.super_resolve import VolumeSuperResolver, bicubic_upscale_volume, pick_slice_axis

__all__ = ["VolumeSuperResolver", "bicubic_upscale_volume", "pick_slice_axis", "upscaled_affine", "voxel_corners_world"]
