"""Int8 convolutions for the update loop, on CPUs with VNNI instructions.

The refinement iterations are most of a RAFT-small pass, and most of an iteration is the GRU's
gate convolutions and the flow head's first convolution. On a CPU with VNNI (AVX512-VNNI or
AVX-VNNI), oneDNN runs those in int8 about four times faster than in fp32, and on the Intel
Xeons without AMX bf16 is *slower* than fp32. So :class:`Int8UpdateStep` runs those and the motion encoder's
last convolution in int8 and keeps the rest in fp32: the encoders, the motion encoder's narrow
first convolutions, and the two raw flow channels of the GRU input, whose range (hundreds of px)
would crush everything else in a shared int8 scale. Inputs that come from different places
(hidden state, correlation features, flow features) get separate scales: a convolution over
their concatenation is the sum of convolutions over each. The int8 pass also takes the stored
correlation volume's dot products in int8 (``CorrelationPyramid(int8=True)``).

Each int8 input gets one scale for the whole tensor: a fixed one for the hidden state, which
the GRU keeps within [-1, 1], and one from the current maximum for ReLU outputs. Weights get
one symmetric scale per output channel. The measured cost on ``../shared/data`` is in the
README (Performance, default mode); the loop's other numbers are unchanged.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rafttool.engine.cpu import has_vnni
from rafttool.engine.update import GRUPlan, MotionEncoder, UpdateBlock

UNIT_SCALE = 1.0 / 127.0
"""Quantization step of tensors within [-1, 1] (hidden state, reset-gated hidden state)."""
UNIT_ZERO_POINT = 128


@functools.cache
def int8_supported() -> bool:
    """Whether this machine runs oneDNN int8 convolutions faster than fp32: it needs PyTorch's
    oneDNN int8 operators and a CPU with VNNI (int8 dot products in one instruction)."""
    return has_vnni() and hasattr(torch.ops.onednn, "qconv2d_pointwise")


@dataclass
class Quantized:
    """A uint8 tensor (channels-last) and the affine map back to reals: (q - zero_point) * scale."""

    values: torch.Tensor
    scale: float
    zero_point: int


def to_uint8(x: torch.Tensor, scale: float, zero_point: int, saturate: bool = False) -> torch.Tensor:
    """``x / scale + zero_point`` rounded half up to uint8: the conversion's truncation after
    adding 0.5 is the rounding, so one pass over ``x`` and one conversion. The mapped values
    must lie in [0, 255]; ``saturate`` clamps the top, where a scale taken from the data's range
    can overshoot it by rounding."""
    offset = torch.tensor(zero_point + 0.5, dtype=x.dtype, device=x.device)
    mapped = torch.add(offset, x, alpha=1.0 / scale)
    return (mapped.clamp_(max=255.0) if saturate else mapped).to(torch.uint8)


def quantize(x: torch.Tensor, scale: float, zero_point: int) -> Quantized:
    """``x`` to channels-last uint8 (:func:`to_uint8`). The callers' scales map ``x`` into
    [0, 255] by construction, so there is nothing to clamp (the layout is channels-last
    already in the update loop)."""
    q = to_uint8(x, scale, zero_point)
    return Quantized(q.contiguous(memory_format=torch.channels_last), scale, zero_point)


def quantize_unit(x: torch.Tensor) -> Quantized:
    """A tensor known to lie within [-1, 1]: a fixed scale, no pass over the data to find it."""
    return quantize(x, UNIT_SCALE, UNIT_ZERO_POINT)


def quantize_nonnegative(x: torch.Tensor) -> Quantized:
    """A ReLU output: zero maps to zero, the current maximum to 255. ``amax``, not ``max``: on a
    channels-last tensor PyTorch's full ``max`` walks memory in strides (1.2 ms for RAFT-small's
    96x55x128 correlation features at 1024x436, one thread) where ``amax`` streams it (0.09 ms)."""
    peak = float(x.amax())
    return quantize(x, peak / 255.0 if peak > 0 else 1.0, 0)


def int8_weights(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights as int8 with one symmetric scale per output channel (per row of a matrix, per
    output channel of a convolution kernel): (integers, scales)."""
    weight = weight.detach().float()
    scales = weight.abs().amax(dim=tuple(range(1, weight.dim()))).clamp(min=1e-12) / 127.0
    return torch.round(weight / scales.view(-1, *[1] * (weight.dim() - 1))).to(torch.int8), scales


