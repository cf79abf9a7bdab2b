"""``raft inspect``: an HTML walk through one forward pass for a few chosen pixels."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rafttool.cli.common import (
    DEFAULT_SIZE,
    DebugOption,
    DeviceOption,
    ItersOption,
    ModelOption,
    QuietOption,
    Reporter,
    UsageProblem,
    WeightsOption,
    ensure_folder,
    load_engine,
    prepare_outputs,
    reports_errors,
)
from rafttool.inspect import PixelError, capture, check_inputs, parse_pixel, to_json, write_report
from rafttool.io import atomic_write, read_image

STDOUT = "-"

EXAMPLES = """\
[bold]Examples[/bold]

  raft inspect a.png b.png --pixel 120,80 --pixel 300,200 -o report/

  raft inspect a.png b.png -p 120,80 --iters 6 --json numbers.json -o report/

  raft inspect a.png b.png -p 120,80 --json - | jq '.mean_abs_delta_px'

Open report/index.html in a browser: it needs no server or network. Pixel coordinates are
X,Y in frame A, counted from 0 at the top-left."""


@reports_errors
def inspect(
    image1: Annotated[Path, typer.Argument(help="Image A (flow is from A to B).", show_default=False)],
    image2: Annotated[Path, typer.Argument(help="Image B, the same size as A.", show_default=False)],
    pixels: Annotated[
        list[str],
        typer.Option("--pixel", "-p", help="X,Y of a pixel of A to follow through the network; repeat for more.", show_default=False),
    ],
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Folder for the report (index.html and its pictures).", show_default=False),
    ] = None,
    json_path: Annotated[
        Optional[str],
        typer.Option("--json", help="Also write the numbers behind the report as JSON to this file, or - for stdout.", show_default=False),
    ] = None,
    model: ModelOption = DEFAULT_SIZE,
    weights: WeightsOption = None,
    device: DeviceOption = "auto",
    iters: ItersOption = 12,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """See inside RAFT: features, correlation pyramid, iterative updates and upsampling, as an HTML report."""
    if output is None and json_path is None:
        raise UsageProblem("nothing to write: give -o FOLDER for the report and/or --json FILE (- for stdout)")
    try:
        points = [parse_pixel(text) for text in pixels]
    except PixelError as error:
        raise UsageProblem(str(error)) from None
    json_file = None if json_path in (None, STDOUT) else Path(json_path)
    prepare_outputs([json_file] if json_file is not None else [], {image1, image2})
    if output is not None:
        ensure_folder(output)

    rgb1, rgb2 = read_image(image1), read_image(image2)
    try:
        check_inputs(rgb1, rgb2, points)
    except PixelError as error:
        raise UsageProblem(str(error)) from None
    engine = load_engine(model, weights, device, iters, half=False)
    reporter = Reporter(quiet)
    captured = capture(engine, rgb1, rgb2, points, iters)

    if output is not None:
        details = {"frame 1": str(image1), "frame 2": str(image2), "weights": str(weights or f"bundled RAFT-{engine.model_name}")}
        reporter.note(f"wrote {write_report(captured, output, details)}")
    if json_path is not None:
        text = json.dumps(to_json(captured), indent=1) + "\n"
        if json_file is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            with atomic_write(json_file) as tmp:
                tmp.write_text(text, encoding="utf-8")
            reporter.note(f"wrote {json_file}")
