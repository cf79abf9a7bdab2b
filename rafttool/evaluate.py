"""Accuracy metrics for optical flow, per pair and per benchmark family.

Conventions follow the benchmarks: end-point error (EPE) averaged over all GT pixels of a family
for Sintel, Chairs and Middlebury; for KITTI, EPE is averaged per image over valid pixels, and
Fl-all counts the valid pixels whose error exceeds both 3 px and 5% of the true motion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from rafttool.data.datasets import FlowSample

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class PairErrors:
    """Error sums of one pair, kept as sums so families aggregate exactly."""

    name: str
    pixels: int
    epe_sum: float
    over1: int
    over3: int
    over5: int
    fl: int
    matched_pixels: int = 0
    matched_epe_sum: float = 0.0
    unmatched_pixels: int = 0
    unmatched_epe_sum: float = 0.0

    @property
    def epe(self) -> float:
        return self.epe_sum / max(self.pixels, 1)

    def as_dict(self) -> dict[str, float | str]:
        row: dict[str, float | str] = {
            "pair": self.name,
            "epe": self.epe,
            "1px": self.over1 / max(self.pixels, 1),
            "3px": self.over3 / max(self.pixels, 1),
            "5px": self.over5 / max(self.pixels, 1),
            "fl": self.fl / max(self.pixels, 1),
        }
        if self.matched_pixels or self.unmatched_pixels:
            row["matched_epe"] = self.matched_epe_sum / max(self.matched_pixels, 1)
            row["unmatched_epe"] = self.unmatched_epe_sum / max(self.unmatched_pixels, 1)
        return row


def pair_errors(
    name: str,
    prediction: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray,
    occluded: np.ndarray | None = None,
) -> PairErrors:
    """Errors of ``prediction`` against ``gt`` (both HxWx2) on the ``valid`` pixels."""
    if prediction.shape != gt.shape:
        raise ValueError(f"prediction {prediction.shape} and GT {gt.shape} differ in shape")
    valid = valid & np.isfinite(gt).all(axis=2)
    epe = np.linalg.norm(prediction.astype(np.float64) - np.nan_to_num(gt), axis=2)
    magnitude = np.linalg.norm(np.nan_to_num(gt).astype(np.float64), axis=2)
    e = epe[valid]
    errors = PairErrors(
        name=name,
        pixels=int(e.size),
        epe_sum=float(e.sum()),
        over1=int((e > 1).sum()),
        over3=int((e > 3).sum()),
        over5=int((e > 5).sum()),
        fl=int(((e > 3) & (e > 0.05 * magnitude[valid])).sum()),
    )
    if occluded is not None:
        matched = valid & ~occluded
        unmatched = valid & occluded
        errors.matched_pixels, errors.matched_epe_sum = int(matched.sum()), float(epe[matched].sum())
        errors.unmatched_pixels, errors.unmatched_epe_sum = int(unmatched.sum()), float(epe[unmatched].sum())
    return errors


@dataclass
class FamilyResult:
    """All pairs of one benchmark family and their aggregate."""

    split: str
    family: str
    pairs: list[PairErrors] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, float]:
        pixels = sum(p.pixels for p in self.pairs)
        if self.family == "kitti":
            epe = float(np.mean([p.epe for p in self.pairs])) if self.pairs else float("nan")
        else:
            epe = sum(p.epe_sum for p in self.pairs) / max(pixels, 1)
        summary = {
            "pairs": len(self.pairs),
            "epe": epe,
            "1px": sum(p.over1 for p in self.pairs) / max(pixels, 1),
            "3px": sum(p.over3 for p in self.pairs) / max(pixels, 1),
            "5px": sum(p.over5 for p in self.pairs) / max(pixels, 1),
            "fl": sum(p.fl for p in self.pairs) / max(pixels, 1),
            "seconds_per_pair": self.seconds / max(len(self.pairs), 1),
        }
        matched = sum(p.matched_pixels for p in self.pairs)
        unmatched = sum(p.unmatched_pixels for p in self.pairs)
        if matched or unmatched:
            summary["matched_epe"] = sum(p.matched_epe_sum for p in self.pairs) / max(matched, 1)
            summary["unmatched_epe"] = sum(p.unmatched_epe_sum for p in self.pairs) / max(unmatched, 1)
        return summary


def evaluate_family(
    split: str,
    samples: Iterable[FlowSample],
    predict: Predictor,
    on_pair: Callable[[FlowSample, dict, np.ndarray, PairErrors], None] | None = None,
) -> FamilyResult:
    """Run ``predict`` on every sample with GT and collect its errors."""
    import time

    result: FamilyResult | None = None
    for sample in samples:
        if sample.flow_path is None:
            continue
        data = sample.load()
        started = time.perf_counter()
        prediction = predict(data["image1"], data["image2"])
        elapsed = time.perf_counter() - started
        name = f"{sample.sequence}/{sample.image1_path.name}"
        errors = pair_errors(name, prediction, data["flow"], data["valid"], data.get("occluded"))
        if result is None:
            result = FamilyResult(split=split, family=sample.family)
        result.pairs.append(errors)
        result.seconds += elapsed
        if on_pair is not None:
            on_pair(sample, data, prediction, errors)
    return result or FamilyResult(split=split, family="unknown")
