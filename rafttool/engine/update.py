"""The recurrent update operator: motion encoder, convolutional GRU, flow head and mask head.

Each iteration turns (correlation features, current flow) into motion features, feeds them with
the frame-1 context into a GRU whose hidden state carries what earlier iterations learned, and
reads a flow *offset* out of the hidden state: f_{k+1} = f_k + delta_f_k.

``forward`` methods compute this the straightforward way (the reference). ``plan``/``step`` give
the same result for less work: the context is the same in every iteration, so its share of the
GRU's gate convolutions is computed once per pass, and the z and r gates share one convolution.
At inference on a CPU, :class:`~rafttool.engine.winograd.WinogradUpdateStep` runs that step with
fewer multiplications, and :class:`~rafttool.engine.int8.Int8UpdateStep` in int8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rafttool.engine.derived import derived
from rafttool.engine.matmul_convs import ConvRunner, conv_to_few_channels, pointwise_conv, run_direct


class MotionEncoder(nn.Module):
    """Compresses correlation features and the current flow into one motion feature map.

    The flow itself is appended to the output so the GRU always sees the raw estimate.
    """

    def __init__(
        self,
        corr_levels: int,
        corr_radius: int,
        corr_widths: tuple[int, ...],
        flow_widths: tuple[int, int],
        out_channels: int,
    ) -> None:
        super().__init__()
        self.corr_window = 2 * corr_radius + 1
        self.corr_conv1 = nn.Conv2d(corr_levels * self.corr_window**2, corr_widths[0], 1)
        self.corr_conv2 = nn.Conv2d(corr_widths[0], corr_widths[1], 3, padding=1) if len(corr_widths) > 1 else None
        self.flow_conv1 = nn.Conv2d(2, flow_widths[0], 7, padding=3)
        self.flow_conv2 = nn.Conv2d(flow_widths[0], flow_widths[1], 3, padding=1)
        self.fuse_conv = nn.Conv2d(corr_widths[-1] + flow_widths[1], out_channels - 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(
        self, flow: torch.Tensor, corr: torch.Tensor, run: ConvRunner = run_direct, corr_y_major: bool = False
    ) -> torch.Tensor:
        fused = self.relu(run(self.fuse_conv, self.branches(flow, corr, run, corr_y_major)))
        return torch.cat([fused, flow], dim=1)

    def branches(
        self, flow: torch.Tensor, corr: torch.Tensor, run: ConvRunner = run_direct, corr_y_major: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The correlation and flow branches' features, before ``fuse_conv`` joins them.
        ``corr_y_major``: the correlation channels come in y-major window order (inference on
        the CPU; see :meth:`rafttool.engine.correlation.CorrelationPyramid.__call__`)."""
        weight = self.corr_conv1.weight
        if corr_y_major:
            weight = derived(self.corr_conv1, "y-major", [weight], self._y_major_weight)
        c = self.relu(pointwise_conv(self.corr_conv1, corr, weight))
        if self.corr_conv2 is not None:
            c = self.relu(run(self.corr_conv2, [c]))
        return c, self.relu(run(self.flow_conv2, [self.relu(self.flow_conv1(flow))]))

    def _y_major_weight(self) -> torch.Tensor:
        """``corr_conv1``'s weight for correlation channels in y-major window order."""
        return swap_window_axes(self.corr_conv1.weight.detach(), self.corr_window).contiguous()


def swap_window_axes(tensor: torch.Tensor, window: int) -> torch.Tensor:
    """``tensor`` with its channels (dim 1), correlation samples in level-major window order
    (``window`` = 2r+1 a side), reordered x-major <-> y-major: for a convolution weight over
    x-major samples, the weight that takes them y-major, and the other way round."""
    levels = tensor.shape[1] // window**2
    swapped = tensor.reshape(tensor.shape[0], levels, window, window, -1).transpose(2, 3)
    return swapped.reshape(tensor.shape)


@dataclass
class GRUPlan:
    """One cell's gate weights regrouped for a forward pass, and the context's constant share."""

    zr_weight: torch.Tensor
    q_weight: torch.Tensor
    context_zr: torch.Tensor
    context_q: torch.Tensor
    padding: tuple[int, int]


