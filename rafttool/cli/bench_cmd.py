"""``raft bench``: latency, throughput and peak memory of RAFT and the OpenCV baselines.

Every configuration is measured in its own fresh process (see :mod:`rafttool.benchmark`), so
one configuration's memory peak or warmed-up caches never leak into the next one's numbers.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from rafttool.benchmark import BenchConfig, BenchResult, HostInfo, host_info, run_config
from rafttool.cli.common import (
    DEFAULT_SIZE,
    ENGINE_PANEL,
    DebugOption,
    HalfOption,
    Int8Option,
    JsonOption,
    MethodOption,
    ModelOption,
    ModelSize,
    QuietOption,
    Reporter,
    ToleranceOption,
    UsageProblem,
    WeightsOption,
    check_one_stdout_format,
    engine_half,
    engine_tolerance,
    parse_methods,
    reports_errors,
)
from rafttool.cli.tables import markdown_table, rich_table
from rafttool.engine.padding import check_input_size
from rafttool.engine.weights import NoBundledWeightsError, bundled_weights
from rafttool.io.images import read_image

EXAMPLES = """\
[bold]Examples[/bold]

  raft bench --size 1024x436 --random-weights --model small --iters 12 --repeats 3

  raft bench --size 640x480 --size 1280x720 --batch 1 --batch 4 --method raft --method dis

  raft bench --images frame1.png frame2.png --device cuda --half --json

