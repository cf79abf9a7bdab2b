"""Write a :class:`~rafttool.inspect.capture.Capture` as a self-contained HTML report.

The report is one folder: ``index.html`` plus the PNG and GIF pictures it shows, with inline CSS
and SVG only, so it opens from disk on a machine without network access. Maps on the 1/8 grid
are enlarged with nearest-neighbour interpolation so that each grid cell stays a visible block.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from rafttool.engine.padding import STRIDE
from rafttool.flowops import warp_backward
from rafttool.inspect.capture import Capture, PixelTrace
from rafttool.io.atomic import atomic_write
from rafttool.io.images import write_image
from rafttool.viz.colorwheel import draw_wheel_legend, flow_to_color

RGB = tuple[int, int, int]

# Marker colours per chosen pixel, picked to stand out against viridis (blue-green-yellow) maps.
PALETTE: tuple[RGB, ...] = ((255, 64, 160), (255, 110, 20), (0, 210, 255), (190, 120, 255), (255, 255, 255), (255, 40, 40))
FEATURE_CHANNELS = 16
MOTION_CHANNELS = 8
MOTION_STEPS = 6
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.4
SUBPIXEL_BITS = 4  # cv2 drawing in fixed point, so markers land between pixels where they should
BACKGROUND = 255
FRAME_WIDTH = 380  # shown width of whole frames: three side by side on a laptop screen


def pixel_colour(index: int) -> RGB:
    return PALETTE[index % len(PALETTE)]


# ----------------------------------------------------------------------------- picture helpers


def colourize(values: np.ndarray, lo: float, hi: float, colormap: int = cv2.COLORMAP_VIRIDIS) -> np.ndarray:
    """Map ``values`` linearly from [lo, hi] onto an OpenCV colour map, as RGB."""
    span = hi - lo if hi > lo else 1.0
    scaled = np.clip((np.nan_to_num(values, nan=lo) - lo) / span * 255.0, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.applyColorMap(scaled, colormap)[..., ::-1])


def enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement: each input pixel becomes a factor x factor block."""
    return np.ascontiguousarray(np.repeat(np.repeat(image, factor, axis=0), factor, axis=1))


def display_scale(width: int, target: int, minimum: int = 2) -> int:
    """Integer enlargement that brings a map ``width`` cells wide to about ``target`` pixels."""
    return max(minimum, math.ceil(target / max(width, 1)))


def _fixed(value: float) -> int:
    return int(round(value * (1 << SUBPIXEL_BITS)))


def cell_to_px(coord: float, scale: int) -> float:
    """Map coordinate (cell centres at integers) -> drawing coordinate in a map enlarged by ``scale``."""
    return (coord + 0.5) * scale - 0.5


def draw_cross(image: np.ndarray, x: float, y: float, size: float, colour: RGB) -> None:
    for thickness, ink in ((3, (0, 0, 0)), (1, colour)):
        for dx, dy in ((size, 0), (0, size)):
            p1, p2 = (_fixed(x - dx), _fixed(y - dy)), (_fixed(x + dx), _fixed(y + dy))
            cv2.line(image, p1, p2, ink, thickness, cv2.LINE_AA, shift=SUBPIXEL_BITS)


def draw_ring(image: np.ndarray, x: float, y: float, radius: float, colour: RGB, width: int = 2) -> None:
    for thickness, ink in ((width + 2, (0, 0, 0)), (width, colour)):
        cv2.circle(image, (_fixed(x), _fixed(y)), _fixed(radius), ink, thickness, cv2.LINE_AA, shift=SUBPIXEL_BITS)


def draw_box(image: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour: RGB) -> None:
    for thickness, ink in ((4, (0, 0, 0)), (2, colour)):
        cv2.rectangle(image, (_fixed(x0), _fixed(y0)), (_fixed(x1), _fixed(y1)), ink, thickness, cv2.LINE_AA, shift=SUBPIXEL_BITS)


def draw_window(image: np.ndarray, cx: float, cy: float, radius: int, scale: int, colour: RGB) -> None:
    """Outline the (2r+1)^2 lookup window centred on map coordinate (cx, cy)."""
    x0, y0 = cell_to_px(cx - radius - 0.5, scale), cell_to_px(cy - radius - 0.5, scale)
    x1, y1 = cell_to_px(cx + radius + 0.5, scale), cell_to_px(cy + radius + 0.5, scale)
    draw_box(image, x0, y0, x1, y1, colour)


