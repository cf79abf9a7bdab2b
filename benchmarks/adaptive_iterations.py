"""Accuracy/time trade-off of adaptive iterations on real data with ground truth.

Every pair runs once for ``--max-iters`` iterations, keeping each iteration's flow and update.
Because a pass is deterministic, stopping with tolerance t gives exactly the flow of the first
iteration whose update (mean |delta f| in full-resolution px, :func:`converged`) falls under t, so
one pass per pair yields the whole curve. Each tolerance is then scored with the benchmarks' own
aggregation (:func:`evaluate_family`): EPE per split and the mean number of iterations used.

    python benchmarks/adaptive_iterations.py --weights runs/raft-small-synth/checkpoint.pt
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from rafttool.data.datasets import detect_datasets
from rafttool.engine.model import RAFT, converged
from rafttool.engine.padding import STRIDE
from rafttool.engine.trace import Trace
from rafttool.engine.weights import model_from_weights
from rafttool.evaluate import evaluate_family

TOLERANCES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def run_pair(
    model: RAFT, image1: np.ndarray, image2: np.ndarray, max_iters: int, half: bool
) -> tuple[list[np.ndarray], list[torch.Tensor]]:
    """Every iteration's full-resolution flow (H, W, 2) and low-resolution update."""
    def tensor(rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()

    trace = Trace()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
        output = model(tensor(image1), tensor(image2), iters=max_iters, all_iterations=True, trace=trace)
    flows = [f[0].float().permute(1, 2, 0).numpy() for f in output.iterations]
    return flows, trace.per_iteration["delta"]


def stop_iteration(deltas: list[torch.Tensor], tolerance: float, check_every: int) -> int:
    """Iterations an adaptive pass with ``tolerance`` runs (the engine's rule)."""
    for k, delta in enumerate(deltas, start=1):
        if tolerance > 0 and k % check_every == 0 and converged(delta, tolerance):
            return k
    return len(deltas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="trained RAFT weights (any layout rafttool reads)")
    parser.add_argument("--data", default="../shared/data", help="folder with Sintel/KITTI/Chairs-style data")
    parser.add_argument("--max-iters", type=int, default=12)
    parser.add_argument("--check-every", type=int, default=1)
    parser.add_argument("--tolerances", type=float, nargs="+", default=list(TOLERANCES))
    parser.add_argument("--half", action="store_true", help="run the network in bf16 (the correlation stays fp32)")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()

    model, _ = model_from_weights(args.weights)
    model.eval()
    splits = detect_datasets(args.data)
    cache: dict[str, tuple[list[np.ndarray], list[torch.Tensor]]] = {}

    def runs(image1: np.ndarray, image2: np.ndarray) -> tuple[list[np.ndarray], list[torch.Tensor]]:
        key = hashlib.sha1(image1.tobytes() + image2.tobytes()).hexdigest()
        if key not in cache:
            cache[key] = run_pair(model, image1, image2, args.max_iters, args.half)
        return cache[key]

    rows = []
    for tolerance in args.tolerances:
        row: dict[str, float] = {"tolerance": tolerance}
        used: list[int] = []
        for split, samples in splits.items():

            def predict(image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
                flows, deltas = runs(image1, image2)
                k = stop_iteration(deltas, tolerance, args.check_every)
                used.append(k)
                return flows[k - 1]

            row[f"{split} epe"] = evaluate_family(split, samples, predict).summary()["epe"]
        row["mean iterations"] = float(np.mean(used))
        rows.append(row)
        print(json.dumps(row), flush=True)
    updates = np.array([[float(STRIDE * d.norm(dim=1).mean()) for d in deltas] for _, deltas in cache.values()])
    profile = {"median update px per iteration": [round(float(u), 3) for u in np.median(updates, axis=0)]}
    print(json.dumps(profile))
    if args.json:
        args.json.write_text(json.dumps({"tolerances": rows, **profile}, indent=2) + "\n")


if __name__ == "__main__":
    main()
