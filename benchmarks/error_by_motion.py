"""Where RAFT's error comes from: EPE per ground-truth motion magnitude, per benchmark family.

For each family of ``../shared/data``: the share of scored pixels whose GT motion falls in each
magnitude bin, their mean EPE, and their share of the family's total error. A recipe that
fails on large displacements shows up in the last bins; one that smears motion into static or
low-texture regions shows up in the first.

    python benchmarks/error_by_motion.py                      # bundled weights, default mode
    python benchmarks/error_by_motion.py --weights runs/x/checkpoint.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rafttool.api import FlowEngine
from rafttool.data.datasets import detect_datasets
from rafttool.evaluate import scored_pixels, with_gt

BINS = (0, 10, 20, 40, 80, 120)
"""Lower edges of the |GT flow| bins, px; the last bin is open."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--weights", help="RAFT weights (default: the bundled RAFT-small, in its default mode)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = FlowEngine(weights=args.weights, device="cpu")
    edges = np.array([*BINS, np.inf])
    for split, samples in detect_datasets(args.data).items():
        error, pixels = np.zeros(len(BINS)), np.zeros(len(BINS))
        for sample in with_gt(samples):
            data = sample.load()
            flow = engine.estimate(data["image1"], data["image2"])
            scored = scored_pixels(sample, data)
            magnitude = np.linalg.norm(data["flow"], axis=-1)[scored]
            epe = np.linalg.norm(flow - data["flow"], axis=-1)[scored]
            which = np.digitize(magnitude, edges) - 1
            error += np.bincount(which, weights=epe, minlength=len(BINS))[: len(BINS)]
            pixels += np.bincount(which, minlength=len(BINS))[: len(BINS)]
        rows = [
            {
                "gt px": f"{low:g}-{high:g}" if np.isfinite(high) else f">{low:g}",
                "pixel share": round(n / pixels.sum(), 3),
                "EPE": round(e / n, 2) if n else None,
                "error share": round(e / error.sum(), 3),
            }
            for low, high, e, n in zip(edges[:-1], edges[1:], error, pixels)
        ]
        print(json.dumps({"split": split, "bins": rows}))


if __name__ == "__main__":
    main()
