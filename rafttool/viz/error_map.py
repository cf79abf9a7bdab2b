"""Where a method goes wrong on one pair: a 2x2 mosaic of the first image, the end-point-error
heat map, and the GT and predicted flows colour-coded on one shared speed scale.

The heat map uses a fixed error scale rather than each pair's own maximum, so mosaics of
different methods and pairs can be compared by eye; both flows use the GT's largest speed so
equal colours mean equal motion.
"""

from __future__ import annotations

import cv2
import numpy as np

from rafttool.evaluate import endpoint_error
from rafttool.io.images import to_rgb_uint8
from rafttool.viz.colorwheel import draw_wheel_legend, flow_to_color

UNSCORED_GRAY = 96


def error_heat_map(epe: np.ndarray, scored: np.ndarray, max_error: float) -> np.ndarray:
    """EPE as uint8 RGB through the inferno colour map, saturating at ``max_error``; unscored pixels gray."""
    level = np.clip(np.nan_to_num(epe) / max_error, 0.0, 1.0)
    heat = cv2.applyColorMap(np.round(level * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1].copy()
    heat[~scored] = UNSCORED_GRAY
    return heat


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    """Write a white caption on a darkened strip in the top-left corner, readable on any colour.

    A darkened box rather than an outlined glyph: OpenCV 5's font renderer draws thickness as
    weight, so a thinner white pass over a thicker black one no longer leaves an outline.
    """
    scale = max(0.4, panel.shape[1] / 1200)
    stroke = max(1, round(1.5 * scale))
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, stroke)
    pad = max(3, height // 3)
    box = panel[: height + baseline + 2 * pad, : width + 2 * pad]
    box[...] = box // 3
    origin = (pad, pad + height)
    cv2.putText(panel, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), stroke, cv2.LINE_AA)
    return panel


def error_mosaic(
    image1: np.ndarray,
    gt: np.ndarray,
    prediction: np.ndarray,
    scored: np.ndarray,
    max_error: float = 10.0,
) -> np.ndarray:
    """[image 1 | EPE heat map] over [GT flow | predicted flow] as one uint8 RGB image."""
    epe = endpoint_error(prediction, gt)
    scored = scored & np.isfinite(epe)
    speed = np.linalg.norm(gt, axis=2)
    max_flow = float(np.nanmax(speed[scored])) if scored.any() else 1.0
    mean = float(epe[scored].mean()) if scored.any() else float("nan")
    panels = [
        _label(to_rgb_uint8(image1).copy(), "image 1"),
        _label(error_heat_map(epe, scored, max_error), f"EPE {mean:.2f} px (scale 0-{max_error:g} px)"),
        _label(draw_wheel_legend(flow_to_color(gt, max(max_flow, 1e-3))), f"ground truth (max {max_flow:.1f} px)"),
        _label(flow_to_color(prediction, max(max_flow, 1e-3)), "prediction (same scale)"),
    ]
    return np.vstack([np.hstack(panels[:2]), np.hstack(panels[2:])])
