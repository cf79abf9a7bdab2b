"""Accuracy metrics for optical flow, per pair, per sequence and per benchmark family.

Conventions follow the benchmarks and RAFT's own evaluation, so numbers compare with published
tables: dense benchmarks (Sintel, Chairs, Things, Middlebury) score every pixel with finite GT
("EPE all"; Sintel's ``invalid`` masks are not applied) and average EPE over all pixels of the
family; sparse ones (KITTI, HD1K) score the GT's valid pixels and average EPE per image. Outlier
rates and Fl-all (error > 3 px and > 5% of the true motion) are pooled over all scored pixels.
EPE by speed uses the Sintel leaderboard's bands of GT motion (under 10, 10-40, over 40 px), which
show whether a model fails on the slow majority of pixels or on the fast few; they are pooled over
pixels in every family.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rafttool.data.datasets import SPARSE_FAMILIES, FlowSample

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
PairCallback = Callable[[FlowSample, dict, np.ndarray, "PairErrors"], None]

# (name, lowest speed, highest speed) in px/frame; a pixel falls in the band with lo <= |gt| < hi.
SPEED_BANDS: tuple[tuple[str, float, float], ...] = (("s0-10", 0.0, 10.0), ("s10-40", 10.0, 40.0), ("s40+", 40.0, np.inf))


@dataclass
class PairErrors:
    """Error sums of one pair, kept as sums so families and sequences aggregate exactly."""

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
    speed_pixels: tuple[int, ...] = (0,) * len(SPEED_BANDS)
    speed_epe_sums: tuple[float, ...] = (0.0,) * len(SPEED_BANDS)
    sequence: str = ""
    seconds: float = 0.0

    @property
    def epe(self) -> float:
        return self.epe_sum / self.pixels if self.pixels else float("nan")

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
        row.update(speed_epes([self]))
        return row


def endpoint_error(prediction: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean distance between two (H, W, 2) flows; NaN where the GT is unknown."""
    return np.linalg.norm(prediction.astype(np.float64) - gt.astype(np.float64), axis=2)


def pair_errors(
    name: str,
    prediction: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray,
    occluded: np.ndarray | None = None,
    sequence: str = "",
) -> PairErrors:
    """Errors of ``prediction`` against ``gt`` (both HxWx2) on the ``valid`` pixels with finite GT.

    With an ``occluded`` mask the scored pixels are also split into matched (visible in both
    frames) and unmatched (occluded in the second) ones, as Sintel reports them.
    """
    if prediction.shape != gt.shape:
        raise ValueError(f"prediction {prediction.shape} and GT {gt.shape} differ in shape")
    valid = valid & np.isfinite(gt).all(axis=2)
    epe = endpoint_error(prediction, gt)
    magnitude = np.linalg.norm(gt.astype(np.float64), axis=2)
    e = epe[valid]
    speed = magnitude[valid]
    bands = [(lo <= speed) & (speed < hi) for _, lo, hi in SPEED_BANDS]
    errors = PairErrors(
        name=name,
        pixels=int(e.size),
        epe_sum=float(e.sum()),
        over1=int((e > 1).sum()),
        over3=int((e > 3).sum()),
        over5=int((e > 5).sum()),
        fl=int(((e > 3) & (e > 0.05 * speed)).sum()),
        speed_pixels=tuple(int(band.sum()) for band in bands),
        speed_epe_sums=tuple(float(e[band].sum()) for band in bands),
        sequence=sequence,
    )
    if occluded is not None:
        matched = valid & ~occluded
        unmatched = valid & occluded
        errors.matched_pixels, errors.matched_epe_sum = int(matched.sum()), float(epe[matched].sum())
        errors.unmatched_pixels, errors.unmatched_epe_sum = int(unmatched.sum()), float(epe[unmatched].sum())
    return errors