class ConvGRUCell(nn.Module):
    """A GRU whose gates are convolutions, so the hidden state is a feature map."""

    def __init__(self, hidden: int, inputs: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        padding = (kernel[0] // 2, kernel[1] // 2)
        self.convz = nn.Conv2d(hidden + inputs, hidden, kernel, padding=padding)
        self.convr = nn.Conv2d(hidden + inputs, hidden, kernel, padding=padding)
        self.convq = nn.Conv2d(hidden + inputs, hidden, kernel, padding=padding)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q

    def gate_weights(self, context_channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The gate convolutions regrouped (a conv of a concatenation is the sum of the convs of
        its parts): the z and r gates' weight over [h, motion], the candidate's over [h, motion],
        all three gates' over the context, and their biases."""
        hidden = self.convz.out_channels

        def per_iteration(weight: torch.Tensor) -> torch.Tensor:
            return torch.cat([weight[:, :hidden], weight[:, hidden + context_channels :]], dim=1)

        convs = (self.convz, self.convr, self.convq)
        return (
            torch.cat([per_iteration(self.convz.weight), per_iteration(self.convr.weight)]),
            per_iteration(self.convq.weight),
            torch.cat([conv.weight[:, hidden : hidden + context_channels] for conv in convs]),
            torch.cat([conv.bias for conv in convs]),
        )

    def plan(self, context: torch.Tensor) -> GRUPlan:
        """The per-iteration share of the gates' weights, over [h, motion], and the context's
        share of their outputs plus the biases, the same in every iteration."""
        zr_weight, q_weight, context_weight, context_bias = self.gate_weights(context.shape[1])
        shares = F.conv2d(context, context_weight, context_bias, padding=self.convz.padding)
        hidden = self.convz.out_channels
        return GRUPlan(zr_weight, q_weight, shares[:, : 2 * hidden], shares[:, 2 * hidden :], self.convz.padding)  # type: ignore[arg-type]

    @staticmethod
    def step(h: torch.Tensor, motion: torch.Tensor, plan: GRUPlan) -> torch.Tensor:
        """``forward(h, cat([context, motion]))`` with the context's share taken from ``plan``."""
        zr = F.conv2d(torch.cat([h, motion], dim=1), plan.zr_weight, padding=plan.padding)
        z, r = zr.add_(plan.context_zr).sigmoid_().chunk(2, dim=1)
        q = F.conv2d(torch.cat([r * h, motion], dim=1), plan.q_weight, padding=plan.padding)
        return torch.lerp(h, q.add_(plan.context_q).tanh_(), z)


class RecurrentUnit(nn.Module):
    """One or more GRU cells applied in turn.

    RAFT-large uses a separable pair (1x5 then 5x1), which sees a larger neighbourhood than one
    3x3 cell at similar cost; RAFT-small uses a single 3x3 cell.
    """

    def __init__(self, hidden: int, inputs: int, kernels: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        self.cells = nn.ModuleList(ConvGRUCell(hidden, inputs, k) for k in kernels)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for cell in self.cells:
            h = cell(h, x)
        return h

    def plan(self, context: torch.Tensor) -> list[GRUPlan]:
        return [cell.plan(context) for cell in self.cells]

    def step(self, h: torch.Tensor, motion: torch.Tensor, plans: list[GRUPlan]) -> torch.Tensor:
        for cell, plan in zip(self.cells, plans):
            h = cell.step(h, motion, plan)
        return h


class FlowHead(nn.Module):
    """Hidden state -> 2-channel flow offset."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(hidden, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(h)))

    def step(self, h: torch.Tensor, run: ConvRunner = run_direct) -> torch.Tensor:
        """:meth:`forward` with the last convolution computed by :meth:`offset`."""
        return self.offset(self.relu(run(self.conv1, [h])))

    def offset(self, features: torch.Tensor) -> torch.Tensor:
        """``conv2``: at inference on a CPU, as one matrix product and a sum of shifted slices
        (:func:`conv_to_few_channels`, 2x faster there); the plain convolution otherwise."""
        if features.device.type == "cpu" and not torch.is_grad_enabled():
            return conv_to_few_channels(features, self.conv2.weight, self.conv2.bias)
        return self.conv2(features)


class MaskHead(nn.Module):
    """Hidden state -> logits of the 9 convex-combination weights for each of the 8x8 subpixels.

    The 0.25 factor damps the logits, as in the paper's training setup; checkpoints assume it.
    """

    def __init__(self, hidden: int, width: int = 256, factor: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(hidden, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, factor * factor * 9, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, h: torch.Tensor, run: ConvRunner = run_direct) -> torch.Tensor:
        return 0.25 * pointwise_conv(self.conv2, self.relu(run(self.conv1, [h])))


class UpdateBlock(nn.Module):
    """Motion encoder + recurrent unit + flow head (one RAFT iteration, without the lookup)."""

    def __init__(
        self,
        corr_levels: int,
        corr_radius: int,
        context_channels: int,
        hidden: int,
        corr_widths: tuple[int, ...],
        flow_widths: tuple[int, int],
        motion_channels: int,
        gru_kernels: tuple[tuple[int, int], ...],
        flow_head_width: int,
    ) -> None:
        super().__init__()
        self.motion_encoder = MotionEncoder(corr_levels, corr_radius, corr_widths, flow_widths, motion_channels)
        self.gru = RecurrentUnit(hidden, context_channels + motion_channels, gru_kernels)
        self.flow_head = FlowHead(hidden, flow_head_width)

    def forward(
        self, hidden: torch.Tensor, context: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (new hidden state, flow offset, motion features)."""
        motion = self.motion_encoder(flow, corr)
        hidden = self.gru(hidden, torch.cat([context, motion], dim=1))
        return hidden, self.flow_head(hidden), motion

    def plan(self, context: torch.Tensor) -> list[GRUPlan]:
        """Per-pass preparation for :meth:`step`; gradients flow through it to the weights."""
        return self.gru.plan(context)

    def step(
        self, hidden: torch.Tensor, plans: list[GRUPlan], corr: torch.Tensor, flow: torch.Tensor, corr_y_major: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` with the context prepared by :meth:`plan`; ``corr_y_major`` as for
        :meth:`MotionEncoder.branches`."""
        motion = self.motion_encoder(flow, corr, corr_y_major=corr_y_major)
        hidden = self.gru.step(hidden, motion, plans)
        return hidden, self.flow_head.step(hidden), motion
