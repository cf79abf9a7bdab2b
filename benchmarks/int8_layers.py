"""Which parts of RAFT can run in int8: EPE on ../shared/data per family, against fp32.

The motion encoder's last convolution, the GRU gates and the flow head's first convolution run in real int8 (``FlowEngine(int8=True)``,
see :mod:`rafttool.engine.int8`). Other layers are *simulated* in int8 on top of that: their
input rounded to uint8 with one scale per tensor (from its range), their weights to int8 with
one scale per output channel, then an fp32 convolution of the rounded values, which is what an
int8 convolution with exact integer accumulation computes. Layers with fewer than 8 input
channels (the stems' RGB input, the raw flow) are left alone.

    python benchmarks/int8_layers.py                  # the shipped set, and it with more layers
    python benchmarks/int8_layers.py --default-mode   # the engine: fp32/int8/bf16 x fixed/adaptive
    python benchmarks/int8_layers.py --by-part        # int8 volume alone, int8 update alone; per pair
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

import rafttool.engine.model as model_module
from rafttool.api import FlowEngine
from rafttool.data.datasets import detect_datasets
from rafttool.engine.int8 import int8_weights
from rafttool.engine.model import DEFAULT_TOLERANCES
from rafttool.engine.winograd import WinogradUpdateStep
from rafttool.evaluate import evaluate_family

EXTRA_LAYERS = {
    "motion encoder (first convs)": ("update_block.motion_encoder.corr_conv", "update_block.motion_encoder.flow_conv"),
    "context encoder": ("context_encoder",),
    "both encoders": ("feature_encoder", "context_encoder"),
}


def _round_activations(x: torch.Tensor) -> torch.Tensor:
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = max((high - low) / 255, 1e-12)
    zero_point = round(-low / scale)
    return ((x / scale + zero_point).round().clamp(0, 255) - zero_point) * scale


def _round_weights(w: torch.Tensor) -> torch.Tensor:
    integers, scales = int8_weights(w)  # exactly the engine's rounding
    return integers.float() * scales.view(-1, 1, 1, 1)


@contextlib.contextmanager
def simulated_int8(model: torch.nn.Module, prefixes: tuple[str, ...]) -> Iterator[None]:
    """Convolutions of modules whose name starts with one of ``prefixes`` compute as in int8."""
    chosen = {
        module.weight.data_ptr()
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Conv2d) and module.in_channels >= 8 and name.startswith(prefixes)
    }
    original = F.conv2d

    def conv2d(x, weight, *args, **kwargs):  # type: ignore[no-untyped-def]
        if weight.data_ptr() in chosen:
            x, weight = _round_activations(x), _round_weights(weight)
        return original(x, weight, *args, **kwargs)

    F.conv2d = conv2d
    try:
        yield
    finally:
        F.conv2d = original


@contextlib.contextmanager
def int8_part(part: str) -> Iterator[None]:
    """An int8 pass with only ``part`` ('volume' or 'update') in int8, the other in fp32 (the
    update block as the Winograd step, fp32's numbers up to rounding, even where the engine would
    pick the direct one): which of the two a weights file's int8 cost comes from."""
    if part == "volume":
        name, replacement = "Int8UpdateStep", WinogradUpdateStep
    else:
        build = model_module.build_correlation
        name, replacement = "build_correlation", lambda *args: build(*args[:-1], False)
    original = getattr(model_module, name)
    setattr(model_module, name, replacement)
    try:
        yield
    finally:
        setattr(model_module, name, original)


def evaluate(engine: FlowEngine, data: Path, per_pair: bool = False) -> dict[str, object]:
    """EPE and mean iterations per split, with ``per_pair`` each pair's EPE too."""
    row: dict[str, object] = {}
    for split, samples in detect_datasets(data).items():
        used: list[int] = []

        def predict(image1, image2):  # type: ignore[no-untyped-def]
            result = engine.estimate_batch([image1], [image2])[0]
            used.append(result.iterations_run)
            return result.flow

        result = evaluate_family(split, samples, predict)
        row[split] = round(result.summary()["epe"], 3)
        row[f"{split} iterations"] = round(sum(used) / len(used), 2)
        if per_pair:
            row[f"{split} pairs"] = [round(pair.epe, 3) for pair in result.pairs]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--weights", help="RAFT weights of either size (default: the bundled RAFT-small)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--default-mode", action="store_true", help="compare fp32/int8/bf16 with fixed and adaptive iterations")
    parser.add_argument("--by-part", action="store_true", help="fp32, int8, int8 volume only, int8 update only, per pair (12 iterations)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def engine(int8: bool, tolerance: float | None = None, half: bool = False) -> FlowEngine:
        return FlowEngine(weights=args.weights, device="cpu", iters=12, tolerance=tolerance, int8=int8, half=half)

    if args.default_mode:
        adaptive = DEFAULT_TOLERANCES[engine(False).model_name]
        for precision in ("fp32", "int8", "bf16"):
            for tolerance in (None, adaptive):
                run = engine(precision == "int8", tolerance, half=precision == "bf16")
                print(json.dumps({"precision": precision, "tolerance": tolerance, **evaluate(run, args.data)}), flush=True)
        return
    if args.by_part:
        print(json.dumps({"int8": "none", **evaluate(engine(False), args.data, per_pair=True)}), flush=True)
        print(json.dumps({"int8": "volume and update", **evaluate(engine(True), args.data, per_pair=True)}), flush=True)
        for part in ("volume", "update"):
            with int8_part(part):
                print(json.dumps({"int8": f"{part} only", **evaluate(engine(True), args.data, per_pair=True)}), flush=True)
        return
    print(json.dumps({"int8": "none", **evaluate(engine(False), args.data)}), flush=True)
    shipped = engine(True)
    print(json.dumps({"int8": "shipped: motion encoder's last conv, GRU, flow head", **evaluate(shipped, args.data)}), flush=True)
    for label, prefixes in EXTRA_LAYERS.items():
        with simulated_int8(shipped.model, prefixes):
            print(json.dumps({"int8": f"shipped + {label}", **evaluate(shipped, args.data)}), flush=True)


if __name__ == "__main__":
    main()
