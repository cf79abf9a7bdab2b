"""Middlebury flow colour coding (Baker et al., "A Database and Evaluation Methodology for
Optical Flow", IJCV 2011): hue gives the direction, saturation the speed.
"""

from __future__ import annotations

import cv2
import numpy as np

from rafttool.io.errors import FlowFormatError, as_flow_array
from rafttool.io.images import to_rgb_uint8

# The reference wheel: per segment its length (chosen for perceptually even hue steps), the colour it
# starts from, the channel that ramps and whether it ramps up or down, by floor(255 * i / length).
_SEGMENTS = (
    (15, (255, 0, 0), 1, True),  # red -> yellow
    (6, (255, 255, 0), 0, False),  # yellow -> green
    (4, (0, 255, 0), 2, True),  # green -> cyan
    (11, (0, 255, 255), 1, False),  # cyan -> blue
    (13, (0, 0, 255), 0, True),  # blue -> magenta
    (6, (255, 0, 255), 2, False),  # magenta -> red
)
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def make_colorwheel() -> np.ndarray:
    """The 55 reference wheel colours as float (55, 3) RGB in 0..255, starting at red."""
    blocks = []
    for length, start, channel, up in _SEGMENTS:
        ramp = np.floor(255 * np.arange(length) / length)
        block = np.tile(np.array(start, dtype=np.float64), (length, 1))
        block[:, channel] = ramp if up else 255 - ramp
        blocks.append(block)
    return np.concatenate(blocks)


COLORWHEEL = make_colorwheel()
COLORWHEEL.flags.writeable = False


def _colorize(u: np.ndarray, v: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Colour of each vector; ``radius`` is its length relative to the normalising maximum."""
    ncols = len(COLORWHEEL)
    angle = np.arctan2(-v, -u) / np.pi
    angle[angle >= 1.0] = -1.0  # +x is +pi or -pi depending on the sign of a zero v; pick the red end
    fk = (angle + 1.0) / 2.0 * (ncols - 1)
    k0 = np.floor(fk).astype(np.intp)
    k1 = (k0 + 1) % ncols
    f = (fk - k0)[..., None]
    color = (1.0 - f) * COLORWHEEL[k0] + f * COLORWHEEL[k1]
    r = radius[..., None]
    # Within the unit disc fade towards white at zero motion; beyond it darken, as the reference does.
    color = np.where(r <= 1.0, 255.0 - r * (255.0 - color), color * 0.75)
    return np.floor(color).astype(np.uint8)


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Colour-code flow as uint8 (H, W, 3) RGB; unknown (non-finite) pixels are black.

    Speeds are normalised by the image's own largest finite speed, or by ``max_flow`` when given
    so that every frame of a video uses the same scale and colours do not flicker.
    """
    flow = as_flow_array(flow).astype(np.float64)
    known = np.isfinite(flow).all(axis=2)
    u = np.where(known, flow[..., 0], 0.0)
    v = np.where(known, flow[..., 1], 0.0)
    radius = np.hypot(u, v)
    if max_flow is None:
        scale = max(float(radius.max()), 1e-6)  # all-zero flow stays white instead of dividing by 0
    elif max_flow > 0 and np.isfinite(max_flow):
        scale = float(max_flow)
    else:
        raise FlowFormatError(f"max_flow must be a positive number, got {max_flow}")
    image = _colorize(u, v, radius / scale)
    image[~known] = 0
    return image


def draw_wheel_legend(image: np.ndarray, size: int = 64, corner: str = "bottom-right") -> np.ndarray:
    """Return a copy of an RGB image with a colour-wheel key disc in one corner.

    The disc shows the colour of each direction at full speed (centre white). It shrinks to fit
    small images and is left out when not even a small disc fits.
    """
    if corner not in CORNERS:
        raise FlowFormatError(f"unknown legend corner '{corner}'; use one of {', '.join(CORNERS)}")
    if size <= 0:
        raise FlowFormatError(f"legend size must be positive, got {size}")
    out = to_rgb_uint8(image).copy()
    height, width = out.shape[:2]
    margin = max(2, size // 10)
    size = min(size, height - 2 * margin, width - 2 * margin)
    if size < 8:
        return out
    centre = (size - 1) / 2.0
    dy, dx = (np.mgrid[0:size, 0:size] - centre) / (size / 2.0)
    disc = np.hypot(dx, dy) <= 1.0
    top = margin if corner.startswith("top") else height - margin - size
    left = margin if corner.endswith("left") else width - margin - size
    patch = out[top : top + size, left : left + size]
    patch[disc] = _colorize(dx, dy, np.hypot(dx, dy))[disc]
    subpixel = 16  # cv2 drawing takes fixed-point coordinates with shift=4
    centre_px = (round((left + centre) * subpixel), round((top + centre) * subpixel))
    cv2.circle(out, centre_px, round(size / 2 * subpixel), (64, 64, 64), 1, cv2.LINE_AA, shift=4)
    return out


def flow_arrows(
    image: np.ndarray,
    flow: np.ndarray,
    step: int = 16,
    scale: float = 1.0,
    color: tuple[int, int, int] = (255, 255, 255),
    thickness: int = 1,
) -> np.ndarray:
    """Return a copy of an RGB image with flow arrows drawn on a grid every ``step`` pixels.

    Arrows start at the pixel centre of each grid cell and are ``scale`` times the flow; unknown
    pixels get no arrow.
    """
    if step <= 0:
        raise FlowFormatError(f"arrow step must be positive, got {step}")
    out = to_rgb_uint8(image).copy()
    flow = as_flow_array(flow)
    if flow.shape[:2] != out.shape[:2]:
        raise FlowFormatError(
            f"flow is {flow.shape[1]}x{flow.shape[0]} but the image is {out.shape[1]}x{out.shape[0]}; "
            "use the flow computed for this image"
        )
    for y in range(step // 2, out.shape[0], step):
        for x in range(step // 2, out.shape[1], step):
            u, v = flow[y, x]
            if not (np.isfinite(u) and np.isfinite(v)):
                continue
            tip = (int(round(x + scale * u)), int(round(y + scale * v)))
            length = max(np.hypot(tip[0] - x, tip[1] - y), 1.0)
            cv2.arrowedLine(out, (x, y), tip, color, thickness, cv2.LINE_AA, tipLength=min(0.3, 6.0 / length))
    return out
