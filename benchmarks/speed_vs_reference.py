"""Speed of rafttool's engine against the original RAFT computation, in one process, same frames.

Paths, run interleaved (reference, exact, default, reference, ...) so that load from other
processes hits them alike; each figure is the median over ``--repeats``:

* reference: :func:`rafttool.engine.reference.reference_forward` on :func:`as_reference` of the
  model: what the original code computes, the way it computes it (PyTorch instance norm, the full
  volume pooled level by level, ``grid_sample`` on every level, the flow upsampled every iteration);
* exact: the engine with a fixed number of iterations, fp32: the same numbers, less work;
* int8 (on CPUs where :func:`~rafttool.engine.int8.int8_supported`): the exact path with the GRU
  gates and the flow head's first convolution in int8;
* default: what :class:`rafttool.api.FlowEngine` does by default with bundled weights: adaptive
  iterations (at most ``--iters``), int8 where supported. Only with trained weights: with random
  weights the stopping rule has nothing to converge to;
* half (with ``--half``): the exact path under autocast to bf16 (CPU) or fp16 (CUDA), the
  correlation still fp32.

Speed-ups are reference time / path time, on wall-clock time and on this process's CPU time
(steadier when other processes share the cores). Differences are flow vs the reference, in px.

    python benchmarks/speed_vs_reference.py --weights-small runs/raft-small-synth/checkpoint.pt
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rafttool.api import resolve_device
from rafttool.engine.correlation import VolumeWorkspace
from rafttool.engine.int8 import int8_supported
from rafttool.engine.model import DEFAULT_TOLERANCE, RAFT, FlowOutput, build_model
from rafttool.engine.reference import as_reference, reference_forward
from rafttool.engine.weights import model_from_weights
from rafttool.io.images import read_image

SINTEL_PAIR = ("sintel/training/clean/alley_1/frame_0002.png", "sintel/training/clean/alley_1/frame_0003.png")


def frames(data: Path, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A real Sintel pair when it has the requested size, else a seeded random pair."""
    paths = [data / p for p in SINTEL_PAIR]
    if all(p.is_file() for p in paths):
        images = [read_image(p) for p in paths]
        if images[0].shape[:2] == (height, width):
            pair = [torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1)[None].float() for i in images]
            return pair[0], pair[1], f"Sintel {SINTEL_PAIR[0].split('/')[3]} frames 2-3"
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, height, width + 8, generator=generator) * 255
    return image[..., 8:], image[..., :-8], "random frames shifted by 8 px"


def load_model(size: str, weights: str | None) -> RAFT:
    if weights is None:
        torch.manual_seed(0)
        return build_model(size).eval()
    model, loaded = model_from_weights(weights)
    if loaded.model != size:
        raise SystemExit(f"{weights} holds RAFT-{loaded.model} weights, not RAFT-{size}")
    return model.eval()


def timed(run: Callable[[], FlowOutput], device: torch.device) -> tuple[FlowOutput, float, float]:
    """Wall and process CPU time of one run; GPU work is waited for, so it is counted."""
    wall, cpu = time.perf_counter(), time.process_time()
    output = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return output, time.perf_counter() - wall, time.process_time() - cpu


def benchmark(
    size: str, weights: str | None, image1: torch.Tensor, image2: torch.Tensor, iters: int, repeats: int, half: bool
) -> None:
    model = load_model(size, weights).to(image1.device)
    reference = as_reference(model)
    workspace = VolumeWorkspace()  # as FlowEngine keeps one: the volume's memory is reused
    int8 = image1.device.type == "cpu" and int8_supported()
    paths: dict[str, Callable[[], FlowOutput]] = {
        "reference": lambda: reference_forward(reference, image1, image2, iters),
        "exact": lambda: model(image1, image2, iters, workspace=workspace),
    }
    if int8:
        paths["int8"] = lambda: model(image1, image2, iters, int8=True, workspace=workspace)
    if weights is not None:
        paths["default"] = lambda: model(image1, image2, iters, tolerance=DEFAULT_TOLERANCE, int8=int8, workspace=workspace)
    if half:
        dtype = torch.bfloat16 if image1.device.type == "cpu" else torch.float16

        def reduced() -> FlowOutput:
            with torch.autocast(image1.device.type, dtype=dtype):
                return model(image1, image2, iters)

        paths["half"] = reduced
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    outputs: dict[str, FlowOutput] = {}
    with torch.inference_mode():
        for name, run in paths.items():  # warm-up: first-call allocations, oneDNN kernel creation
            outputs[name] = run()
        for _ in range(repeats):
            for name, run in paths.items():
                outputs[name], wall, cpu = timed(run, image1.device)
                times[name].append((wall, cpu))

    label = f"RAFT-{size}" + ("" if weights else " (random weights)")
    where = torch.cuda.get_device_name(image1.device) if image1.device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{label}, {image1.shape[-1]}x{image1.shape[-2]}, max {iters} iterations, {where}, median of {repeats}")
    print(f"{'path':<10} {'wall s':>7} {'cpu s':>7} {'x wall':>7} {'x cpu':>7} {'iters':>5} {'max |d| px':>11} {'mean |d| px':>12}")
    ref_wall = statistics.median(t[0] for t in times["reference"])
    ref_cpu = statistics.median(t[1] for t in times["reference"])
    for name, output in outputs.items():
        wall = statistics.median(t[0] for t in times[name])
        cpu = statistics.median(t[1] for t in times[name])
        difference = (output.flow.float() - outputs["reference"].flow).abs()
        print(
            f"{name:<10} {wall:7.2f} {cpu:7.2f} {ref_wall / wall:7.2f} {ref_cpu / cpu:7.2f} {output.iterations_run:5d} "
            f"{difference.max().item():11.2e} {difference.mean().item():12.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["large", "small"], choices=["large", "small"])
    parser.add_argument("--size", default="1024x436", help="WIDTHxHEIGHT")
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--weights-large", help="trained RAFT-large weights (enables the default path)")
    parser.add_argument("--weights-small", help="trained RAFT-small weights (enables the default path)")
    parser.add_argument("--half", action="store_true", help="also time reduced precision")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    image1, image2, what = frames(args.data, width, height)
    device = resolve_device(args.device)
    image1, image2 = image1.to(device), image2.to(device)
    print(f"frames: {what}")
    for size in args.models:
        benchmark(size, getattr(args, f"weights_{size}"), image1, image2, args.iters, args.repeats, args.half)


if __name__ == "__main__":
    main()