def speed_epes(pairs: Sequence[PairErrors]) -> dict[str, float]:
    """Mean EPE per speed band over the pixels of ``pairs``, as ``{"s0-10_epe": ...}``; a band
    without pixels is left out rather than reported as 0."""
    result = {}
    for index, (name, _, _) in enumerate(SPEED_BANDS):
        pixels = sum(p.speed_pixels[index] for p in pairs)
        if pixels:
            result[f"{name}_epe"] = sum(p.speed_epe_sums[index] for p in pairs) / pixels
    return result


def scored_pixels(sample: FlowSample, data: Mapping[str, np.ndarray]) -> np.ndarray:
    """The pixels a benchmark scores: the GT's valid flag for sparse GT, every finite GT pixel otherwise."""
    if sample.sparse:
        return data["valid"]
    return np.isfinite(data["flow"]).all(axis=2)


@dataclass
class FamilyResult:
    """All pairs of one benchmark split (or one sequence of it) and their aggregate."""

    split: str
    family: str
    pairs: list[PairErrors] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def per_image_epe(self) -> bool:
        """Sparse benchmarks average EPE per image so frames with much GT do not dominate."""
        return self.family in SPARSE_FAMILIES

    def summary(self) -> dict[str, float]:
        pixels = sum(p.pixels for p in self.pairs)
        scored = [p for p in self.pairs if p.pixels]
        if self.per_image_epe:
            epe = float(np.mean([p.epe for p in scored])) if scored else float("nan")
        else:
            epe = sum(p.epe_sum for p in self.pairs) / pixels if pixels else float("nan")
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
        summary.update(speed_epes(self.pairs))
        return summary

    def by_sequence(self) -> dict[str, FamilyResult]:
        """The same result split per sequence, in first-seen order."""
        groups: dict[str, FamilyResult] = {}
        for pair in self.pairs:
            group = groups.setdefault(pair.sequence, FamilyResult(self.split, self.family))
            group.pairs.append(pair)
            group.seconds += pair.seconds
        return groups


def with_gt(samples: Iterable[FlowSample], max_pairs: int | None = None) -> list[FlowSample]:
    """The samples that have ground truth, the first ``max_pairs`` of them when given."""
    scored = [s for s in samples if s.flow_path is not None]
    return scored if max_pairs is None else scored[:max_pairs]


def evaluate_family(
    split: str,
    samples: Iterable[FlowSample],
    predict: Predictor,
    on_pair: PairCallback | None = None,
) -> FamilyResult:
    """Run ``predict`` on every sample with GT and collect its errors; only ``predict`` is timed."""
    result: FamilyResult | None = None
    for sample in with_gt(samples):
        data = sample.load()
        started = time.perf_counter()
        prediction = predict(data["image1"], data["image2"])
        elapsed = time.perf_counter() - started
        name = f"{sample.sequence}/{sample.image1_path.name}"
        errors = pair_errors(
            name, prediction, data["flow"], scored_pixels(sample, data), data.get("occluded"), sample.sequence
        )
        errors.seconds = elapsed
        if result is None:
            result = FamilyResult(split=split, family=sample.family)
        result.pairs.append(errors)
        result.seconds += elapsed
        if on_pair is not None:
            on_pair(sample, data, prediction, errors)
    return result or FamilyResult(split=split, family="unknown")


def evaluate_methods(
    splits: Mapping[str, Sequence[FlowSample]],
    methods: Mapping[str, Predictor],
    on_pair: Callable[[str, FlowSample, dict, np.ndarray, PairErrors], None] | None = None,
) -> dict[str, dict[str, FamilyResult]]:
    """Every method on every split: ``{split: {method: FamilyResult}}``, so methods compare side by side.

    ``on_pair`` also receives the method name (for progress and per-method error maps).
    """
    results: dict[str, dict[str, FamilyResult]] = {}
    for split, samples in splits.items():
        for method, predict in methods.items():
            callback = None if on_pair is None else _tagged(on_pair, method)
            results.setdefault(split, {})[method] = evaluate_family(split, samples, predict, callback)
    return results


def _tagged(on_pair: Callable[[str, FlowSample, dict, np.ndarray, PairErrors], None], method: str) -> PairCallback:
    return lambda sample, data, prediction, errors: on_pair(method, sample, data, prediction, errors)
