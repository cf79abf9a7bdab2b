"""A process's first pass with and without the route choices stored by earlier processes.

One-pair ``raft flow`` runs are all first passes, and a first pass times each layer's two
routes (:mod:`rafttool.engine.timing_cache`). Each round runs three fresh processes on one
pair, in turn: with an empty cache folder (times and stores), with that folder (reads), and
with the cache off (times, stores nothing); it reports each one's first-pass and second-pass
seconds. Medians over the rounds, since one process's time is noisy on a shared machine.

    python benchmarks/first_pass.py --model large --threads 2 --rounds 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PAIR = Path("../shared/data/sintel/training/clean/alley_1")

ONE_PROCESS = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from rafttool.api import FlowEngine
engine = FlowEngine(model=sys.argv[2], half=False, int8=False, tolerance=None, device="cpu")
for _ in range(2):
    start = time.perf_counter()
    engine.estimate(sys.argv[3], sys.argv[4])
    print(time.perf_counter() - start)
"""


def passes(cache: str, args: argparse.Namespace) -> list[float]:
    env = {**os.environ, "RAFTTOOL_CACHE_DIR": cache}
    command = [sys.executable, "-c", ONE_PROCESS, str(args.threads), args.model, str(args.pair / "frame_0002.png"), str(args.pair / "frame_0003.png")]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return [float(line) for line in output.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("small", "large"), default="large")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pair", type=Path, default=PAIR, help="folder with frame_0002.png and frame_0003.png")
    args = parser.parse_args()
    runs: dict[str, list[list[float]]] = {"empty cache": [], "stored choices": [], "cache off": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as folder:
            runs["empty cache"].append(passes(folder, args))
            runs["stored choices"].append(passes(folder, args))
        runs["cache off"].append(passes("off", args))
    print(f"RAFT-{args.model}, fp32, 12 iterations, {args.threads} threads, {args.pair.name}, {args.rounds} rounds")
    for name, times in runs.items():
        first, second = (statistics.median(t[i] for t in times) for i in (0, 1))
        listed = ", ".join(f"{t[0]:.2f}" for t in times)
        print(f"{name:<15} first pass {first:5.2f} s (median; {listed})  second pass {second:5.2f} s")


if __name__ == "__main__":
    main()
