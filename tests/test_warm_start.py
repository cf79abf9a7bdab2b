"""Forward projection of the previous pair's flow, the warm start for the next pair of a video."""

from __future__ import annotations

import numpy as np
import torch

from rafttool.api import FlowEngine
from rafttool.engine.warm_start import forward_project


def _flow(height: int = 6, width: int = 8, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, 2, height, width)


def test_uniform_motion_projects_to_itself_and_fills_the_uncovered_border() -> None:
    flow = _flow()
    flow[:, 0], flow[:, 1] = 1.0, -1.0  # column 0 and the last row receive nothing
    projected = forward_project(flow)
    torch.testing.assert_close(projected, flow)


def test_a_moving_block_lands_where_it_moved_and_wins_over_the_background() -> None:
    flow = _flow()
    flow[0, 0, 2:4, 1:3] = 3.0  # a 2x2 block moving 3 cells right over a still background
    projected = forward_project(flow)[0]
    assert torch.all(projected[0, 2:4, 4:6] == 3.0)  # the faster (occluding) block wins the cells
    assert torch.all(projected[:, :2] == 0) and torch.all(projected[:, 4:] == 0)
    assert torch.all(projected[1] == 0)


def test_holes_take_their_nearest_filled_neighbours() -> None:
    flow = _flow(1, 8)
    flow[0, 0, 0, :4] = 2.0  # cells 0..3 move to 2..5; cells 0 and 1 become holes
    projected = forward_project(flow)[0, 0, 0]
    assert projected[2:6].tolist() == [2.0, 2.0, 2.0, 2.0]
    assert projected[1] == 2.0 and projected[0] == 2.0  # filled from cell 2, ring by ring
    assert projected[6:].tolist() == [0.0, 0.0]


def test_vectors_leaving_the_grid_are_dropped_and_an_empty_grid_gives_zero() -> None:
    flow = _flow(batch=2)
    flow[0, 0] = 100.0  # everything leaves: zero flow, not garbage
    flow[1, 1] = 1.0  # batch items are independent
    projected = forward_project(flow)
    assert torch.all(projected[0] == 0)
    torch.testing.assert_close(projected[1], flow[1])


def test_non_finite_vectors_are_ignored_and_dtype_is_kept() -> None:
    flow = _flow().double()
    flow[0, :, 0, 0] = float("nan")
    projected = forward_project(flow)
    assert projected.dtype == torch.float64 and torch.isfinite(projected).all()


def test_sequence_warm_start_feeds_the_projection_to_the_next_pair(tmp_path, monkeypatch) -> None:
    from rafttool.engine.model import raft_small
    from rafttool.engine.weights import save_weights

    torch.manual_seed(0)
    save_weights(tmp_path / "w.pt", raft_small())
    engine = FlowEngine(weights=tmp_path / "w.pt", device="cpu", iters=1)
    seen: list[torch.Tensor | None] = []
    original = engine.estimate_batch

    def spy(images1, images2, iters=None, flow_init=None):
        seen.append(flow_init)
        return original(images1, images2, iters=iters, flow_init=flow_init)

    monkeypatch.setattr(engine, "estimate_batch", spy)
    frames = [np.random.default_rng(i).integers(0, 255, (128, 136, 3), dtype=np.uint8) for i in range(3)]
    pairs = list(engine.estimate_sequence(frames))
    assert [p.warm_started for p in pairs] == [False, True]
    assert seen[0] is None
    torch.testing.assert_close(seen[1], forward_project(pairs[0].result.low_res_flow))
    cold = list(engine.estimate_sequence(frames, warm_start=False, batch_size=2))
    assert not any(p.warm_started for p in cold) and seen[2] is None
