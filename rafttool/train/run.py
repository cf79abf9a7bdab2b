"""Training recipes: what data a run sees and how it is validated while it learns."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from rafttool.data.augment import FlowAugmentor, TrainingPairs
from rafttool.data.datasets import DatasetError, detect_datasets
from rafttool.engine.model import RAFT
from rafttool.evaluate import evaluate_family
from rafttool.train.synthetic import SyntheticFlowConfig, SyntheticFlowDataset
from rafttool.train.trainer import TrainConfig, Trainer

# Held-out synthetic pairs come from a seed training never uses.
VALIDATION_SEED = 987_654_321


def model_predictor(model: RAFT, iters: int = 12) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Wrap a model (in whatever training state) as an (image1, image2) -> HxWx2 function."""

    device = next(model.parameters()).device

    @torch.inference_mode()
    def predict(image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
        t1 = torch.from_numpy(image1).permute(2, 0, 1)[None].float().to(device)
        t2 = torch.from_numpy(image2).permute(2, 0, 1)[None].float().to(device)
        return model(t1, t2, iters=iters).flow[0].permute(1, 2, 0).cpu().numpy()

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


class Cycled(Dataset):
    """A finite dataset as an endless stream: each pass visits every item once, in a fresh order.

    The order of pass p is a seeded permutation, so index i always names the same item and a
    resumed run continues the stream where it stopped.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.size = len(dataset)  # type: ignore[arg-type]
        self.seed = seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        order = np.random.default_rng([self.seed, index // self.size]).permutation(self.size)
        return self.dataset[int(order[index % self.size])]


def training_data(config: TrainConfig, data: str) -> Dataset:
    """'synthetic' for the generator, or a folder holding standard datasets (all splits found)."""
    if data == "synthetic":
        synthetic = SyntheticFlowConfig(height=config.height, width=config.width, **config.synthetic)
        return SyntheticFlowDataset(synthetic, seed=config.seed)
    samples = [s for split in detect_datasets(data).values() for s in split if s.flow_path is not None]
    if not samples:
        raise DatasetError(f"no pairs with ground-truth flow in '{data}': training needs GT")
    return Cycled(TrainingPairs(samples, FlowAugmentor(crop_size=(config.height, config.width))), config.seed)


def train(
    config: TrainConfig,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    device: str | torch.device = "cpu",
    time_budget: float = 0.0,
    stop: threading.Event | None = None,
) -> Trainer:
    """Train (or resume) a run, validating on held-out synthetic pairs and on real pairs if present.

    ``time_budget`` (seconds, 0: none) fits the run's schedule to the time available, and
    ``stop``, once set, ends the run after the step in progress (:meth:`Trainer.run`).
    """
    validators = [synthetic_validator(SyntheticFlowConfig(height=config.height, width=config.width, **config.synthetic))]
    if config.validation_data:
        real = real_data_validator(config.validation_data)
        if real is not None:
            validators.append(real)
    trainer = Trainer(config, training_data(config, config.data), validators, progress, device)
    trainer.run(time_budget, stop)
    return trainer


def last_validation(run_dir: str | Path) -> dict[str, float]:
    """The most recent validation record of a run (empty when none was written)."""
    path = Path(run_dir) / "validation.jsonl"
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}
