"""Winograd convolutions compute what the direct convolutions do (timing: benchmarks/)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rafttool.engine.model as model_module
import rafttool.engine.winograd as winograd
from rafttool.engine import timing_cache
from rafttool.engine.model import build_model
from rafttool.engine.update import swap_window_axes
from rafttool.engine.winograd import WinogradConvs, WinogradUpdateStep, convolve, transform_weight, worthwhile

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def winograd_on(monkeypatch):
    """Every test here checks the route itself, wherever it is slower than the direct one."""
    monkeypatch.setenv(winograd.SWITCH_VARIABLE, "on")


def test_each_layer_takes_the_route_timed_faster_unless_told(monkeypatch, tmp_path):
    conv = nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(1, 64, 12, 20).contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(winograd, "_route_choices", {})
    monkeypatch.setenv(timing_cache.DIRECTORY_VARIABLE, str(tmp_path))
    monkeypatch.delenv(winograd.SWITCH_VARIABLE)
    with torch.inference_mode():
        expected = conv(x)
        assert winograd.applies(x)
        runner = WinogradConvs()
        for _ in range(2):  # the first call times both routes, the second takes the faster
            torch.testing.assert_close(runner(conv, [x]), expected, atol=1e-4, rtol=0)
        (key, choice), = winograd._route_choices.items()
        assert key[-1] == torch.get_num_threads() and isinstance(choice, bool)
        assert winograd._known_route(key[:-1]) is choice
        assert "timed" in winograd.route_policy()
        monkeypatch.setenv(winograd.SWITCH_VARIABLE, "off")
        assert not winograd.applies(x) and winograd._known_route(key[:-1]) is False
        monkeypatch.setenv(winograd.SWITCH_VARIABLE, "on")
        assert winograd._known_route(key[:-1]) is True and winograd.route_policy() == "Winograd convolutions"


def test_a_later_process_takes_the_stored_route_without_timing(monkeypatch, tmp_path):
    conv = nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(1, 64, 12, 20).contiguous(memory_format=torch.channels_last)
    monkeypatch.setenv(timing_cache.DIRECTORY_VARIABLE, str(tmp_path))
    monkeypatch.delenv(winograd.SWITCH_VARIABLE)
    monkeypatch.setattr(winograd, "_route_choices", {})
    with torch.inference_mode():
        WinogradConvs()(conv, [x])
        (key, choice), = winograd._route_choices.items()
        monkeypatch.setattr(winograd, "_route_choices", {})  # what a new process starts with
        monkeypatch.setattr(timing_cache, "_loaded", {})
        monkeypatch.setattr(winograd.time, "perf_counter", lambda: pytest.fail("the stored route was timed again"))
        WinogradConvs()(conv, [x])
    assert winograd._route_choices == {key: choice}


@pytest.mark.parametrize(
    ("batch", "widths", "height", "width", "out_channels"),
    [(1, (96, 82), 11, 17, 40), (2, (8,), 4, 4, 5), (1, (3, 5, 2), 1, 3, 7), (2, (16, 16), 9, 6, 64)],
)
@pytest.mark.parametrize("kernel_size", [(3, 3), (1, 5), (5, 1), (3, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_winograd_convolution_is_the_direct_convolution(batch, widths, height, width, out_channels, kernel_size, bias):
    generator = torch.Generator().manual_seed(0)
    parts = [torch.randn(batch, c, height, width, generator=generator) for c in widths]
    parts[0] = parts[0].contiguous(memory_format=torch.channels_last)  # parts may come in either layout
    weight = torch.randn(out_channels, sum(widths), *kernel_size, generator=generator) * 0.1
    bias_values = torch.randn(out_channels, generator=generator) if bias else None
    padding = (kernel_size[0] // 2, kernel_size[1] // 2)
    expected = F.conv2d(torch.cat(parts, dim=1).double(), weight.double(), None if bias_values is None else bias_values.double(), padding=padding)
    actual = convolve(parts, transform_weight(weight), kernel_size, bias_values)
    assert actual.shape == expected.shape
    # F(6, 5) interpolates at +-3 too, which costs precision: about 1e-4 of the range here.
    tolerance = 2e-4 if 5 in kernel_size else 2e-5
    torch.testing.assert_close(actual.double(), expected, atol=tolerance * expected.abs().max().item(), rtol=0)


def test_only_wide_same_padded_convolutions_of_3_or_5_taps_take_the_winograd_route():
    assert worthwhile(nn.Conv2d(96, 128, 3, padding=1))
    assert worthwhile(nn.Conv2d(384, 256, (1, 5), padding=(0, 2)))
    assert not worthwhile(nn.Conv2d(64, 32, 3, padding=1))  # too narrow to gain
    assert not worthwhile(nn.Conv2d(96, 128, 3, padding=1, stride=2))
    assert not worthwhile(nn.Conv2d(96, 128, 3, padding=0))
    assert not worthwhile(nn.Conv2d(96, 128, 7, padding=3))
    assert not worthwhile(nn.Conv2d(96, 128, 1))
    assert not worthwhile(nn.Conv2d(96, 128, 3, padding=2, dilation=2))
    narrow = nn.Conv2d(8, 4, 3, padding=1)
    x = torch.randn(1, 8, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(WinogradConvs()(narrow, [x]), narrow(x))  # run directly


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("fits_in_cache", [True, False])
@pytest.mark.parametrize("corr_y_major", [True, False])
def test_winograd_step_is_the_update_step(size, fits_in_cache, corr_y_major, update_step_inputs, monkeypatch):
    if not fits_in_cache:  # every transformed input too big: each convolution runs directly
        monkeypatch.setattr(winograd, "CACHE_BYTES", 2**16)
    block, context, hidden, corr, flow = update_step_inputs(size)
    step = WinogradUpdateStep(block, context, corr_y_major)
    window = block.motion_encoder.corr_window
    with torch.inference_mode():
        expected_hidden, expected_delta, expected_motion = block.step(hidden, block.plan(context), corr, flow)
        hidden_w, delta_w, motion_w = step(hidden, swap_window_axes(corr, window) if corr_y_major else corr, flow)
    taken = [isinstance(cell, winograd._FasterCell) and cell.direct is None for cell in step.cells] + [bool(step.convs.kernels)]
    assert all(taken) if fits_in_cache else not any(taken)
    torch.testing.assert_close(hidden_w, expected_hidden, atol=5e-5, rtol=0)
    torch.testing.assert_close(delta_w, expected_delta, atol=1e-4, rtol=0)
    torch.testing.assert_close(motion_w, expected_motion, atol=1e-4, rtol=0)


def test_cpu_inference_runs_the_winograd_step_and_training_and_autocast_do_not(monkeypatch):
    built = []

    class Spy(WinogradUpdateStep):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(model_module, "WinogradUpdateStep", Spy)
    model = build_model("small")
    images = torch.rand(2, 1, 3, 128, 128) * 255
    with torch.inference_mode():
        model.eval()(images[0], images[1], iters=2)
    assert len(built) == 1
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(images[0], images[1], iters=2)  # transforms would amplify bf16 rounding
    assert len(built) == 1
    model.train()(images[0], images[1], iters=2)
    assert len(built) == 1


def test_raft_large_encoders_take_the_winograd_route_where_it_fits(monkeypatch):
    taken = []

    def spy(parts, weight, kernel_size, bias=None, buffer=None):
        taken.append(parts[0].shape[1:])
        return convolve(parts, weight, kernel_size, bias, buffer)

    monkeypatch.setattr(winograd, "convolve", spy)
    model = build_model("large").eval()
    image = torch.rand(1, 3, 64, 96) * 2 - 1
    expected = model.feature_encoder(image)  # autograd on: direct convolutions
    with torch.inference_mode():
        actual = model.feature_encoder(image)
    # At this size every transformed input fits: each 3x3 stride-1 convolution of 64 channels or
    # more goes by Winograd, 4 in stage 1 and 3 in each later stage (the first is strided).
    assert len(taken) == 10
    torch.testing.assert_close(actual, expected.detach(), atol=1e-4 * expected.abs().max().item(), rtol=0)
    monkeypatch.setattr(winograd, "CACHE_BYTES", 0)  # nothing fits: all direct again
    with torch.inference_mode():
        model.feature_encoder(image)
    assert len(taken) == 10


@pytest.mark.parametrize("size", ["small", "large"])
def test_torch_compile_traces_the_plain_encoders_in_one_graph(size):
    """`FlowEngine(compile=True)` compiles the encoders: the Winograd route and the folded norms,
    whose caches dynamo cannot trace, must step aside for it (graph breaks, recompiles)."""
    model = build_model(size).eval()
    image = torch.rand(1, 3, 64, 96) * 2 - 1
    with torch.inference_mode():
        for encoder in (model.feature_encoder, model.context_encoder):
            explained = torch._dynamo.explain(encoder)(image)
            assert (explained.graph_count, explained.graph_break_count) == (1, 0)
