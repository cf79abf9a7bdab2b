"""Resumable RAFT training on a stream of synthetic (or real) pairs.

A run lives in one folder: ``config.json``, ``checkpoint.pt`` (model, optimizer, scheduler,
step and RNG state, rewritten atomically every few minutes), ``metrics.jsonl`` (one line per
logged step) and ``validation.jsonl``. Starting the same run again continues where the last
checkpoint left it; samples are a pure function of (seed, index), so the data stream resumes
exactly too.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from rafttool.engine.correlation import VolumeWorkspace
from rafttool.engine.cpu import fast_bf16
from rafttool.engine.memory import keep_freed_memory
from rafttool.engine.model import RAFT, build_model
from rafttool.engine.weights import load_into, read_weights, save_weights
from rafttool.io.atomic import atomic_write
from rafttool.train.loss import sequence_loss


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved beside its checkpoints."""

    run_dir: str = "runs/raft-small"
    data: str = "synthetic"  # or a folder of standard datasets (Sintel, KITTI, Chairs, ...)
    model: str = "small"
    steps: int = 6000
    batch_size: int = 6
    height: int = 224
    width: int = 288
    iters: int = 8
    lr: float = 4e-4
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    clip: float = 1.0
    gamma: float = 0.8
    bf16: bool = True
    workers: int = 1
    threads: int = 0
    seed: int = 1234
    ema_decay: float = 0.999  # weights averaged over ~1/(1-decay) steps are validated and shipped; 0: off
    init_weights: str | None = None
    checkpoint_seconds: float = 300.0
    log_every: int = 10
    validate_every: int = 500
    validation_data: str | None = None
    synthetic: dict[str, Any] = field(default_factory=dict)


    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "TrainConfig":
        """The configuration a run was started with (to resume it)."""
        saved = json.loads((Path(run_dir) / "config.json").read_text())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in saved.items() if k in known} | {"run_dir": str(run_dir)})


def bf16_trains_faster(device: torch.device) -> bool:
    """Whether bf16 autocast makes a training step faster than fp32 on ``device``: on GPUs with
    bf16, and on CPUs whose bf16 convolutions are timed faster (:func:`~rafttool.engine.cpu.fast_bf16`;
    with AMX, RAFT-small, batch 6, 224x288, 8 iterations: 1.38 s bf16 against 2.28 s fp32; on an
    Intel Xeon with AVX512-BF16 but no AMX bf16 was the slower, 1.76 s against 1.32 s at 192x256). `benchmarks/train_step_precision.py` measures it."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and fast_bf16()


# The trainer's timer: tests replace it with a simulated one.
clock = time.monotonic

# A time-budgeted run times steps BUDGET_WARMUP_STEPS .. +BUDGET_TIMED_STEPS (after workers
# and kernel selection have warmed up) and fits its schedule to the speed measured there.
BUDGET_WARMUP_STEPS = 5
BUDGET_TIMED_STEPS = 20


class OffsetSampler(Sampler[int]):
    """Indices start .. end: the resumed run sees exactly the samples it had not seen yet."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start


