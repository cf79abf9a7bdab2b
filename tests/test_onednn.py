"""oneDNN's products compute what PyTorch's own do (timing: benchmarks/)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rafttool.engine import onednn

pytestmark = pytest.mark.skipif(not onednn.available(), reason="this PyTorch build has no oneDNN")


@pytest.mark.parametrize("chunk_bytes", [onednn.ROW_CHUNK_BYTES, 3 * 4 * 40])  # one chunk, or 3 rows per chunk
def test_product_into_is_the_batched_product(chunk_bytes, monkeypatch):
    monkeypatch.setattr(onednn, "ROW_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(onednn, "products_pay", lambda: True)
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(2, 24, 17, generator=generator).transpose(1, 2)  # (2, 17, 24), not contiguous
    right = torch.randn(2, 24, 40, generator=generator)
    out = torch.full((2, 17, 40), float("nan"))
    with torch.inference_mode():
        assert onednn.product_into(out, left, right) is out
    torch.testing.assert_close(out, torch.bmm(left, right), atol=1e-5, rtol=1e-5)


def test_products_that_want_gradients_go_to_pytorch(monkeypatch):
    monkeypatch.setattr(onednn, "products_pay", lambda: True)
    monkeypatch.setattr(onednn, "_rows_into", lambda *args: pytest.fail("oneDNN has no gradients here"))
    left = torch.randn(1, 5, 4, requires_grad=True)
    with pytest.raises(RuntimeError):  # torch.bmm refuses out= with autograd, as it should
        onednn.product_into(torch.empty(1, 5, 3), left, torch.randn(1, 4, 3))


def test_the_timed_choice_is_a_ratio_of_two_timings():
    gain = onednn._product_gain(torch.get_num_threads())
    assert 0.05 < gain < 20.0
    assert onednn.products_pay() == (gain <= onednn.REQUIRED_GAIN)


def test_grouped_pointwise_is_the_grouped_convolution():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3 * 8, 7, 5, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(3 * 6, 8, 1, 1, generator=generator)
    with torch.inference_mode():
        for threads in (1, torch.get_num_threads()):
            torch.set_num_threads(threads)
            torch.testing.assert_close(onednn.grouped_pointwise(x, weight, 3), F.conv2d(x, weight, groups=3), atol=1e-5, rtol=1e-5)


def test_linear_is_pytorch_s_linear(monkeypatch):
    monkeypatch.setattr(onednn, "products_pay", lambda: True)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(9, 30, generator=generator).t()  # (30, 9), not contiguous
    weight, bias = torch.randn(5, 9, generator=generator), torch.randn(5, generator=generator)
    with torch.inference_mode():
        for b in (bias, None):
            torch.testing.assert_close(onednn.linear(x, weight, b), F.linear(x, weight, b), atol=1e-5, rtol=1e-5)
