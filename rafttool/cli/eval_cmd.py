"""``raft eval``: accuracy of our network and OpenCV baselines on datasets with ground truth.

Every method runs on the same pairs and lands in the same table, one per benchmark split, so the
network is always seen next to the classical floor it has to beat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.console import Console

from rafttool.baselines import METHOD_NAMES, BaselineUnavailable, make_baseline
from rafttool.cli.common import (
    DEFAULT_SIZE,
    DebugOption,
    DeviceOption,
    HalfOption,
    Int8Option,
    ItersOption,
    JsonOption,
    MethodOption,
    ModelOption,
    QuietOption,
    Reporter,
    ToleranceOption,
    UsageProblem,
    WeightsOption,
    check_one_stdout_format,
    ensure_folder,
    load_engine,
    parse_methods,
    reports_errors,
)
from rafttool.cli.tables import markdown_table, rich_table
from rafttool.data.datasets import SPARSE_FAMILIES, FlowSample, detect_datasets
from rafttool.evaluate import SPEED_BANDS, FamilyResult, PairErrors, Predictor, evaluate_methods, scored_pixels, with_gt
from rafttool.io.images import write_image
from rafttool.viz.error_map import error_mosaic

EXAMPLES = """\
[bold]Examples[/bold]

  raft eval datasets/ --method raft --method dis --method tvl1

  raft eval Sintel/training --families sintel-final --per-sequence --max-pairs 50

  raft eval KITTI/ --weights raft-things.pth --markdown > kitti.md

  raft eval data/ --method raft --method dis --by-speed

  raft eval data/ --method dis --save-errors errors/ --json > results.jsonl

DATASET_DIR holds Sintel, KITTI 2012/2015, FlyingChairs, FlyingThings3D, HD1K or Middlebury in
their official layouts (searched a few levels deep), or is a list file of 'img1 img2 gt' lines.
Methods: """ + ", ".join(METHOD_NAMES) + """ ('dis' is dis-medium)."""

# (header, summary key, format); a column shows only when some method has that key.
Column = tuple[str, str, Callable[[float], str]]


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:.{digits}f}"


BASE_COLUMNS: list[Column] = [
    ("EPE", "epe", _fixed(2)),
    ("1px", "1px", _percent),
    ("3px", "3px", _percent),
    ("5px", "5px", _percent),
]
FL_COLUMN: Column = ("Fl-all", "fl", _percent)
OCCLUSION_COLUMNS: list[Column] = [("matched", "matched_epe", _fixed(2)), ("unmatched", "unmatched_epe", _fixed(2))]
SPEED_COLUMNS: list[Column] = [(name, f"{name}_epe", _fixed(2)) for name, _, _ in SPEED_BANDS]
TIME_COLUMN: Column = ("s/pair", "seconds_per_pair", _fixed(3))


def select_splits(splits: dict[str, list[FlowSample]], families: str | None, max_pairs: int | None) -> dict[str, list[FlowSample]]:
    """Splits with GT pairs that the --families filter names, each cut to --max-pairs.

    A filter entry is a split ('sintel-final', 'kitti-2012') or a whole family ('sintel', 'kitti').
    """
    if families:
        wanted = [name.strip().lower() for name in families.split(",") if name.strip()]
        found = {name: samples for name, samples in splits.items() if name in wanted or samples[0].family in wanted}
        known = set(splits) | {samples[0].family for samples in splits.values()}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise UsageProblem(f"--families: {', '.join(unknown)} not in this dataset; found {', '.join(splits)}")
        splits = found
    selected = {name: with_gt(samples, max_pairs) for name, samples in splits.items()}
    selected = {name: samples for name, samples in selected.items() if samples}
    if not selected:
        raise ValueError(f"no pairs with ground truth among {', '.join(splits)}: evaluation needs GT flow")
    return selected


def _columns(family: str, summaries: Sequence[dict[str, float]], by_speed: bool) -> list[Column]:
    columns = list(BASE_COLUMNS)
    if family in SPARSE_FAMILIES:
        columns.append(FL_COLUMN)
    if any("matched_epe" in s for s in summaries):
        columns += OCCLUSION_COLUMNS
    if by_speed:
        columns += SPEED_COLUMNS
    return columns + [TIME_COLUMN]


def _cells(summary: dict[str, float], columns: list[Column]) -> list[str]:
    return [fmt(summary[key]) if key in summary else "-" for _, key, fmt in columns]


def table_rows(methods: dict[str, FamilyResult], per_sequence: bool, by_speed: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one split's table: a row per method, or per sequence and method;
    ``by_speed`` adds EPE per band of GT speed."""
    first = next(iter(methods.values()))
    if per_sequence:
        groups = [(seq, name, part) for name, result in methods.items() for seq, part in result.by_sequence().items()]
        groups.sort(key=lambda g: g[0])  # stable: methods stay in the order given within a sequence
        labelled = [([seq, name], part.summary()) for seq, name, part in groups]
        header = ["sequence", "method", "pairs"]
    else:
        labelled = [([name], result.summary()) for name, result in methods.items()]
        header = ["method"]
    columns = _columns(first.family, [summary for _, summary in labelled], by_speed)
    rows = [labels + ([str(int(s["pairs"]))] if per_sequence else []) + _cells(s, columns) for labels, s in labelled]
    return header + [title for title, _, _ in columns], rows


