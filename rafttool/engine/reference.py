"""The straightforward RAFT computation, step for step as the original code does it.

This is the yardstick for the fast paths in :mod:`rafttool.engine.model` and
:mod:`rafttool.engine.correlation`: PyTorch's instance norm in the feature encoder (see
:func:`as_reference`); the full all-pairs volume, pooled level by level and stored;
``grid_sample`` on every level at every iteration; the GRU over the concatenated context and
motion; the flow upsampled (with the mask head, for RAFT-large) after every iteration, as the
original does in test mode. Tests and ``benchmarks/speed_vs_reference.py`` compare against it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from rafttool.engine.encoders import Encoder, InstanceNorm
from rafttool.engine.model import RAFT, FlowOutput, coordinate_grid, normalize
from rafttool.engine.padding import Padding, check_input_size


def as_reference(model: RAFT) -> RAFT:
    """A copy of ``model`` whose encoders run as the original's: both frames in one batch, in
    the default layout, normalised with ``nn.InstanceNorm2d``."""
    reference = copy.deepcopy(model)
    for module in reference.modules():
        if isinstance(module, Encoder):
            module.channels_last = module.frame_by_frame = False
        for name, child in module.named_children():
            if isinstance(child, InstanceNorm):
                setattr(module, name, nn.InstanceNorm2d(child.num_features, eps=child.eps))
    return reference


def correlation_volume(fmap1: torch.Tensor, fmap2: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x (B, C, H, W) -> (B*H*W, 1, H, W) correlation, computed in fp32."""
    batch, channels, height, width = fmap1.shape
    f1 = fmap1.float().flatten(2)
    f2 = fmap2.float().flatten(2)
    corr = torch.bmm(f1.transpose(1, 2), f2) / channels**0.5
    return corr.reshape(batch * height * width, 1, height, width)


def lookup_offsets(radius: int, device: torch.device) -> torch.Tensor:
    """Integer window offsets, shape (2r+1, 2r+1, 2), to add to (x, y) coordinates, x slow."""
    steps = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    slow, fast = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([slow, fast], dim=-1)


def sample_bilinear(volume: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Sample ``volume`` (N, 1, H, W) at pixel coordinates ``coords`` (N, h, w, 2) in (x, y) order.

    Pixel centres sit on integer coordinates and samples outside the map read zero.
    """
    height, width = volume.shape[-2:]
    x, y = coords.unbind(-1)
    grid = torch.stack([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class ReferenceCorrelation:
    """The original CorrBlock: the volume average-pooled level by level, ``grid_sample`` lookups."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int = 4, radius: int = 4) -> None:
        self.num_levels = num_levels
        self.radius = radius
        self.batch, _, self.height, self.width = fmap1.shape
        volume = correlation_volume(fmap1, fmap2)
        self.levels = [volume]
        for _ in range(num_levels - 1):
            volume = F.avg_pool2d(volume, 2, stride=2)
            self.levels.append(volume)
        self.offsets = lookup_offsets(radius, fmap1.device)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        """Correlation features around ``coords`` (B, 2, H, W) -> (B, levels*(2r+1)^2, H, W)."""
        centres = coords.permute(0, 2, 3, 1).reshape(-1, 1, 1, 2).float()
        window = self.offsets.view(1, 2 * self.radius + 1, 2 * self.radius + 1, 2)
        features = []
        for level, volume in enumerate(self.levels):
            sampled = sample_bilinear(volume, centres / 2**level + window)
            features.append(sampled.view(self.batch, self.height, self.width, -1))
        return torch.cat(features, dim=-1).permute(0, 3, 1, 2).contiguous()


def reference_forward(
    model: RAFT, image1: torch.Tensor, image2: torch.Tensor, iters: int = 12, flow_init: torch.Tensor | None = None
) -> FlowOutput:
    """``model``'s flow computed the original way; ``iterations`` holds every upsampled estimate.

    Pass ``as_reference(model)`` to normalise features the original way too.
    """
    config = model.config
    check_input_size(image1.shape[-2], image1.shape[-1], config.corr_levels)
    padding = Padding.for_size(image1.shape[-2], image1.shape[-1])
    image1, image2 = padding.pad(normalize(image1)), padding.pad(normalize(image2))
    fmap1, fmap2 = model.feature_encoder(torch.cat([image1, image2], dim=0)).chunk(2, dim=0)
    correlation = ReferenceCorrelation(fmap1, fmap2, config.corr_levels, config.corr_radius)
    hidden, context = model.context_encoder(image1).split([config.hidden_channels, config.context_channels], dim=1)
    hidden, context = torch.tanh(hidden), torch.relu(context)

    batch, _, height, width = fmap1.shape
    coords0 = coordinate_grid(batch, height, width, image1.device)
    coords1 = coords0.clone() if flow_init is None else coords0 + flow_init.float()
    output = FlowOutput(flow=torch.empty(0), low_res_flow=torch.empty(0))
    for _ in range(iters):
        coords1 = coords1.detach()
        hidden, delta, _ = model.update_block(hidden, context, correlation(coords1), coords1 - coords0)
        coords1 = coords1 + delta.float()
        output.iterations.append(padding.unpad(model.upsample(coords1 - coords0, hidden)))
        output.iterations_run += 1
    output.low_res_flow = coords1 - coords0
    output.flow = output.iterations[-1] if output.iterations else padding.unpad(model.upsample(output.low_res_flow, hidden))
    return output