def freeze_batch_norm(model: nn.Module) -> None:
    """Keep batch-norm statistics fixed: with small batches they are too noisy to learn."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()


def _rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain values, so the checkpoint loads with weights_only."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    numpy_state = {"keys": torch.from_numpy(keys.astype(np.int64)), "position": position, "has_gauss": has_gauss, "gauss": gauss}
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": list(random.getstate()[1])}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))
    random.setstate((3, tuple(state["python"]), None))


class Trainer:
    """Owns the model, optimizer and schedule of one run, and its folder on disk."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset,
        validators: list[Callable[[RAFT], dict[str, float]]] | None = None,
        progress: Callable[[int, int, dict[str, float]], None] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.dataset = dataset
        self.validators = validators or []
        self.progress = progress
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if config.threads:
            torch.set_num_threads(config.threads)
        # On the CPU the correlation volume and its gradient keep their memory from step to step:
        # fresh, it is mapped in page by page (2 x 384 MB at batch 12, 320x448). GPUs have a
        # caching allocator for that.
        self.volume_workspace: VolumeWorkspace | None = None
        if self.device.type == "cpu":
            keep_freed_memory()  # a training step on the CPU runs ~10% faster
            self.volume_workspace = VolumeWorkspace()
        torch.manual_seed(config.seed)
        self.model = build_model(config.model)
        if config.init_weights:
            load_into(self.model, read_weights(config.init_weights))
        self.model.to(self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest kernels once
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, eps=1e-8)
        self.scheduler = self._one_cycle(done_steps=0)
        self.ema: dict[str, torch.Tensor] | None = None
        self._averaged: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.step = 0
        self.elapsed = 0.0
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        if self.checkpoint_path.exists():
            self._resume()
        else:
            self._save_config()
        if config.ema_decay and self.ema is None:  # a new run, or one checkpointed before averaging existed
            self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _save_config(self) -> None:
        """Write the settings a resume reads back (:meth:`TrainConfig.load`)."""
        (self.run_dir / "config.json").write_text(json.dumps(asdict(self.config), indent=2))

    def _one_cycle(self, done_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
        """The one-cycle schedule of ``config.steps``, positioned after ``done_steps`` steps."""
        return torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=self.config.lr,
            total_steps=self.config.steps + 100,
            pct_start=self.config.warmup_fraction,
            cycle_momentum=False,
            anneal_strategy="linear",
            last_epoch=done_steps - 1,
        )

    def _resume(self) -> None:
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        if state["scheduler"]["total_steps"] == self.scheduler.total_steps:
            self.scheduler.load_state_dict(state["scheduler"])
        else:  # the run was given a new length: re-plan the schedule from where it stands
            self.scheduler = self._one_cycle(done_steps=self.step)
            self._save_config()
        self.elapsed = state.get("elapsed", 0.0)
        if self.config.ema_decay and state.get("ema") is not None:
            self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        _set_rng_state(state["rng"])
        for log in ("metrics.jsonl", "validation.jsonl"):
            self._forget_records_after(self.run_dir / log, self.step)

    @staticmethod
    def _forget_records_after(path: Path, step: int) -> None:
        """Drop log records of steps a killed run made after its last checkpoint: they will be redone."""
        if not path.exists():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        if len(kept) < len(lines):
            with atomic_write(path) as temp:
                temp.write_text("".join(line + "\n" for line in kept))

    def save_checkpoint(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "rng": _rng_state(),
            "config": asdict(self.config),
        }
        if self.ema is not None:
            state["ema"] = self.ema
        with atomic_write(self.checkpoint_path) as temp:
            torch.save(state, temp)

    def _loader(self, end_step: int) -> DataLoader:
        batch = self.config.batch_size
        return DataLoader(
            self.dataset,
            batch_size=batch,
            sampler=OffsetSampler(self.step * batch, end_step * batch),
            num_workers=self.config.workers,
            persistent_workers=False,
            drop_last=True,
            prefetch_factor=4 if self.config.workers else None,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_leave_sigterm_to_the_trainer,
        )

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        """One optimizer step; metrics stay on the device (0-dim tensors) until someone reads them."""
        self.model.train()
        freeze_batch_norm(self.model)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
            output = self.model(
                batch["image1"], batch["image2"], iters=self.config.iters, all_iterations=True, workspace=self.volume_workspace
            )
        loss, metrics = sequence_loss(output.iterations, batch["flow"], batch["valid"], gamma=self.config.gamma)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        metrics["grad_norm"] = grad_norm.detach()
        # The step's one wait for the device: a non-finite loss or gradient skips the update.
        if bool(torch.isfinite(loss.detach() + grad_norm)):
            self.optimizer.step()
            self._update_average()
        self.scheduler.step()
        return metrics | {"lr": self.scheduler.get_last_lr()[0]}

    @torch.no_grad()
    def _update_average(self) -> None:
        """Exponential moving average of the weights: single steps swing real-data EPE widely."""
        if self.ema is None:
            return
        if self._averaged is None:  # (average, live) pairs; the live tensors are updated in place
            live = self.model.state_dict()
            self._averaged = [(self.ema[key], value) for key, value in live.items()]
        floats = [(mean, value) for mean, value in self._averaged if value.is_floating_point()]
        # Short memory at first, so the average is not dominated by the initial weights.
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        # One multi-tensor kernel for all weights: per-tensor calls cost a launch each on a GPU.
        torch._foreach_lerp_([mean for mean, _ in floats], [value for _, value in floats], 1.0 - decay)
        for mean, value in self._averaged:
            if not value.is_floating_point():
                mean.copy_(value)

    def evaluation_model(self) -> RAFT:
        """The model that validation sees and export ships: the weight average when kept."""
        if self.ema is None:
            return self.model
        model = build_model(self.config.model).to(self.device)
        model.load_state_dict(self.ema)
        return model

    def validate(self) -> dict[str, float]:
        model = self.evaluation_model().eval()
        results: dict[str, float] = {"step": self.step}
        for validator in self.validators:
            results.update(validator(model))
        with open(self.run_dir / "validation.jsonl", "a") as log:
            log.write(json.dumps(results) + "\n")
        return results

    def fit_schedule_to(self, seconds: float, seconds_per_step: float) -> None:
        """Re-plan the run to end when ``seconds`` more have passed at the measured speed."""
        self.config.steps = self.step + max(1, int(seconds / seconds_per_step))
        self.scheduler = self._one_cycle(done_steps=self.step)
        self._save_config()

    def run(self, time_budget: float = 0.0, stop: threading.Event | None = None) -> None:
        """Train until ``config.steps``, checkpointing on a timer and on the way out.

        With a ``time_budget`` (seconds), the schedule is re-planned after a few timed steps so
        that it ends, learning rate annealed, when the budget is spent, and again at every
        checkpoint from the mean speed so far (other work on the machine changes it); training
        stops at the budget in any case. Setting ``stop`` (from a signal handler, say) ends it
        after the step in progress, so the checkpoint holds whole steps only.
        """
        last_save = clock()
        budget = _TimeBudget(time_budget, self.step) if time_budget else None
        log = open(self.run_dir / "metrics.jsonl", "a")
        logged: dict[str, float] = {}  # the last logged step's metrics, for the progress display
        try:
            # A budgeted run's length is not known yet: stream on, the loop stops it.
            waiting = clock()
            for batch in self._loader(end_step=self.step + 10**9 if time_budget else self.config.steps):
                if self.step >= self.config.steps:
                    break
                if (budget and budget.spent(self)) or (stop is not None and stop.is_set()):
                    break
                started = clock()
                metrics = self.train_step(batch)
                self.step += 1
                seconds = clock() - started
                self.elapsed += seconds
                if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                    # Time blocked on the data workers tells whether generation keeps up.
                    logged = {k: float(v) for k, v in metrics.items()}
                    logged.update(step=self.step, seconds=round(seconds, 3), data_seconds=round(started - waiting, 3))
                    log.write(json.dumps(logged) + "\n")
                    log.flush()
                if self.progress:
                    self.progress(self.step, self.config.steps, logged)
                if self.validators and self.step % self.config.validate_every == 0:
                    self.validate()
                if clock() - last_save > self.config.checkpoint_seconds:
                    self.save_checkpoint()
                    last_save = clock()
                    if budget:
                        budget.refit_due = True
                waiting = clock()
        finally:
            log.close()
            self.save_checkpoint()


