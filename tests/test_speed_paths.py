"""The fast paths compute what the straightforward ones do (no timing here: see benchmarks/)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rafttool.api import FlowEngine
from rafttool.engine import correlation as corr_module
from rafttool.engine.correlation import (
    CorrelationPyramid,
    OnDemandCorrelation,
    build_correlation,
    full_volume_bytes,
)
from rafttool.engine.encoders import InstanceNorm
from rafttool.engine.matmul_convs import conv_to_few_channels, pointwise_conv
from rafttool.engine.model import DEFAULT_TOLERANCES, build_model, coordinate_grid
from rafttool.engine.reference import ReferenceCorrelation, as_reference, reference_forward
from rafttool.engine.trace import Trace
from rafttool.engine.update import FlowHead, swap_window_axes
from rafttool.engine.warm_start import forward_project
from rafttool.engine.weights import DEFAULT_MODEL, save_weights
from rafttool.engine.winograd import SWITCH_VARIABLE

pytestmark = pytest.mark.usefixtures("single_thread")


def _features(batch: int = 2, channels: int = 16, height: int = 19, width: int = 23, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    fmap1 = torch.randn(batch, channels, height, width, generator=generator)
    fmap2 = torch.randn(batch, channels, height, width, generator=generator)
    return fmap1, fmap2


def _coords(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    """Correspondences that exercise every case: inside, across borders, far outside, exact cells."""
    generator = torch.Generator().manual_seed(seed)
    coords = coordinate_grid(batch, height, width, torch.device("cpu"))
    coords = coords + torch.randn(batch, 2, height, width, generator=generator) * 6
    coords[:, :, 0, :4] = torch.tensor([[-0.5, 0.0, width - 1.0, width - 0.5], [0.0, -0.5, height - 0.5, height - 1.0]])
    coords[:, :, 1, :4] = torch.tensor([[1e4, -1e4, 3.0, -9.25], [2.0, 5.0, 1e4, -1e4]])
    coords[:, :, 2] = coords[:, :, 2].round()  # integer positions: zero interpolation weight on one side
    return coords


@pytest.mark.parametrize("radius", [3, 4])
def test_gather_lookup_equals_grid_sample_on_every_level(radius):
    fmap1, fmap2 = _features()
    coords = _coords(2, 19, 23)
    expected = ReferenceCorrelation(fmap1, fmap2, 4, radius)(coords)
    actual = CorrelationPyramid(fmap1, fmap2, 4, radius)(coords)
    assert actual.shape == expected.shape == (2, 4 * (2 * radius + 1) ** 2, 19, 23)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    # Far outside every level reads zero padding only.
    assert actual[:, :, 1, :2].abs().max() == 0


@pytest.mark.parametrize("store", [CorrelationPyramid, OnDemandCorrelation])
def test_y_major_lookup_is_the_x_major_one_with_its_window_axes_swapped(store):
    fmap1, fmap2 = _features()
    coords = _coords(2, 19, 23)
    correlation = store(fmap1, fmap2, 4, 3)
    with torch.inference_mode():
        x_major, y_major = correlation(coords), correlation(coords, y_major=True)
    assert not torch.equal(x_major, y_major)
    torch.testing.assert_close(swap_window_axes(y_major, 7), x_major, atol=0, rtol=0)


def test_levels_match_the_pooled_volume():
    fmap1, fmap2 = _features()
    reference = ReferenceCorrelation(fmap1, fmap2, 4, 4)
    for stored in (CorrelationPyramid(fmap1, fmap2, 4, 4), OnDemandCorrelation(fmap1, fmap2, 4, 4)):
        assert (stored.num_levels, stored.radius) == (4, 4)
        for ours, theirs in zip(stored.levels, reference.levels):
            assert ours.shape == theirs.shape
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("gather_bytes", [1, 50_000, 2**30], ids=["one-pixel-chunks", "uneven-chunks", "one-chunk"])
def test_on_demand_correlation_equals_the_full_volume(gather_bytes):
    fmap1, fmap2 = _features()
    coords = _coords(2, 19, 23)
    expected = CorrelationPyramid(fmap1, fmap2, 4, 3)(coords)
    actual = OnDemandCorrelation(fmap1, fmap2, 4, 3, gather_bytes=gather_bytes)(coords)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_correlation_stays_fp32_under_autocast():
    fmap1, fmap2 = _features()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full = CorrelationPyramid(fmap1.bfloat16(), fmap2.bfloat16(), 4, 3)
        on_demand = OnDemandCorrelation(fmap1.bfloat16(), fmap2.bfloat16(), 4, 3)
        coords = _coords(2, 19, 23)
        assert full.volume.dtype == torch.float32
        assert full(coords).dtype == on_demand(coords).dtype == torch.float32


def test_auto_mode_stores_the_volume_only_when_it_fits(monkeypatch):
    fmap1, fmap2 = _features()
    need = full_volume_bytes(2, 19, 23, 4)
    monkeypatch.setattr(corr_module, "available_memory", lambda device: int(need / corr_module.MEMORY_FRACTION) + 1)
    assert isinstance(build_correlation(fmap1, fmap2, 4, 3, "auto"), CorrelationPyramid)
    monkeypatch.setattr(corr_module, "available_memory", lambda device: need)
    assert isinstance(build_correlation(fmap1, fmap2, 4, 3, "auto"), OnDemandCorrelation)
    assert isinstance(build_correlation(fmap1, fmap2, 4, 3, "full"), CorrelationPyramid)
    monkeypatch.setattr(corr_module, "available_memory", lambda device: 100 * need)
    monkeypatch.setattr(corr_module, "CPU_FULL_VOLUME_BYTES", need // 2 - 1)  # too slow to build on a CPU
    assert isinstance(build_correlation(fmap1, fmap2, 4, 3, "auto"), OnDemandCorrelation)
    with pytest.raises(ValueError, match="unknown correlation mode"):
        build_correlation(fmap1, fmap2, 4, 3, "sparse")


def _pair(height: int = 128, width: int = 168, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, height, width + 6, generator=generator) * 255
    return image[..., 6:], image[..., :-6]


def _model(size: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(size).eval()


@pytest.mark.parametrize("winograd", ["on", "off"])  # each layer takes the route timed faster (winograd._faster_route)
@pytest.mark.parametrize(("size", "corr_mode", "batch"), [("small", "full", 1), ("large", "full", 1), ("small", "on_demand", 1), ("small", "full", 2)])
def test_exact_fast_path_equals_the_reference_path(size, corr_mode, batch, winograd, monkeypatch):
    monkeypatch.setenv(SWITCH_VARIABLE, winograd)
    model = _model(size)
    image1, image2 = _pair(batch=batch)
    iters = 12 if corr_mode == "full" else 4  # on demand: the lookup itself is compared above
    with torch.inference_mode():
        expected = reference_forward(as_reference(model), image1, image2, iters=iters)
        actual = model(image1, image2, iters=iters, corr_mode=corr_mode, all_iterations=True)
    assert actual.iterations_run == expected.iterations_run == iters
    for ours, theirs in zip(actual.iterations, expected.iterations):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.low_res_flow, expected.low_res_flow, atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", ["small", "large"])
def test_training_gradients_equal_the_reference_gradients(size):
    """Same modules, both computations: gradients of a sequence loss agree to rounding."""
    model = _model(size).train()
    image1, image2 = _pair(batch=2)
    weights = torch.randn(2, 2, 128, 168, generator=torch.Generator().manual_seed(5))

    def gradients(output) -> dict[str, torch.Tensor]:
        flows = output.iterations
        model.zero_grad()
        sum(0.8 ** (len(flows) - i) * (flow * weights).mean() for i, flow in enumerate(flows)).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    expected = gradients(reference_forward(model, image1, image2, iters=3))
    actual = gradients(model(image1, image2, iters=3, all_iterations=True))
    assert set(actual) == set(expected) and len(actual) > 50
    largest = max(g.abs().max() for g in expected.values())
    for name in expected:  # some are zero up to rounding (biases before instance norm): absolute floor
        scale = torch.maximum(expected[name].abs().max(), 1e-4 * largest)
        assert (actual[name] - expected[name]).abs().max() <= 2e-3 * scale, name


def test_instance_norm_is_torch_instance_norm_forward_and_backward():
    x = (torch.randn(2, 8, 30, 40, generator=torch.Generator().manual_seed(0)) * 3 + 5).requires_grad_()
    upstream = torch.randn(2, 8, 30, 40)
    ours = InstanceNorm(8)(x)
    (gradient,) = torch.autograd.grad((ours * upstream).sum(), x)
    theirs = torch.nn.InstanceNorm2d(8)(x)
    (expected,) = torch.autograd.grad((theirs * upstream).sum(), x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(gradient, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("kernel", "out_channels", "bias"), [((3, 3), 2, True), ((1, 5), 3, False), ((7, 7), 2, True)])
def test_convolution_to_few_channels_is_the_plain_convolution(kernel, out_channels, bias):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 9, 13, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, 16, *kernel, generator=generator)
    b = torch.randn(out_channels, generator=generator) if bias else None
    expected = torch.nn.functional.conv2d(x, weight, b, padding=(kernel[0] // 2, kernel[1] // 2))
    torch.testing.assert_close(conv_to_few_channels(x, weight, b), expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_convolution_as_a_matrix_product_is_the_convolution(layout, bias):
    conv = torch.nn.Conv2d(24, 40, 1, bias=bias)
    x = torch.randn(1, 24, 9, 13).contiguous(memory_format=layout).requires_grad_()
    ours = pointwise_conv(conv, x)
    expected = conv(x)
    assert ours.is_contiguous(memory_format=layout)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    upstream = torch.randn_like(expected)
    gradients = torch.autograd.grad((ours * upstream).sum(), (x, conv.weight))
    for ours_grad, expected_grad in zip(gradients, torch.autograd.grad((expected * upstream).sum(), (x, conv.weight))):
        torch.testing.assert_close(ours_grad, expected_grad, atol=1e-4, rtol=1e-5)


def test_pointwise_convolution_leaves_batches_and_strides_to_the_convolution():
    strided = torch.nn.Conv2d(8, 16, 1, stride=2)
    batch = torch.randn(2, 8, 6, 10)
    assert torch.equal(pointwise_conv(strided, batch[:1]), strided(batch[:1]))
    plain = torch.nn.Conv2d(8, 16, 1)
    assert torch.equal(pointwise_conv(plain, batch), plain(batch))


def test_flow_head_step_is_its_forward_at_inference():
    head = FlowHead(32, 48)
    h = torch.randn(1, 32, 11, 17).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(head.step(h), head(h), atol=1e-5, rtol=1e-5)


def _frozen_flow_head(model: torch.nn.Module) -> torch.nn.Module:
    """A model whose update is exactly zero: the flow has converged from the first iteration."""
    with torch.no_grad():
        model.update_block.flow_head.conv2.weight.zero_()
        model.update_block.flow_head.conv2.bias.zero_()
    return model


def test_adaptive_iterations_stop_once_the_update_is_below_tolerance():
    model = _frozen_flow_head(_model("small"))
    image1, image2 = _pair()
    with torch.inference_mode():
        assert model(image1, image2, iters=12, tolerance=0.01).iterations_run == 1
        assert model(image1, image2, iters=12, tolerance=0.01, check_every=4).iterations_run == 4


def test_adaptive_iterations_never_exceed_the_maximum():
    model = _model("small")
    image1, image2 = _pair()
    with torch.inference_mode():
        fixed = model(image1, image2, iters=5)
        adaptive = model(image1, image2, iters=5, tolerance=1e-12)
    assert adaptive.iterations_run == fixed.iterations_run == 5
    torch.testing.assert_close(adaptive.flow, fixed.flow)


def test_trace_keeps_the_correlation_with_its_levels():
    model = _model("small")
    image1, image2 = _pair()
    for mode in ("full", "on_demand"):
        trace = Trace()
        with torch.inference_mode():
            model(image1, image2, iters=2, trace=trace, corr_mode=mode)
        correlation = trace.objects["correlation"]
        assert (correlation.num_levels, correlation.radius) == (4, 3)
        assert [tuple(level.shape) for level in correlation.levels] == [(16 * 21, 1, 16 // 2**i, 21 // 2**i) for i in range(4)]
        assert len(trace.per_iteration["corr"]) == 2


def test_a_sequence_encodes_each_frame_once_and_matches_pairwise_flow():
    model = _model("small")
    generator = torch.Generator().manual_seed(3)
    strip = torch.rand(1, 3, 128, 180, generator=generator) * 255
    frames = [strip[..., 6 * i : 6 * i + 160] for i in range(3)]
    calls = []
    handle = model.feature_encoder.register_forward_hook(lambda module, inputs, output: calls.append(output.shape[0]))
    with torch.inference_mode():
        cold = list(model.flow_sequence(iter(frames), iters=3, warm_start=False))
        warm = list(model.flow_sequence(iter(frames), iters=3, warm_start=True))
    handle.remove()
    assert calls == [1] * 6  # three frames per pass, each encoded alone and once
    with torch.inference_mode():
        for i, output in enumerate(cold):
            torch.testing.assert_close(output.flow, model(frames[i], frames[i + 1], iters=3).flow, atol=1e-4, rtol=0)
        second = model(frames[1], frames[2], iters=3, flow_init=forward_project(warm[0].low_res_flow))
    torch.testing.assert_close(warm[0].flow, cold[0].flow)
    torch.testing.assert_close(warm[1].flow, second.flow, atol=1e-4, rtol=0)


def test_engine_adapts_iterations_by_default_and_reuses_a_video_frame_s_features(tmp_path):
    save_weights(tmp_path / "w.pt", _frozen_flow_head(_model("small")))
    assert FlowEngine(device="cpu").tolerance == DEFAULT_TOLERANCES[DEFAULT_MODEL]  # the bundled weights' measured default
    assert FlowEngine(model="small", device="cpu").tolerance == DEFAULT_TOLERANCES["small"]
    assert FlowEngine(model="large", device="cpu").tolerance == DEFAULT_TOLERANCES["large"]
    assert FlowEngine(weights=tmp_path / "w.pt", device="cpu").tolerance is None  # a user's: the original's iterations
    engine = FlowEngine(weights=tmp_path / "w.pt", device="cpu", tolerance=DEFAULT_TOLERANCES["small"])
    fixed = FlowEngine(weights=tmp_path / "w.pt", device="cpu", tolerance=None, iters=3)
    assert engine.iters == 12
    frames = [np.random.default_rng(i).integers(0, 255, (128, 136, 3), dtype=np.uint8) for i in range(3)]
    encoded = []
    engine.model.feature_encoder.register_forward_hook(lambda module, inputs, output: encoded.append(output.shape[0]))
    pairs = list(engine.estimate_sequence(frames))
    assert encoded == [2, 1]  # the second pair computes only its new frame
    assert [p.result.iterations_run for p in pairs] == [1, 1]  # converged at once
    assert fixed.estimate_batch(frames[:1], frames[1:2])[0].iterations_run == 3


def test_stored_volume_sums_every_lookup_s_gradient_as_grid_sample_does():
    """Training's lookups add their gradients into one shared buffer instead of one per lookup."""
    fmap1, fmap2 = (f.requires_grad_() for f in _features())
    lookups = [(_coords(2, 19, 23, seed), torch.randn(2, 4 * 49, 19, 23, generator=torch.Generator().manual_seed(seed))) for seed in (1, 2, 3)]

    def loss(store: type) -> torch.Tensor:
        correlation = store(fmap1, fmap2, 4, 3)
        return sum((correlation(coords) * upstream).sum() for coords, upstream in lookups)

    expected = torch.autograd.grad(loss(ReferenceCorrelation), (fmap1, fmap2))
    ours = loss(CorrelationPyramid)
    first = torch.autograd.grad(ours, (fmap1, fmap2), retain_graph=True)
    second = torch.autograd.grad(ours, (fmap1, fmap2))  # starts from an empty sum again
    for a, b, reference in zip(first, second, expected):
        torch.testing.assert_close(a, reference, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(b, a)
    # In y-major window order the same samples come reordered, and so does their gradient.
    coords, upstream = lookups[0]
    x_major = torch.autograd.grad((CorrelationPyramid(fmap1, fmap2, 4, 3)(coords) * swap_window_axes(upstream, 7)).sum(), (fmap1, fmap2))
    y_major = torch.autograd.grad((CorrelationPyramid(fmap1, fmap2, 4, 3)(coords, y_major=True) * upstream).sum(), (fmap1, fmap2))
    for a, b in zip(y_major, x_major):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_training_lookups_may_reuse_a_workspace_from_step_to_step():
    """The volume and its gradient keep their memory; each step's gradient is its own."""
    workspace = corr_module.VolumeWorkspace()
    coords = _coords(2, 19, 23)
    for seed in (0, 1):  # the second step overwrites the first one's buffers
        fmap1, fmap2 = (f.requires_grad_() for f in _features(seed=seed))
        upstream = torch.randn(2, 4 * 49, 19, 23, generator=torch.Generator().manual_seed(seed))
        fresh = torch.autograd.grad((CorrelationPyramid(fmap1, fmap2, 4, 3)(coords) * upstream).sum(), (fmap1, fmap2))
        kept = torch.autograd.grad((CorrelationPyramid(fmap1, fmap2, 4, 3, workspace)(coords) * upstream).sum(), (fmap1, fmap2))
        for a, b in zip(kept, fresh):
            torch.testing.assert_close(a, b)


def test_on_demand_correlation_has_the_full_volume_s_gradient():
    fmap1, fmap2 = (f.requires_grad_() for f in _features())
    coords = _coords(2, 19, 23)
    upstream = torch.randn(2, 4 * 49, 19, 23, generator=torch.Generator().manual_seed(2))
    expected = torch.autograd.grad((CorrelationPyramid(fmap1, fmap2, 4, 3)(coords) * upstream).sum(), (fmap1, fmap2))
    actual = torch.autograd.grad((OnDemandCorrelation(fmap1, fmap2, 4, 3, gather_bytes=50_000)(coords) * upstream).sum(), (fmap1, fmap2))
    for ours, theirs in zip(actual, expected):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
