"""Speed of rafttool's engine against the original RAFT computation, in one process, same frames.

Paths, run interleaved (reference, exact, default, reference, ...) so that load from other
processes hits them alike; each figure is the median over ``--repeats`` (with
``--every-sintel-pair``: the mean over the pairs of each pair's median):

* reference: :func:`rafttool.engine.reference.reference_forward` on :func:`as_reference` of the
  model: what the original code computes, the way it computes it (PyTorch instance norm, the full
  volume pooled level by level, ``grid_sample`` on every level, the flow upsampled every iteration);
* exact: the engine with a fixed number of iterations, fp32: the same numbers, less work;
* int8 (on CPUs where :func:`~rafttool.engine.int8.int8_supported`): the exact path with the GRU
  gates and the flow head's first convolution in int8;
* default: what :class:`rafttool.api.FlowEngine` does by default with bundled weights: adaptive
  iterations (at most ``--iters``) in :func:`rafttool.api.default_precision` (RAFT-small: int8
  where supported; RAFT-large: bf16 on CPUs with AMX, else fp32). Only with trained weights: with random
  weights the stopping rule has nothing to converge to;
* half (with ``--half``): the exact path under autocast to bf16 (CPU) or fp16 (CUDA), the
  correlation still fp32.

Speed-ups are reference time / path time, on wall-clock time and on this process's CPU time
(steadier when other processes share the cores). Differences are flow vs the reference, in px;
``faults`` counts the page faults of the median run (memory the OS mapped in during it).

    python benchmarks/speed_vs_reference.py --weights-small runs/raft-small-synth/checkpoint.pt
    python benchmarks/speed_vs_reference.py --models small --weights-small weights/raft-small.pt --every-sintel-pair
"""

from __future__ import annotations

import argparse
import functools
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rafttool.api import default_precision, resolve_device
from rafttool.data.datasets import detect_datasets
from rafttool.engine.correlation import VolumeWorkspace
from rafttool.engine.int8 import int8_supported
from rafttool.engine.memory import keep_freed_memory
from rafttool.engine.model import DEFAULT_TOLERANCES, RAFT, FlowOutput, build_model
from rafttool.engine.reference import as_reference, reference_forward
from rafttool.engine.weights import model_from_weights
from rafttool.evaluate import with_gt
from rafttool.io.images import read_image

SINTEL_PAIR = ("sintel/training/clean/alley_1/frame_0002.png", "sintel/training/clean/alley_1/frame_0003.png")


Pair = tuple[torch.Tensor, torch.Tensor]


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()


def frames(data: Path, width: int, height: int, every_sintel_pair: bool) -> tuple[list[Pair], str]:
    """Real Sintel pairs when they have the requested size (alley_1 frames 2-3, or with
    ``every_sintel_pair`` every Sintel pair with GT in ``data``), else a seeded random pair."""
    paths = [(data / a, data / b) for a, b in [SINTEL_PAIR]]
    if every_sintel_pair:
        splits = detect_datasets(data)
        paths = [(s.image1_path, s.image2_path) for split in ("sintel-clean", "sintel-final") for s in with_gt(splits.get(split, []))]
    pairs = [(read_image(a), read_image(b)) for a, b in paths if a.is_file() and b.is_file()]
    pairs = [(_tensor(a), _tensor(b)) for a, b in pairs if a.shape[:2] == (height, width)]
    if pairs:
        return pairs, f"{len(pairs)} Sintel pair(s)" if every_sintel_pair else f"Sintel {SINTEL_PAIR[0].split('/')[3]} frames 2-3"
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, height, width + 8, generator=generator) * 255
    return [(image[..., 8:], image[..., :-8])], "random frames shifted by 8 px"


def load_model(size: str, weights: str | None) -> RAFT:
    if weights is None:
        torch.manual_seed(0)
        return build_model(size).eval()
    model, loaded = model_from_weights(weights)
    if loaded.model != size:
        raise SystemExit(f"{weights} holds RAFT-{loaded.model} weights, not RAFT-{size}")
    return model.eval()