def _leave_sigterm_to_the_trainer(worker_id: int) -> None:
    """Make a data worker ignore SIGTERM, so that ``pkill`` or a session ending, which signal the
    workers too, stops training gracefully: the trainer finishes its step, writes the checkpoint
    and shuts the workers down itself. Torch's own handler would kill the worker at once, and the
    trainer would fail on the lost worker instead. A worker still exits when its trainer dies."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _TimeBudget:
    """Fits a run's schedule to wall-clock seconds from the speed measured as it trains."""

    def __init__(self, seconds: float, first_step: int) -> None:
        self.seconds = seconds
        self.start = clock()
        self.timing_from_step = first_step + BUDGET_WARMUP_STEPS
        self.timing_from: float | None = None  # when step timing_from_step began
        self.refit_due = True  # set again at every checkpoint

    def spent(self, trainer: Trainer) -> bool:
        """Re-plan ``trainer`` when a fit is due; whether the budget is used up."""
        now = clock()
        if trainer.step == self.timing_from_step:
            self.timing_from = now
        elif self.timing_from is not None and self.refit_due and trainer.step >= self.timing_from_step + BUDGET_TIMED_STEPS:
            per_step = (now - self.timing_from) / (trainer.step - self.timing_from_step)
            # 5% spare: the first timing holds no validation or checkpoint.
            trainer.fit_schedule_to(0.95 * (self.seconds - (now - self.start)), per_step)
            self.refit_due = False
        return now - self.start > self.seconds


def export_checkpoint(run_dir: str | os.PathLike, output: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
    """Write a run's latest checkpoint as shipped weights, with the recipe and step in the header."""
    checkpoint = Path(run_dir) / "checkpoint.pt"
    if not checkpoint.is_file():
        raise ValueError(f"no checkpoint in '{run_dir}': train first with `raft train --run-dir {run_dir}`")
    config = TrainConfig.load(run_dir)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = build_model(config.model)
    model.load_state_dict(state.get("ema") or state["model"])
    header = {"steps": state["step"], "train_seconds": round(state.get("elapsed", 0.0)), "recipe": asdict(config)}
    save_weights(output, model, header | dict(metadata or {}))
