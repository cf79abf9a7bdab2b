#!/usr/bin/env python3
"""Regenerate the README's performance table on the current machine.

    python benchmarks/readme_table.py > perf.md        # then paste perf.md into README.md

Measures RAFT-small and RAFT-large (12 iterations, fp32, batch 1) and the DIS and Farneback
baselines at Sintel's 1024x436, on the CPU and on the first GPU when there is one, each in a fresh
process exactly as ``raft bench`` does, and prints a markdown table headed by the hardware and
software it ran on. Sizes without bundled weights are timed with random weights: speed and
memory depend on the architecture only, and the table says which weights were used.
"""

from __future__ import annotations

import argparse
import datetime
import sys

import torch

from rafttool.benchmark import BenchConfig, describe, host_info, run_config
from rafttool.cli.bench_cmd import describe_host, parse_size, plan, table_rows
from rafttool.cli.tables import markdown_table
from rafttool.engine.weights import NoBundledWeightsError, bundled_weights

BASELINES = ["dis-medium", "farneback"]


def _has_bundled(model: str) -> bool:
    try:
        bundled_weights(model)
    except NoBundledWeightsError:
        return False
    return True


def configs(size: tuple[int, int], iters: int, repeats: int, threads: int | None) -> list[BenchConfig]:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    common = {"repeats": repeats, "threads": threads}
    planned = []
    for model in ("small", "large"):
        planned += plan(["raft"], [size], [1], [iters], devices, model=model, random_weights=not _has_bundled(model), **common)
    return planned + plan(BASELINES, [size], [1], [iters], ["cpu"], **common)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1024x436", help="WIDTHxHEIGHT (default: Sintel's 1024x436)")
    parser.add_argument("--iters", type=int, default=12, help="RAFT refinement iterations (default 12)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    args = parser.parse_args(argv)

    results = []
    for config in configs(parse_size(args.size), args.iters, args.repeats, args.threads):
        print(f"measuring {describe(config)} on {config.device} ...", file=sys.stderr, flush=True)
        results.append(run_config(config))
    header, rows = table_rows(results)
    today = datetime.date.today().isoformat()
    print(f"Measured on {today} with `python benchmarks/readme_table.py`: {describe_host(host_info())}.")
    print(f"Median of {args.repeats} runs after one warm-up; memory is what inference adds to the loaded model (RSS peak on CPU, allocator peak on GPU).")
    if any(r.weights == "random" for r in results):
        print("Rows with weights 'random' time the architecture with untrained weights (same cost as trained ones).")
    print()
    print(markdown_table(header, rows, labels=5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
