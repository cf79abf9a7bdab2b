"""``raft video``: flow through a clip, streamed frame by frame so memory stays flat."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import ExitStack
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
    check_writable,
    ensure_folder,
    load_engine,
    reports_errors,
)
from rafttool.flowops import flow_magnitude_stats, warp_backward
from rafttool.io import write_flow, write_image
from rafttool.io.video import VIDEO_CODECS, VideoError, VideoInfo, open_frames, prefetch, video_writer
from rafttool.viz import draw_wheel_legend, flow_to_color

# Pairs looked at before the first picture is drawn, to fix the colour scale for the whole clip.
SCALE_PAIRS = 8

EXAMPLES = """\
[bold]Examples[/bold]

  raft video clip.mp4 --viz

  raft video clip.mp4 --no-flo --viz-video clip_flow.mp4 --warp --scale 0.5

  raft video frames/ -o flows/ --step 2 --start 100 --max-frames 50 --json

Pairs are frame i with frame i+step, then i+step with i+2*step, and so on. Files are named by
the first frame's index: 000012.flo, 000012_viz.png. Colours use one scale for the whole clip
(no flicker): --max-flow, or else the largest 99th-percentile speed over the first 8 pairs
(at least 1 px), printed on stderr. Warm start (default) starts each pair from the previous
pair's flow, so pairs run one at a time: --batch only applies with --no-warm-start."""


def _default_folder(source: Path) -> Path:
    """<stem>_flow beside a video, <name>_flow beside a frame folder."""
    named = source if source.name else source.resolve()  # '.' has no name of its own
    return named.with_name(f"{named.name if named.is_dir() else named.stem}_flow")


def _expected_pairs(info: VideoInfo, start: int, end: int | None, step: int, max_frames: int | None) -> int | None:
    """Pairs the range will give, from the container's frame count (None when it does not say)."""
    if info.frame_count <= 0:
        return None
    stop = info.frame_count if end is None else min(end, info.frame_count)
    frames = max(0, math.ceil((stop - start) / step))
    return max(0, min(frames, max_frames or frames) - 1)


def _fixed_scale(pairs: Iterator[PairFlow], max_flow: float | None) -> tuple[float, Iterator[PairFlow]]:
    """One colour scale for the whole clip: given, or estimated from the first pairs (buffered)."""
    if max_flow is not None:
        return max_flow, pairs
    head = list(itertools.islice(pairs, SCALE_PAIRS))
    speeds = [np.hypot(p.flow[..., 0], p.flow[..., 1]) for p in head]
    robust = [float(np.nanpercentile(s, 99)) for s in speeds if np.isfinite(s).any()]
    return max([1.0, *robust]), itertools.chain(head, pairs)


def _panel(pair: PairFlow, colours: np.ndarray, with_warp: bool) -> np.ndarray:
    """Side by side: frame | flow colours | next frame warped back (when asked)."""
    parts = [pair.image1, colours]
    if with_warp:
        parts.append(warp_backward(pair.image2, pair.flow)[0])
    return np.hstack(parts)


