"""Speed and memory of the engine and the OpenCV baselines, one configuration per fresh process.

Each configuration runs in its own Python process (``python -m rafttool.benchmark``, config as
JSON on stdin, result as JSON on stdout) so that its peak memory is its own: a process's
resident-set high-water mark never goes down, and in one long process the biggest configuration
would mask every later one. Inside the worker the high-water mark is reset once the model and
frames are ready (Linux ``/proc/self/clear_refs``), so the reported figure is what inference
adds on top of the loaded model, transient loading copies excluded. On CUDA the allocator's
own peak (``torch.cuda.max_memory_allocated``) is used instead.

Latency is wall time per call of the public API (frames in as uint8 arrays, flow out as numpy),
which is what a user waits for; the first ``warmup`` calls are not timed (allocator, kernels,
thread-pool start-up).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from rafttool.api import FlowEngine
from rafttool.baselines import make_baseline
from rafttool.engine.cpu import cpu_model, fast_bf16
from rafttool.engine.int8 import int8_supported
from rafttool.engine.model import build_model
from rafttool.engine.weights import DEFAULT_MODEL, bundled_weights, save_weights
from rafttool.engine.winograd import route_policy
from rafttool.io.images import read_image
from rafttool.train.textures import fractal_noise

MIB = 1024 * 1024
# Motion of the second synthetic frame: large enough for every method to do real work.
SYNTHETIC_SHIFT = (7, 3)


class BenchError(ValueError):
    """A configuration could not run; the message is the worker's one-line reason."""


@dataclass(frozen=True)
class BenchConfig:
    """One measured configuration: a method at one size, batch, iteration count, device, precision."""

    method: str = "raft"
    width: int = 1024
    height: int = 436
    batch: int = 1
    iters: int = 12
    device: str = "cpu"
    half: bool | None = None  # None: FlowEngine's default
    int8: bool | None = None  # None: FlowEngine's default
    tolerance: float | str | None = "auto"  # as FlowEngine takes it
    model: str = DEFAULT_MODEL
    weights: str | None = None
    random_weights: bool = False
    repeats: int = 5
    warmup: int = 1
    images: tuple[str, str] | None = None
    threads: int | None = None

    @property
    def is_raft(self) -> bool:
        return self.method == "raft"


@dataclass
class BenchResult:
    """Timings (seconds per call) and memory of one configuration, plus what actually ran."""

    config: BenchConfig
    latencies: list[float]
    memory_mb: float
    memory_kind: str
    baseline_mb: float
    device: str
    model: str
    weights: str
    threads: int
    precision: str  # fp32, bf16, fp16, int8 (RAFT's update block), or '-' for OpenCV's methods
    iterations_run: float | None = None  # RAFT's mean over the timed calls: adaptive runs stop early

    @property
    def median(self) -> float:
        return float(np.median(self.latencies))

    @property
    def quartiles(self) -> tuple[float, float]:
        q1, q3 = np.percentile(self.latencies, [25, 75])
        return float(q1), float(q3)

    @property
    def pairs_per_second(self) -> float:
        return self.config.batch / self.median

    def as_dict(self) -> dict[str, Any]:
        q1, q3 = self.quartiles
        config = self.config
        return {
            "method": config.method,
            "model": self.model,
            "weights": self.weights,
            "device": self.device,
            "precision": self.precision,
            "width": config.width,
            "height": config.height,
            "batch": config.batch,
            "iters": config.iters if config.is_raft else None,
            "iterations_run": self.iterations_run,
            "threads": self.threads,
            "repeats": len(self.latencies),
            "warmup": config.warmup,
            "latency_median_s": self.median,
            "latency_min_s": min(self.latencies),
            "latency_max_s": max(self.latencies),
            "latency_q1_s": q1,
            "latency_q3_s": q3,
            "pairs_per_second": self.pairs_per_second,
            "memory_mb": self.memory_mb,
            "memory_kind": self.memory_kind,
            "baseline_memory_mb": self.baseline_mb,
            "latencies_s": self.latencies,
        }


# --------------------------------------------------------------------------- frames


