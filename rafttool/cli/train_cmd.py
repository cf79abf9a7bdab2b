"""`raft train`, `raft export` and `raft average-weights`: train RAFT on synthetic or standard data, ship the result."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rafttool.api import resolve_device
from rafttool.engine.model import build_model
from rafttool.engine.weights import average_weights, load_into, save_weights
from rafttool.cli.common import DebugOption, DeviceOption, ModelOption, ModelSize, QuietOption, Reporter, UsageProblem, fail, reports_errors
from rafttool.train.run import last_validation, train
from rafttool.train.synthetic import SyntheticFlowConfig
from rafttool.train.trainer import TrainConfig, bf16_trains_faster, export_checkpoint

TRAIN_EXAMPLES = """
Examples:

  raft train --run-dir runs/small                        # synthetic data, resumable
  raft train --run-dir runs/small                        # again: continues from the last checkpoint
  raft train --run-dir runs/small --steps 8000           # continue it for longer (the schedule is re-planned)
  raft train --run-dir runs/gpu --device cuda --bf16 --batch-size 12 --minutes 30   # schedule fitted to 30 minutes
  raft train --run-dir runs/dim --synthetic low_contrast_prob=0.3 --synthetic max_layers=16
  raft train --run-dir runs/ft --data ~/datasets/Sintel --init-weights weights/raft-small.pt --lr 1e-4
"""


def _parse_crop(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageProblem(f"--crop '{text}': expected HEIGHTxWIDTH, e.g. 224x288") from None
    if height % 8 or width % 8 or min(height, width) < 128:
        raise UsageProblem(f"--crop {text}: both sides must be multiples of 8 and at least 128")
    return height, width


_GENERATOR_FIXED = ("height", "width", "length", "debug")  # set by --crop, or not for training


def _parse_generator_settings(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings -> synthetic-generator settings, typed like the defaults."""
    defaults = {k: v for k, v in asdict(SyntheticFlowConfig()).items() if k not in _GENERATOR_FIXED}
    settings: dict[str, object] = {}
    for item in items:
        key, _, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in defaults or not text:
            raise UsageProblem(f"--synthetic '{item}': expected KEY=VALUE with KEY one of {', '.join(defaults)}")
        default = defaults[key]
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                settings[key] = text.lower() in ("true", "1")
            elif isinstance(default, tuple):
                settings[key] = tuple(float(v) for v in text.split(","))
            else:
                settings[key] = type(default)(text)
        except ValueError:
            raise UsageProblem(f"--synthetic '{item}': {text!r} is not a valid value for {key} (default {default!r})") from None
    return settings


