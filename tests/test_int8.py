"""Int8 update loop (CPUs with VNNI) and the reusable correlation workspace."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import rafttool.api as api
from rafttool.api import FlowEngine
from rafttool.cli.main import app
from rafttool.engine.correlation import CorrelationPyramid, VolumeWorkspace
from rafttool.engine.int8 import Int8Conv, Int8UpdateStep, int8_supported, quantize_nonnegative, quantize_unit
from rafttool.engine.model import build_model
from rafttool.engine.update import swap_window_axes
from rafttool.engine.weights import save_weights

pytestmark = pytest.mark.usefixtures("single_thread")
needs_int8 = pytest.mark.skipif(not int8_supported(), reason="no VNNI CPU or no oneDNN int8 operators")


def _dequantized_weight(weight: torch.Tensor) -> torch.Tensor:
    scales = weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    return torch.round(weight / scales) * scales


@needs_int8
@pytest.mark.parametrize("relu", [False, True])
def test_int8_convolution_is_the_fp32_convolution_of_the_quantized_operands(relu):
    """Integer accumulation is exact, so the operator must equal fp32 maths on dequantized values."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 24, 9, 11, generator=generator) * 3
    weight = torch.randn(16, 24, 3, 3, generator=generator) * 0.1
    bias = torch.randn(16, generator=generator)
    quantized = quantize_nonnegative(x)
    dequantized = (quantized.values.float() - quantized.zero_point) * quantized.scale
    expected = F.conv2d(dequantized, _dequantized_weight(weight), bias, padding=1)
    actual = Int8Conv(weight, bias, (1, 1), relu=relu)(quantized)
    torch.testing.assert_close(actual, expected.relu() if relu else expected, atol=1e-4, rtol=1e-4)
    assert (dequantized - x).abs().max() <= quantized.scale / 2 + 1e-6


def test_unit_quantization_covers_minus_one_to_one():
    values = quantize_unit(torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0]).view(1, 5, 1, 1))
    restored = (values.values.float() - values.zero_point) * values.scale
    assert restored.flatten().tolist() == pytest.approx([-1.0, -0.5, 0.0, 1.0, 1.0], abs=values.scale / 2)


@needs_int8
@pytest.mark.parametrize("size", ["small", "large"])
def test_int8_step_stays_close_to_the_fp32_step(size, update_step_inputs):
    block, context, hidden, corr, flow = update_step_inputs(size)
    with torch.inference_mode():
        expected_hidden, expected_delta, _ = block.step(hidden, block.plan(context), corr, flow)
        hidden8, delta8, _ = Int8UpdateStep(block, context)(hidden, corr, flow)
        y_major = swap_window_axes(corr, block.motion_encoder.corr_window)  # the order the engine hands it
        hidden8_y, delta8_y, _ = Int8UpdateStep(block, context, corr_y_major=True)(hidden, y_major, flow)
    assert (hidden8 - expected_hidden).abs().mean() < 0.01 * expected_hidden.abs().mean()
    assert (delta8 - expected_delta).abs().mean() < 0.02 * expected_delta.abs().mean()
    torch.testing.assert_close(hidden8_y, hidden8, atol=1e-4, rtol=0)
    torch.testing.assert_close(delta8_y, delta8, atol=1e-4, rtol=0)


def test_int8_refuses_to_run_where_gradients_are_expected():
    model = build_model("small").eval()
    image = torch.rand(1, 3, 128, 128) * 255
    with pytest.raises(ValueError, match="int8 computes no gradients"):
        model(image, image, iters=1, int8=True)


@needs_int8
def test_engine_uses_int8_by_default_only_for_the_bundled_weights(tmp_path):
    assert FlowEngine(model="small", device="cpu").int8  # RAFT-small: int8 wherever VNNI is
    assert not FlowEngine(model="small", device="cpu", half=True).int8
    save_weights(tmp_path / "w.pt", build_model("small"))
    assert not FlowEngine(weights=tmp_path / "w.pt", device="cpu").int8  # user weights: the original's numbers
    assert FlowEngine(weights=tmp_path / "w.pt", device="cpu", int8=True).int8