class Int8Conv:
    """A frozen stride-1 convolution with int8 weights (one scale per output channel) taking a
    :class:`Quantized` input and returning fp32, optionally through a fused ReLU."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int], relu: bool = False) -> None:
        integers, scales = int8_weights(weight)
        self.padding = list(padding)
        self.packed = torch.ops.onednn.qconv_prepack(integers, scales, 1.0, 0, [1, 1], self.padding, [1, 1], 1, None)
        self.scales = scales
        self.zero_points = torch.zeros(len(scales), dtype=torch.int64)
        self.bias = None if bias is None else bias.detach().float()
        self.post_op = "relu" if relu else "none"

    def __call__(self, x: Quantized) -> torch.Tensor:
        return torch.ops.onednn.qconv2d_pointwise(
            x.values, x.scale, x.zero_point, self.packed, self.scales, self.zero_points, self.bias,
            [1, 1], self.padding, [1, 1], 1, 1.0, 0, torch.float32, self.post_op, [], "",
        )  # fmt: skip


class _Int8Gate:
    """One gate convolution's int8 part, over [h, motion features], split by input so that each
    part gets its own scale (its fp32 part, over the two flow channels, is :class:`_Int8Cell`'s)."""

    def __init__(self, weight: torch.Tensor, hidden: int, padding: tuple[int, int]) -> None:
        self.over_hidden = Int8Conv(weight[:, :hidden], None, padding)
        self.over_motion = Int8Conv(weight[:, hidden:-2], None, padding)

    def __call__(self, hidden: Quantized, motion: Quantized) -> torch.Tensor:
        return self.over_hidden(hidden).add_(self.over_motion(motion))


class _Int8Cell:
    """:meth:`ConvGRUCell.step` with int8 gate convolutions. Both gates' fp32 share over the
    flow channels is one convolution: they read the same input."""

    def __init__(self, plan: GRUPlan, hidden: int) -> None:
        self.zr = _Int8Gate(plan.zr_weight, hidden, plan.padding)
        self.q = _Int8Gate(plan.q_weight, hidden, plan.padding)
        self.over_flow = torch.cat([plan.zr_weight[:, -2:], plan.q_weight[:, -2:]]).detach().float().contiguous()
        self.split = [plan.zr_weight.shape[0], plan.q_weight.shape[0]]
        self.padding = plan.padding
        self.context_zr, self.context_q = plan.context_zr, plan.context_q

    def __call__(self, h: torch.Tensor, h_quantized: Quantized, motion: Quantized, flow: torch.Tensor) -> torch.Tensor:
        flow_zr, flow_q = F.conv2d(flow, self.over_flow, padding=self.padding).split(self.split, dim=1)
        z, r = self.zr(h_quantized, motion).add_(flow_zr).add_(self.context_zr).sigmoid_().chunk(2, dim=1)
        q = self.q(quantize_unit(r * h), motion).add_(flow_q).add_(self.context_q).tanh_()
        return torch.lerp(h, q, z)


class _Int8MotionEncoder:
    """:class:`MotionEncoder` with its last convolution in int8, split by input (correlation
    branch | flow branch) so that each gets its own scale; one shared scale cost KITTI 2.7%."""

    def __init__(self, encoder: MotionEncoder, corr_y_major: bool) -> None:
        self.encoder = encoder
        self.corr_y_major = corr_y_major
        fuse = encoder.fuse_conv
        corr_width = fuse.in_channels - encoder.flow_conv2.out_channels
        self.over_corr = Int8Conv(fuse.weight[:, :corr_width], fuse.bias, fuse.padding)  # type: ignore[arg-type]
        self.over_flow = Int8Conv(fuse.weight[:, corr_width:], None, fuse.padding)  # type: ignore[arg-type]

    def __call__(self, flow: torch.Tensor, corr: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        """The motion features (with the flow appended, as the encoder returns them) and the
        features again, quantized for the GRU."""
        from_corr, from_flow = self.encoder.branches(flow, corr, corr_y_major=self.corr_y_major)
        fused = self.over_corr(quantize_nonnegative(from_corr)).add_(self.over_flow(quantize_nonnegative(from_flow))).relu_()
        return torch.cat([fused, flow], dim=1), quantize_nonnegative(fused)


class Int8UpdateStep:
    """One inference iteration of ``block`` (:meth:`UpdateBlock.step`) with the motion encoder's
    last convolution, the GRU gates and the flow head's first convolution in int8; prepared once
    per pass, for the pass's context. The hidden state the flow head quantized at the end of one
    iteration is the one the GRU starts from in the next, so it is quantized once for both.
    ``corr_y_major`` as for :class:`~rafttool.engine.winograd.WinogradUpdateStep`."""

    def __init__(self, block: UpdateBlock, context: torch.Tensor, corr_y_major: bool = False) -> None:
        self.block = block
        self._last_hidden: tuple[torch.Tensor, Quantized] | None = None
        self.motion_encoder = _Int8MotionEncoder(block.motion_encoder, corr_y_major)
        hidden = block.flow_head.conv1.in_channels
        self.cells = [_Int8Cell(plan, hidden) for plan in block.plan(context)]
        head = block.flow_head.conv1
        self.head = Int8Conv(head.weight, head.bias, head.padding, relu=True)  # type: ignore[arg-type]

    def __call__(self, hidden: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        motion, features = self.motion_encoder(flow, corr)  # features: shared by every gate of every cell
        last = self._last_hidden
        quantized = last[1] if last is not None and last[0] is hidden else quantize_unit(hidden)
        for cell in self.cells:
            hidden = cell(hidden, quantized, features, flow)
            quantized = quantize_unit(hidden)
        self._last_hidden = (hidden, quantized)
        delta = self.block.flow_head.offset(self.head(quantized))
        return hidden, delta, motion
