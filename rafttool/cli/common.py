"""What every command shares: option declarations, error reporting, progress, output paths.

Conventions all commands keep (and new ones should too):

* stdout carries data only (flow bytes for ``-o -``, JSON lines for ``--json``, ``raft info``);
  progress bars, notes and errors go to stderr;
* an error is one line, ``error: ...``, with exit code 2 when the command line itself is wrong
  (bad option combination, unknown extension) and 1 when the inputs or the machine are
  (missing or corrupt files, no such device); 130 on Ctrl-C; ``--debug`` adds the traceback;
* every file is written atomically, so an interrupted run leaves no half-written output.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import cv2
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from rafttool.api import FlowEngine
from rafttool.baselines import canonical_name
from rafttool.engine.cpu import fast_bf16
from rafttool.engine.weights import DEFAULT_MODEL
from rafttool.io.flowfile import SUPPORTED_WRITE_EXTENSIONS

F = TypeVar("F", bound=Callable[..., Any])

ENGINE_PANEL = "Network"
OUTPUT_PANEL = "Reporting"


class UsageProblem(ValueError):
    """The command line asks for something impossible; exit code 2."""


class ModelSize(str, Enum):
    small = "small"
    large = "large"


DEFAULT_SIZE = ModelSize(DEFAULT_MODEL)


DeviceOption = Annotated[
    str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=ENGINE_PANEL)
]
ModelOption = Annotated[
    ModelSize,
    typer.Option("--model", help="Network size when using the bundled weights.", rich_help_panel=ENGINE_PANEL),
]
WeightsOption = Annotated[
    Optional[Path],
    typer.Option(
        "--weights",
        help="Checkpoint: original RAFT (.pth), torchvision or rafttool; its size overrides --model.",
        rich_help_panel=ENGINE_PANEL,
        show_default=False,
    ),
]
ItersOption = Annotated[
    int, typer.Option("--iters", min=1, help="Refinement iterations per pair.", rich_help_panel=ENGINE_PANEL)
]
HalfOption = Annotated[
    bool,
    typer.Option("--half", help="Reduced precision (fp16 on GPU, bf16 on CPU). Default: bf16 for the bundled RAFT-large on CPUs where bf16 is timed faster than fp32.", rich_help_panel=ENGINE_PANEL),
]
Int8Option = Annotated[
    Optional[bool],
    typer.Option(
        "--int8/--fp32",
        help="Update block and correlation in int8 (CPUs with VNNI; EPE within 2% of fp32 for the bundled weights), or all fp32 (no --half either). Default: int8 for the bundled weights where supported, except that the bundled RAFT-large runs bf16 on AMX.",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
ToleranceOption = Annotated[
    Optional[float],
    typer.Option(
        "--tolerance",
        min=0.0,
        help="Stop once an iteration moves the flow by less than this many px on average; 0: always run --iters. Default: 0.5 for the bundled RAFT-small, 0.2 for the bundled RAFT-large, 0 for --weights.",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
BatchOption = Annotated[
    int, typer.Option("--batch", min=1, help="Pairs per forward pass.", rich_help_panel=ENGINE_PANEL)
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="One JSON record per result on stdout.", rich_help_panel=OUTPUT_PANEL),
]
QuietOption = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress bar or notes on stderr.", rich_help_panel=OUTPUT_PANEL),
]
DebugOption = Annotated[
    bool,
    typer.Option("--debug", help="Show the full traceback of an error.", rich_help_panel=OUTPUT_PANEL),
]
MethodOption = Annotated[
    Optional[list[str]],
    typer.Option("--method", "-m", help="raft or an OpenCV baseline (dis, dis-fast, farneback, tvl1, ...); repeatable.", show_default="raft"),
]


def parse_methods(methods: list[str] | None) -> list[str]:
    """--method values as canonical names, duplicates dropped, in the order given ('raft' when none)."""
    try:
        return list(dict.fromkeys(canonical_name(m) for m in methods or ["raft"]))
    except ValueError as error:
        raise UsageProblem(f"--method: {error}") from None


def check_one_stdout_format(json: bool, markdown: bool) -> None:
    """--json and --markdown both fill stdout; mixed, neither could be parsed."""
    if json and markdown:
        raise UsageProblem("choose one of --json and --markdown")


def load_engine(
    model: ModelSize,
    weights: Path | None,
    device: str,
    iters: int,
    half: bool,
    int8: bool | None = None,
    tolerance: float | None = None,
    reporter: Reporter | None = None,
) -> FlowEngine:
    """The network the options ask for, loaded once per command; with a ``reporter``, a note
    where another precision would run much faster (:func:`precision_hint`)."""
    engine = FlowEngine(
        model=model.value, weights=weights, device=device, iters=iters, half=engine_half(half), int8=int8,
        tolerance=engine_tolerance(tolerance),
    )
    if reporter is not None and (hint := precision_hint(engine)):
        reporter.note(hint)
    return engine


def precision_hint(engine: FlowEngine) -> str | None:
    """A note for RAFT-large running fp32 on a CPU whose bf16 is timed fast (1024x436, 12
    iterations, 2 threads: with AMX 0.96 s against 1.84 s; on the AMD EPYC 1.76 s against 2.07). For weights other than the
    bundled ones it stays a hint: bf16's effect on their accuracy has not been measured."""
    if engine.device.type == "cpu" and engine.model_name == "large" and engine.precision == "fp32" and fast_bf16():
        return "note: this CPU runs bf16 fast: --half (bf16) runs RAFT-large faster (2x with AMX, 1.2x on an AMD EPYC); flow then differs from fp32 by rounding"
    return None


