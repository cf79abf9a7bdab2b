"""Convolutions recast as matrix products, where oneDNN runs them far below this CPU's peak.

Both compute the same sums as the convolution in another order (float rounding aside), so the
exact path may use them; they are for inference on the CPU, where they were measured faster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rafttool.engine.onednn import linear

ConvRunner = Callable[[nn.Conv2d, Sequence[torch.Tensor]], torch.Tensor]
"""Applies a convolution to the channel-wise concatenation of some tensors. Inference on a CPU
passes its own (:class:`~rafttool.engine.winograd.WinogradConvs`) to the update block to run the
same convolutions another way."""


def run_direct(conv: nn.Conv2d, parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """The plain :data:`ConvRunner`: concatenate, then convolve."""
    return conv(parts[0] if len(parts) == 1 else torch.cat(list(parts), dim=1))


def pointwise_conv(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``conv`` (1x1, stride 1) of one frame on the CPU, NCHW or channels-last, as one matrix
    product in the layout ``x`` has; with ``weight`` in place of ``conv``'s (same shape).

    With more than one thread PyTorch hands 1x1 convolutions to oneDNN, which runs the encoders'
    narrow ones (8-64 channels) at about half the speed of the product (2 threads, 220x512:
    8 -> 32 channels 1.87 vs 0.81 ms, 32 -> 8 1.52 vs 0.49 ms). A channels-last product goes
    through :func:`~rafttool.engine.onednn.linear` (oneDNN's GEMM where it outruns MKL's).
    Anything else is convolved.
    """
    weight = conv.weight if weight is None else weight
    pointwise = conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0) and conv.groups == 1
    one_frame = x.device.type == "cpu" and x.shape[0] == 1
    if not (pointwise and one_frame and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))):
        return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    _, channels, height, width = x.shape
    weight = weight.view(conv.out_channels, channels)
    if x.is_contiguous():  # out (C_out, pixels) = weight @ x (C_in, pixels)
        left, right = weight, x.view(channels, height * width)
        out = torch.mm(left, right) if conv.bias is None else torch.addmm(conv.bias.unsqueeze(1), left, right)
        return out.view(1, -1, height, width)
    # channels-last: out (pixels, C_out) = x (pixels, C_in) @ weight.T
    out = linear(x.permute(0, 2, 3, 1).reshape(height * width, channels), weight, conv.bias)
    return out.view(1, height, width, -1).permute(0, 3, 1, 2)


def conv_to_few_channels(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A stride-1, 'same'-padded convolution with few output channels, for channels-last ``x``.

    oneDNN runs a convolution to 2 channels at a few percent of its peak. Here every input pixel
    is multiplied by all kernel taps at once, one (pixels x C) @ (C x taps*out) product, and each
    output pixel sums the products its taps picked up from its neighbours: the same sums in
    another order. Returns (B, out, H, W) in channels-last layout.
    """
    batch, channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    pad_h, pad_w = kernel_h // 2, kernel_w // 2
    products = torch.matmul(x.permute(0, 2, 3, 1), weight.permute(1, 2, 3, 0).reshape(channels, -1))
    products = F.pad(products, (0, 0, pad_w, pad_w, pad_h, pad_h))  # zero rows and columns all round
    products = products.view(batch, height + 2 * pad_h, width + 2 * pad_w, kernel_h, kernel_w, out_channels)
    out = x.new_zeros(batch, height, width, out_channels) if bias is None else bias.expand(batch, height, width, -1).clone()
    for dy in range(kernel_h):
        for dx in range(kernel_w):
            out += products[:, dy : dy + height, dx : dx + width, dy, dx]
    return out.permute(0, 3, 1, 2)