def timed(run: Callable[[], FlowOutput], device: torch.device) -> tuple[FlowOutput, float, float, int]:
    """Wall and process CPU time of one run, and the page faults it took (memory the OS mapped
    in: time that depends on what ran before); GPU work is waited for, so it is counted."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    wall, cpu = time.perf_counter(), time.process_time()
    output = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return output, wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def benchmark(
    size: str, weights: str | None, pairs: list[Pair], iters: int, repeats: int, half: bool, precision: str = "auto"
) -> None:
    """Every path on every pair; a path's time is the sum over pairs of its median run."""
    device = pairs[0][0].device
    model = load_model(size, weights).to(device)
    reference = as_reference(model)
    # One workspace per path, as each FlowEngine keeps one: the volume's memory is reused from
    # pass to pass. A shared one would hand the fp32 path a bf16 (int8) volume's memory and
    # make it map in a fresh volume every time (about 0.1-0.2 s per pass at 1024x436).
    workspaces = {name: VolumeWorkspace() for name in ("exact", "int8", "default")}
    int8 = device.type == "cpu" and int8_supported()
    paths: dict[str, Callable[[Pair], FlowOutput]] = {
        "reference": lambda pair: reference_forward(reference, *pair, iters),
        "exact": lambda pair: model(*pair, iters, workspace=workspaces["exact"]),
    }
    if int8:
        paths["int8"] = lambda pair: model(*pair, iters, int8=True, workspace=workspaces["int8"])
    dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    if weights is not None:
        if precision == "auto":
            precision = default_precision(size, device, bundled=True)

        def default(pair: Pair) -> FlowOutput:
            with torch.autocast(device.type, dtype=dtype, enabled=precision == "bf16"):
                return model(*pair, iters, tolerance=DEFAULT_TOLERANCES[size], int8=precision == "int8", workspace=workspaces["default"])

        paths["default"] = default
    if half:

        def reduced(pair: Pair) -> FlowOutput:
            with torch.autocast(device.type, dtype=dtype):
                return model(*pair, iters)

        paths["half"] = reduced

    totals = {name: [0.0, 0.0, 0.0] for name in paths}  # wall, cpu, page faults
    iterations = {name: 0 for name in paths}
    differences: dict[str, list[torch.Tensor]] = {name: [] for name in paths}
    with torch.inference_mode():
        for name, run in paths.items():  # warm-up: first-call allocations, oneDNN kernel creation
            run(pairs[0])
        for pair in pairs:
            times: dict[str, list[tuple[float, float, int]]] = {name: [] for name in paths}
            outputs: dict[str, FlowOutput] = {}
            for _ in range(repeats):
                for name, run in paths.items():
                    outputs[name], *measured = timed(functools.partial(run, pair), device)
                    times[name].append(tuple(measured))
            for name, output in outputs.items():
                for column in range(3):
                    totals[name][column] += statistics.median(t[column] for t in times[name])
                iterations[name] += output.iterations_run
                differences[name].append((output.flow.float() - outputs["reference"].flow).abs().flatten())

    label = f"RAFT-{size}" + ("" if weights else " (random weights)")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{label}, {pairs[0][0].shape[-1]}x{pairs[0][0].shape[-2]}, max {iters} iterations, {where}, median of {repeats}, {len(pairs)} pair(s)")
    if weights is not None:
        print(f"default path: {precision}, adaptive stop at {DEFAULT_TOLERANCES[size]} px")
    print(f"{'path':<10} {'wall s':>7} {'cpu s':>7} {'x wall':>7} {'x cpu':>7} {'iters':>5} {'max |d| px':>11} {'mean |d| px':>12} {'faults':>8}")
    ref_wall, ref_cpu, _ = totals["reference"]
    for name, (wall, cpu, faults) in totals.items():
        difference = torch.cat(differences[name])
        print(
            f"{name:<10} {wall / len(pairs):7.2f} {cpu / len(pairs):7.2f} {ref_wall / wall:7.2f} {ref_cpu / cpu:7.2f} "
            f"{iterations[name] / len(pairs):5.1f} {difference.max().item():11.2e} {difference.mean().item():12.2e} {faults / len(pairs):8.0f}"
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
    parser.add_argument(
        "--every-sintel-pair", action="store_true", help="every Sintel pair with GT in --data, not only alley_1 (seconds: mean per pair)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--default-precision",
        default="auto",
        choices=["auto", "fp32", "int8", "bf16"],
        help="what the default path computes in (auto: as FlowEngine chooses on this CPU; int8 shows a CPU without AMX)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    pairs, what = frames(args.data, width, height, args.every_sintel_pair)
    device = resolve_device(args.device)
    if device.type == "cpu":
        keep_freed_memory()  # as FlowEngine does, for every path alike
    pairs = [(a.to(device), b.to(device)) for a, b in pairs]
    print(f"frames: {what}")
    for size in args.models:
        benchmark(size, getattr(args, f"weights_{size}"), pairs, args.iters, args.repeats, args.half, args.default_precision)


if __name__ == "__main__":
    main()