def synthetic_frames(width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random-textured RGB frame and the same frame moved by ``SYNTHETIC_SHIFT``.

    Multi-scale noise gives every method texture to match at all pyramid levels; the content does
    not change RAFT's cost, whose work depends on the size only.
    """
    rng = np.random.default_rng(seed)
    channels = [fractal_noise(rng, height, width, cell=64.0, persistence=0.6) for _ in range(3)]
    frame = np.round(np.stack(channels, axis=2) * 255).astype(np.uint8)
    dx, dy = SYNTHETIC_SHIFT
    return frame, np.roll(frame, (dy, dx), axis=(0, 1))


def bench_frames(config: BenchConfig) -> tuple[np.ndarray, np.ndarray]:
    """The user's two images resized to the configured size, or synthetic frames of that size."""
    if config.images is None:
        return synthetic_frames(config.width, config.height)
    size = (config.width, config.height)
    first, second = (read_image(path) for path in config.images)
    if first.shape[:2] != second.shape[:2] or first.shape[:2] != size[::-1]:
        first, second = (cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in (first, second))
    return first, second


# --------------------------------------------------------------------------- memory


def _status_mb(field_name: str) -> float | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in MiB, None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024 / MIB
    except OSError:
        return None
    return None


def _max_rss_mb() -> float:
    """getrusage's high-water mark: kilobytes on Linux, bytes on macOS."""
    import resource  # POSIX only, hence imported where needed

    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


def _reset_peak_rss() -> bool:
    """Make the kernel forget this process's RSS high-water mark (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


class _CpuMemory:
    """RSS added by inference: peak during the runs minus the resident size just before them."""

    kind = "RSS peak increase"

    def start(self) -> None:
        self.reset = _reset_peak_rss()
        current = _status_mb("VmRSS")
        # Without /proc the best baseline is the high-water mark so far; a loading spike can then hide some of the increase.
        self.baseline = current if current is not None else _max_rss_mb()

    def stop(self) -> float:
        peak = _status_mb("VmHWM") if self.reset else None
        return max((peak if peak is not None else _max_rss_mb()) - self.baseline, 0.0)


class _CudaMemory:
    """Allocator bytes added by inference: peak allocated minus allocated before (the weights)."""

    kind = "CUDA allocator peak increase"

    def __init__(self, device: Any) -> None:
        self.device = device

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.baseline = torch.cuda.memory_allocated(self.device) / MIB

    def stop(self) -> float:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) / MIB - self.baseline


# --------------------------------------------------------------------------- the worker


def _random_weights_file(model: str, folder: str) -> str:
    """Seeded random weights saved in our format, so the engine loads them like any checkpoint."""
    torch.manual_seed(0)
    path = os.path.join(folder, f"random-raft-{model}.pt")
    save_weights(path, build_model(model), {"note": "random weights for benchmarking"})
    return path


@dataclass
class _Subject:
    """What one configuration calls per timed run, and how to describe what ran."""

    call: Callable[[], int | None]  # RAFT's iterations run, None for other methods
    device: str
    model: str
    weights: str
    threads: int
    memory: _CpuMemory | _CudaMemory
    precision: str = "-"  # OpenCV's methods have one precision of their own


def _raft_subject(config: BenchConfig, image1: np.ndarray, image2: np.ndarray, scratch: str) -> _Subject:
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.random_weights:
        weights, label = _random_weights_file(config.model, scratch), "random"
    else:
        weights = config.weights or str(bundled_weights(config.model))
        label = Path(weights).name
    engine = FlowEngine(config.model, weights, config.device, config.iters, config.half, config.tolerance, int8=config.int8)
    images1, images2 = [image1] * config.batch, [image2] * config.batch
    return _Subject(
        call=lambda: engine.estimate_batch(images1, images2)[0].iterations_run,
        device=str(engine.device),
        model=f"raft-{engine.model_name}",
        weights=label,
        threads=torch.get_num_threads(),
        memory=_CudaMemory(engine.device) if engine.device.type == "cuda" else _CpuMemory(),
        precision=engine.precision,
    )


def _baseline_subject(config: BenchConfig, image1: np.ndarray, image2: np.ndarray) -> _Subject:
    if config.batch != 1 or config.device not in ("cpu", "auto"):
        raise ValueError(f"{config.method} runs on the CPU one pair at a time: use batch 1 and device cpu")
    predict = make_baseline(config.method)

    def call() -> None:
        predict(image1, image2)

    return _Subject(call, "cpu", config.method, "-", cv2.getNumThreads(), _CpuMemory())


def measure(config: BenchConfig) -> BenchResult:
    """Run one configuration in this process (the worker side; use :func:`run_config` from outside)."""
    if config.threads:
        cv2.setNumThreads(config.threads)
    image1, image2 = bench_frames(config)
    with tempfile.TemporaryDirectory(prefix="rafttool-bench-") as scratch:
        if config.is_raft:
            subject = _raft_subject(config, image1, image2, scratch)
        else:
            subject = _baseline_subject(config, image1, image2)
        subject.memory.start()
        for _ in range(config.warmup):
            subject.call()
        latencies, iterations = [], []
        for _ in range(config.repeats):
            started = time.perf_counter()
            iterations.append(subject.call())
            latencies.append(time.perf_counter() - started)
        added = subject.memory.stop()
    return BenchResult(
        config=config,
        latencies=latencies,
        memory_mb=added,
        memory_kind=subject.memory.kind,
        baseline_mb=subject.memory.baseline,
        device=subject.device,
        model=subject.model,
        weights=subject.weights,
        threads=subject.threads,
        precision=subject.precision,
        iterations_run=None if None in iterations else float(np.mean(iterations)),
    )


def run_config(config: BenchConfig, timeout: float | None = None) -> BenchResult:
    """Measure ``config`` in a fresh Python process; BenchError carries the worker's reason on failure."""
    # The worker must import this very package, installed or not.
    source_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "rafttool.benchmark"],
            input=json.dumps(asdict(config)),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{describe(config)}: did not finish within {timeout:g} s") from None
    reply = _last_json_line(done.stdout)
    if done.returncode != 0 or reply is None or "error" in reply:
        reason = reply["error"] if reply and "error" in reply else (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"{describe(config)}: {reason}")
    result = reply["result"]
    return BenchResult(config=config, **result)


