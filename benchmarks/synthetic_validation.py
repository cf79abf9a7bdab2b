"""EPE of several weights files on the same held-out synthetic pairs, pair by pair.

Which of two fine-tuning stages (or their average) to ship should not be decided on the few
real pairs of ``../shared/data`` alone; held-out pairs from the training generator (the
validation seed, which training never draws) are unlimited, and comparing files on the same
pairs shows how often one wins, not only the mean. The generator settings and crop are a
training run's (``--config``: its ``config.json``), or the defaults.

    python benchmarks/synthetic_validation.py --config weights/training/large12/config.json \
        --pairs 48 weights/raft-large.pt large12.pt soup.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rafttool.engine.weights import model_from_weights
from rafttool.train.run import VALIDATION_SEED, model_predictor
from rafttool.train.synthetic import SyntheticFlowConfig, SyntheticFlowDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", nargs="+", help="weights files; the first is the baseline of the paired counts")
    parser.add_argument("--config", type=Path, help="a training run's config.json: its crop and --synthetic settings")
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = json.loads(args.config.read_text()) if args.config else {}
    config = SyntheticFlowConfig(height=recipe.get("height", 288), width=recipe.get("width", 384), **recipe.get("synthetic", {}))
    dataset = SyntheticFlowDataset(config, seed=VALIDATION_SEED)
    predictors = []
    for path in args.weights:
        model, _ = model_from_weights(path)
        predictors.append(model_predictor(model.eval(), args.iters))
    errors = np.zeros((len(args.weights), args.pairs))
    for index in range(args.pairs):
        item = dataset[index]
        image1, image2 = (item[k].permute(1, 2, 0).numpy() for k in ("image1", "image2"))
        valid, gt = item["valid"].numpy() > 0.5, item["flow"].permute(1, 2, 0).numpy()
        for row, predict in enumerate(predictors):
            errors[row, index] = np.linalg.norm(predict(image1, image2) - gt, axis=2)[valid].mean()
    print(f"{args.pairs} held-out synthetic pairs at {config.width}x{config.height}, {args.iters} iterations, fp32")
    print(f"{'weights':<40} {'mean EPE':>9} {'median':>7}  pairs better than {Path(args.weights[0]).name}")
    for path, row in zip(args.weights, errors):
        wins = int((row < errors[0]).sum())
        print(f"{str(path):<40} {row.mean():9.3f} {np.median(row):7.3f}  {wins}/{args.pairs}")


if __name__ == "__main__":
    main()
