"""Where the exact CPU path's time goes: each stage of one inference pass, timed in place.

Wraps the engine's stages (encoders, volume, lookup, the update step and its parts, Winograd
products, upsampling) with wall-clock timers and runs the pass ``--repeats`` times; prints the
stage times of the median pass. Nested stages are indented and counted inside their parent too.

    python benchmarks/exact_path_stages.py --model large --threads 2
    python benchmarks/exact_path_stages.py --model small --weights weights/raft-small.pt --pair A.png B.png
"""

from __future__ import annotations

import argparse
import collections
import functools
import inspect
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import rafttool.engine.correlation as correlation
import rafttool.engine.model as model_module
import rafttool.engine.update as update
import rafttool.engine.winograd as winograd
from rafttool.engine.correlation import VolumeWorkspace
from rafttool.engine.memory import keep_freed_memory
from rafttool.engine.weights import model_from_weights
from rafttool.io.images import read_image

Times = collections.defaultdict[str, float]


def timed(times: Times, calls: collections.Counter[str], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = function(*args, **kwargs)
        times[name] += time.perf_counter() - started
        calls[name] += 1
        return result

    return run


def frames(pair: list[str] | None, size: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair given, or seeded random frames of ``size`` (WIDTHxHEIGHT) shifted by 8 px."""
    if pair:
        a, b = (torch.from_numpy(read_image(path).copy()).permute(2, 0, 1)[None].float() for path in pair)
        return a, b
    width, height = (int(v) for v in size.split("x"))
    image = torch.rand(1, 3, height, width + 8, generator=torch.Generator().manual_seed(0)) * 255
    return image[..., 8:].contiguous(), image[..., :-8].contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="large", choices=["large", "small"])
    parser.add_argument("--weights", help="trained weights (default: seeded random ones)")
    parser.add_argument("--pair", nargs=2, metavar=("A", "B"), help="frames (default: random ones of --size)")
    parser.add_argument("--size", default="1024x436", help="WIDTHxHEIGHT of the random frames")
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as FlowEngine does
    torch.manual_seed(0)
    model = (model_from_weights(args.weights)[0] if args.weights else model_module.build_model(args.model)).eval()

    times: Times = collections.defaultdict(float)
    calls: collections.Counter[str] = collections.Counter()
    stages = [
        (model_module, "build_correlation", "volume"),
        (correlation.CorrelationPyramid, "__call__", "lookup"),
        (correlation.OnDemandCorrelation, "__call__", "lookup"),
        (winograd.WinogradUpdateStep, "__call__", "update step"),
        (winograd._WinogradCell, "__call__", "  GRU"),
        (update.UpdateBlock, "step", "update step"),  # the direct route, where Winograd does not pay
        (update.ConvGRUCell, "step", "  GRU"),
        (winograd.Tiles, "multiply", "  Winograd products"),
        (model_module.RAFT, "upsample", "upsample"),
        (model.feature_encoder, "forward", "feature encoder"),
        (model.context_encoder, "forward", "context encoder"),
        (model.update_block.motion_encoder, "forward", "  motion encoder"),
        (model.update_block.flow_head, "step", "  flow head"),
    ]
    for owner, attribute, name in stages:
        wrapped = timed(times, calls, name, getattr(owner, attribute))
        static = isinstance(inspect.getattr_static(owner, attribute), staticmethod)
        setattr(owner, attribute, staticmethod(wrapped) if static else wrapped)

    image1, image2 = frames(args.pair, args.size)
    workspace = VolumeWorkspace()
    passes = []
    with torch.inference_mode():
        model(image1, image2, args.iters, workspace=workspace)  # warm-up: allocations, oneDNN kernels
        for _ in range(args.repeats):
            times.clear()
            calls.clear()
            started = time.perf_counter()
            model(image1, image2, args.iters, workspace=workspace)
            passes.append((time.perf_counter() - started, dict(times), dict(calls)))
    total, median_times, median_calls = sorted(passes, key=lambda p: p[0])[len(passes) // 2]
    print(f"RAFT-{model.config.name}, {image1.shape[-1]}x{image1.shape[-2]}, {args.iters} iterations, {args.threads} threads")
    print(f"{'pass':<22} {total * 1e3:8.1f} ms (median of {args.repeats})")
    for name, seconds in median_times.items():
        print(f"{name:<22} {seconds * 1e3:8.1f} ms  {median_calls[name]:4d} calls  {seconds / total:6.1%}")
    for key, by_winograd in winograd._route_choices.items():  # the route each layer shape was timed faster by
        kind, kernel, *shapes, threads = key
        print(f"{'  route':<22} {kind} {kernel[0]}x{kernel[1]} {shapes}: {'Winograd' if by_winograd else 'direct'}")
    print(f"{'statistics':<22} pass times {', '.join(f'{p[0]:.3f}' for p in passes)} s (spread {statistics.pstdev(p[0] for p in passes) * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
