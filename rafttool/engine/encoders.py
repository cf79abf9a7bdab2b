"""Convolutional encoders: the feature encoder (both frames) and the context encoder (frame 1).

Both are the same 1/8-resolution network: a 7x7 stride-2 stem, three stages of two residual
blocks (strides 1, 2, 2) and a 1x1 projection. RAFT-large uses basic residual blocks, RAFT-small
bottleneck blocks; the feature encoder uses instance norm so that matching does not depend on
global image statistics, the context encoder batch norm (large) or no norm (small).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rafttool.engine.derived import derived
from rafttool.engine.matmul_convs import ConvRunner, pointwise_conv, run_direct
from rafttool.engine.winograd import WinogradConvs, applies as winograd_applies

NormKind = Literal["instance", "batch", "group", "none"]


class InstanceNorm(nn.Module):
    """Instance norm without affine parameters, as in the paper's checkpoints.

    Computed as group norm with one channel per group: the same normalisation, but PyTorch's
    CPU group-norm kernel is 2-3x faster than its instance-norm one (which runs batch norm on a
    reshaped copy), and the feature encoder spends a good part of its time here.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, x.shape[1], eps=self.eps)


def make_norm(kind: NormKind, channels: int) -> nn.Module:
    """Norm layer by name; instance norm has no affine parameters, as in the paper's checkpoints."""
    if kind == "instance":
        return InstanceNorm(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(num_groups=channels // 8, num_channels=channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}: use instance, batch, group or none")


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor, run: ConvRunner = run_direct) -> torch.Tensor:
    """``norm(conv(x))``, the convolution by ``run``. At inference a batch norm is an affine map
    per channel, which folds into the convolution's weights and bias: one pass over the output
    fewer (16 of 240 ms of RAFT-large's context encoder at 1024x436, 2 threads), the same numbers
    up to rounding. Not under autocast (folded weights would be rounded to half precision where
    the norm ran in fp32), nor while ``torch.compile`` traces it, which folds what it can itself."""
    plain = norm.training or torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type) or torch.compiler.is_compiling()
    if isinstance(norm, nn.BatchNorm2d) and not plain:
        tensors = (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var)
        sources = [t for t in tensors if t is not None]
        return run(derived(norm, "folded", sources, lambda: _fold(conv, norm)), [x])
    return norm(run(conv, [x]))


def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of the convolution with the batch norm that follows it (in eval mode) folded in."""
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)  # type: ignore[union-attr]
    if norm.weight is not None:
        scale = scale * norm.weight.double()
    bias = -norm.running_mean.double() * scale  # type: ignore[union-attr]
    if conv.bias is not None:
        bias = bias + conv.bias.double() * scale
    if norm.bias is not None:
        bias = bias + norm.bias.double()
    folded = copy.deepcopy(conv).requires_grad_(False)
    folded.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
    folded.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    return folded


class ResidualBlock(nn.Module):
    """Two 3x3 conv-norm-relu layers with an identity (or strided 1x1) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormKind, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, stride=stride)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm2 = make_norm(norm, out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, norm, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, run: ConvRunner = run_direct) -> torch.Tensor:
        y = self.relu(conv_norm(self.conv1, self.norm1, x, run))
        y = self.relu(conv_norm(self.conv2, self.norm2, y, run))
        return self.relu(_plus_shortcut(y, self.shortcut, x))


class BottleneckBlock(nn.Module):
    """1x1 reduce to a quarter of the width, 3x3, 1x1 expand: RAFT-small's cheaper block."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormKind, stride: int = 1) -> None:
        super().__init__()
        mid = out_channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 1)
        self.norm1 = make_norm(norm, mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, stride=stride)
        self.norm2 = make_norm(norm, mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1)
        self.norm3 = make_norm(norm, out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, norm, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, run: ConvRunner = run_direct) -> torch.Tensor:
        y = self.relu(self.norm1(pointwise_conv(self.conv1, x)))
        y = self.relu(self.norm2(run(self.conv2, [y])))
        y = self.relu(self.norm3(pointwise_conv(self.conv3, y)))
        return self.relu(_plus_shortcut(y, self.shortcut, x))


def _shortcut(in_channels: int, out_channels: int, norm: NormKind, stride: int) -> nn.Module:
    if stride == 1:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride), make_norm(norm, out_channels))


def _plus_shortcut(y: torch.Tensor, shortcut: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``y`` plus a block's shortcut of ``x`` (identity, or a strided 1x1 convolution and a
    norm). Without autograd the sum goes into ``y``, whose memory is still in cache where a
    fresh output's is not (RAFT-large's feature encoder, 2 threads: about 5 of 232 ms a frame)."""
    if isinstance(shortcut, nn.Sequential):
        x = conv_norm(shortcut[0], shortcut[1], x)
    return y + x if torch.is_grad_enabled() else y.add_(x)


class Encoder(nn.Module):
    """Image -> features at 1/8 resolution.

    ``widths`` gives the stem width, the three stage widths and the output width. In
    inference, frames go through one at a time if ``frame_by_frame`` (a batch of full-size
    frames overflows the caches: two frames take ~2.5x one frame's time on a CPU), and
    channels-last if ``channels_last``; both leave the numbers unchanged up to float rounding.
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int, int],
        block: Literal["residual", "bottleneck"],
        norm: NormKind,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.frame_by_frame = True
        block_cls = ResidualBlock if block == "residual" else BottleneckBlock
        stem, w1, w2, w3, out = widths
        self.stem_conv = nn.Conv2d(3, stem, 7, stride=2, padding=3)
        self.stem_norm = make_norm(norm, stem)
        self.relu = nn.ReLU(inplace=True)
        self.stage1 = nn.Sequential(block_cls(stem, w1, norm, 1), block_cls(w1, w1, norm, 1))
        self.stage2 = nn.Sequential(block_cls(w1, w2, norm, 2), block_cls(w2, w2, norm, 1))
        self.stage3 = nn.Sequential(block_cls(w2, w3, norm, 2), block_cls(w3, w3, norm, 1))
        self.head = nn.Conv2d(w3, out, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self._encode(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # On a CPU the wide stride-1 convolutions whose transformed input fits the caches go by
        # Winograd's algorithm: RAFT-large's quarter- and eighth-resolution stages at 1024x436.
        run = WinogradConvs() if winograd_applies(x) else run_direct
        if not self.frame_by_frame:
            return self._encode(x, run).contiguous()
        features = [self._encode(frame, run).contiguous() for frame in x.split(1)]
        return features[0] if len(features) == 1 else torch.cat(features)

    def _encode(self, x: torch.Tensor, run: ConvRunner = run_direct) -> torch.Tensor:
        x = self.relu(conv_norm(self.stem_conv, self.stem_norm, x))
        for block in (*self.stage1, *self.stage2, *self.stage3):
            x = block(x, run)
        return pointwise_conv(self.head, x)
