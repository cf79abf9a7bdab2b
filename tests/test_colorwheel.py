"""Middlebury colour coding, checked against colours derived here from the published wheel definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rafttool.io import FlowFormatError
from rafttool.viz import draw_wheel_legend, flow_arrows, flow_to_color, make_colorwheel


def reference_wheel() -> list[tuple[float, float, float]]:
    """Baker et al. 2011 wheel written out segment by segment: RY 15, YG 6, GC 4, CB 11, BM 13, MR 6."""
    wheel: list[tuple[float, float, float]] = []
    wheel += [(255, math.floor(255 * i / 15), 0) for i in range(15)]
    wheel += [(255 - math.floor(255 * i / 6), 255, 0) for i in range(6)]
    wheel += [(0, 255, math.floor(255 * i / 4)) for i in range(4)]
    wheel += [(0, 255 - math.floor(255 * i / 11), 255) for i in range(11)]
    wheel += [(math.floor(255 * i / 13), 0, 255) for i in range(13)]
    wheel += [(255, 0, 255 - math.floor(255 * i / 6)) for i in range(6)]
    return wheel


def expected_color(u: float, v: float, radius: float) -> tuple[int, int, int]:
    """Spec colour: angle a = atan2(-v, -u)/pi picks fk = (a+1)/2*(55-1) on the wheel; radius fades to white."""
    wheel = reference_wheel()
    a = math.atan2(-v, -u) / math.pi
    fk = (a + 1) / 2 * (len(wheel) - 1)
    k0 = math.floor(fk)
    f = fk - k0
    k1 = (k0 + 1) % len(wheel)
    color = [(1 - f) * wheel[k0][c] + f * wheel[k1][c] for c in range(3)]
    color = [255 - radius * (255 - x) if radius <= 1 else 0.75 * x for x in color]
    return tuple(math.floor(x) for x in color)


def test_wheel_matches_reference_definition() -> None:
    assert len(reference_wheel()) == 55
    np.testing.assert_array_equal(make_colorwheel(), np.array(reference_wheel()))


def test_known_directions_at_full_speed() -> None:
    # Image coordinates: +x right, +y down.
    directions = [
        ((1.0, 0.0), (255, 0, 0)),
        # -y: a = atan2(1, -0)/pi = 0.5 -> fk = 40.5, halfway between wheel[40] = (78, 0, 255) and wheel[41] = (98, 0, 255).
        ((0.0, -1.0), (88, 0, 255)),
        # +y: a = -0.5 -> fk = 13.5, halfway between (255, 221, 0) and (255, 238, 0).
        ((0.0, 1.0), (255, 229, 0)),
        # -x: a = 0 -> fk = 27 = CB segment, i = 2: (0, 255 - floor(510 / 11), 255).
        ((-1.0, 0.0), (0, 209, 255)),
    ]
    flow = np.array([[vec for vec, _ in directions]], np.float32)
    image = flow_to_color(flow)
    assert image.dtype == np.uint8 and image.shape == (1, len(directions), 3)
    for got, (vec, want) in zip(image[0], directions, strict=True):
        assert got.tolist() == list(want), vec
        assert want == expected_color(*vec, radius=1.0)
    # The sign of a zero component does not matter (in the formula above, atan2 takes v = -0.0
    # to the far end of the wheel, a slightly different red).
    assert flow_to_color(np.array([[[1.0, -0.0]]], np.float32))[0, 0].tolist() == [255, 0, 0]


def test_speed_sets_saturation_and_zero_motion_is_white() -> None:
    flow = np.array([[[4.0, 0.0], [2.0, 0.0], [0.0, 0.0], [1.0, 2.0]]], np.float32)
    image = flow_to_color(flow)
    assert image[0, 0].tolist() == [255, 0, 0]
    assert image[0, 1].tolist() == [255, 127, 127]  # half speed: 255 - 0.5 * 255 = 127.5 -> 127
    assert image[0, 2].tolist() == [255, 255, 255]
    assert image[0, 3].tolist() == list(expected_color(1.0, 2.0, math.hypot(1, 2) / 4))


def test_all_zero_flow_is_white() -> None:
    assert (flow_to_color(np.zeros((2, 3, 2), np.float32)) == 255).all()


def test_fixed_max_flow_gives_the_same_colour_in_every_frame() -> None:
    slow = np.array([[[1.0, 1.0], [0.0, 0.0]]], np.float32)
    fast = np.array([[[1.0, 1.0], [6.0, 0.0]]], np.float32)
    assert flow_to_color(slow)[0, 0].tolist() != flow_to_color(fast)[0, 0].tolist()
    np.testing.assert_array_equal(flow_to_color(slow, max_flow=4.0)[0, 0], flow_to_color(fast, max_flow=4.0)[0, 0])
    assert flow_to_color(slow, max_flow=4.0)[0, 0].tolist() == list(expected_color(1, 1, math.sqrt(2) / 4))
    # Beyond max_flow the reference darkens the wheel colour to 75 %.
    assert flow_to_color(fast, max_flow=4.0)[0, 1].tolist() == [191, 0, 0]


@pytest.mark.parametrize("max_flow", [0.0, -1.0, float("nan")])
def test_rejects_non_positive_max_flow(max_flow: float) -> None:
    with pytest.raises(FlowFormatError, match="max_flow"):
        flow_to_color(np.zeros((1, 1, 2), np.float32), max_flow=max_flow)


def test_unknown_pixels_are_black_and_do_not_affect_scale() -> None:
    flow = np.array([[[np.nan, 0.0], [2.0, 0.0], [1.0, np.inf]]], np.float32)
    image = flow_to_color(flow)
    assert image[0, 0].tolist() == [0, 0, 0]
    assert image[0, 2].tolist() == [0, 0, 0]
    assert image[0, 1].tolist() == [255, 0, 0]  # the only known pixel defines the full-speed radius


def test_legend_is_drawn_in_the_requested_corner() -> None:
    background = np.zeros((60, 80, 3), np.uint8)
    out = draw_wheel_legend(background, size=30, corner="bottom-right")
    assert not background.any()  # the input is not modified
    changed = out.any(axis=2)
    rows, cols = np.nonzero(changed)
    assert rows.min() >= 60 - 30 - 3 - 1 and cols.min() >= 80 - 30 - 3 - 1  # margin is size // 10 = 3
    assert rows.max() < 60 and cols.max() < 80
    centre = out[60 - 3 - 15, 80 - 3 - 15]
    assert centre.min() > 200  # near-zero motion at the disc centre is (nearly) white
    right_edge = out[60 - 3 - 15, 80 - 3 - 3]  # just inside the disc, pointing +x
    assert right_edge[0] > 200 and right_edge[1] < 80 and right_edge[2] < 80

    top_left = draw_wheel_legend(background, size=30, corner="top-left")
    rows, cols = np.nonzero(top_left.any(axis=2))
    assert rows.max() <= 3 + 30 and cols.max() <= 3 + 30


def test_legend_shrinks_on_small_images_and_rejects_bad_corner() -> None:
    tiny = np.zeros((5, 5, 3), np.uint8)
    np.testing.assert_array_equal(draw_wheel_legend(tiny, size=64), tiny)
    small = draw_wheel_legend(np.zeros((20, 20, 3), np.uint8), size=64)
    assert small.any()
    with pytest.raises(FlowFormatError, match="corner"):
        draw_wheel_legend(tiny, corner="middle")


def test_flow_arrows_draws_on_a_copy_and_skips_unknown() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    flow = np.zeros((32, 32, 2), np.float32)
    flow[..., 0] = 6.0
    out = flow_arrows(image, flow, step=16, color=(0, 255, 0))
    assert not image.any()
    assert out[8, 8:14, 1].min() > 0 and out[..., 0].max() == 0  # green arrow along +x from (8, 8)
    assert not flow_arrows(image, np.full_like(flow, np.nan)).any()
    with pytest.raises(FlowFormatError, match="use the flow computed for this image"):
        flow_arrows(image, flow[:16])
