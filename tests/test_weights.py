"""Tests for medgen_core.bundles.weights: sha256 verification and pickle-safe loading of real files."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medgen_core.bundles.weights import load_state_dict_safely, load_verified_network, verify_weights_file
from medgen_core.errors import BundleError, WeightsError
from medgen_core.networks import RRDBNet



def _net(seed: int, num_feat: int = 4) -> RRDBNet:
    torch.manual_seed(seed)
    net = RRDBNet(spatial_dims=2, scale=2, num_feat=num_feat, num_block=1, num_grow=2)
    with torch.no_grad():
        net.conv_last.weight.normal_(0, 0.05)  # non-trivial weights everywhere
    return net


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)


@pytest.fixture
def saved(tmp_path):
    net = _net(0)
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    return net, path


def test_correct_hash_loads(saved) -> None:
    net, path = saved
    target = _net(1)
    assert any(not torch.equal(v, net.state_dict()[k]) for k, v in target.state_dict().items())
    loaded = load_verified_network(target, path, _sha(path))
    assert loaded is target and not loaded.training
    _assert_same_weights(loaded, net)
    x = torch.rand(1, 1, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x))
    # upper-case hex is accepted as the same digest
    assert verify_weights_file(path, _sha(path).upper()) == _sha(path)


def test_wrong_hash_is_refused(saved) -> None:
    _, path = saved
    wrong = "0" * 64
    with pytest.raises(WeightsError, match="sha256") as err:
        load_verified_network(_net(1), path, wrong)
    assert str(path) in str(err.value) and wrong in str(err.value) and _sha(path) in str(err.value)
    # a single flipped byte is caught too
    good = _sha(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match the sha256"):
        verify_weights_file(path, good)


@pytest.mark.parametrize("missing", [None, "", "abc123"])
def test_missing_or_malformed_hash_is_refused(saved, missing) -> None:
    _, path = saved
    target = _net(1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(WeightsError, match="no sha256 is recorded"):
        load_verified_network(target, path, missing)
    for k, v in target.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k])


def test_missing_file(tmp_path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        verify_weights_file(tmp_path / "nope.pt", "0" * 64)
    assert issubclass(WeightsError, BundleError)


class _Payload:
    """Unpickling this runs ``os.system('touch <marker>')``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _Custom:
    """A plain custom object (no code on unpickling, but not a tensor either)."""

    def __init__(self) -> None:
        self.value = 3


def test_pickle_payload_is_refused_and_not_executed(tmp_path) -> None:
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pt"
    state = dict(_net(0).state_dict())
    state["evil"] = _Payload(str(marker))
    torch.save(state, path)
    assert not marker.exists()
    # the hash is right: only the content check can stop it
    with pytest.raises(WeightsError, match="pickle payload") as err:
        load_verified_network(_net(1), path, _sha(path))
    assert str(path) in str(err.value)
    assert not marker.exists(), "the pickle payload was executed"
    with pytest.raises(WeightsError):
        load_state_dict_safely(path)
    assert not marker.exists()
    # control: an unsafe load really would run it (so the marker check above can fail)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_custom_object_is_refused(tmp_path) -> None:
    path = tmp_path / "custom.pt"
    torch.save({"conv.weight": torch.zeros(2), "meta": _Custom()}, path)
    with pytest.raises(WeightsError, match="refusing to load"):
        load_state_dict_safely(path)
    # a raw pickle of a plain object (not torch.save's zip format) is refused too
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Custom()))
    with pytest.raises(WeightsError, match=re.escape(str(raw))):
        load_state_dict_safely(raw)


def test_non_tensor_values_and_garbage_are_refused(tmp_path) -> None:
    path = tmp_path / "numbers.pt"
    torch.save({"a": torch.zeros(1), "b": 3}, path)
    with pytest.raises(WeightsError, match="not a state dict of tensors"):
        load_state_dict_safely(path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(WeightsError, match=re.escape(str(junk))):
        load_state_dict_safely(junk)


def test_wrapped_state_dict_is_unwrapped(tmp_path, saved) -> None:
    net, _ = saved
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, path)
    state = load_state_dict_safely(path)
    assert state.keys() == net.state_dict().keys()


def test_state_dict_that_does_not_fit(tmp_path) -> None:
    path = tmp_path / "wide.pt"
    torch.save(_net(0, num_feat=8).state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit network RRDBNet") as err:
        load_verified_network(_net(1, num_feat=4), path, _sha(path))
    assert str(path) in str(err.value)
    # missing keys too (strict loading)
    partial = tmp_path / "partial.pt"
    state = _net(0).state_dict()
    state.pop("conv_last.bias")
    torch.save(state, partial)
    with pytest.raises(WeightsError, match="partial.pt"):
        load_verified_network(_net(1), partial, _sha(partial))


def test_safetensors_loads(tmp_path) -> None:
    net = _net(0)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    loaded = load_verified_network(_net(1), path, _sha(path))
    _assert_same_weights(loaded, net)
    with pytest.raises(WeightsError, match="sha256"):
        load_verified_network(_net(1), path, "f" * 64)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="bad.safetensors"):
        load_state_dict_safely(bad)


def test_install_variant_weights_records_the_hash_and_refuses_unknown_variants(tmp_path) -> None:
    import json
    import shutil

    from medgen_core.bundles.weights import install_variant_weights

    bundle = tmp_path / "bundle"
    shutil.copytree(Path(__file__).resolve().parents[1] / "monai_bundles" / "brain_slice_ddpm", bundle)
    source = tmp_path / "new.pt"
    source.write_bytes(b"new weights")
    target = install_variant_weights(bundle, "slice_position", source, trained=False, training={"iterations": 7})
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert target.read_bytes() == b"new weights"
    assert meta["medgen"]["variants"]["slice_position"]["sha256"] == hashlib.sha256(b"new weights").hexdigest()
    assert meta["medgen"]["trained"] is False and meta["medgen"]["training"] == {"iterations": 7}
    assert (bundle / "configs" / "metadata.json").read_text().startswith("{\n    ")  # 4-space JSON, as the zoo checks expect
    with pytest.raises(WeightsError, match="no medgen.variants\\['missing'\\]"):
        install_variant_weights(bundle, "missing", source)
