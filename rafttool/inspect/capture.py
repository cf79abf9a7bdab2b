"""Run RAFT once with a :class:`~rafttool.engine.trace.Trace` and keep what the report shows, as numpy.

Everything here is read from the engine's own forward pass (the trace), never recomputed by a
second copy of the network, so the pictures show exactly what produced the flow. Units follow
the engine: correspondences, deltas and the low-resolution flow are in cells of the 1/8-resolution
grid of the *padded* frames; ``flow`` is in full-resolution pixels of the original frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rafttool.api import FlowEngine, ImageLike, load_rgb
from rafttool.engine.padding import STRIDE, Padding
from rafttool.engine.trace import Trace


class PixelError(ValueError):
    """A requested pixel lies outside the frames."""


@dataclass
class PixelTrace:
    """One pixel's path through the network.

    ``cell`` is the (x, y) cell of the 1/8 grid that holds the pixel: its row of the 4D volume is
    what the update block matches, and ``subpixel`` is the pixel's place inside that 8x8 cell
    (which of the cell's 64 convex-upsampling weight sets it uses).
    """

    x: int
    y: int
    cell: tuple[int, int]
    subpixel: tuple[int, int]
    response: list[np.ndarray]
    """Per pyramid level, the pixel's (H_l, W_l) correlation with every frame-2 cell."""
    coords: np.ndarray
    """(iters + 1, 2) correspondence x' = x + f(x): before each iteration, then the final one."""
    windows: np.ndarray
    """(iters, levels, 2r+1, 2r+1) lookup values per iteration, laid out as images: [.., dy, dx]."""
    deltas: np.ndarray
    """(iters, 2) flow offset of each iteration, in grid cells."""
    mask_weights: np.ndarray | None
    """(8, 8, 3, 3) convex-upsampling weights [sub-row, sub-col, ky, kx] (RAFT-large only)."""
    flow: tuple[float, float]
    """Final full-resolution flow at the pixel."""

    @property
    def flows(self) -> np.ndarray:
        """(iters, 2) running flow f_k after each iteration, in grid cells."""
        return self.coords[1:] - np.asarray(self.cell, dtype=np.float64)


@dataclass
class Capture:
    """The internals of one forward pass, batch of one, with the frames it was run on."""

    model_name: str
    convex_upsampling: bool
    """RAFT-large's learned upsampling (each pixel then has ``mask_weights``); else bilinear."""
    radius: int
    num_levels: int
    image1: np.ndarray
    image2: np.ndarray
    padding: Padding
    flow: np.ndarray
    """(H, W, 2) final flow in pixels, exactly what the engine returns."""
    low_res_flow: np.ndarray
    """(h, w, 2) flow on the padded 1/8 grid, in cells, before upsampling."""
    fmap1: np.ndarray
    fmap2: np.ndarray
    hidden: np.ndarray
    context: np.ndarray
    motion: np.ndarray
    """(iters, C, h, w) motion-encoder output; its last two channels are the flow passed through."""
    mean_abs_delta: np.ndarray
    """(iters,) mean |delta f_k| over every cell of the grid, in full-resolution pixels."""
    pixels: list[PixelTrace]

    @property
    def iters(self) -> int:
        return len(self.mean_abs_delta)


def parse_pixel(text: str) -> tuple[int, int]:
    """'X,Y' -> (x, y); the message says what a valid value looks like."""
    parts = text.replace(" ", "").split(",")
    try:
        x, y = (int(p) for p in parts)
    except ValueError:
        raise PixelError(f"--pixel {text!r}: expected two whole numbers X,Y such as 64,40") from None
    return x, y


def check_inputs(image1: np.ndarray, image2: np.ndarray, pixels: Sequence[tuple[int, int]]) -> None:
    """Reject frames of different sizes and pixels outside them, before any work is done."""
    if image1.shape != image2.shape:
        raise ValueError(
            f"images differ in size: {image1.shape[1]}x{image1.shape[0]} vs {image2.shape[1]}x{image2.shape[0]}; "
            "resize them to match"
        )
    height, width = image1.shape[:2]
    for x, y in pixels:
        if not (0 <= x < width and 0 <= y < height):
            raise PixelError(
                f"pixel {x},{y} is outside the {width}x{height} image; use 0 <= X <= {width - 1} and 0 <= Y <= {height - 1}"
            )


def capture(
    engine: FlowEngine,
    image1: ImageLike,
    image2: ImageLike,
    pixels: Sequence[tuple[int, int]],
    iters: int | None = None,
) -> Capture:
    """Run ``engine`` on one pair with a trace and extract the report's data for ``pixels``.

    The pass runs in fp32 whatever the engine's precision, so the pictures are not quantised,
    and stops where the engine's adaptive iterations would.
    """
    rgb1, rgb2 = load_rgb(image1), load_rgb(image2)
    check_inputs(rgb1, rgb2, pixels)

    trace = Trace()
    batch = [torch.from_numpy(rgb).permute(2, 0, 1)[None].float().to(engine.device) for rgb in (rgb1, rgb2)]
    with torch.inference_mode():
        output = engine.model(
            *batch, iters=iters or engine.iters, trace=trace, tolerance=engine.tolerance, check_every=engine.check_every
        )

    steps = trace.per_iteration
    padding: Padding = trace.objects["padding"]
    deltas = torch.cat(steps["delta"])  # (iters, 2, h, w)
    final_coords = steps["coords"][-1] + steps["delta"][-1]
    levels = trace.objects["correlation"].levels  # once: an on-demand pyramid builds them when asked
    flow = output.flow[0].permute(1, 2, 0).float().cpu().numpy()
    return Capture(
        model_name=engine.model.config.name,
        convex_upsampling=engine.model.mask_head is not None,
        radius=trace.objects["correlation"].radius,
        num_levels=trace.objects["correlation"].num_levels,
        image1=rgb1,
        image2=rgb2,
        padding=padding,
        flow=flow,
        low_res_flow=output.low_res_flow[0].permute(1, 2, 0).float().cpu().numpy(),
        fmap1=trace.values["fmap1"][0].numpy(),
        fmap2=trace.values["fmap2"][0].numpy(),
        hidden=trace.values["hidden"][0].numpy(),
        context=trace.values["context"][0].numpy(),
        motion=torch.cat(steps["motion"]).numpy(),
        mean_abs_delta=(STRIDE * deltas.norm(dim=1).mean(dim=(1, 2))).double().numpy(),
        pixels=[_pixel_trace(trace, levels, final_coords, flow, x, y) for x, y in pixels],
    )


def _pixel_trace(
    trace: Trace, levels: list[torch.Tensor], final_coords: torch.Tensor, flow: np.ndarray, x: int, y: int
) -> PixelTrace:
    """Slice one pixel's values out of the traced tensors (batch index 0)."""
    correlation = trace.objects["correlation"]
    padding: Padding = trace.objects["padding"]
    steps = trace.per_iteration
    px, py = x + padding.left, y + padding.top
    cx, cy = px // STRIDE, py // STRIDE
    row = cy * trace.values["fmap1"].shape[-1] + cx  # volume rows run over frame-1 cells in raster order
    side = 2 * correlation.radius + 1
    coords = torch.stack([c[0, :, cy, cx] for c in [*steps["coords"], final_coords]])
    # The lookup's channels put the x offset first (slow) within each level; transpose to [dy, dx].
    windows = torch.stack([c[0, :, cy, cx].view(correlation.num_levels, side, side).transpose(1, 2) for c in steps["corr"]])
    mask = None
    if steps.get("mask"):
        logits = steps["mask"][-1][0, :, cy, cx].view(9, STRIDE, STRIDE)
        mask = torch.softmax(logits, dim=0).permute(1, 2, 0).reshape(STRIDE, STRIDE, 3, 3).numpy()
    return PixelTrace(
        x=x,
        y=y,
        cell=(cx, cy),
        subpixel=(px % STRIDE, py % STRIDE),
        response=[level[row, 0].float().cpu().numpy() for level in levels],
        coords=coords.double().numpy(),
        windows=windows.numpy(),
        deltas=torch.stack([d[0, :, cy, cx] for d in steps["delta"]]).double().numpy(),
        mask_weights=mask,
        flow=(float(flow[y, x, 0]), float(flow[y, x, 1])),
    )


def to_json(cap: Capture) -> dict[str, Any]:
    """The numbers behind the report, with units spelled out, for scripted analysis."""
    height, width = cap.image1.shape[:2]
    grid_h, grid_w = cap.low_res_flow.shape[:2]
    pad = cap.padding
    return {
        "model": cap.model_name,
        "iters": cap.iters,
        "image_size": {"width": width, "height": height},
        "padding": {"left": pad.left, "right": pad.right, "top": pad.top, "bottom": pad.bottom},
        "grid_size": {"width": grid_w, "height": grid_h},
        "stride": STRIDE,
        "corr_levels": cap.num_levels,
        "corr_radius": cap.radius,
        "units": {
            "lookup_centre, final_correspondence": (
                "x' = x + f(x) per pyramid level, in cells of that level's grid (level l = 1/(8*2^l) of the "
                "padded frame); cell centres are integers; lookup_centre is where iteration k read the pyramid"
            ),
            "delta_px, flow_px": "full-resolution pixels",
            "mean_abs_delta_px": "mean over all cells of |delta f_k|, full-resolution pixels",
        },
        "mean_abs_delta_px": [float(v) for v in cap.mean_abs_delta],
        "pixels": [
            {
                "x": p.x,
                "y": p.y,
                "cell": list(p.cell),
                "subpixel": list(p.subpixel),
                "final_flow_px": list(p.flow),
                "iterations": [
                    {
                        "k": k + 1,
                        "lookup_centre": [[float(c) / 2**level for c in p.coords[k]] for level in range(cap.num_levels)],
                        "delta_px": [float(STRIDE * d) for d in p.deltas[k]],
                        "flow_px": [float(STRIDE * f) for f in p.flows[k]],
                    }
                    for k in range(cap.iters)
                ],
                "final_correspondence": [[float(c) / 2**level for c in p.coords[-1]] for level in range(cap.num_levels)],
            }
            for p in cap.pixels
        ],
    }