def _title(split: str, methods: dict[str, FamilyResult], per_sequence: bool) -> str:
    pairs = len(next(iter(methods.values())).pairs)
    return f"{split}: {pairs} pair{'s' if pairs != 1 else ''}" + (", per sequence" if per_sequence else "")


def _records(results: dict[str, dict[str, FamilyResult]], per_sequence: bool, raft: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat JSON records: one per split and method, plus one per sequence with --per-sequence."""
    records = []
    for split, methods in results.items():
        for name, result in methods.items():
            base = {"split": split, "family": result.family, "method": name, **(raft if name.startswith("raft") else {})}
            records.append({**base, "sequence": None, **result.summary()})
            if per_sequence:
                records += [{**base, "sequence": seq, **part.summary()} for seq, part in result.by_sequence().items()]
    return records


def _error_writer(folder: Path) -> Callable[[str, FlowSample, dict, np.ndarray, PairErrors], None]:
    """Per-pair mosaics under FOLDER/split/method/sequence_frame.png."""

    def write(method: str, sample: FlowSample, data: dict, prediction: np.ndarray, errors: PairErrors) -> None:
        stem = sample.image1_path.stem
        name = stem if sample.sequence in stem else f"{sample.sequence}_{stem}".replace("/", "_")
        mosaic = error_mosaic(data["image1"], data["flow"], prediction, scored_pixels(sample, data))
        target = ensure_folder(folder / sample.split_name / method) / f"{name}.png"
        write_image(target, mosaic)

    return write


@reports_errors
def evaluate(
    dataset: Annotated[Path, typer.Argument(metavar="DATASET_DIR", help="Dataset folder (official layouts) or list file of 'img1 img2 gt' lines.", show_default=False)],
    method: MethodOption = None,
    families: Annotated[
        Optional[str], typer.Option("--families", help="Comma-separated splits or families, e.g. sintel-clean,kitti.", show_default=False)
    ] = None,
    max_pairs: Annotated[Optional[int], typer.Option("--max-pairs", min=1, help="At most N pairs per split (quick runs).", show_default=False)] = None,
    per_sequence: Annotated[bool, typer.Option("--per-sequence", help="Also break each split down by sequence.")] = False,
    by_speed: Annotated[
        bool, typer.Option("--by-speed", help="Also show EPE by GT speed: under 10, 10-40 and over 40 px (Sintel's bands; always in --json).")
    ] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown tables on stdout, for reports.")] = False,
    save_errors: Annotated[
        Optional[Path], typer.Option("--save-errors", help="Write a per-pair error mosaic PNG into this folder.", show_default=False)
    ] = None,
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
    """End-point error, outlier rates and Fl of RAFT and OpenCV baselines on flow benchmarks."""
    check_one_stdout_format(json, markdown)
    names = parse_methods(method)
    reporter = Reporter(quiet, json)
    splits = select_splits(detect_datasets(dataset), families, max_pairs)
    if save_errors is not None:
        ensure_folder(save_errors)

    predictors: dict[str, Predictor] = {}
    raft_info: dict[str, Any] = {}
    for name in names:
        if name == "raft":
            engine = load_engine(model, weights, device, iters, half, int8, tolerance)
            label = f"raft-{engine.model_name}"
            predictors[label] = engine.estimate
            raft_info = {"weights": str(weights) if weights else f"bundled raft-{model.value}", "iters": iters, "device": str(engine.device), "precision": engine.precision, "int8": engine.int8, "tolerance": engine.tolerance}
            continue
        try:
            predictors[name] = make_baseline(name)
        except BaselineUnavailable as error:
            reporter.note(f"note: {error}")
            reporter.record({"method": name, "skipped": str(error)})
    if not predictors:
        raise ValueError("none of the requested methods can run here (see the notes above)")

    total = sum(len(samples) for samples in splits.values()) * len(predictors)
    save = _error_writer(save_errors) if save_errors is not None else None
    with reporter.progress(total, "evaluating") as advance:

        def on_pair(method_name: str, sample: FlowSample, data: dict, prediction: np.ndarray, errors: PairErrors) -> None:
            if save is not None:
                save(method_name, sample, data, prediction, errors)
            advance()

        results = evaluate_methods(splits, predictors, on_pair)

    if json:
        for record in _records(results, per_sequence, raft_info):
            reporter.record(record)
        return
    console = Console(width=max(Console().width, 120), soft_wrap=False)
    for split, methods in results.items():
        tables = [False, True] if per_sequence else [False]
        for by_sequence in tables:
            header, rows = table_rows(methods, by_sequence, by_speed)
            title, labels = _title(split, methods, by_sequence), 2 if by_sequence else 1
            if markdown:
                typer.echo(f"**{title}**\n\n{markdown_table(header, rows, labels)}\n")
            else:
                console.print(rich_table(title, header, rows, labels))
    if raft_info:
        reporter.note(f"raft: {raft_info['weights']}, {iters} iterations on {raft_info['device']}")