def tag(image: np.ndarray, text: str, x: int = 3, y: int = 12, size: float = 1.0) -> np.ndarray:
    """Write ``text`` into a picture's corner, outlined so it reads on any background."""
    thickness = max(1, round(size))
    cv2.putText(image, text, (x, y), FONT, FONT_SCALE * size, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), FONT, FONT_SCALE * size, (255, 255, 255), thickness, cv2.LINE_AA)
    return image


def table(
    cells: Sequence[Sequence[np.ndarray]],
    col_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    gap: int = 4,
) -> np.ndarray:
    """Lay out RGB tiles in rows and columns on a white canvas, with optional labels."""
    tile_h = max(t.shape[0] for row in cells for t in row)
    tile_w = max(t.shape[1] for row in cells for t in row)
    text_h = cv2.getTextSize("Ag", FONT, FONT_SCALE, 1)[0][1] + 8
    top = text_h if col_labels else 0
    left = max(cv2.getTextSize(label, FONT, FONT_SCALE, 1)[0][0] for label in row_labels) + 8 if row_labels else 0
    columns = max(len(row) for row in cells)
    height = top + len(cells) * (tile_h + gap) - gap
    width = left + columns * (tile_w + gap) - gap
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for r, row in enumerate(cells):
        y = top + r * (tile_h + gap)
        if row_labels:
            cv2.putText(canvas, row_labels[r], (2, y + tile_h // 2 + 4), FONT, FONT_SCALE, (40, 40, 40), 1, cv2.LINE_AA)
        for c, tile in enumerate(row):
            x = left + c * (tile_w + gap)
            canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    for c, label in enumerate(col_labels or []):
        cv2.putText(canvas, label, (left + c * (tile_w + gap) + 2, text_h - 5), FONT, FONT_SCALE, (40, 40, 40), 1, cv2.LINE_AA)
    return canvas


def wrap(tiles: Sequence[np.ndarray], columns: int) -> list[list[np.ndarray]]:
    return [list(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]


def write_gif(path: Path, frames: Sequence[np.ndarray], frame_ms: int, last_ms: int) -> None:
    """Looping animated GIF, written atomically; the last frame holds longer so the result reads."""
    images = [Image.fromarray(frame) for frame in frames]
    durations = [frame_ms] * (len(images) - 1) + [last_ms]
    with atomic_write(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)


def line_plot_svg(values: Sequence[float], x_label: str, y_label: str, width: int = 520, height: int = 260) -> str:
    """A small inline-SVG line chart of values over iterations 1..N, with axes and ticks."""
    left, right, top, bottom = 72, 16, 14, 40
    top_value = max(max(values, default=0.0), 1e-9) * 1.1
    count = len(values)

    def px(k: int, v: float) -> tuple[float, float]:
        x = left + (width - left - right) * ((k - 1) / (count - 1) if count > 1 else 0.5)
        return x, top + (height - top - bottom) * (1 - v / top_value)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" class="plot">']
    parts.append(f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" class="frame"/>')
    for i in range(5):
        v = top_value * i / 4
        _, y = px(1, v)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    for k in range(1, count + 1):
        x, _ = px(k, 0)
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{k}</text>')
    points = [px(k, v) for k, v in enumerate(values, start=1)]
    parts.append('<polyline class="line" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
    for (x, y), v in zip(points, values):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" class="dot"><title>{v:.4g}</title></circle>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(
        f'<text transform="translate(14 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">{html.escape(y_label)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------- report pictures


def _top_channels(score: np.ndarray, count: int) -> list[int]:
    return [int(c) for c in np.argsort(-score, kind="stable")[:count]]


def feature_grid(maps: Sequence[np.ndarray], channels: Sequence[int], target: int = 150) -> list[np.ndarray]:
    """One 4-column grid per feature map (C, h, w), same channels and per-channel scale across maps.

    Sharing the scale between the frames makes a feature that matches look alike in both.
    """
    scale = display_scale(maps[0].shape[-1], target)
    grids = []
    for fmap in maps:
        tiles = []
        for c in channels:
            lo = min(float(m[c].min()) for m in maps)
            hi = max(float(m[c].max()) for m in maps)
            tiles.append(tag(enlarge(colourize(fmap[c], lo, hi), scale), f"ch {c}"))
        grids.append(table(wrap(tiles, 4)))
    return grids


def mark_pixels(image: np.ndarray, points: Sequence[tuple[float, float]]) -> np.ndarray:
    """Copy of ``image`` with numbered rings at the given (x, y) positions.

    Markers grow with the frame so that they stay visible when it is shown FRAME_WIDTH wide.
    """
    out = image.copy()
    size = max(1.0, image.shape[1] / FRAME_WIDTH)
    for i, (x, y) in enumerate(points):
        draw_ring(out, x, y, 6 * size, pixel_colour(i), round(2 * size))
        tag(out, str(i + 1), int(round(x + 8 * size)), int(round(y - 6 * size)), size * 1.5)
    return out


def photometric_error(cap: Capture) -> tuple[np.ndarray, np.ndarray, float]:
    """Frame 2 warped onto frame 1 by the flow, its error picture, and the mean error inside the frame."""
    warped, inside = warp_backward(cap.image2, cap.flow)
    error = np.abs(cap.image1.astype(np.float32) - warped.astype(np.float32)).mean(axis=2)
    hi = float(np.percentile(error[inside], 99)) if inside.any() else 1.0
    picture = colourize(error, 0.0, max(hi, 1.0), cv2.COLORMAP_INFERNO)
    picture[~inside] = 128  # grey: the flow points outside frame 2, there is nothing to compare
    mean = float(error[inside].mean()) if inside.any() else float("nan")
    return warped, picture, mean


def response_row(pixel: PixelTrace, index: int, radius: int, target: int = 240) -> np.ndarray:
    """The pixel's correlation map at every pyramid level, with its position, x' and the window."""
    scale0 = display_scale(pixel.response[0].shape[-1], target)
    final = pixel.coords[-1]
    tiles = []
    for level, response in enumerate(pixel.response):
        scale = scale0 * 2**level
        tile = enlarge(colourize(response, float(response.min()), float(response.max())), scale)
        factor = 2.0**level
        draw_window(tile, final[0] / factor, final[1] / factor, radius, scale, pixel_colour(index))
        draw_cross(tile, cell_to_px(pixel.cell[0] / factor, scale), cell_to_px(pixel.cell[1] / factor, scale), 6, (255, 255, 255))
        draw_ring(tile, cell_to_px(final[0] / factor, scale), cell_to_px(final[1] / factor, scale), 5, pixel_colour(index))
        tiles.append(tile)
    labels = [f"level {level}: 1/{STRIDE * 2**level}" for level in range(len(tiles))]
    return table([tiles], col_labels=labels)


def lookup_table(pixel: PixelTrace, cell_px: int = 10) -> np.ndarray:
    """Rows: levels; columns: iterations; each tile the (2r+1)^2 values the update block read.

    Colours use each level's full response-map range, so they match the maps above.
    """
    rows = []
    for level, response in enumerate(pixel.response):
        lo, hi = float(response.min()), float(response.max())
        row = []
        for window in pixel.windows[:, level]:
            tile = enlarge(colourize(window, lo, hi), cell_px)
            centre = cell_to_px(window.shape[0] // 2, cell_px)
            draw_cross(tile, centre, centre, cell_px / 2, (255, 255, 255))
            row.append(tile)
        rows.append(row)
    return table(
        rows,
        col_labels=[f"k={k}" for k in range(1, len(pixel.windows) + 1)],
        row_labels=[f"level {level}" for level in range(len(rows))],
    )


def trajectory_frames(pixel: PixelTrace, index: int, radius: int, target: int = 320, margin: int = 6) -> list[np.ndarray]:
    """The correspondence's path after 0, 1, ..., N iterations on the level-0 response map.

    The map is cropped to the path plus the lookup window and ``margin`` cells, so the steps stay
    visible on large frames; colours keep the full map's range, as in section 3.
    """
    response = pixel.response[0]
    height, width = response.shape
    reach = radius + margin
    x0 = max(int(np.floor(pixel.coords[:, 0].min())) - reach, 0)
    x1 = min(int(np.ceil(pixel.coords[:, 0].max())) + reach, width - 1)
    y0 = max(int(np.floor(pixel.coords[:, 1].min())) - reach, 0)
    y1 = min(int(np.ceil(pixel.coords[:, 1].max())) + reach, height - 1)
    crop = response[y0 : y1 + 1, x0 : x1 + 1]
    scale = display_scale(crop.shape[1], target)
    base = enlarge(colourize(crop, float(response.min()), float(response.max())), scale)
    coords = pixel.coords - (x0, y0)
    path = [(cell_to_px(x, scale), cell_to_px(y, scale)) for x, y in coords]
    frames = []
    for k in range(len(path)):
        frame = base.copy()
        draw_cross(frame, *path[0], 6, (255, 255, 255))
        if k:
            line = np.array([[_fixed(x), _fixed(y)] for x, y in path[: k + 1]], dtype=np.int32)
            cv2.polylines(frame, [line], False, (0, 0, 0), 3, cv2.LINE_AA, shift=SUBPIXEL_BITS)
            cv2.polylines(frame, [line], False, pixel_colour(index), 1, cv2.LINE_AA, shift=SUBPIXEL_BITS)
        draw_window(frame, *coords[k], radius, scale, pixel_colour(index))
        draw_ring(frame, *path[k], 4, pixel_colour(index))
        frames.append(tag(frame, "start" if k == 0 else f"after k={k}"))
    return frames


def motion_table(cap: Capture, target: int = 96) -> tuple[np.ndarray, list[int]]:
    """The learned motion channels that change most over the iterations, one row each.

    The last two channels are the flow itself, passed through; they are left out so the picture
    shows what the encoder computed. Each row shares one scale over the iterations; of many
    iterations, MOTION_STEPS evenly spaced ones (first and last included) are shown.
    """
    learned = cap.motion[:, :-2]
    if len(learned) > 1:
        score = np.abs(np.diff(learned, axis=0)).mean(axis=(0, 2, 3))
    else:
        score = learned[0].var(axis=(1, 2))
    channels = _top_channels(score, MOTION_CHANNELS)
    steps = np.unique(np.linspace(0, len(learned) - 1, min(len(learned), MOTION_STEPS)).round().astype(int))
    scale = display_scale(learned.shape[-1], target, minimum=1)
    rows = []
    for c in channels:
        lo, hi = float(learned[:, c].min()), float(learned[:, c].max())
        rows.append([enlarge(colourize(learned[k, c], lo, hi), scale) for k in steps])
    picture = table(rows, col_labels=[f"k={k + 1}" for k in steps], row_labels=[f"ch {c}" for c in channels])
    return picture, channels


def upsampling_pair(cap: Capture) -> tuple[np.ndarray, np.ndarray]:
    """The 1/8 flow (blocks, cropped like the output) and the final flow, on one colour scale."""
    coarse = STRIDE * cap.low_res_flow
    speed = max(float(np.hypot(*coarse.transpose(2, 0, 1)).max()), float(np.hypot(*cap.flow.transpose(2, 0, 1)).max()), 1e-6)
    blocks = enlarge(flow_to_color(coarse, speed), STRIDE)
    pad = cap.padding
    blocks = blocks[pad.top : blocks.shape[0] - pad.bottom, pad.left : blocks.shape[1] - pad.right]
    return draw_wheel_legend(blocks), draw_wheel_legend(flow_to_color(cap.flow, speed))


def mask_grid(pixel: PixelTrace, weights: np.ndarray, index: int, weight_px: int = 8) -> np.ndarray:
    """The 64 subpixels of the pixel's cell, each a 3x3 heat map of its neighbour weights.

    The pixel's own subpixel is outlined in its colour; black is the cell's smallest weight, yellow
    its largest, so that the pattern shows even when the weights are nearly uniform.
    """
    lo, hi = float(weights.min()), float(weights.max())
    tiles = [enlarge(colourize(weights[sy, sx], lo, hi, cv2.COLORMAP_INFERNO), weight_px) for sy in range(STRIDE) for sx in range(STRIDE)]
    gap = 3
    picture = table(wrap(tiles, STRIDE), gap=gap)
    sx, sy = pixel.subpixel
    side = 3 * weight_px
    x0, y0 = sx * (side + gap) - 1.5, sy * (side + gap) - 1.5
    draw_box(picture, x0, y0, x0 + side + 2, y0 + side + 2, pixel_colour(index))
    return picture


# ----------------------------------------------------------------------------- HTML


STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #fafafa; }
main { max-width: 1320px; margin: 0 auto; padding: 0 24px 48px; }
header { background: #20304a; color: #fff; padding: 18px 24px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; opacity: .85; }
nav { margin: 12px 0; } nav a { margin-right: 14px; }
section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px 20px 16px; margin: 18px 0; }
h2 { font-size: 19px; } h3 { font-size: 16px; margin-bottom: 4px; }
.why { max-width: 900px; }
.row { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 13px; color: #555; max-width: 640px; }
img { max-width: 100%; height: auto; image-rendering: pixelated; border: 1px solid #ccc; background: #fff; }
table.nums { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
table.nums td, table.nums th { border: 1px solid #ddd; padding: 2px 8px; text-align: right; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #333; vertical-align: -1px; }
#broken { display: none; background: #fdd; border: 1px solid #c66; padding: 8px 12px; margin: 12px 0; }
svg.plot { background: #fff; font: 12px system-ui, sans-serif; }
svg.plot .frame { fill: none; stroke: #999; } svg.plot .grid { stroke: #eee; }
svg.plot .line { fill: none; stroke: #2a6fd6; stroke-width: 2; } svg.plot .dot { fill: #2a6fd6; }
"""

# Marks the page with how many pictures loaded and warns when some did not (the folder was split up).
CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.setAttribute('data-images-total', String(images.length));
  document.body.setAttribute('data-images-loaded', String(loaded.length));
  if (loaded.length < images.length) { document.getElementById('broken').style.display = 'block'; }
});
"""


class _Page:
    """Collects pictures (written at once) and HTML fragments for one report folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.parts: list[str] = []

    def picture(self, name: str, image: np.ndarray, alt: str, caption: str = "", width: int | None = None) -> str:
        """Write ``image`` and return its figure; ``width`` sets the shown width (frames of any size)."""
        write_image(self.folder / name, image)
        return self._figure(name, image.shape, alt, caption, width)

    def animation(self, name: str, frames: Sequence[np.ndarray], alt: str, caption: str = "") -> str:
        write_gif(self.folder / name, frames, frame_ms=700, last_ms=2000)
        return self._figure(name, frames[0].shape, alt, caption)

    @staticmethod
    def _figure(name: str, shape: tuple[int, ...], alt: str, caption: str, width: int | None = None) -> str:
        shown_w = width or shape[1]
        shown_h = round(shape[0] * shown_w / shape[1])
        text = f"<figcaption>{caption}</figcaption>" if caption else ""
        link = html.escape(name)
        return (
            f'<figure style="max-width: {shown_w}px"><a href="{link}"><img src="{link}" width="{shown_w}" height="{shown_h}" '
            f'alt="{html.escape(alt)}"></a>{text}</figure>'
        )

    def section(self, anchor: str, title: str, why: str, body: str) -> None:
        self.parts.append(f'<section id="{anchor}"><h2>{title}</h2><div class="why">{why}</div>{body}</section>')


def _row(*figures: str) -> str:
    return '<div class="row">' + "".join(figures) + "</div>"


def _swatch(index: int) -> str:
    r, g, b = pixel_colour(index)
    return f'<span class="swatch" style="background: rgb({r},{g},{b})"></span>'


def _pixel_heading(pixel: PixelTrace, index: int) -> str:
    return f"<h3>{_swatch(index)} Pixel {index + 1}: ({pixel.x}, {pixel.y})</h3>"


def _vec(values: Sequence[float]) -> str:
    return f"({values[0]:+.2f}, {values[1]:+.2f})"


def _iteration_table(pixel: PixelTrace) -> str:
    rows = "".join(
        f"<tr><td>{k + 1}</td><td>({pixel.coords[k][0]:.2f}, {pixel.coords[k][1]:.2f})</td>"
        f"<td>{_vec(STRIDE * pixel.deltas[k])}</td><td>{_vec(STRIDE * pixel.flows[k])}</td></tr>"
        for k in range(len(pixel.deltas))
    )
    return (
        '<table class="nums"><tr><th>k</th><th>lookup centre x\u2032 (1/8 cells)</th>'
        "<th>\u0394f<sub>k</sub> (px)</th><th>f<sub>k</sub> = f<sub>k-1</sub> + \u0394f<sub>k</sub> (px)</th></tr>"
        f"{rows}</table>"
    )


def write_report(cap: Capture, folder: str | os.PathLike[str], details: Mapping[str, str] | None = None) -> Path:
    """Write the report into ``folder`` (created if needed) and return the path of its index.html.

    ``details`` are shown in the header (input files, weights). Pictures are written first and
    index.html last, each atomically, so a page that exists never points at a missing picture.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    page = _Page(folder)
    _inputs_section(page, cap)
    _features_section(page, cap)
    _similarity_section(page, cap)
    _updates_section(page, cap)
    _motion_section(page, cap)
    _upsampling_section(page, cap)

    height, width = cap.image1.shape[:2]
    pad = cap.padding
    facts = {
        "model": f"RAFT-{cap.model_name}",
        "iterations": str(cap.iters),
        "frames": f"{width}x{height} px, padded by {pad.left}/{pad.right}/{pad.top}/{pad.bottom} px (l/r/t/b)",
        "1/8 grid": f"{cap.fmap1.shape[-1]}x{cap.fmap1.shape[-2]} cells",
        "correlation": f"{cap.num_levels} levels, lookup radius {cap.radius}",
        **(details or {}),
    }
    summary = " \u00b7 ".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in facts.items())
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (("inputs", "1 Inputs"), ("features", "2 Features"), ("similarity", "3 Similarity"),
                     ("updates", "4 Updates"), ("motion", "5 Motion"), ("upsampling", "6 Upsampling"))
    )
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>RAFT inspection</title><style>{STYLE}</style></head><body>"
        f"<header><h1>Inside RAFT: one forward pass</h1><p>{summary}</p></header><main>"
        '<div id="broken">Some pictures did not load: keep index.html in the folder with its PNG and GIF files.</div>'
        f"<nav>{nav}</nav>{''.join(page.parts)}</main><script>{CHECK_SCRIPT}</script></body></html>\n"
    )
    index = folder / "index.html"
    with atomic_write(index) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return index


def _inputs_section(page: _Page, cap: Capture) -> None:
    ends = [(p.x + p.flow[0], p.y + p.flow[1]) for p in cap.pixels]
    warped, error, mean_error = photometric_error(cap)
    body = _row(
        page.picture("frame1.png", mark_pixels(cap.image1, [(p.x, p.y) for p in cap.pixels]), "frame 1",
                     "Frame 1 with the inspected pixels.", FRAME_WIDTH),
        page.picture("frame2.png", mark_pixels(cap.image2, ends), "frame 2",
                     "Frame 2; rings where the final flow says each pixel went.", FRAME_WIDTH),
        page.picture("flow.png", draw_wheel_legend(flow_to_color(cap.flow)), "final flow",
                     "Final flow: hue is the direction (see the wheel), saturation the speed.", FRAME_WIDTH),
        page.picture("warped2.png", warped, "frame 2 warped onto frame 1",
                     "Frame 2 warped back by the flow: it should look like frame 1.", FRAME_WIDTH),
        page.picture("error.png", error, "photometric error",
                     f"|frame 1 \u2212 warped frame 2|, mean {mean_error:.1f} grey levels; grey where the flow leaves the frame.",
                     FRAME_WIDTH),
    )
    speeds = "".join(
        f"<li>{_swatch(i)} pixel {i + 1} ({p.x}, {p.y}): flow {_vec(p.flow)} px</li>" for i, p in enumerate(cap.pixels)
    )
    why = (
        "<p>Optical flow says, for every pixel of frame 1, where the same point of the scene is in frame 2. "
        "RAFT does not search a coarse-to-fine pyramid of flows: it compares every pixel with every other once, "
        "then refines a single flow field by repeated small corrections. The sections below follow that path "
        "for the marked pixels.</p><p>If the flow is right, sampling frame 2 at x + f(x) rebuilds frame 1; the "
        "error picture shows where it does not: occlusions, regions that leave the frame, or plain mistakes.</p>"
    )
    page.section("inputs", "1. Inputs and result", why, body + f"<ul>{speeds}</ul>")


def _features_section(page: _Page, cap: Capture) -> None:
    shared = _top_channels(cap.fmap1.var(axis=(1, 2)), FEATURE_CHANNELS)
    fmap1, fmap2 = feature_grid([cap.fmap1, cap.fmap2], shared)
    hidden_channels = _top_channels(cap.hidden.var(axis=(1, 2)), FEATURE_CHANNELS)
    context_channels = _top_channels(cap.context.var(axis=(1, 2)), FEATURE_CHANNELS)
    (hidden,) = feature_grid([cap.hidden], hidden_channels)
    (context,) = feature_grid([cap.context], context_channels)
    channels, h, w = cap.fmap1.shape
    body = (
        "<h3>Feature encoder: the same network on both frames</h3>"
        + _row(
            page.picture("fmap1.png", fmap1, "frame 1 features",
                         f"Frame 1: {len(shared)} of {channels} channels (highest variance), {w}x{h} cells."),
            page.picture("fmap2.png", fmap2, "frame 2 features", "Frame 2: the same channels on the same scale."),
        )
        + "<h3>Context encoder: frame 1 only</h3>"
        + _row(
            page.picture("hidden.png", hidden, "initial hidden state",
                         f"Hidden state (tanh), {cap.hidden.shape[0]} channels: the GRU's memory before the first update."),
            page.picture("context.png", context, "context features",
                         f"Context (ReLU), {cap.context.shape[0]} channels: fed unchanged into every update."),
        )
    )
    why = (
        f"<p>A convolutional <b>feature encoder</b> turns each frame into a grid of {channels}-dimensional vectors at 1/8 "
        "of the (padded) resolution. Both frames go through the same weights, so a point of the scene should get a "
        "similar vector in both: these vectors are what gets matched. Each tile is one channel, normalised on its own "
        "(shared between the two frames) and enlarged so that every cell is a visible block.</p>"
        "<p>A second <b>context encoder</b> sees only frame 1. Its output is split in two: one half, squashed by tanh, "
        "becomes the initial hidden state of the recurrent update unit; the other half, after a ReLU, is handed to "
        "every update as a fixed description of the image, which lets the network fill in flow where matching alone "
        "is ambiguous (untextured regions, occlusions).</p>"
    )
    page.section("features", "2. Feature extraction", why, body)


def _similarity_section(page: _Page, cap: Capture) -> None:
    body = ""
    for i, pixel in enumerate(cap.pixels):
        body += _pixel_heading(pixel, i) + page.picture(
            f"p{i + 1}_response.png", response_row(pixel, i, cap.radius), f"pixel {i + 1} correlation pyramid",
            f"Cell ({pixel.cell[0]}, {pixel.cell[1]}) of the 1/8 grid. White cross: the pixel's own position; ring: the "
            f"final correspondence x\u2032 = x + f(x); box: the {2 * cap.radius + 1}\u00d7{2 * cap.radius + 1} window a "
            "further lookup would read. Each map is scaled from its own minimum (dark) to maximum (yellow).",
        )
    why = (
        "<p>RAFT measures visual similarity for <b>all pairs</b> of cells at once: the dot product of every frame-1 "
        "feature vector with every frame-2 feature vector (divided by \u221aC). The result is a 4D volume, "
        "H\u00d7W\u00d7H\u00d7W, computed once per frame pair. Fixing one frame-1 pixel gives a 2D slice: a map over "
        "frame 2 that is bright where frame 2 looks like that pixel.</p>"
        f"<p>Average-pooling the frame-2 dimensions by 2, 4 and 8 builds a {cap.num_levels}-level pyramid. The coarse "
        "levels cover large motions in a small window while the fine level keeps detail. Because only the frame-2 "
        "dimensions are pooled, every level still has one map per frame-1 pixel.</p>"
    )
    page.section("similarity", "3. Visual similarity: the correlation pyramid", why, body)


def _updates_section(page: _Page, cap: Capture) -> None:
    side = 2 * cap.radius + 1
    body = "<h3>Convergence over the whole image</h3>" + line_plot_svg(
        [float(v) for v in cap.mean_abs_delta], "iteration k", "mean |\u0394f| (px)"
    )
    body += "<p>Mean length of the update \u0394f<sub>k</sub> over all cells, in full-resolution pixels.</p>"
    for i, pixel in enumerate(cap.pixels):
        frames = trajectory_frames(pixel, i, cap.radius)
        body += (
            _pixel_heading(pixel, i)
            + _row(
                page.animation(f"p{i + 1}_trajectory.gif", frames, f"pixel {i + 1} trajectory",
                               "The correspondence moving over the level-0 map (cropped around its path), one frame per "
                               "iteration; the box is the window the next lookup reads."),
                _iteration_table(pixel),
            )
            + page.picture(f"p{i + 1}_trajectory_strip.png", table(wrap(frames, 7)), f"pixel {i + 1} trajectory frames",
                           "The same frames side by side.")
            + page.picture(f"p{i + 1}_lookup.png", lookup_table(pixel), f"pixel {i + 1} lookups",
                           f"What the update block saw: the {side}\u00d7{side} values read around the correspondence at "
                           "each level in each iteration (same colours as section 3); the cross marks the centre.")
        )
    why = (
        "<p>RAFT keeps a single flow field f on the 1/8 grid, starting from zero, and improves it step by step. In "
        "every iteration a <b>lookup</b> reads the correlation pyramid around the current correspondence "
        f"x\u2032 = x + f(x): a {side}\u00d7{side} window of radius {cap.radius} on each level. x\u2032 is rarely a whole "
        "cell, so the values are sampled bilinearly. A recurrent unit (a convolutional GRU) combines them with the "
        "current flow, the context features and its own memory, and predicts an update \u0394f; then f \u2190 f + \u0394f "
        "and the next lookup happens at the new position.</p><p>The same weights are used in every iteration, so the "
        "unit behaves like an iterative optimiser: updates usually shrink as the estimate settles, and more "
        "iterations can be run at test time than were trained.</p>"
    )
    page.section("updates", "4. Iterative updates", why, body)


def _motion_section(page: _Page, cap: Capture) -> None:
    picture, channels = motion_table(cap)
    body = page.picture(
        "motion.png", picture, "motion features over iterations",
        f"{len(channels)} of {cap.motion.shape[1] - 2} channels, those that change most between iterations; each row "
        "is one channel on one scale across the iterations (columns).",
    )
    why = (
        "<p>Before the GRU, a small <b>motion encoder</b> convolves the lookup values and the current flow separately, "
        "fuses them and appends the flow itself. Its output is the GRU's view of \"how well does the current flow "
        "match, and where does the correlation point\". The channels whose activation changes most across iterations "
        "show how that view evolves as the flow converges.</p>"
    )
    page.section("motion", "5. Motion features", why, body)


def _mask_figure(page: _Page, pixel: PixelTrace, index: int) -> str:
    weights = pixel.mask_weights
    if weights is None:
        raise ValueError("convex-upsampling weights exist only for RAFT-large")
    caption = (
        f"The 8\u00d78 subpixels of cell ({pixel.cell[0]}, {pixel.cell[1]}); each small 3\u00d73 map holds the weights of "
        f"the cell's neighbours for one subpixel (black {float(weights.min()):.3f}, yellow {float(weights.max()):.3f}; "
        f"uniform would be {1 / 9:.3f}). Outlined: pixel "
        f"({pixel.x}, {pixel.y}), subpixel {pixel.subpixel}."
    )
    picture = mask_grid(pixel, weights, index)
    name, alt = f"p{index + 1}_mask.png", f"pixel {index + 1} upsampling weights"
    return _pixel_heading(pixel, index) + page.picture(name, picture, alt, caption)


def _upsampling_section(page: _Page, cap: Capture) -> None:
    coarse, fine = upsampling_pair(cap)
    body = _row(
        page.picture("flow_low_res.png", coarse, "1/8 resolution flow",
                     "The flow as the updates leave it: one vector per 8\u00d78 cell.", FRAME_WIDTH),
        page.picture("flow_upsampled.png", fine, "upsampled flow",
                     "After upsampling to full resolution (same colour scale).", FRAME_WIDTH),
    )
    if cap.convex_upsampling:
        masks = [_mask_figure(page, p, i) for i, p in enumerate(cap.pixels)]
        body += "<h3>Learned convex-combination weights</h3>" + "".join(masks)
        how = (
            "RAFT-large predicts, from the GRU's hidden state, 9 weights for each of the 64 full-resolution pixels of "
            "a cell; after a softmax they sum to one, and each pixel's flow is that convex combination of the 3\u00d73 "
            "neighbouring coarse vectors (times 8). The network can thus follow a motion boundary inside a cell "
            "instead of blurring across it."
        )
    else:
        how = (
            "RAFT-small upsamples bilinearly: each full-resolution vector is interpolated from the nearest coarse "
            "vectors and multiplied by 8. It is cheap but blurs motion boundaries; RAFT-large learns the interpolation "
            "weights instead."
        )
    why = f"<p>All the updates happen on the 1/8 grid; the full-resolution flow is made at the end. {how}</p>"
    page.section("upsampling", "6. Upsampling", why, body)
