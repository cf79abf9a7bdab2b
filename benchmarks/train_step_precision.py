"""Time one RAFT training step in fp32 and under bf16 autocast, interleaved in one process.

    python benchmarks/train_step_precision.py [--model small] [--batch 6] [--size 192x256] [--repeats 3]

Prints the median seconds per step of each precision; this decides `raft train --bf16/--fp32`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rafttool.engine.model import build_model
from rafttool.train.loss import sequence_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small")
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--size", default="192x256", help="HEIGHTxWIDTH")
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    model = build_model(args.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    image1, image2 = (torch.rand(args.batch, 3, height, width) * 255 for _ in range(2))
    flow, valid = torch.randn(args.batch, 2, height, width) * 5, torch.ones(args.batch, height, width)

    def step(bf16: bool) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            output = model(image1, image2, iters=args.iters, all_iterations=True)
        loss, _ = sequence_loss(output.iterations, flow, valid)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    step(False), step(True)  # warm-up: oneDNN picks its kernels on first use
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    for bf16, label in ((False, "fp32"), (True, "bf16 autocast")):
        print(f"{label}: {statistics.median(times[bf16]):.2f} s/step (median of {args.repeats})")


if __name__ == "__main__":
    main()
