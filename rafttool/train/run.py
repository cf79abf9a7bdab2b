"""Training recipes: what data a run sees and how it is validated while it learns."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from rafttool.data.datasets import DatasetError, detect_datasets
from rafttool.engine.model import RAFT
from rafttool.evaluate import evaluate_family
from rafttool.train.synthetic import SyntheticFlowConfig, SyntheticFlowDataset
from rafttool.train.trainer import TrainConfig, Trainer

# Held-out synthetic pairs come from a seed training never uses.
VALIDATION_SEED = 987_654_321


def model_predictor(model: RAFT, iters: int = 12) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Wrap a model (in whatever training state) as an (image1, image2) -> HxWx2 function."""

    @torch.inference_mode()
    def predict(image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
        t1 = torch.from_numpy(image1).permute(2, 0, 1)[None].float()
        t2 = torch.from_numpy(image2).permute(2, 0, 1)[None].float()
        return model(t1, t2, iters=iters).flow[0].permute(1, 2, 0).numpy()

    return predict


def synthetic_validator(config: SyntheticFlowConfig, pairs: int = 24, iters: int = 12) -> Callable[[RAFT], dict[str, float]]:
    """EPE on a fixed set of held-out synthetic pairs."""
    dataset = Subset(SyntheticFlowDataset(config, seed=VALIDATION_SEED), range(pairs))

    def validate(model: RAFT) -> dict[str, float]:
        predict = model_predictor(model, iters)
        errors = []
        for item in dataset:
            flow = predict(item["image1"].permute(1, 2, 0).numpy(), item["image2"].permute(1, 2, 0).numpy())
            gt = item["flow"].permute(1, 2, 0).numpy()
            errors.append(np.linalg.norm(flow - gt, axis=2)[item["valid"].numpy() > 0.5].mean())
        return {"synthetic_epe": float(np.mean(errors))}

    return validate


def real_data_validator(root: str | Path, iters: int = 12) -> Callable[[RAFT], dict[str, float]] | None:
    """EPE per benchmark family found under ``root`` (monitoring only: never tuned against)."""
    try:
        families = detect_datasets(root)
    except DatasetError:
        return None

    def validate(model: RAFT) -> dict[str, float]:
        predict = model_predictor(model, iters)
        results = {}
        for split, samples in families.items():
            summary = evaluate_family(split, samples, predict).summary()
            results[f"{split}_epe"] = summary["epe"]
            if split.startswith("kitti"):
                results[f"{split}_fl"] = summary["fl"]
        return results

    return validate


def train_synthetic(
    config: TrainConfig,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> Trainer:
    """Train (or resume) a run on the synthetic generator, validating on held-out and real pairs."""
    synthetic = SyntheticFlowConfig(height=config.height, width=config.width, **config.synthetic)
    validators = [synthetic_validator(synthetic)]
    if config.validation_data:
        real = real_data_validator(config.validation_data)
        if real is not None:
            validators.append(real)
    trainer = Trainer(config, SyntheticFlowDataset(synthetic, seed=config.seed), validators, progress)
    trainer.run()
    return trainer


def last_validation(run_dir: str | Path) -> dict[str, float]:
    """The most recent validation record of a run (empty when none was written)."""
    path = Path(run_dir) / "validation.jsonl"
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}
