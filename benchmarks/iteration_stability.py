"""EPE after 1, 2, 4, 8, 12 and 24 iterations on held-out synthetic pairs of a given size.

A model that has learned RAFT's fixed-point behaviour keeps or lowers its error as iterations
grow; one that leans on crop-size artefacts drifts away on frames larger than its training
crops. This is how the 192x256-crop weights were found to diverge (see README, Training).

    python benchmarks/iteration_stability.py --weights weights/raft-small.pt --size 384x768
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rafttool.engine.weights import model_from_weights
from rafttool.train.run import VALIDATION_SEED
from rafttool.train.synthetic import SyntheticFlowConfig, SyntheticFlowDataset

CHECKPOINTS = (1, 2, 4, 8, 12, 24)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--size", default="384x768", help="HEIGHTxWIDTH of the synthetic pairs")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    model, _ = model_from_weights(args.weights)
    model.eval()
    dataset = SyntheticFlowDataset(SyntheticFlowConfig(height=height, width=width), seed=VALIDATION_SEED)
    errors, zero = np.zeros(len(CHECKPOINTS)), 0.0
    for index in range(args.pairs):
        item = dataset[index]
        valid = item["valid"].numpy() > 0.5
        with torch.inference_mode():
            output = model(item["image1"][None], item["image2"][None], iters=max(CHECKPOINTS), all_iterations=True)
        errors += [(output.iterations[n - 1][0] - item["flow"]).norm(dim=0).numpy()[valid].mean() for n in CHECKPOINTS]
        zero += item["flow"].norm(dim=0).numpy()[valid].mean()
    print(f"{args.pairs} held-out synthetic pairs at {width}x{height}; zero flow: {zero / args.pairs:.2f} px")
    print("iterations " + " ".join(f"{n:>6d}" for n in CHECKPOINTS))
    print("EPE px     " + " ".join(f"{e / args.pairs:6.2f}" for e in errors))


if __name__ == "__main__":
    main()
