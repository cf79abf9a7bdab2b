"""The importable API: estimate_flow and FlowEngine take paths or arrays and return (H, W, 2) flow."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import rafttool
from rafttool import api
from rafttool.api import DeviceError, FlowEngine, default_precision, resolve_device
from rafttool.engine.model import raft_small
from rafttool.engine.weights import save_weights


ROUNDING_PX = 1e-3
"""Agreement expected of two fp32 passes over the same pair: far below any real difference (a
swapped channel or a shifted frame moves the flow by tenths of a pixel at least)."""


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "small.pt"
    save_weights(path, raft_small())
    return path


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (140, 170, 3), dtype=np.uint8), (5, 5), 0)
    return base[:, 3:163], base[:, :160]


def test_estimate_flow_accepts_arrays_and_paths_alike(tmp_path, weights, frames):
    first, second = frames
    from_arrays = rafttool.estimate_flow(first, second, weights=weights, iters=2, device="cpu")
    cv2.imwrite(str(tmp_path / "a.png"), first[..., ::-1])
    cv2.imwrite(str(tmp_path / "b.png"), second[..., ::-1])
    from_paths = rafttool.estimate_flow(tmp_path / "a.png", tmp_path / "b.png", weights=weights, iters=2, device="cpu")
    assert from_arrays.shape == (140, 160, 2) and from_arrays.dtype == np.float32
    np.testing.assert_array_equal(rafttool.api.load_rgb(tmp_path / "a.png"), first)
    # Two passes of one engine agree to rounding only: a CI run saw 3e-5 px between them.
    np.testing.assert_allclose(from_arrays, from_paths, atol=ROUNDING_PX)


def test_engine_output_is_the_models_output(weights, frames):
    engine = FlowEngine(weights=weights, device="cpu", iters=3, tolerance=None)
    flow = engine.estimate(*frames)
    as_tensor = [torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None].float() for f in frames]
    with torch.inference_mode():
        expected = engine.model(*as_tensor, iters=3).flow[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(flow, expected, atol=ROUNDING_PX)


def test_grayscale_and_16_bit_inputs_are_converted(weights, frames):
    engine = FlowEngine(weights=weights, device="cpu", iters=1)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    deep = [g.astype(np.uint16) * 257 for g in gray]
    np.testing.assert_allclose(engine.estimate(*gray), engine.estimate(*deep), atol=1e-4)


def test_different_sizes_are_refused(weights, frames):
    engine = FlowEngine(weights=weights, device="cpu", iters=1)
    with pytest.raises(ValueError, match="differ in size"):
        engine.estimate(frames[0], frames[1][:, :150])


def test_unavailable_devices_name_the_ones_present():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="available: .*cpu"):
            resolve_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu9")


def test_reduced_precision_is_the_default_only_for_bundled_weights_on_a_cpu(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(api, "int8_supported", lambda: True)
    monkeypatch.setattr(api, "fast_bf16", lambda: True)  # a CPU with AMX
    assert default_precision("large", cpu, bundled=True) == "bf16"
    assert default_precision("small", cpu, bundled=True) == "int8"  # its narrow encoders gain nothing from bf16
    assert default_precision("large", cpu, bundled=False) == "fp32"
    assert default_precision("large", cuda, bundled=True) == "fp32"
    monkeypatch.setattr(api, "fast_bf16", lambda: False)
    assert default_precision("large", cpu, bundled=True) == "int8"  # VNNI without AMX: within 0.3% of fp32
    monkeypatch.setattr(api, "int8_supported", lambda: False)
    assert default_precision("small", cpu, bundled=True) == "fp32"
    assert default_precision("large", cpu, bundled=True) == "fp32"


def test_explicit_precision_options_win_over_the_default(monkeypatch):
    monkeypatch.setattr(api, "default_precision", lambda model, device, bundled: "bf16")
    assert FlowEngine(device="cpu").precision == "bf16"
    assert FlowEngine(device="cpu", int8=False).precision == "fp32"  # --fp32: no reduced precision at all
    assert FlowEngine(device="cpu", half=False).precision == "fp32"
