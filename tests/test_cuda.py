"""The CUDA paths: same flow as the CPU, reduced precision close to it, training runs there.

Skipped on machines without a CUDA device (CI has none); run on a GPU machine with
``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from rafttool.api import FlowEngine
from rafttool.engine.model import build_model
from rafttool.train.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def full_fp32_convolutions():
    """cuDNN convolutions in TF32 (PyTorch's default) move flow by ~0.01-0.06 px against the
    CPU; comparing the code paths needs true fp32 on both sides."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _textured_pair(height: int = 128, width: int = 160, shift: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (height, width + shift, 3)).astype(np.float32), (0, 0), 1.5)
    return texture[:, shift:].astype(np.uint8), texture[:, :-shift].astype(np.uint8)


def test_cuda_flow_equals_cpu_flow(full_fp32_convolutions):
    image1, image2 = _textured_pair()
    on_cpu = FlowEngine(device="cpu", iters=12).estimate(image1, image2)
    on_gpu = FlowEngine(device="cuda", iters=12).estimate(image1, image2)
    assert np.abs(on_gpu - on_cpu).mean() < 1e-3


def test_cuda_half_precision_stays_close_to_fp32():
    image1, image2 = _textured_pair()
    full = FlowEngine(device="cuda", iters=12).estimate(image1, image2)
    half = FlowEngine(device="cuda", iters=12, half=True).estimate(image1, image2)
    assert np.isfinite(half).all() and np.abs(half - full).mean() < 0.1


@pytest.mark.parametrize("corr_mode", ["full", "on_demand"])
def test_cuda_model_equals_cpu_model(corr_mode, full_fp32_convolutions):
    torch.manual_seed(0)
    model = build_model("small").eval()
    image1, image2 = (torch.rand(2, 3, 128, 160) * 255 for _ in range(2))
    with torch.inference_mode():
        expected = model(image1, image2, iters=4, corr_mode=corr_mode).flow
        actual = model.cuda()(image1.cuda(), image2.cuda(), iters=4, corr_mode=corr_mode).flow.cpu()
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-3)


def test_training_on_cuda_checkpoints_a_run_the_cpu_can_resume(tmp_path):
    from tests.test_training import TINY, _dataset

    config = TrainConfig(run_dir=str(tmp_path), steps=4, **TINY | {"bf16": True})
    trainer = Trainer(config, _dataset(), device="cuda")
    trainer.run()
    assert next(trainer.model.parameters()).is_cuda and all(v.is_cuda for v in trainer.ema.values())
    resumed = Trainer(TrainConfig(run_dir=str(tmp_path), steps=6, **TINY), _dataset(), device="cpu")
    assert resumed.step == 4 and not next(resumed.model.parameters()).is_cuda
    resumed.run()
    assert resumed.step == 6
