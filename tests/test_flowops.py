"""Backward warping, forward-backward occlusion and flow statistics on synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest

from rafttool.flowops import flow_magnitude_stats, forward_backward_occlusion, warp_backward
from rafttool.io import FlowFormatError


def constant_flow(height: int, width: int, u: float, v: float) -> np.ndarray:
    flow = np.empty((height, width, 2), np.float32)
    flow[...] = (u, v)
    return flow


@pytest.mark.parametrize("channels", [None, 1, 3, 5])
def test_integer_shift_is_undone_exactly(channels: int | None) -> None:
    rng = np.random.default_rng(0)
    shape = (12, 16) if channels is None else (12, 16, channels)
    frame1 = rng.integers(0, 256, size=shape, dtype=np.uint8)
    frame2 = np.zeros_like(frame1)
    frame2[2:, 3:] = frame1[:-2, :-3]  # content moved by (+3, +2)
    warped, inside = warp_backward(frame2, constant_flow(12, 16, 3, 2))
    assert warped.dtype == np.uint8 and warped.shape == frame1.shape
    np.testing.assert_array_equal(warped[:-2, :-3], frame1[:-2, :-3])
    expected_inside = np.zeros((12, 16), bool)
    expected_inside[:-2, :-3] = True
    np.testing.assert_array_equal(inside, expected_inside)


def test_subpixel_shift_of_a_plane_is_exact() -> None:
    ys, xs = np.mgrid[0:10, 0:14].astype(np.float32)
    frame1 = 2.0 * xs + 3.0 * ys
    frame2 = 2.0 * (xs - 0.5) + 3.0 * (ys + 0.25)  # content moved by (+0.5, -0.25)
    warped, inside = warp_backward(frame2, constant_flow(10, 14, 0.5, -0.25))
    assert warped.dtype == np.float32
    np.testing.assert_allclose(warped[1:, :-1], frame1[1:, :-1], atol=1e-4)
    assert not inside[0].any() and not inside[:, -1].any() and inside[1:, :-1].all()


def test_subpixel_shift_of_a_smooth_image_is_close() -> None:
    ys, xs = np.mgrid[0:16, 0:16].astype(np.float64)
    pattern = lambda x, y: np.sin(0.4 * x) + np.cos(0.3 * y)  # noqa: E731
    frame2 = pattern(xs - 1.25, ys - 0.5)
    warped, _ = warp_backward(frame2, constant_flow(16, 16, 1.25, 0.5))
    assert warped.dtype == np.float64
    np.testing.assert_allclose(warped[:-2, :-2], pattern(xs, ys)[:-2, :-2], atol=0.03)


def test_inside_mask_at_the_left_border_and_unknown_flow() -> None:
    flow = constant_flow(3, 6, -1.5, 0.0)
    flow[1, 4] = np.nan
    warped, inside = warp_backward(np.ones((3, 6), np.float32), flow)
    assert inside.tolist()[0] == [False, False, True, True, True, True]
    assert not inside[1, 4] and warped[1, 4] == 0.0


def test_warp_rejects_mismatched_shapes_and_dtypes() -> None:
    with pytest.raises(FlowFormatError, match="does not match"):
        warp_backward(np.zeros((4, 5)), constant_flow(4, 6, 0, 0))
    with pytest.raises(FlowFormatError, match="dtype"):
        warp_backward(np.zeros((4, 5), np.int64), constant_flow(4, 5, 0, 0))


def two_layer_scene(shift: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static background with a square moving right by ``shift``; returns fw, bw and the occluded mask."""
    height, width, top, bottom, left, right = 20, 30, 6, 14, 8, 16
    fw = np.zeros((height, width, 2), np.float32)
    fw[top:bottom, left:right, 0] = shift
    bw = np.zeros_like(fw)
    bw[top:bottom, left + shift : right + shift, 0] = -shift
    occluded = np.zeros((height, width), bool)
    occluded[top:bottom, right : right + shift] = True  # background covered by the square in frame 2
    return fw, bw, occluded


def test_fb_check_flags_the_covered_background_only() -> None:
    fw, bw, occluded = two_layer_scene()
    mask = forward_backward_occlusion(fw, bw)
    np.testing.assert_array_equal(mask, occluded)


def test_fb_check_flags_out_of_frame_and_unknown() -> None:
    fw = constant_flow(4, 8, 2, 0)
    bw = constant_flow(4, 8, -2, 0)
    bw[0, 5] = np.nan
    mask = forward_backward_occlusion(fw, bw)
    assert mask[:, -2:].all()  # target beyond the right border
    assert mask[0, 3]  # target is the unknown pixel
    assert not mask[1:, :-2].any() and not mask[0, :2].any()


def test_magnitude_stats() -> None:
    flow = np.array([[[3.0, 4.0], [0.0, 0.0], [np.nan, 1.0]]], np.float32)
    assert flow_magnitude_stats(flow) == {
        "height": 1,
        "width": 3,
        "mean_magnitude": 2.5,
        "max_magnitude": 5.0,
        "unknown_pixels": 1,
    }
    empty = flow_magnitude_stats(np.full((2, 2, 2), np.nan, np.float32))
    assert empty["mean_magnitude"] is None and empty["max_magnitude"] is None and empty["unknown_pixels"] == 4
