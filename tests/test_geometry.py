"""Tests for medgen_core.inference.geometry and super_resolve: upscaled grids cover the same physical box.

The resolver runs with gate=False here: these tests pin the network-application geometry and values; the
never-worse gate (which changes values on purpose) is tested in test_sr_gate.py.
"""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medgen_core.inference import (
    VolumeSuperResolver,
    bicubic_upscale_volume,
    pick_slice_axis,
    upscaled_affine,
    voxel_corners_world,
)
from medgen_core.io import Volume
from medgen_core.networks import RRDBNet



SPACING = np.array([0.8, 0.8, 2.5])
ORIGIN = np.array([-61.5, 20.25, -12.0])
SHAPE = (10, 12, 7)


def _rotation(ax: float, ay: float) -> np.ndarray:
    cx, sx, cy, sy = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return ry @ rx


def oblique_affine(spacing=SPACING) -> np.ndarray:
    """Rotations about x (25 deg) and y (-40 deg), anisotropic spacing, non-zero origin."""
    affine = np.eye(4)
    affine[:3, :3] = _rotation(np.deg2rad(25), np.deg2rad(-40)) * np.asarray(spacing)
    affine[:3, 3] = ORIGIN
    return affine


@pytest.mark.parametrize("factors", [(2, 2, 1), (2, 2, 2), (4, 4, 1)])
def test_upscaled_grid_covers_the_same_box(factors: tuple[int, int, int]) -> None:
    affine = oblique_affine()
    assert not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3])))  # really oblique
    out_affine = upscaled_affine(affine, factors)
    out_shape = tuple(n * f for n, f in zip(SHAPE, factors))

    # spacing divided by the factor, directions unchanged
    out_spacing = np.linalg.norm(out_affine[:3, :3], axis=0)
    np.testing.assert_allclose(out_spacing, SPACING / np.array(factors), atol=1e-12)
    np.testing.assert_allclose(out_affine[:3, :3] / out_spacing, affine[:3, :3] / SPACING, atol=1e-12)

    in_box = voxel_corners_world(affine, SHAPE, centres=False)
    out_box = voxel_corners_world(out_affine, out_shape, centres=False)
    np.testing.assert_allclose(out_box, in_box, atol=1e-6)

    # corner voxel centres of the output lie exactly half an OUTPUT voxel inside the input's box, per axis
    centres = voxel_corners_world(out_affine, out_shape, centres=True)
    directions = out_affine[:3, :3] / out_spacing  # unit vectors of the voxel axes (orthonormal here)
    for c, corner in enumerate(product((0, 1), repeat=3)):
        offset = (centres[c] - in_box[c]) @ directions  # mm along each voxel axis
        inward = np.where(np.array(corner) == 0, 1.0, -1.0)
        np.testing.assert_allclose(offset, inward * out_spacing / 2, atol=1e-6)
        assert np.all(np.abs(offset) <= out_spacing / 2 + 1e-6)

    # the first output voxel centre is at input index (1/f - 1)/2 (the align_corners=False convention)
    first_in_index = np.linalg.solve(affine, out_affine @ np.array([0, 0, 0, 1.0]))[:3]
    np.testing.assert_allclose(first_in_index, (1 / np.array(factors) - 1) / 2, atol=1e-9)


def test_voxel_corners_world_simple_grid() -> None:
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    centres = voxel_corners_world(affine, (5, 6, 7))
    box = voxel_corners_world(affine, (5, 6, 7), centres=False)
    np.testing.assert_allclose(centres.min(0), [10, 20, 30])
    np.testing.assert_allclose(centres.max(0), [18, 35, 54])
    np.testing.assert_allclose(box.min(0), [9, 18.5, 28])
    np.testing.assert_allclose(box.max(0), [19, 36.5, 56])


def test_upscaled_affine_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="4x4 affine and 3 positive factors"):
        upscaled_affine(np.eye(3), (2, 2, 1))
    with pytest.raises(ValueError, match="3 positive factors"):
        upscaled_affine(np.eye(4), (2, 0, 1))
    with pytest.raises(ValueError, match="3 positive factors"):
        upscaled_affine(np.eye(4), (2, 2))


@pytest.mark.parametrize(
    "spacing,axis",
    [((2, 2, 1), 2), ((1, 3, 1), 1), ((1, 1, 1), 2), ((1, 2, 3), 2), ((3, 1, 1), 0), ((0.9, 0.9, 0.9004), 2), ((1, 4, 2), 1)],
)
def test_pick_slice_axis(spacing, axis: int) -> None:
    assert pick_slice_axis(spacing) == axis


def _tiny_net(scale: int = 2) -> RRDBNet:
    torch.manual_seed(0)
    return RRDBNet(spatial_dims=2, scale=scale, num_feat=4, num_block=1, num_grow=2)