@reports_errors
def video(
    source: Annotated[Path, typer.Argument(help="A video file, or a folder of numbered images.", show_default=False)],
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Folder for per-pair files.", show_default="<input>_flow next to the input"),
    ] = None,
    flo: Annotated[bool, typer.Option("--flo/--no-flo", help="Write a .flo file per pair.")] = True,
    viz: Annotated[bool, typer.Option("--viz", help="Write a colour-wheel PNG per pair.")] = False,
    viz_video: Annotated[
        Optional[Path],
        typer.Option("--viz-video", help="Write a video of frame | flow side by side (.mp4, .avi, .mkv, .mov).", show_default=False),
    ] = None,
    warp: Annotated[bool, typer.Option("--warp", help="Add the next frame warped back as a third --viz-video panel.")] = False,
    max_flow: Annotated[
        Optional[float],
        typer.Option("--max-flow", help="Speed (px) at full colour.", show_default="estimated from the first pairs"),
    ] = None,
    step: Annotated[int, typer.Option("--step", min=1, help="Pair frame i with frame i+step.")] = 1,
    start: Annotated[int, typer.Option("--start", min=0, help="First frame index.")] = 0,
    end: Annotated[Optional[int], typer.Option("--end", min=1, help="Stop before this frame index.", show_default=False)] = None,
    max_frames: Annotated[
        Optional[int], typer.Option("--max-frames", min=2, help="Use at most this many frames.", show_default=False)
    ] = None,
    scale: Annotated[float, typer.Option("--scale", help="Resize frames by this factor first.")] = 1.0,
    warm_start: Annotated[
        bool,
        typer.Option("--warm-start/--no-warm-start", help="Start each pair from the previous pair's flow (forces --batch 1)."),
    ] = True,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty output folder (same names are replaced).")] = False,
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
    """Optical flow between consecutive frames of a video (or a folder of images)."""
    if not (flo or viz or viz_video or json):
        raise UsageProblem("nothing to write: --no-flo needs --viz, --viz-video or --json")
    if warp and viz_video is None:
        raise UsageProblem("--warp adds a panel to --viz-video; give --viz-video too")
    if not scale > 0 or (max_flow is not None and not max_flow > 0):
        raise UsageProblem("--scale and --max-flow must be positive")
    if end is not None and end <= start:
        raise UsageProblem(f"--end {end} must be after --start {start}")
    if viz_video is not None and viz_video.suffix.lower() not in VIDEO_CODECS:
        raise UsageProblem(f"--viz-video '{viz_video}': unknown extension '{viz_video.suffix}'; use one of {', '.join(VIDEO_CODECS)}")

    reporter = Reporter(quiet, json)
    frames = open_frames(source)
    expected = _expected_pairs(frames.info, start, end, step, max_frames)
    if expected == 0:
        raise VideoError(f"'{source}' has fewer than two frames in the selected range; a pair needs two")

    folder = output if output is not None else _default_folder(source)
    if flo or viz:
        if folder.is_dir() and any(folder.iterdir()) and not force:
            raise ValueError(f"output folder '{folder}' is not empty: pass --force to write into it, or choose another with -o")
        ensure_folder(folder)
    if viz_video is not None:
        check_writable(viz_video)
    if warm_start and batch > 1:
        reporter.note(f"note: --batch {batch} ignored: warm start runs pairs one after another (add --no-warm-start to batch)")
        batch = 1

    engine = load_engine(model, weights, device, iters, half, int8, tolerance, reporter)
    decoded = prefetch((frame for _, frame in itertools.islice(frames.frames(start, end, step, scale), max_frames)), depth=4)
    pairs = engine.estimate_sequence(decoded, warm_start=warm_start, batch_size=batch)
    colour_scale = None
    if viz or viz_video:
        colour_scale, pairs = _fixed_scale(pairs, max_flow)
        reporter.note(f"colour scale: {colour_scale:.2f} px at full saturation")

    count = 0
    with ExitStack() as stack:
        sink = stack.enter_context(video_writer(viz_video, frames.info.fps / step)) if viz_video is not None else None
        advance = stack.enter_context(reporter.progress(expected, "video"))
        for number, pair in enumerate(pairs):
            first, second = start + number * step, start + (number + 1) * step
            written = {}
            if flo:
                written["flo"] = folder / f"{first:06d}.flo"
                write_flow(written["flo"], pair.flow)
            if colour_scale is not None:
                colours = draw_wheel_legend(flow_to_color(pair.flow, colour_scale))
                if viz:
                    written["viz"] = folder / f"{first:06d}_viz.png"
                    write_image(written["viz"], colours)
                if sink is not None:
                    sink.write(_panel(pair, colours, warp))
            reporter.record(
                {
                    "frame1": first,
                    "frame2": second,
                    **{key: str(path) for key, path in written.items()},
                    **flow_magnitude_stats(pair.flow),
                    **({"max_flow": colour_scale} if colour_scale is not None else {}),
                    "warm_started": pair.warm_started,
                    "iterations": pair.result.iterations_run,
                    "seconds": round(pair.seconds, 4),
                }
            )
            count += 1
            advance()
        if count == 0:
            raise VideoError(f"'{source}' has fewer than two frames in the selected range; a pair needs two")
    reporter.note(f"{count} pairs" + (f" -> {folder}" if flo or viz else "") + (f", {viz_video}" if viz_video else ""))