def test_int8_on_a_machine_without_it_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(api, "int8_supported", lambda: False)
    assert not FlowEngine(device="cpu").int8
    with pytest.raises(ValueError, match="int8 needs a CPU with VNNI"):
        FlowEngine(device="cpu", int8=True)
    image = (np.random.default_rng(0).random((128, 160, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    out = tmp_path / "flow.flo"
    args = ["flow", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "-o", str(out), "--int8", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and not out.exists()
    assert result.output.strip().splitlines() == [
        "error: int8 needs a CPU with VNNI instructions and PyTorch's oneDNN int8 operators; leave int8 off (--fp32)"
    ]


@needs_int8
def test_bundled_weights_in_int8_match_fp32_on_a_real_sized_pair():
    rng = np.random.default_rng(0)
    image = (rng.random((128, 168, 3)) * 255).astype(np.uint8)
    image1, image2 = image[:, 8:], image[:, :-8]  # a shift of 8 px
    flow32 = FlowEngine(device="cpu", int8=False, tolerance=None).estimate(image1, image2)
    flow8 = FlowEngine(device="cpu", int8=True, tolerance=None).estimate(image1, image2)
    assert np.abs(flow8 - flow32).mean() < 0.05 * np.abs(flow32).mean()


def test_workspace_reuses_its_memory_and_changes_no_number():
    generator = torch.Generator().manual_seed(0)
    fmap1, fmap2 = torch.randn(2, 1, 16, 10, 12, generator=generator)
    workspace = VolumeWorkspace()
    with torch.inference_mode():
        fresh = CorrelationPyramid(fmap1, fmap2, 3, 2)
        first = CorrelationPyramid(fmap1, fmap2, 3, 2, workspace)
        pointer = first.volume.data_ptr()
        second = CorrelationPyramid(fmap2, fmap1, 3, 2, workspace)
        assert second.volume.data_ptr() == pointer
        torch.testing.assert_close(second.volume, CorrelationPyramid(fmap2, fmap1, 3, 2).volume)
        coords = torch.rand(1, 2, 10, 12, generator=generator) * 12
        torch.testing.assert_close(CorrelationPyramid(fmap1, fmap2, 3, 2, workspace)(coords), fresh(coords))
        bigger = torch.randn(1, 16, 12, 14, generator=generator)
        rows_padded = 2 * 2 + 2  # each level row is followed by 2r+2 zero cells
        cells = 12 * (14 + rows_padded) + 6 * (7 + rows_padded) + 3 * (3 + rows_padded)
        assert CorrelationPyramid(bigger, bigger, 3, 2, workspace).volume.numel() == (12 * 14) * cells


@needs_int8
@pytest.mark.parametrize("batch", [1, 2])
def test_int8_volume_stays_close_to_the_fp32_volume(batch):
    generator = torch.Generator().manual_seed(0)
    fmap1, fmap2 = torch.randn(2, batch, 32, 12, 16, generator=generator)
    # Centres inside and far outside the frame: windows wholly outside read zeros in both.
    coords = torch.rand(batch, 2, 12, 16, generator=generator) * 40 - 12
    with torch.inference_mode():
        exact = CorrelationPyramid(fmap1, fmap2, 3, 2)
        int8 = CorrelationPyramid(fmap1, fmap2, 3, 2, VolumeWorkspace(), int8=True)
        assert int8.volume.dtype == torch.bfloat16
        error = (int8.volume.float() - exact.volume).abs()
        assert error.mean() < 0.02 * exact.volume.abs().mean()
        expected, actual = exact(coords), int8(coords)
    assert actual.dtype == torch.float32
    assert (actual - expected).abs().mean() < 0.02 * expected.abs().mean()
    assert torch.equal(actual[expected == 0], expected[expected == 0])


@needs_int8
def test_int8_volume_has_no_gradients():
    fmap1, fmap2 = torch.randn(2, 1, 8, 6, 8, requires_grad=True)
    with pytest.raises(ValueError, match="no gradients"):
        CorrelationPyramid(fmap1, fmap2, 2, 2, int8=True)