def _smooth_volume(shape=SHAPE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    return (1.0 + np.sin(3 * x + rng.uniform()) * np.cos(2 * y) + 0.3 * z).astype(np.float32)


@pytest.mark.parametrize("slice_axis", [None, 0])
def test_resolver_matches_bicubic_geometry_and_values(slice_axis) -> None:
    vol = Volume(_smooth_volume(), oblique_affine())
    resolver = VolumeSuperResolver(_tiny_net(), scale=2, slice_axis=slice_axis, batch_size=3, progress=False, gate=False, clamp=False)
    out = resolver(vol)
    axis = 2 if slice_axis is None else slice_axis
    expected_shape = tuple(n if a == axis else 2 * n for a, n in enumerate(SHAPE))
    factors = tuple(1 if a == axis else 2 for a in range(3))
    assert out.shape == expected_shape
    np.testing.assert_allclose(out.affine, upscaled_affine(vol.affine, factors), atol=1e-12)
    bic = bicubic_upscale_volume(vol, 2, slice_axis)
    assert bic.shape == out.shape
    np.testing.assert_allclose(bic.affine, out.affine, atol=1e-12)
    # a fresh interp-residual network is exactly bicubic, so the values agree up to the normalisation round trip
    np.testing.assert_allclose(out.array, bic.array, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(voxel_corners_world(out.affine, out.shape, False), voxel_corners_world(vol.affine, vol.shape, False), atol=1e-6)


def test_resolver_clamps_to_input_range() -> None:
    arr = np.zeros((8, 8, 3), dtype=np.float32)
    arr[3:5, 3:5] = 1.0  # a sharp square: bicubic overshoots above 1 and below 0
    vol = Volume(arr, np.diag([1.0, 1.0, 3.0, 1.0]))
    unclamped = VolumeSuperResolver(_tiny_net(), 2, progress=False, gate=False, clamp=False)(vol).array
    assert unclamped.max() > 1.0 + 1e-3 and unclamped.min() < -1e-3
    clamped = VolumeSuperResolver(_tiny_net(), 2, progress=False, gate=False)(vol).array
    assert clamped.min() == 0.0 and clamped.max() == 1.0
    np.testing.assert_allclose(clamped, np.clip(unclamped, 0, 1))


def test_values_follow_the_world_geometry() -> None:
    """A linear ramp along an in-plane axis: each output voxel holds the ramp at its own world position."""
    i = np.arange(SHAPE[0], dtype=np.float32)
    arr = np.broadcast_to((5.0 + i)[:, None, None], SHAPE).copy()
    vol = Volume(arr, oblique_affine())
    out = VolumeSuperResolver(_tiny_net(), 2, progress=False, gate=False, clamp=False)(vol)
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in out.shape), indexing="ij"), -1).reshape(-1, 3)
    world = out.affine @ np.c_[idx, np.ones(len(idx))].T
    in_index = np.linalg.solve(vol.affine, world)[:3].T.reshape(*out.shape, 3)
    interior = (in_index[..., 0] >= 1.5) & (in_index[..., 0] <= SHAPE[0] - 2.5)
    error = out.array[interior] - (5.0 + in_index[..., 0][interior])
    # PyTorch's bicubic (A = -0.75) does not reproduce a ramp exactly between samples (|error| < 0.05 here),
    # but the error is symmetric about the samples: a grid shifted by half an output voxel would bias it by 0.25
    assert np.abs(error).max() < 0.06
    assert abs(error.mean()) < 1e-3


def test_axes_all_upscales_every_axis() -> None:
    # ramps along the second in-plane axis and the through-plane axis: the through-plane pass and the
    # block-averaging of the twice-upscaled in-plane axis must both keep samples at centred positions
    shape = (8, 10, 6)
    j, k = np.arange(shape[1], dtype=np.float32), np.arange(shape[2], dtype=np.float32)
    arr = np.broadcast_to(3.0 + 1.5 * j[None, :, None] + 2.0 * k[None, None, :], shape).copy()
    vol = Volume(arr, oblique_affine())
    out = VolumeSuperResolver(_tiny_net(), 2, axes="all", progress=False, gate=False, clamp=False)(vol)
    assert out.shape == (16, 20, 12)
    np.testing.assert_allclose(out.affine, upscaled_affine(vol.affine, (2, 2, 2)), atol=1e-12)
    np.testing.assert_allclose(out.spacing, SPACING / 2, atol=1e-9)
    np.testing.assert_allclose(voxel_corners_world(out.affine, out.shape, False), voxel_corners_world(vol.affine, vol.shape, False), atol=1e-6)
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in out.shape), indexing="ij"), -1).reshape(-1, 3)
    in_index = np.linalg.solve(vol.affine, out.affine @ np.c_[idx, np.ones(len(idx))].T)[:3].T.reshape(*out.shape, 3)
    interior = np.ones(out.shape, dtype=bool)
    for a in (1, 2):
        interior &= (in_index[..., a] >= 1.5) & (in_index[..., a] <= shape[a] - 2.5)
    error = out.array[interior] - (3.0 + 1.5 * in_index[..., 1] + 2.0 * in_index[..., 2])[interior]
    assert np.abs(error).max() < 0.2  # bicubic (A = -0.75) ramp error, at most ~0.06 per unit slope
    # symmetric about the samples: a quarter-voxel slip of the block average along axis 1 would bias it by 0.19
    assert abs(error.mean()) < 0.01
    # a constant volume stays constant in every axis
    const = VolumeSuperResolver(_tiny_net(), 2, axes="all", progress=False, gate=False)(Volume(np.full((4, 6, 4), 7.0), oblique_affine())).array
    np.testing.assert_allclose(const, 7.0, rtol=1e-6)


def test_resolver_x4_and_bad_arguments() -> None:
    vol = Volume(_smooth_volume((6, 5, 3)), oblique_affine())
    out = VolumeSuperResolver(_tiny_net(4), 4, progress=False, gate=False, clamp=False)(vol)
    assert out.shape == (24, 20, 3)
    np.testing.assert_allclose(out.spacing, SPACING / np.array([4, 4, 1]), atol=1e-9)
    ref = F.interpolate(torch.from_numpy(np.moveaxis(vol.array, 2, 0).copy())[:, None], scale_factor=4.0, mode="bicubic", align_corners=False)
    np.testing.assert_allclose(out.array, np.moveaxis(ref[:, 0].numpy(), 0, 2), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="axes must be 'inplane' or 'all'"):
        VolumeSuperResolver(_tiny_net(), 2, axes="through")
    with pytest.raises(ValueError, match="slice_axis must be 0, 1, 2 or None"):
        VolumeSuperResolver(_tiny_net(), 2, slice_axis=3)
