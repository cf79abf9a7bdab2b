"""The weights we ship: they load by default and reach accuracy that random weights cannot.

These are the few tests that run the real network on real frames; the bounds sit well below
what random or broken weights give (tens of pixels) and a little above what the shipped weights
measure (weights/README.md), so they fail if the file is damaged or mismatched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rafttool.api import FlowEngine
from rafttool.data.datasets import find_sintel
from rafttool.data.stereo import motorcycle_pair
from rafttool.engine.weights import bundled_weights, read_weights

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.slow

# Bounds per model, (motorcycle, Sintel clean cave_2) in px, well above what the shipped weights
# measure in the default mode (small 4.2 and 2.2 px, soup18 3.3 and 1.9: weights/README.md) and
# well below what seeded random RAFT-small weights give (35.1 and 21.9 px) or zero flow (34.3
# and 15.1 px).
EPE_BOUNDS = {"small": (8.0, 4.0), "large": (8.0, 4.5)}
MODELS = sorted(EPE_BOUNDS)


@pytest.fixture(scope="module", params=MODELS)
def engine(request: pytest.FixtureRequest) -> FlowEngine:
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    return FlowEngine(model=request.param, device="cpu", iters=12)


def _epe(flow: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    return float(np.linalg.norm(flow - np.nan_to_num(gt), axis=2)[valid].mean())


def _training_records(metadata: dict) -> list[dict]:
    """The training records behind a weights file: its own, or those of every file a soup averages."""
    if "average_of" in metadata:
        return [record for source in metadata["average_of"] for record in _training_records(source["metadata"])]
    return [metadata]


@pytest.mark.parametrize("model", MODELS)
def test_default_weights_ship_with_their_recipe(model):
    weights = read_weights(bundled_weights(model))
    assert weights.layout == "rafttool" and weights.model == model
    records = _training_records(weights.metadata)
    assert records and all(record["steps"] > 0 and record["recipe"]["model"] == model for record in records)


def test_real_stereo_pair_from_scikit_image(engine):
    pair = motorcycle_pair()
    flow = engine.estimate(pair["image1"], pair["image2"])
    assert _epe(flow, pair["flow"], pair["valid"]) < EPE_BOUNDS[engine.model_name][0]


@pytest.mark.skipif(not (SHARED / "sintel").is_dir(), reason="../shared/data is not beside this checkout")
def test_sintel_pair(engine):
    sample = next(s for s in find_sintel(SHARED / "sintel") if s.split_name == "sintel-clean" and s.sequence == "cave_2")
    data = sample.load()
    flow = engine.estimate(data["image1"], data["image2"])
    assert _epe(flow, data["flow"], data["valid"]) < EPE_BOUNDS[engine.model_name][1]
