"""RAFT: Recurrent All-Pairs Field Transforms (Teed & Deng, ECCV 2020), large and small.

``RAFT.forward`` takes a batch of image pairs of any size (values 0..255), pads them to a
multiple of 8, runs ``iters`` refinement steps from zero flow (or a warm start) and returns the
flow at full resolution, optionally with every iteration's estimate (training, inspection).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rafttool.engine.correlation import CorrMode, VolumeWorkspace, build_correlation
from rafttool.engine.encoders import Encoder, NormKind
from rafttool.engine.int8 import Int8UpdateStep
from rafttool.engine.matmul_convs import ConvRunner, run_direct
from rafttool.engine.padding import STRIDE, Padding, check_input_size
from rafttool.engine.trace import Trace
from rafttool.engine.update import MaskHead, UpdateBlock, swap_window_axes
from rafttool.engine.warm_start import forward_project
from rafttool.engine.winograd import WinogradConvs, WinogradUpdateStep, applies as winograd_applies


@dataclass(frozen=True)
class RAFTConfig:
    """Everything that distinguishes one RAFT variant from another."""

    name: str
    feature_widths: tuple[int, int, int, int, int]
    context_widths: tuple[int, int, int, int, int]
    encoder_block: str
    context_norm: NormKind
    hidden_channels: int
    context_channels: int
    corr_levels: int
    corr_radius: int
    corr_widths: tuple[int, ...]
    flow_widths: tuple[int, int]
    motion_channels: int
    gru_kernels: tuple[tuple[int, int], ...]
    flow_head_width: int
    convex_upsampling: bool
    # Inference layout of the encoders. oneDNN runs RAFT-large's 64-channel half-resolution
    # stages ~1.2x faster channels-last; RAFT-small's narrow ones run slower that way.
    encoder_channels_last: bool = False


LARGE = RAFTConfig(
    name="large",
    feature_widths=(64, 64, 96, 128, 256),
    context_widths=(64, 64, 96, 128, 256),
    encoder_block="residual",
    context_norm="batch",
    hidden_channels=128,
    context_channels=128,
    corr_levels=4,
    corr_radius=4,
    corr_widths=(256, 192),
    flow_widths=(128, 64),
    motion_channels=128,
    gru_kernels=((1, 5), (5, 1)),
    flow_head_width=256,
    convex_upsampling=True,
    encoder_channels_last=True,
)

SMALL = RAFTConfig(
    name="small",
    feature_widths=(32, 32, 64, 96, 128),
    context_widths=(32, 32, 64, 96, 160),
    encoder_block="bottleneck",
    context_norm="none",
    hidden_channels=96,
    context_channels=64,
    corr_levels=4,
    corr_radius=3,
    corr_widths=(96,),
    flow_widths=(64, 32),
    motion_channels=82,
    gru_kernels=((3, 3),),
    flow_head_width=128,
    convex_upsampling=False,
)

CONFIGS: dict[str, RAFTConfig] = {"large": LARGE, "small": SMALL}

DEFAULT_TOLERANCES: dict[str, float] = {"small": 0.5, "large": 0.2}
"""Adaptive iterations' stopping tolerance (``forward(tolerance=...)``) for the bundled weights of
each size, in full-resolution px of mean update, chosen on real data (README, Performance) to
keep every family's EPE within 2% of fixed iterations with a margin (RAFT-large's KITTI error
grew 4.6% at 0.5 px, 1.7% at 0.3 and 0.3% at 0.2)."""


@dataclass
class FlowOutput:
    """Result of one forward pass.

    ``flow`` is (B, 2, H, W) at input resolution; ``low_res_flow`` is the 1/8-resolution flow of
    the padded frames, the form a warm start takes; ``iterations`` lists every iteration's
    full-resolution flow when requested, and ``iterations_run`` says how many ran.
    """

    flow: torch.Tensor
    low_res_flow: torch.Tensor
    iterations: list[torch.Tensor] = field(default_factory=list)
    iterations_run: int = 0


class RAFT(nn.Module):
    """The RAFT network; build it with :func:`raft_large` or :func:`raft_small`."""

    def __init__(self, config: RAFTConfig) -> None:
        super().__init__()
        self.config = config
        block = config.encoder_block
        layout = config.encoder_channels_last
        self.feature_encoder = Encoder(config.feature_widths, block, "instance", layout)  # type: ignore[arg-type]
        self.context_encoder = Encoder(config.context_widths, block, config.context_norm, layout)  # type: ignore[arg-type]
        self.update_block = UpdateBlock(
            corr_levels=config.corr_levels,
            corr_radius=config.corr_radius,
            context_channels=config.context_channels,
            hidden=config.hidden_channels,
            corr_widths=config.corr_widths,
            flow_widths=config.flow_widths,
            motion_channels=config.motion_channels,
            gru_kernels=config.gru_kernels,
            flow_head_width=config.flow_head_width,
        )
        self.mask_head = MaskHead(config.hidden_channels) if config.convex_upsampling else None

    def forward(
        self,
        image1: torch.Tensor,
        image2: torch.Tensor,
        iters: int = 12,
        flow_init: torch.Tensor | None = None,
        all_iterations: bool = False,
        trace: Trace | None = None,
        *,
        corr_mode: CorrMode = "auto",
        tolerance: float | None = None,
        check_every: int = 1,
        features: tuple[torch.Tensor, torch.Tensor] | None = None,
        int8: bool = False,
        workspace: VolumeWorkspace | None = None,
    ) -> FlowOutput:
        """Flow from ``image1`` to ``image2``, both (B, 3, H, W) with values in 0..255.

        ``flow_init`` is a (B, 2, H/8, W/8) flow of the padded frames (a previous
        ``low_res_flow``). With ``all_iterations`` every iteration's flow is upsampled and kept,
        which training's sequence loss needs; otherwise only the last one is upsampled. A
        ``trace`` receives the intermediate tensors (features, correlation, per-iteration state).

        ``corr_mode`` stores the correlation volume ('full'), computes it per lookup
        ('on_demand', for large frames) or picks one ('auto': by free memory and, on a CPU, by
        which is faster; see :func:`~rafttool.engine.correlation.choose_corr_mode`). With a ``tolerance``
        (full-resolution pixels) the loop stops once an iteration moves the flow by less than
        that on average in every batch item: ``iters`` is then the most it runs. The test reads
        the update back to the host, so on a GPU it runs only every ``check_every`` iterations.
        ``features`` are both frames' :meth:`features`, when the caller has them already.
        ``int8`` (inference on CPUs where :func:`~rafttool.engine.int8.int8_supported`) runs the
        update block's large convolutions in int8 (see :mod:`rafttool.engine.int8`) and takes a
        stored volume's dot products in int8 (kept in bf16). Otherwise, on a CPU at inference
        (no autocast), the update block's wide convolutions run by Winograd's algorithm
        (:mod:`rafttool.engine.winograd`): the same numbers up to float rounding.
        A ``workspace`` holds the correlation volume (in training, its gradient too) from one call
        to the next (see :class:`~rafttool.engine.correlation.VolumeWorkspace`).
        """
        if image1.shape != image2.shape:
            raise ValueError(f"frames differ in shape: {tuple(image1.shape)} vs {tuple(image2.shape)}")
        check_input_size(image1.shape[-2], image1.shape[-1], self.config.corr_levels)
        if int8 and torch.is_grad_enabled():
            raise ValueError("int8 computes no gradients: run it under torch.inference_mode() or torch.no_grad()")
        padding = Padding.for_size(image1.shape[-2], image1.shape[-1])
        image1 = padding.pad(normalize(image1))
        if features is None:
            fmap1, fmap2 = self.feature_encoder(torch.cat([image1, padding.pad(normalize(image2))], dim=0)).chunk(2, dim=0)
        else:
            fmap1, fmap2 = features
        correlation = build_correlation(fmap1, fmap2, self.config.corr_levels, self.config.corr_radius, corr_mode, workspace, int8)
        context = self.context_encoder(image1)
        hidden, context = context.split([self.config.hidden_channels, self.config.context_channels], dim=1)
        # The update block runs channels-last, the layout the lookup returns and its convolutions
        # run fastest on.
        hidden = torch.tanh(hidden).contiguous(memory_format=torch.channels_last)
        context = torch.relu(context).contiguous(memory_format=torch.channels_last)
        winograd = winograd_applies(context)
        run: ConvRunner = WinogradConvs() if winograd else run_direct
        # The CPU inference steps take the correlation in the lookup's own window order and
        # reorder their weights instead; a trace records it in the order everything else uses.
        y_major = fmap1.device.type == "cpu" and not torch.is_grad_enabled()
        if int8:
            step = Int8UpdateStep(self.update_block, context, y_major)
        elif winograd:
            step = WinogradUpdateStep(self.update_block, context, y_major)
        else:
            step = functools.partial(self.update_block.step, plans=self.update_block.plan(context), corr_y_major=y_major)

        batch, _, height, width = fmap1.shape
        coords0 = coordinate_grid(batch, height, width, image1.device)
        coords1 = coords0.clone() if flow_init is None else coords0 + flow_init.float()
        if trace is not None:
            for name, value in (("fmap1", fmap1), ("fmap2", fmap2), ("hidden", hidden), ("context", context)):
                trace.record(name, value)
            trace.keep("correlation", correlation)
            trace.keep("padding", padding)

        output = FlowOutput(flow=torch.empty(0), low_res_flow=torch.empty(0))
        for _ in range(iters):
            coords1 = coords1.detach()
            flow = (coords1 - coords0).contiguous(memory_format=torch.channels_last)
            corr = correlation(coords1, y_major)
            hidden, delta, motion = step(hidden, corr=corr, flow=flow)
            if trace is not None:
                x_major = swap_window_axes(corr, self.update_block.motion_encoder.corr_window) if y_major else corr
                for name, value in (("coords", coords1), ("corr", x_major), ("motion", motion), ("delta", delta)):
                    trace.record_iteration(name, value)
                if self.mask_head is not None:
                    trace.record_iteration("mask", self.mask_head(hidden))
            coords1 = coords1 + delta.float()
            output.iterations_run += 1
            if all_iterations:
                output.iterations.append(padding.unpad(self.upsample(coords1 - coords0, hidden)))
            if tolerance is not None and output.iterations_run % check_every == 0 and converged(delta, tolerance):
                break

        output.low_res_flow = coords1 - coords0
        if output.iterations:
            output.flow = output.iterations[-1]
        else:
            output.flow = padding.unpad(self.upsample(output.low_res_flow, hidden, run))
        return output

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Feature maps of (N, 3, H, W) frames (0..255), as ``forward(features=...)`` takes them.

        A video frame belongs to two pairs; computing its features once saves a third of the
        encoder work per pair (see :meth:`flow_sequence`).
        """
        padding = Padding.for_size(images.shape[-2], images.shape[-1])
        return self.feature_encoder(padding.pad(normalize(images)))

    def flow_sequence(
        self, frames: Iterable[torch.Tensor], iters: int = 12, warm_start: bool = True, **options: Any
    ) -> Iterator[FlowOutput]:
        """Flow between each (B, 3, H, W) frame of a stream and the next, one output per pair.

        Each frame's features are computed once, for both pairs it belongs to. With
        ``warm_start`` a pair starts from the previous pair's flow carried forward along itself
        (:func:`~rafttool.engine.warm_start.forward_project`). ``options`` go to :meth:`forward`.
        """
        previous: tuple[torch.Tensor, torch.Tensor] | None = None
        flow_init = None
        for frame in frames:
            fmap = self.features(frame)
            if previous is not None:
                output = self(previous[0], frame, iters, flow_init=flow_init, features=(previous[1], fmap), **options)
                flow_init = forward_project(output.low_res_flow) if warm_start else None
                yield output
            previous = (frame, fmap)

    def compile_for_inference(self) -> None:
        """Run the encoders and the update step through ``torch.compile``.

        The compiler fuses the elementwise work around the convolutions (norms, activations,
        the GRU gates) and, on a GPU, cuts per-kernel launch overhead in the iteration loop. It
        compiles once per frame size, which takes a while, so it pays off on long runs.
        """
        self.feature_encoder.compile()
        self.context_encoder.compile()
        self.update_block.step = torch.compile(self.update_block.step)  # type: ignore[method-assign]

    def upsample(self, flow: torch.Tensor, hidden: torch.Tensor, run: ConvRunner = run_direct) -> torch.Tensor:
        """1/8-resolution flow -> full resolution: learned convex combination or bilinear.
        ``run`` runs the mask head's 3x3 convolution (the update step's runner, at inference)."""
        if self.mask_head is None:
            return upsample_bilinear(flow)
        return upsample_convex(flow, self.mask_head(hidden, run).float())


