"""3x3 convolutions by Winograd's minimal filtering, F(4x4, 3x3), for inference on the CPU.

A 4x4 block of a 3x3 convolution's output needs 144 multiplications per input/output channel
pair done directly; Winograd's algorithm gets it from 36, by taking a 6x6 input tile and the
kernel into a transformed domain where the convolution is an elementwise product. Over many
channels that product is 36 independent matrix products (tiles x C_in) @ (C_in x C_out), which
oneDNN runs at its peak, so the update block's wide 3x3 convolutions (the GRU gates, the flow
head, the motion encoder's last layer) take about half the time. The result is the same sum
(exact in exact arithmetic); in fp32 it differs from the direct convolution by about 1e-5 of
the output's range, which the exact path's tolerance (1e-3 px mean) covers many times over.

Tensors live in the transformed domain as ``(36, tiles, channels)``; a convolution over a
concatenation is the sum of the convolutions over its parts, so callers can multiply parts by
their own weights and add them there, before one output transform.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rafttool.engine.update import ConvGRUCell, GRUPlan, UpdateBlock, run_direct

TILE = 6
"""Input tile side: 4 outputs plus the kernel's 2 extra rows/columns."""
OUT = 4
"""Output block side: neighbouring tiles overlap by 2."""


@functools.cache
def _matrices() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input transform B^T, kernel transform G, output transform A^T) for the interpolation
    points 0, 1, -1, 2, -2 and infinity (the smallest ones: the transforms' rounding grows with them)."""
    input_t = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]  # fmt: skip
    kernel = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]  # fmt: skip
    output_t = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
    return tuple(torch.tensor(m, dtype=torch.float64) for m in (input_t, kernel, output_t))  # type: ignore[return-value]


