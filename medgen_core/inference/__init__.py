"""Whole-volume inference: geometry of resampled grids and the super-resolution pipeline."""

from medgen_core.inference.geometry import upscaled_affine, voxel_corners_world
from medgen_core.inference.super_resolve import VolumeSuperResolver, bicubic_upscale_volume, pick_slice_axis, super_resolver
from medgen_core.inference.through_plane import ThroughPlaneSuperResolver, plan_through_plane

__all__ = ["ThroughPlaneSuperResolver", "VolumeSuperResolver", "bicubic_upscale_volume", "pick_slice_axis", "plan_through_plane", "super_resolver",
           "upscaled_affine", "voxel_corners_world"]
