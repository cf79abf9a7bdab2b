"""``raft viz`` (flow files to colour-wheel PNGs) and ``raft warp`` (an image moved by a flow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from rafttool.cli.common import (
    DebugOption,
    QuietOption,
    Reporter,
    UsageProblem,
    check_image_extension,
    names_file,
    prepare_outputs,
    reports_errors,
)
from rafttool.flowops import warp_backward
from rafttool.io import read_flow, read_image, write_image
from rafttool.viz import draw_wheel_legend, flow_arrows, flow_to_color

VIZ_EXAMPLES = """\
[bold]Examples[/bold]

  raft viz flow.flo -o flow.png

  raft viz flows/*.flo -o viz/ --max-flow 20

  raft viz flow.flo --arrows frame1.png -o arrows.png

Without -o each PNG goes beside its flow file as <stem>_viz.png. All files share one colour
scale, so the same colour means the same motion in every picture."""

WARP_EXAMPLES = """\
[bold]Examples[/bold]

  raft flow a.png b.png -o ab.flo && raft warp b.png ab.flo -o b_on_a.png

  raft warp b.png ab.flo -o b_on_a.png --mask outside.png

IMAGE is the second frame (B) of the pair the flow A->B belongs to; the result lines up with
A. Without -o it is written beside IMAGE as <stem>_warped.png."""


def _viz_targets(flows: list[Path], output: Path | None) -> list[Path]:
    if output is None:
        return [f.with_name(f"{f.stem}_viz.png") for f in flows]
    if names_file(output):
        if len(flows) > 1:
            raise UsageProblem(f"-o '{output}' names one file but there are {len(flows)} flows; give a folder")
        check_image_extension(output, "-o")
        return [output]
    return [output / f"{f.stem}.png" for f in flows]


def _largest_speed(flow: np.ndarray) -> float:
    speed = np.hypot(flow[..., 0], flow[..., 1])
    finite = speed[np.isfinite(speed)]
    return float(finite.max()) if finite.size else 0.0


@reports_errors
def viz(
    flows: Annotated[list[Path], typer.Argument(help="Flow files: .flo, KITTI .png, .npy, .npz, .pfm.", show_default=False)],
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="PNG file for one flow, or a folder.", show_default=False),
    ] = None,
    max_flow: Annotated[
        Optional[float],
        typer.Option("--max-flow", help="Speed (px) shown at full colour; default: the largest over all files.", show_default=False),
    ] = None,
    arrows: Annotated[
        Optional[Path],
        typer.Option("--arrows", help="Draw arrows over this image (the pair's first frame) instead.", show_default=False),
    ] = None,
    arrow_step: Annotated[int, typer.Option("--arrow-step", min=2, help="Pixels between arrows.")] = 16,
    legend: Annotated[bool, typer.Option("--legend/--no-legend", help="Colour-wheel key in the corner.")] = True,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Colour-code flow files (Middlebury colour wheel: hue = direction, saturation = speed)."""
    if max_flow is not None and not max_flow > 0:
        raise UsageProblem(f"--max-flow must be positive, got {max_flow}")
    if arrows is not None and len(flows) > 1:
        raise UsageProblem("--arrows draws one flow over its image; give a single flow file")
    targets = _viz_targets(flows, output)
    prepare_outputs(targets, set(flows), [output] if output is not None and not names_file(output) else [])

    reporter = Reporter(quiet)
    background = read_image(arrows) if arrows is not None else None
    scale = max_flow
    if scale is None and background is None:
        scale = max([_largest_speed(read_flow(f)) for f in flows] + [1e-6])  # a second read keeps memory flat
    with reporter.progress(len(flows), "viz", unit="files") as advance:
        for source, target in zip(flows, targets):
            flow = read_flow(source)
            if background is not None:
                picture = flow_arrows(background, flow, step=arrow_step)
            else:
                picture = flow_to_color(flow, scale)
                picture = draw_wheel_legend(picture) if legend else picture
            write_image(target, picture)
            advance()
    reporter.note(f"wrote {targets[0] if len(targets) == 1 else f'{len(targets)} images'}")


@reports_errors
def warp(
    image: Annotated[Path, typer.Argument(help="The pair's second image B.", show_default=False)],
    flow: Annotated[Path, typer.Argument(help="Flow A->B (any readable format).", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Warped image file.", show_default=False)] = None,
    mask: Annotated[
        Optional[Path],
        typer.Option("--mask", help="Also write where B had no pixel to give (255 = outside B or unknown flow).", show_default=False),
    ] = None,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Warp an image backwards with a flow: out(x) = B(x + flow(x)), B brought onto A."""
    target = output if output is not None else image.with_name(f"{image.stem}_warped.png")
    targets = [target] + ([mask] if mask is not None else [])
    for path, option in zip(targets, ("-o", "--mask")):
        check_image_extension(path, option)
    prepare_outputs(targets, {image, flow})

    picture, field = read_image(image), read_flow(flow)
    if picture.shape[:2] != field.shape[:2]:
        raise ValueError(
            f"image '{image}' is {picture.shape[1]}x{picture.shape[0]} but flow '{flow}' is "
            f"{field.shape[1]}x{field.shape[0]}; use the flow computed for this image"
        )
    warped, inside = warp_backward(picture, field)
    write_image(target, warped)
    if mask is not None:
        write_image(mask, np.where(inside, 0, 255).astype(np.uint8))
    Reporter(quiet).note(f"wrote {target}")
