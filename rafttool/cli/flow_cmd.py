"""``raft flow``: flow for one pair, a run of frames or a list of pairs, with one model load for all."""

from __future__ import annotations

import functools
import glob
import itertools
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from rafttool.api import PairFlow
from rafttool.cli.common import (
    DEFAULT_SIZE,
    BatchOption,
    DebugOption,
    DeviceOption,
    HalfOption,
    Int8Option,
    ItersOption,
    JsonOption,
    ModelOption,
    QuietOption,
    Reporter,
    ToleranceOption,
    UsageProblem,
    WeightsOption,
    check_flow_extension,
    check_image_extension,
    load_engine,
    names_file,
    prepare_outputs,
    reports_errors,
)
from rafttool.engine.padding import InputSizeError, check_input_size
from rafttool.flowops import flow_magnitude_stats, forward_backward_occlusion, warp_backward
from rafttool.io import encode_flo, read_image, write_flow, write_image
from rafttool.io.video import list_images, natural_key, prefetch, resize_frame
from rafttool.viz import draw_wheel_legend, flow_to_color

STDOUT = "-"

EXAMPLES = """\
[bold]Examples[/bold]

  raft flow frame1.png frame2.png -o flow.flo --viz flow.png --warp warped.png

  raft flow frames/ -o flows/ --batch 4 --json > stats.jsonl

  cat pairs.txt | raft flow --pairs - --backward --occlusion masks/

Without -o, each flow is written beside its first image as <A stem>.flo (--format picks
another format for derived names)."""


class FlowFormat(str, Enum):
    flo = "flo"
    png = "png"
    npy = "npy"
    npz = "npz"


@dataclass(frozen=True)
class Job:
    """One pair and every file it produces; ``output`` None means stdout."""

    image1: Path
    image2: Path
    output: Path | None
    backward: Path | None = None
    viz: Path | None = None
    warp: Path | None = None
    occlusion: Path | None = None

    def files(self) -> list[Path]:
        return [p for p in (self.output, self.backward, self.viz, self.warp, self.occlusion) if p is not None]


def _consecutive_frames(inputs: list[str]) -> list[Path]:
    """Explicit files in the given order; a folder or a glob in natural order."""
    if len(inputs) >= 2:
        return [Path(p) for p in inputs]
    (pattern,) = inputs
    if glob.has_magic(pattern):
        frames, what = sorted((Path(p) for p in glob.glob(pattern) if Path(p).is_file()), key=natural_key), f"glob '{pattern}'"
    elif Path(pattern).is_dir():
        frames, what = list_images(Path(pattern)), f"folder '{pattern}'"
    else:
        raise UsageProblem(f"'{pattern}' alone is not a pair: give two images A B, a folder of frames, a quoted glob or --pairs")
    if len(frames) < 2:
        raise ValueError(f"{what} has {len(frames)} image(s); consecutive frames need at least two")
    return frames


def _read_pair_list(source: str) -> list[tuple[Path, Path, Path | None]]:
    """'A B [OUT]' lines (shell quoting, # comments); relative paths are relative to the current folder."""
    name = "stdin" if source == STDOUT else f"'{source}'"
    try:
        text = sys.stdin.read() if source == STDOUT else Path(source).read_text()
    except OSError as error:
        raise ValueError(f"cannot read pair list {name}: {error.strerror or error}") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as error:
            raise ValueError(f"pair list {name} line {number}: {error}") from None
        if not fields:
            continue
        if len(fields) not in (2, 3):
            raise ValueError(f"pair list {name} line {number}: expected 'A B [OUT]', found {len(fields)} fields")
        pairs.append((Path(fields[0]), Path(fields[1]), Path(fields[2]) if len(fields) == 3 else None))
    if not pairs:
        raise ValueError(f"pair list {name} holds no pairs")
    return pairs


def _side_output(target: Path | None, name: str, count: int, option: str) -> Path | None:
    """A side output's path: the file itself for one pair, else <name>.png in the given folder."""
    if target is None:
        return None
    if names_file(target):
        if count > 1:
            raise UsageProblem(f"{option} '{target}' names one file but there are {count} pairs; give a folder")
        check_image_extension(target, option)
        return target
    return target / f"{name}.png"


def _plan(
    inputs: list[str],
    pairs_file: str | None,
    output: str | None,
    flow_format: FlowFormat,
    backward: bool,
    side: dict[str, Path | None],
) -> list[Job]:
    """Every pair with all its output paths, checked before the network is loaded."""
    if pairs_file is not None:
        if inputs:
            raise UsageProblem("give either images or --pairs, not both")
        triples = _read_pair_list(pairs_file)
    elif not inputs:
        raise UsageProblem("nothing to do: give two images A B, a folder of frames, a quoted glob or --pairs FILE")
    else:
        triples = [(a, b, None) for a, b in itertools.pairwise(_consecutive_frames(inputs))]

    count = len(triples)
    to_stdout = output == STDOUT
    folder = None
    if to_stdout and (count > 1 or backward):
        raise UsageProblem("-o - writes exactly one flow to stdout; give -o a folder for several pairs or --backward")
    if output is not None and not to_stdout:
        if names_file(Path(output)):
            if count > 1:
                raise UsageProblem(f"-o '{output}' names one file but there are {count} pairs; give a folder")
            check_flow_extension(Path(output), "-o")
        else:
            folder = Path(output)

    jobs = []
    for image1, image2, own in triples:
        if to_stdout:
            target = None
        elif own is not None:
            check_flow_extension(own, "pair list output")
            target = own
        elif folder is None and output is not None:
            target = Path(output)
        else:
            target = (folder or image1.parent) / f"{image1.stem}.{flow_format.value}"
        name = (target or image1).stem
        jobs.append(
            Job(
                image1,
                image2,
                target,
                backward=target.with_name(f"{target.stem}_backward{target.suffix}") if backward and target else None,
                **{key: _side_output(path, name, count, f"--{key}") for key, path in side.items()},
            )
        )
    return jobs


