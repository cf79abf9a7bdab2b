"""Parity with the original RAFT / torchvision computation on randomly initialised checkpoints.

The fixtures hold torchvision's per-iteration flows for deterministic random weights (see
tests/fixtures/README.md); the same weights are fed to our engine in both foreign layouts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rafttool.engine.weights import model_from_weights
from tests.fixtures.parity_weights import make_tv_state_dict, original_state_dict

FIXTURES = Path(__file__).parent / "fixtures"


def _checkpoint(tmp_path: Path, size: str, layout: str) -> Path:
    state = make_tv_state_dict(size)
    if layout == "original":
        state = original_state_dict(state, size)
    path = tmp_path / f"{size}-{layout}.pth"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("layout", ["original", "torchvision"])
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("shape", ["131x157", "128x168"])
def test_flow_matches_reference_every_saved_iteration(tmp_path, size, layout, shape):
    reference = np.load(FIXTURES / f"parity_{size}_{shape}.npz")
    model, weights = model_from_weights(_checkpoint(tmp_path, size, layout))
    assert (weights.model, weights.layout) == (size, layout)
    image1 = torch.from_numpy(reference["image1"]).permute(2, 0, 1)[None].float()
    image2 = torch.from_numpy(reference["image2"]).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        output = model.eval()(image1, image2, iters=12, all_iterations=True)
    for index, iteration in enumerate(reference["iters_saved"]):
        ours = output.iterations[int(iteration)][0].permute(1, 2, 0).numpy()
        difference = np.abs(ours - reference["flows"][index])
        assert difference.max() < 1e-3, (iteration, difference.max())
        assert difference.mean() < 1e-4
    np.testing.assert_allclose(output.flow[0].permute(1, 2, 0).numpy(), reference["flows"][-1], atol=1e-3)