def _last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def describe(config: BenchConfig) -> str:
    """A short human name for a configuration, for errors and progress."""
    what = f"raft-{config.model} iters={config.iters} batch={config.batch}" if config.is_raft else config.method
    return f"{what} at {config.width}x{config.height}"


@dataclass
class HostInfo:
    """What the numbers were measured on, for tables that will be read on other machines."""

    cpu: str
    cores: int
    torch: str
    threads: int
    opencv: str
    gpus: list[str] = field(default_factory=list)
    # Reduced precisions this CPU runs faster than fp32 (int8 with VNNI, bf16 where timed faster):
    # which of --int8 and --half pays depends on it, and it differs between machines of one cloud.
    fast_precisions: list[str] = field(default_factory=list)
    convolutions: str = "direct convolutions"  # how the exact path's wide convolutions are computed here


def host_info() -> HostInfo:
    cpu = cpu_model() or platform.processor() or platform.machine()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    fast = [name for name, fast in (("int8", int8_supported()), ("bf16", fast_bf16())) if fast]
    return HostInfo(
        cpu=cpu, cores=os.cpu_count() or 1, torch=torch.__version__, threads=torch.get_num_threads(), opencv=cv2.__version__,
        gpus=gpus, fast_precisions=fast, convolutions=route_policy(),
    )  # fmt: skip


def _worker() -> int:
    """Entry point of the per-configuration process: JSON config on stdin, one JSON line on stdout."""
    raw = json.loads(sys.stdin.read())
    if raw.get("images") is not None:
        raw["images"] = tuple(raw["images"])
    try:
        result = measure(BenchConfig(**raw))
    except (ValueError, OSError, RuntimeError) as error:
        print(json.dumps({"error": " ".join(str(error).split()) or type(error).__name__}))
        return 1
    fields = asdict(result)
    del fields["config"]
    print(json.dumps({"result": fields}))
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