def _load_pairs(jobs: list[Job], resize: bool, with_backward: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Image pairs for the network (B->A after A->B when asked), sizes checked with file names."""
    read = functools.lru_cache(maxsize=4)(read_image)  # consecutive frames share an image
    for job in jobs:
        rgb1, rgb2 = read(job.image1), read(job.image2)
        (h1, w1), (h2, w2) = rgb1.shape[:2], rgb2.shape[:2]
        if (h1, w1) != (h2, w2):
            if not resize:
                raise ValueError(
                    f"images differ in size: {job.image1} is {w1}x{h1}, {job.image2} is {w2}x{h2} (use --resize to scale B to A)"
                )
            rgb2 = resize_frame(rgb2, w1, h1)
        try:
            check_input_size(h1, w1)
        except InputSizeError as error:
            raise InputSizeError(f"'{job.image1}': {error}") from None
        yield rgb1, rgb2
        if with_backward:
            yield rgb2, rgb1


def _write_outputs(job: Job, forward: PairFlow, backward: PairFlow | None) -> None:
    flow = forward.flow
    if job.output is None:
        sys.stdout.buffer.write(encode_flo(flow))
        sys.stdout.buffer.flush()
    else:
        write_flow(job.output, flow)
    if job.backward is not None and backward is not None:
        write_flow(job.backward, backward.flow)
    if job.viz is not None:
        write_image(job.viz, draw_wheel_legend(flow_to_color(flow)))
    if job.warp is not None:
        write_image(job.warp, warp_backward(forward.image2, flow)[0])
    if job.occlusion is not None and backward is not None:
        write_image(job.occlusion, forward_backward_occlusion(flow, backward.flow).astype(np.uint8) * 255)


def _record(job: Job, forward: PairFlow) -> dict[str, object]:
    return {
        "image1": str(job.image1),
        "image2": str(job.image2),
        "output": str(job.output) if job.output else STDOUT,
        **{key: str(path) for key, path in (("backward", job.backward), ("viz", job.viz), ("warp", job.warp), ("occlusion", job.occlusion)) if path},
        **flow_magnitude_stats(forward.flow),
        "iterations": forward.result.iterations_run,
        "seconds": round(forward.seconds, 4),
    }


@reports_errors
def flow(
    inputs: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Images A B (flow A->B); three or more files, a folder or a quoted glob: consecutive frames.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output", "-o",
            help="Flow file (.flo, .png KITTI, .npy, .npz), a folder for many pairs, or - for .flo bytes on stdout.",
            show_default=False,
        ),
    ] = None,
    pairs: Annotated[
        Optional[str],
        typer.Option("--pairs", help="File of 'A B [OUT]' lines, or - to read them from stdin.", show_default=False),
    ] = None,
    flow_format: Annotated[FlowFormat, typer.Option("--format", help="Format of flow files named for you.")] = FlowFormat.flo,
    viz: Annotated[
        Optional[Path],
        typer.Option("--viz", help="Also write a colour-wheel PNG with legend (a folder for many pairs).", show_default=False),
    ] = None,
    warp: Annotated[
        Optional[Path],
        typer.Option("--warp", help="Also write B warped back onto A (a folder for many pairs).", show_default=False),
    ] = None,
    backward: Annotated[bool, typer.Option("--backward", help="Also write the flow B->A as <output>_backward.<ext>.")] = False,
    occlusion: Annotated[
        Optional[Path],
        typer.Option(
            "--occlusion",
            help="Also write a forward-backward occlusion mask PNG, 255 = occluded (computes B->A).",
            show_default=False,
        ),
    ] = None,
    resize: Annotated[bool, typer.Option("--resize", help="Scale B to A's size when they differ.")] = False,
    batch: BatchOption = 1,
    model: ModelOption = DEFAULT_SIZE,
    weights: WeightsOption = None,
    device: DeviceOption = "auto",
    iters: ItersOption = 12,
    half: HalfOption = False,
    int8: Int8Option = None,
    tolerance: ToleranceOption = None,
    json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Optical flow from image A to image B, or between consecutive frames.

    The model is loaded once for all pairs, which are run --batch at a time.
    """
    side = {"viz": viz, "warp": warp, "occlusion": occlusion}
    jobs = _plan(inputs or [], pairs, output, flow_format, backward, side)
    named_folders = [output, *side.values()] if output != STDOUT else list(side.values())
    prepare_outputs(
        [path for job in jobs for path in job.files()],
        {path for job in jobs for path in (job.image1, job.image2)},
        [Path(p) for p in named_folders if p is not None and not names_file(Path(p))],
    )

    reporter = Reporter(quiet, json)
    engine = load_engine(model, weights, device, iters, half, int8, tolerance, reporter)
    with_backward = backward or occlusion is not None
    results = engine.estimate_pairs(prefetch(_load_pairs(jobs, resize, with_backward), depth=2 * batch), batch_size=batch)
    with reporter.progress(len(jobs), "flow") as advance:
        for job in jobs:
            forward = next(results)
            reverse = next(results) if with_backward else None
            _write_outputs(job, forward, reverse)
            reporter.record(_record(job, forward))
            advance()
    if jobs[0].output is not None:
        reporter.note(f"wrote {jobs[0].output if len(jobs) == 1 else f'{len(jobs)} flows'}")
