"""Tests for medgen_core.networks.sr.rrdb (RRDBNet): shapes, interpolation start, errors, TorchScript."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medgen_core.networks import RRDBNet



TINY = dict(num_feat=4, num_block=1, num_grow=2)


def _net(spatial_dims: int, scale: int, **kw) -> RRDBNet:
    torch.manual_seed(0)
    return RRDBNet(spatial_dims=spatial_dims, scale=scale, **{**TINY, **kw}).eval()


@pytest.mark.parametrize("spatial_dims,size", [(2, (6, 10)), (3, (4, 6, 5))])
@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("interp_residual", [True, False])
def test_output_shape(spatial_dims: int, size: tuple[int, ...], scale: int, interp_residual: bool) -> None:
    net = _net(spatial_dims, scale, interp_residual=interp_residual, in_channels=2, out_channels=2)
    x = torch.rand(3, 2, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (3, 2, *(scale * s for s in size))
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert len(net.upconvs) == {1: 0, 2: 1, 4: 2}[scale]


def test_channel_change_without_interp_residual() -> None:
    net = _net(2, 2, in_channels=1, out_channels=3, interp_residual=False)
    assert net(torch.rand(1, 1, 5, 7)).shape == (1, 3, 10, 14)


@pytest.mark.parametrize("spatial_dims,size,mode", [(2, (7, 9), "bicubic"), (3, (3, 4, 5), "trilinear")])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_fresh_network_equals_interpolation(spatial_dims: int, size: tuple[int, ...], mode: str, scale: int) -> None:
    net = _net(spatial_dims, scale)
    assert torch.count_nonzero(net.conv_last.weight) == 0 and torch.count_nonzero(net.conv_last.bias) == 0
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        y = net(x)
    expected = x if scale == 1 else F.interpolate(x, scale_factor=float(scale), mode=mode, align_corners=False)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    # the trunk is not trivial: without the skip the learned branch is exactly zero, not the input
    net_no_skip = _net(spatial_dims, scale, interp_residual=False)
    with torch.no_grad():
        assert net_no_skip(x).abs().max() > 0


def test_interp_residual_learns_on_top_of_bicubic() -> None:
    """After perturbing conv_last, output - bicubic is exactly the learned branch (nonzero)."""
    net = _net(2, 2)
    with torch.no_grad():
        net.conv_last.weight.normal_(0, 0.1)
        x = torch.rand(1, 1, 6, 6)
        diff = net(x) - F.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False)
    assert diff.abs().max() > 1e-4


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        RRDBNet(spatial_dims=1, **TINY)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        RRDBNet(spatial_dims=4, **TINY)
    for scale in (3, 6, 0, -2):
        with pytest.raises(ValueError, match="power of two"):
            RRDBNet(spatial_dims=2, scale=scale, **TINY)
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        RRDBNet(spatial_dims=2, in_channels=1, out_channels=2, **TINY)
    with pytest.raises(ValueError, match=">= 1"):
        RRDBNet(spatial_dims=2, num_feat=4, num_block=0, num_grow=2)


def test_wrong_input_rank() -> None:
    net2d, net3d = _net(2, 2), _net(3, 2)
    with pytest.raises(ValueError, match=r"expects a 4D tensor.*got a 3D"):
        net2d(torch.rand(4, 4, 4))
    with pytest.raises(ValueError, match="expects a 4D tensor"):
        net2d(torch.rand(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="expects a 5D tensor"):
        net3d(torch.rand(1, 1, 4, 4))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("spatial_dims,size", [(2, (6, 8)), (3, (3, 4, 4))])
def test_torchscript_matches_eager(spatial_dims: int, size: tuple[int, ...]) -> None:
    net = _net(spatial_dims, 2)
    with torch.no_grad():
        net.conv_last.weight.normal_(0, 0.1)  # make the learned branch matter
    x = torch.rand(2, 1, *size)
    # torch.jit.script cannot compile forward's f-string error message, so the supported export is tracing
    compiled = torch.jit.trace(net, x, check_trace=False)
    other = torch.rand(1, 1, *(s + 2 for s in size))  # a different shape than any example input
    with torch.no_grad():
        for inp in (x, other):
            torch.testing.assert_close(compiled(inp), net(inp), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_torchscript_script_matches_eager(spatial_dims: int) -> None:
    net = _net(spatial_dims, 2).eval()
    torch.nn.init.normal_(net.conv_last.weight, std=0.05)  # make the learned branch non-zero
    x = torch.rand(1, 1, *([6] * spatial_dims))
    scripted = torch.jit.script(net)
    assert torch.allclose(scripted(x), net(x), atol=1e-6)