def normalize(images: torch.Tensor) -> torch.Tensor:
    """0..255 pixel values -> -1..1, the range the encoders were trained on."""
    return 2 * (images / 255.0) - 1


def converged(delta: torch.Tensor, tolerance: float) -> bool:
    """Whether the last update moved every item's flow by < ``tolerance`` full-res px on average."""
    moved = STRIDE * delta.detach().float().norm(dim=1).mean(dim=(1, 2))
    return bool((moved < tolerance).all())


def coordinate_grid(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(B, 2, H, W) pixel coordinates in (x, y) order, in fp32 whatever the autocast state."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=0).unsqueeze(0).repeat(batch, 1, 1, 1)


def upsample_bilinear(flow: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Bilinear upsampling of a flow field; vectors scale with the resolution."""
    size = (flow.shape[-2] * factor, flow.shape[-1] * factor)
    return factor * F.interpolate(flow, size=size, mode="bilinear", align_corners=True)


def upsample_convex(flow: torch.Tensor, mask: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Each full-resolution pixel is a convex combination of its coarse 3x3 neighbourhood.

    The softmax over 9 learned weights keeps the result inside the neighbours' range, which
    preserves sharp motion boundaries that bilinear upsampling would blur. Without a gradient
    the sum runs tap by tap into one accumulator per flow channel, so nothing the size of all 9
    weighted copies is ever allocated: 14.7 -> 4.4 ms against the broadcast product on a CPU at
    1024x436 (2 threads), and 4.7 against 16.7 ms for the batched product below. With one, it is
    that product (every pixel's 2x9 neighbours times its 9x64 weights), whose backward is two
    more products, where the tap-by-tap sum's zero-fills a mask-sized gradient for every tap
    and channel: a RAFT-large training step (batch 6, 288x384, 10 iterations, bf16, 2 threads)
    5.1-5.3 -> 4.4-4.5 s. It runs in fp32 under autocast, which would round flow to bf16.
    """
    batch, _, height, width = flow.shape
    # Pixel-major (B, H, W, 9, f*f): a free view of the channels-last mask the mask head returns.
    weights = torch.softmax(mask.permute(0, 2, 3, 1).reshape(batch, height, width, 9, factor * factor), dim=3)
    neighbours = F.unfold(factor * flow, kernel_size=3, padding=1).view(batch, 2, 9, height, width)
    neighbours = neighbours.permute(0, 3, 4, 1, 2)  # (B, H, W, 2, 9)
    if torch.is_grad_enabled() and (flow.requires_grad or mask.requires_grad):
        with torch.autocast(flow.device.type, enabled=False):
            up = torch.matmul(neighbours, weights).permute(0, 3, 1, 2, 4)  # (B, 2, H, W, f*f)
    else:
        channels = []
        for channel in neighbours.unsqueeze(-1).unbind(3):
            up = weights[..., 0, :] * channel[..., 0, :]
            for tap in range(1, 9):
                up.addcmul_(weights[..., tap, :], channel[..., tap, :])
            channels.append(up)
        up = torch.stack(channels, dim=1)
    up = up.reshape(batch, 2, height, width, factor, factor)
    return up.permute(0, 1, 2, 4, 3, 5).reshape(batch, 2, factor * height, factor * width)


def raft_large() -> RAFT:
    """RAFT-large (5.3M parameters): basic residual encoders, separable GRU, convex upsampling."""
    return RAFT(LARGE)


def raft_small() -> RAFT:
    """RAFT-small (1.0M parameters): bottleneck encoders, 3x3 GRU, bilinear upsampling."""
    return RAFT(SMALL)


def build_model(name: str) -> RAFT:
    """Model by size name ('large' or 'small')."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model size {name!r}: use one of {', '.join(CONFIGS)}")
    return RAFT(CONFIGS[name])