Each configuration runs in a fresh process; the first --warmup calls are not timed. Memory is
what inference adds on top of the loaded model: the RSS peak on CPU, the allocator peak on CUDA.
Baselines (dis, farneback, tvl1, ...) run on the CPU, one pair per call."""

_SIZE = re.compile(r"(\d+)[xX](\d+)")


def parse_size(text: str) -> tuple[int, int]:
    """'1024x436' -> (1024, 436)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or min(int(match[1]), int(match[2])) < 1:
        raise UsageProblem(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1024x436")
    return int(match[1]), int(match[2])


def plan(
    methods: list[str],
    sizes: list[tuple[int, int]],
    batches: list[int],
    iters: list[int],
    devices: list[str],
    **common: Any,
) -> list[BenchConfig]:
    """Every configuration to measure: RAFT over the whole grid, a baseline once per size."""
    configs = []
    for method in methods:
        for width, height in sizes:
            if method == "raft":
                grid = itertools.product(devices, batches, iters)
                configs += [BenchConfig("raft", width, height, b, i, d, **common) for d, b, i in grid]
            else:
                configs.append(BenchConfig(method, width, height, **{**common, "half": False, "int8": None, "tolerance": "auto"}))
    return configs


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def _iterations(record: dict) -> str:
    """'12', or 'mean run/most' where adaptive iterations stopped early; '-' for OpenCV's methods."""
    if not record["iters"]:
        return "-"
    run = record["iterations_run"]
    return str(record["iters"]) if run is None or run == record["iters"] else f"{run:.1f}/{record['iters']}"


def table_rows(results: list[BenchResult]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per configuration; the spread is min-max and the interquartile range."""
    header = ["method", "weights", "device", "precision", "size", "batch", "iters", "median ms", "min-max ms", "IQR ms", "pairs/s", "+memory MB"]
    rows = []
    for result in results:
        record, (q1, q3) = result.as_dict(), result.quartiles
        rows.append(
            [
                record["model"],
                record["weights"],
                record["device"],
                record["precision"],
                f"{record['width']}x{record['height']}",
                str(record["batch"]),
                _iterations(record),
                _ms(result.median),
                f"{_ms(min(result.latencies))}-{_ms(max(result.latencies))}",
                f"{_ms(q3 - q1)}",
                f"{result.pairs_per_second:.2f}",
                f"{result.memory_mb:.0f}",
            ]
        )
    return header, rows


def describe_host(host: HostInfo) -> str:
    """One line naming the hardware and software the numbers were measured with."""
    gpus = f", GPU: {', '.join(host.gpus)}" if host.gpus else ""
    fast = f" (faster than fp32 here: {', '.join(host.fast_precisions)})" if host.fast_precisions else ""
    return f"{host.cpu}{fast}, {host.cores} cores{gpus}; {host.convolutions}; torch {host.torch} ({host.threads} threads), OpenCV {host.opencv}"


def _check_weights(model: ModelSize, weights: Path | None, random_weights: bool) -> None:
    """Fail before any process starts when RAFT has nothing to load."""
    if random_weights:
        if weights is not None:
            raise UsageProblem("give either --weights or --random-weights, not both")
        return
    if weights is None:
        try:
            bundled_weights(model.value)
        except NoBundledWeightsError as error:
            raise ValueError(f"{error}; or time the architecture alone with --random-weights") from None


@reports_errors
def bench(
    size: Annotated[
        Optional[list[str]], typer.Option("--size", help="WIDTHxHEIGHT; repeatable.", show_default="1024x436, or the --images size")
    ] = None,
    method: MethodOption = None,
    batch: Annotated[Optional[list[int]], typer.Option("--batch", min=1, help="Pairs per forward pass; repeatable.", show_default="1", rich_help_panel=ENGINE_PANEL)] = None,
    iters: Annotated[
        Optional[list[int]], typer.Option("--iters", min=1, help="Refinement iterations; repeatable.", show_default="12", rich_help_panel=ENGINE_PANEL)
    ] = None,
    device: Annotated[
        Optional[list[str]], typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps; repeatable.", show_default="auto", rich_help_panel=ENGINE_PANEL)
    ] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed runs per configuration.")] = 5,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs before timing.")] = 1,
    images: Annotated[
        Optional[tuple[Path, Path]], typer.Option("--images", help="Time on these two frames instead of random texture.", show_default=False)
    ] = None,
    random_weights: Annotated[
        bool, typer.Option("--random-weights", help="Untrained weights: same speed as trained ones, flow meaningless.", rich_help_panel=ENGINE_PANEL)
    ] = False,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch and OpenCV.", show_default="all cores")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="A markdown table on stdout, for reports.")] = False,
    model: ModelOption = DEFAULT_SIZE,
    weights: WeightsOption = None,
    half: HalfOption = False,
    int8: Int8Option = None,
    tolerance: ToleranceOption = None,
    json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Latency, throughput and peak memory per size, batch, iteration count, device and precision."""
    check_one_stdout_format(json, markdown)
    methods = parse_methods(method)
    if "raft" in methods:
        _check_weights(model, weights, random_weights)
    if size:
        sizes = [parse_size(s) for s in size]
    elif images is not None:
        height, width = read_image(images[0]).shape[:2]
        sizes = [(width, height)]
    else:
        sizes = [(1024, 436)]
    if "raft" in methods:
        for width, height in sizes:
            check_input_size(height, width)  # before any process starts, not in the middle of a sweep

    reporter = Reporter(quiet, json)
    configs = plan(
        methods,
        sizes,
        batch or [1],
        iters or [12],
        device or ["auto"],
        half=engine_half(half),
        int8=int8,
        tolerance=engine_tolerance(tolerance),
        model=model.value,
        weights=str(weights) if weights else None,
        random_weights=random_weights,
        repeats=repeats,
        warmup=warmup,
        images=tuple(str(p) for p in images) if images else None,
        threads=threads,
    )
    results = []
    with reporter.progress(len(configs), "benchmarking", unit="configs") as advance:
        for config in configs:
            results.append(run_config(config))
            advance()

    host = host_info()
    if json:
        for result in results:
            reporter.record({**result.as_dict(), "host": asdict(host)})
        return
    header, rows = table_rows(results)
    title = f"raft bench on {describe_host(host)}"
    if markdown:
        typer.echo(f"{title}\n\n{markdown_table(header, rows, labels=5)}")
    else:
        Console(width=max(Console().width, 140)).print(rich_table(title, header, rows, labels=5))
    if random_weights and "raft" in methods:
        reporter.note("note: RANDOM weights: timings and memory are those of the architecture; the flow itself is meaningless")