@reports_errors
def train_command(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Folder of the run: config, checkpoint, logs.")] = Path("runs/raft-small"),
    data: Annotated[str, typer.Option("--data", help="'synthetic', or a folder of standard datasets with GT.")] = "synthetic",
    model: ModelOption = ModelSize.small,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Total optimizer steps of the schedule (6000 for a new run); on a resumed run, its new length.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 6,
    crop: Annotated[str, typer.Option("--crop", help="Training crop HEIGHTxWIDTH.")] = "192x256",
    iters: Annotated[int, typer.Option("--iters", min=1, help="Refinement iterations while training.")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate of the one-cycle schedule.")] = 4e-4,
    bf16: Annotated[
        Optional[bool],
        typer.Option("--bf16/--fp32", help="bf16 autocast (correlation in fp32). Default: bf16 on GPUs and on CPUs where it is timed faster; fp32 elsewhere.", show_default=False),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Data-generation processes.")] = 1,
    threads: Annotated[int, typer.Option("--threads", min=0, help="Torch threads (0: torch's default); 1 on busy machines.")] = 0,
    ema_decay: Annotated[float, typer.Option("--ema-decay", min=0.0, max=0.99999, help="Decay of the weight average that is validated and exported (0: off).")] = 0.999,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample stream and initialisation; use a new one per stage.")] = 1234,
    init_weights: Annotated[Optional[Path], typer.Option("--init-weights", help="Start from these weights (fine-tuning).")] = None,
    validate_on: Annotated[Optional[Path], typer.Option("--validate-on", help="Folder of real pairs with GT to monitor.")] = None,
    validate_every: Annotated[int, typer.Option("--validate-every", min=1)] = 500,
    minutes: Annotated[
        float,
        typer.Option("--minutes", min=0.0, help="Train this long: after a few timed steps the schedule is re-planned to end then (0: use --steps).", show_default=False),
    ] = 0.0,
    checkpoint_minutes: Annotated[
        float, typer.Option("--checkpoint-minutes", min=0.0, help="Minutes between checkpoints: what a kill can lose at most.")
    ] = TrainConfig.checkpoint_seconds / 60,
    device: DeviceOption = "auto",
    synthetic: Annotated[
        Optional[list[str]],
        typer.Option("--synthetic", help="Generator setting KEY=VALUE, repeatable (e.g. max_layers=16); see SyntheticFlowConfig.", show_default=False),
    ] = None,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Train RAFT; rerun the same command to resume an interrupted run exactly.

    A checkpoint (model, optimizer, schedule, step, RNG state) is rewritten every few minutes;
    metrics go to RUN_DIR/metrics.jsonl and validation results to RUN_DIR/validation.jsonl.
    When RUN_DIR already holds a run, its saved settings are used and the other options are
    ignored, except --steps, which lengthens or shortens the run (the schedule is re-planned),
    and --minutes and --device, which are this invocation's.
    """
    reporter = Reporter(quiet=quiet)
    torch_device = resolve_device(device)
    if (run_dir / "config.json").exists():
        config = TrainConfig.load(run_dir)
        reporter.note(f"resuming the run in '{run_dir}' with its saved settings")
        if steps is not None and steps != config.steps:
            reporter.note(f"changing the run's length from {config.steps} to {steps} steps")
            config = replace(config, steps=steps)
    else:
        height, width = _parse_crop(crop)
        generator = _parse_generator_settings(synthetic or [])
        config = TrainConfig(
            run_dir=str(run_dir), data=data, model=model.value, steps=steps or TrainConfig.steps, batch_size=batch_size,
            height=height, width=width, iters=iters, lr=lr, bf16=bf16_trains_faster(torch_device) if bf16 is None else bf16, workers=workers, threads=threads,
            ema_decay=ema_decay, seed=seed, init_weights=str(init_weights) if init_weights else None,
            validation_data=str(validate_on) if validate_on else None, validate_every=validate_every,
            checkpoint_seconds=60.0 * checkpoint_minutes, synthetic=generator,
        )  # fmt: skip
    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeRemainingColumn())
    with Progress(*columns, console=reporter.console, disable=quiet) as bar:
        task = bar.add_task("train", total=config.steps, status="")

        def show(step: int, total: int, logged: dict[str, float]) -> None:
            """Advance the bar; the figures are the last logged step's (reading them each step would wait on a GPU)."""
            status = f"loss {logged['loss']:.2f}  epe {logged['epe']:.2f}  {logged['seconds']:.2f} s/step" if logged else ""
            bar.update(task, completed=step, total=total, status=status)

        with stop_on_sigterm() as stop:
            trainer = train(config, progress=show, device=torch_device, time_budget=60.0 * minutes, stop=stop)
    if stop.is_set():
        message = f"terminated at step {trainer.step}; '{trainer.checkpoint_path}' holds it: rerun the same command to resume"
        raise fail(message, 143, debug)
    reporter.note(f"stopped at step {trainer.step}/{config.steps}; checkpoint in '{trainer.checkpoint_path}'")


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[threading.Event]:
    """Within the block, SIGTERM (``kill``, a session or job ending) sets the event it yields,
    which ends training after the step in progress, checkpoint written, instead of killing it
    and losing the last interval."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


@reports_errors
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A training run folder.")],
    output: Annotated[Path, typer.Argument(help="Weights file to write (rafttool format).")],
    metrics: Annotated[Optional[Path], typer.Option("--metrics", help="JSON file of evaluation results to embed.")] = None,
    debug: DebugOption = False,
) -> None:
    """Write a run's current weights as a rafttool weights file with its recipe in the header."""
    header = {"exported": time.strftime("%Y-%m-%d %H:%M:%S"), "last_validation": last_validation(run_dir)}
    if metrics is not None:
        header["metrics"] = json.loads(metrics.read_text())
    export_checkpoint(run_dir, output, header)


@reports_errors
def average_command(
    output: Annotated[Path, typer.Argument(help="Weights file to write (rafttool format).")],
    inputs: Annotated[list[Path], typer.Argument(help="Two or more weights files of one model size, fine-tuned from the same start.")],
    debug: DebugOption = False,
) -> None:
    """Write the uniform average of weights files (a weight soup), with each input's header in its own."""
    weights = average_weights(inputs)
    model = load_into(build_model(weights.model), weights)
    save_weights(output, model, weights.metadata | {"averaged": time.strftime("%Y-%m-%d %H:%M:%S")})
    typer.echo(f"wrote '{output}': RAFT-{weights.model}, the average of {len(inputs)} files", err=True)


AVERAGE_EXAMPLES = """
Examples:

  raft export runs/stage12 stage12.pt
  raft average-weights soup.pt weights/raft-large.pt stage12.pt
  raft eval ../shared/data -m raft --weights soup.pt
"""


EXPORT_EXAMPLES = """
Examples:

  raft export runs/raft-small weights/raft-small.pt
  raft export runs/raft-small weights/raft-small.pt --metrics eval.json
"""