@functools.cache
def _tile_transforms(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Both 2-D tile transforms as one matrix each (Kronecker products), so that transforming
    all tiles is one matrix product: (36 x 36) for the input, (16 x 36) for the output."""
    input_t, _, output_t = _matrices()
    return torch.kron(input_t, input_t).float().to(device), torch.kron(output_t, output_t).float().to(device)


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """A (C_out, C_in, 3, 3) kernel in the transformed domain, as (36, C_in, C_out) fp32."""
    _, kernel, _ = _matrices()
    kernel = kernel.to(weight.device)
    transformed = torch.einsum("ai,ocij,bj->abco", kernel, weight.detach().double(), kernel)
    return transformed.reshape(TILE * TILE, weight.shape[1], weight.shape[0]).float().contiguous()


@dataclass
class Tiles:
    """An input in the transformed domain: ``values`` is (36, batch * tiles, channels)."""

    values: torch.Tensor
    batch: int
    height: int
    width: int

    def multiply(self, weight: torch.Tensor, channels: slice = slice(None), accumulate: torch.Tensor | None = None) -> torch.Tensor:
        """The product with a :func:`transform_weight` over ``channels`` of the input, added to
        ``accumulate`` (a product over other channels) when given."""
        values = self.values[:, :, channels]
        if accumulate is None:
            return torch.bmm(values, weight)
        return torch.baddbmm(accumulate, values, weight)


def tiles(parts: Sequence[torch.Tensor]) -> Tiles:
    """The channel-wise concatenation of ``parts`` (each (B, C_i, H, W)), zero-padded for a
    'same' 3x3 convolution, cut into overlapping 6x6 tiles and transformed.

    The parts are written straight into one padded channels-last buffer, which replaces both
    the concatenation and the padding."""
    batch, _, height, width = parts[0].shape
    rows, cols = -(-height // OUT), -(-width // OUT)
    channels = sum(part.shape[1] for part in parts)
    padded = parts[0].new_zeros(batch, rows * OUT + 2, cols * OUT + 2, channels)
    start = 0
    for part in parts:
        padded[:, 1 : height + 1, 1 : width + 1, start : start + part.shape[1]] = part.permute(0, 2, 3, 1)
        start += part.shape[1]
    windows = padded.unfold(1, TILE, OUT).unfold(2, TILE, OUT)  # (B, rows, cols, C, 6, 6)
    windows = windows.permute(4, 5, 0, 1, 2, 3).reshape(TILE * TILE, -1)
    input_transform, _ = _tile_transforms(padded.device)
    values = torch.mm(input_transform, windows).view(TILE * TILE, batch * rows * cols, channels)
    return Tiles(values, batch, height, width)


def untile(products: torch.Tensor, like: Tiles) -> torch.Tensor:
    """Transformed-domain ``products`` (36, tiles, C_out) back to a (B, C_out, H, W) output,
    channels-last, for the geometry of ``like``."""
    rows, cols = -(-like.height // OUT), -(-like.width // OUT)
    out_channels = products.shape[2]
    _, output_transform = _tile_transforms(products.device)
    blocks = torch.mm(output_transform, products.view(TILE * TILE, -1)).view(OUT, OUT, like.batch, rows, cols, out_channels)
    out = blocks.permute(2, 3, 0, 4, 1, 5).reshape(like.batch, rows * OUT, cols * OUT, out_channels)
    return out[:, : like.height, : like.width].permute(0, 3, 1, 2)


def conv3x3(parts: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A stride-1, 'same' 3x3 convolution of the concatenation of ``parts`` with a
    :func:`transform_weight` kernel; channels-last output."""
    inputs = tiles(parts)
    out = untile(inputs.multiply(weight), inputs)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


MIN_CHANNELS = 64
"""Below this many input or output channels the transforms cost more than the products save
(64 -> 32 channels at 55x128: 2.2 ms against 1.8 direct; 96 -> 128: 5.4 against 9.5)."""


def worthwhile(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is one this module computes (3x3, stride 1, padding 1, no dilation or
    groups) and wide enough to gain from it."""
    return (
        conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
        and conv.dilation == (1, 1) and conv.groups == 1
        and min(conv.in_channels, conv.out_channels) >= MIN_CHANNELS
    )  # fmt: skip


class WinogradConvs:
    """A :data:`~rafttool.engine.update.ConvRunner` that computes the given convolutions, where
    :func:`worthwhile`, by :func:`conv3x3` with kernels transformed once, and any other directly."""

    def __init__(self, convs: Sequence[nn.Conv2d | None]) -> None:
        self.kernels = {conv: (transform_weight(conv.weight), conv.bias) for conv in convs if conv is not None and worthwhile(conv)}

    def __call__(self, conv: nn.Conv2d, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        kernel = self.kernels.get(conv)
        return run_direct(conv, parts) if kernel is None else conv3x3(parts, *kernel)


class _WinogradCell:
    """:meth:`ConvGRUCell.step` of a 3x3 cell. [h, motion] is transformed once for the z and r
    gates and the candidate's share over the motion features; only r * h is transformed again,
    and the candidate's two shares are added before one output transform."""

    def __init__(self, plan: GRUPlan, hidden: int) -> None:
        self.hidden = hidden
        self.zr = transform_weight(plan.zr_weight)
        q = transform_weight(plan.q_weight)
        self.q_over_hidden, self.q_over_motion = q[:, :hidden].contiguous(), q[:, hidden:].contiguous()
        self.context_zr, self.context_q = plan.context_zr, plan.context_q

    def __call__(self, h: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        inputs = tiles([h, motion])
        z, r = untile(inputs.multiply(self.zr), inputs).add_(self.context_zr).sigmoid_().chunk(2, dim=1)
        q_over_motion = inputs.multiply(self.q_over_motion, channels=slice(self.hidden, None))
        q = untile(tiles([r * h]).multiply(self.q_over_hidden, accumulate=q_over_motion), inputs)
        return torch.lerp(h, q.add_(self.context_q).tanh_(), z)


class WinogradUpdateStep:
    """One inference iteration of ``block`` (:meth:`UpdateBlock.step`, the same numbers up to
    float rounding) with its wide 3x3 convolutions by Winograd's algorithm; prepared once per
    pass, for the pass's context. RAFT-large's 1x5 and 5x1 GRU cells stay direct."""

    def __init__(self, block: UpdateBlock, context: torch.Tensor) -> None:
        self.block = block
        self.plans = block.plan(context)
        hidden = block.flow_head.conv1.in_channels
        self.cells = [_WinogradCell(plan, hidden) if plan.zr_weight.shape[-2:] == (3, 3) else None for plan in self.plans]
        encoder = block.motion_encoder
        self.convs = WinogradConvs([encoder.corr_conv2, encoder.flow_conv2, encoder.fuse_conv, block.flow_head.conv1])

    def __call__(self, hidden: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        motion = self.block.motion_encoder(flow, corr, self.convs)
        for cell, plan in zip(self.cells, self.plans):
            hidden = cell(hidden, motion) if cell is not None else ConvGRUCell.step(hidden, motion, plan)
        return hidden, self.block.flow_head.step(hidden, self.convs), motion
