"""Inference-only rewrites of the engine (weights folded or transformed once and kept, the
convex upsampling's tap-by-tap sum) compute what the plain layers do."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rafttool.engine.derived import derived
from rafttool.engine.model import build_model, upsample_convex

pytestmark = pytest.mark.usefixtures("single_thread")


def test_derived_tensors_are_rebuilt_when_their_sources_change():
    conv = nn.Conv2d(2, 3, 3)
    builds = []

    def build():
        builds.append(1)
        return conv.weight.detach() * 2

    def current():
        return derived(conv, "doubled", [conv.weight], build)

    current(), current()
    assert len(builds) == 1
    with torch.no_grad():
        conv.weight.add_(1)  # in place: the version counter moves
    torch.testing.assert_close(current(), conv.weight.detach() * 2)
    conv.load_state_dict({"weight": torch.zeros(3, 2, 3, 3), "bias": torch.zeros(3)})
    assert current().abs().sum() == 0
    conv.weight = nn.Parameter(torch.ones(3, 2, 3, 3))  # a new tensor
    torch.testing.assert_close(current(), torch.full((3, 2, 3, 3), 2.0))
    assert len(builds) == 4


def test_batch_norm_folds_into_the_convolution_at_inference_only():
    torch.manual_seed(0)
    model = build_model("large").eval()
    for module in model.context_encoder.modules():
        if isinstance(module, nn.BatchNorm2d):  # statistics far from the identity
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.3, 3.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.3, 0.3)
    image = torch.rand(1, 3, 48, 64) * 2 - 1
    unfolded = model.context_encoder(image)  # autograd on: the layers as they are
    assert unfolded.requires_grad
    with torch.no_grad():
        folded = model.context_encoder(image)
        model.context_encoder.stem_norm.running_mean.add_(1.0)  # a changed norm is folded again
        moved = model.context_encoder(image)
    torch.testing.assert_close(folded, unfolded.detach(), atol=1e-4 * unfolded.abs().max().item(), rtol=0)
    assert not torch.allclose(moved, folded)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # no folding under autocast: the layers as they are
        plain = model.context_encoder(image)
        with torch.no_grad():
            torch.testing.assert_close(model.context_encoder(image), plain.detach(), atol=0, rtol=0)


@pytest.mark.parametrize("with_gradient", [False, True])
@pytest.mark.parametrize("channels_last", [True, False])
def test_convex_upsampling_is_the_softmax_weighted_neighbourhood(channels_last, with_gradient):
    """Both ways of summing (tap by tap at inference, one batched product with a gradient) give
    the weighted neighbourhood, and the product's gradients are the einsum's."""
    generator = torch.Generator().manual_seed(0)
    flow = torch.randn(2, 2, 5, 7, generator=generator) * 3
    mask = torch.randn(2, 9 * 64, 5, 7, generator=generator)
    if channels_last:
        mask = mask.contiguous(memory_format=torch.channels_last)
    flow64, mask64 = flow.double().requires_grad_(), mask.double().requires_grad_()
    weights = torch.softmax(mask64.view(2, 9, 8, 8, 5, 7), dim=1)
    neighbours = F.unfold(8 * flow64, 3, padding=1).view(2, 2, 9, 5, 7)
    expected = torch.einsum("bkijyx,bckyx->bcyixj", weights, neighbours).reshape(2, 2, 40, 56)
    flow.requires_grad_(with_gradient)
    mask.requires_grad_(with_gradient)
    up = upsample_convex(flow, mask)
    torch.testing.assert_close(up.double(), expected.detach(), atol=1e-4, rtol=0)
    if with_gradient:
        upstream = torch.randn(up.shape, generator=generator)
        ours = torch.autograd.grad((up * upstream).sum(), (flow, mask))
        theirs = torch.autograd.grad((expected * upstream.double()).sum(), (flow64, mask64))
        for gradient, reference in zip(ours, theirs):
            torch.testing.assert_close(gradient.double(), reference, atol=1e-4, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the flow is not rounded to bf16
            torch.testing.assert_close(upsample_convex(flow, mask), up, atol=0, rtol=0)
