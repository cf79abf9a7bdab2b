"""Fixtures shared by test modules."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import torch

from rafttool.engine import timing_cache
from rafttool.engine.model import build_model
from rafttool.engine.update import UpdateBlock


@pytest.fixture(scope="session", autouse=True)
def private_timing_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Timed choices go to a folder of this test session, never to the user's cache."""
    before = os.environ.get(timing_cache.DIRECTORY_VARIABLE)
    os.environ[timing_cache.DIRECTORY_VARIABLE] = str(tmp_path_factory.mktemp("timings"))
    yield
    if before is None:
        del os.environ[timing_cache.DIRECTORY_VARIABLE]
    else:
        os.environ[timing_cache.DIRECTORY_VARIABLE] = before


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op thread for a module's tests.

    The CI machine's cores are shared with other jobs; a second torch thread then mostly waits
    for a busy core, which makes small forward passes 10-100x slower, not faster.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


UpdateInputs = tuple[UpdateBlock, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture
def update_step_inputs() -> Callable[[str], UpdateInputs]:
    """A seeded model's update block and one iteration's inputs at 12x14 cells: (block,
    context, hidden, correlation features, flow). The flow's large values must not spoil the
    other inputs' precision in the fast steps."""

    def make(size: str) -> UpdateInputs:
        torch.manual_seed(0)
        model = build_model(size).eval()
        block, config = model.update_block, model.config
        context = torch.rand(1, config.context_channels, 12, 14)
        hidden = torch.rand(1, config.hidden_channels, 12, 14) * 2 - 1
        corr = torch.randn(1, block.motion_encoder.corr_conv1.in_channels, 12, 14)
        flow = torch.randn(1, 2, 12, 14) * 30
        return block, context, hidden, corr, flow

    return make