def engine_half(option: bool) -> bool | None:
    """--half as FlowEngine takes it: given -> bf16/fp16, absent -> the engine's default (with
    --fp32, int8=False, that default is fp32 throughout)."""
    return True if option else None


def engine_tolerance(option: float | None) -> float | str | None:
    """--tolerance as FlowEngine takes it: absent -> 'auto', 0 -> fixed iterations (None)."""
    if option is None:
        return "auto"
    return option or None


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(message: str, code: int, debug: bool) -> typer.Exit:
    """The one ``error:`` line (and the traceback with ``debug``); raise the exit it returns."""
    if debug:
        traceback.print_exc(file=sys.stderr)
    typer.echo(f"error: {one_line(message)}", err=True)
    return typer.Exit(code)


def reports_errors(command: F) -> F:
    """Turn a command's exceptions into one ``error:`` line and an exit code (see module doc).

    The command's own ``debug`` parameter decides whether the traceback is shown too.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug"))
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException, BrokenPipeError):
            raise
        except KeyboardInterrupt:
            raise fail("interrupted; files being written were discarded", 130, debug) from None
        except UsageProblem as error:
            raise fail(str(error), 2, debug) from None
        except OSError as error:
            where = f"'{error.filename}': " if error.filename else ""
            raise fail(f"{where}{error.strerror or error}", 1, debug) from None
        except ValueError as error:
            raise fail(str(error), 1, debug) from None
        except Exception as error:  # an unforeseen failure still gets one line, and the trace on request
            raise fail(f"{type(error).__name__}: {error} (run with --debug for the traceback)", 1, debug) from None

    return wrapper  # type: ignore[return-value]


class _RateColumn(ProgressColumn):
    """Items per second, which rich's stock columns do not show."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


class Reporter:
    """Where a command's words go: JSON records to stdout, notes and progress to stderr."""

    def __init__(self, quiet: bool = False, json_lines: bool = False) -> None:
        self.quiet = quiet
        self.json_lines = json_lines
        self.console = Console(stderr=True)

    def record(self, fields: dict[str, Any]) -> None:
        if self.json_lines:
            sys.stdout.write(json.dumps(fields) + "\n")
            sys.stdout.flush()

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False, markup=False)

    @contextmanager
    def progress(self, total: int | None, description: str, unit: str = "pairs") -> Iterator[Callable[[], None]]:
        """Yield a function to call per finished item.

        The bar shows only on an interactive stderr and for more than one item: a single pair is
        over in a moment, and a log file gains nothing from a bar.
        """
        if self.quiet or not self.console.is_terminal or (total is not None and total <= 1):
            yield lambda: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(unit), TimeRemainingColumn())
        with Progress(*columns, console=self.console) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)


def check_flow_extension(path: Path, option: str) -> None:
    if path.suffix.lower() not in SUPPORTED_WRITE_EXTENSIONS:
        raise UsageProblem(
            f"{option} '{path}': unknown flow extension '{path.suffix}'; use one of {', '.join(SUPPORTED_WRITE_EXTENSIONS)}"
        )


def check_image_extension(path: Path, option: str) -> None:
    if not cv2.haveImageWriter(str(path)):
        raise UsageProblem(f"{option} '{path}': unknown image extension '{path.suffix}'; use .png or .jpg")


def names_file(path: Path) -> bool:
    """An output path with an extension names a file; without one (or an existing folder), a folder."""
    return path.suffix != "" and not path.is_dir()


def ensure_folder(path: Path) -> Path:
    """Create an output folder (and parents), with a one-line error when that is impossible."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"cannot write into '{path}': it is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create folder '{path}': {error.strerror or error}") from None
    return path


def check_writable(path: Path) -> None:
    """Fail before the network runs, not after, when an output file cannot be created."""
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write '{path}': folder '{folder}' does not exist")
    if path.is_dir():
        raise ValueError(f"cannot write '{path}': it is a folder")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write '{path}': permission denied")


def prepare_outputs(files: list[Path], inputs: set[Path], folders: Iterable[Path] = ()) -> None:
    """Create the output folders and make sure every output file can be written, before any work is done."""
    for folder in folders:
        ensure_folder(folder)
    check_distinct(files, inputs)
    for path in files:
        check_writable(path)


def check_distinct(outputs: list[Path], inputs: set[Path]) -> None:
    """No two outputs may share a name, and no output may replace an input."""
    seen: set[Path] = set()
    resolved_inputs = {p.resolve() for p in inputs}
    for path in outputs:
        key = path.resolve()
        if key in resolved_inputs:
            raise UsageProblem(f"output '{path}' would overwrite an input; choose another name with -o")
        if key in seen:
            raise UsageProblem(f"two outputs would both be written to '{path}'; give them different names or folders")
        seen.add(key)
