"""All-pairs correlation pyramid and its lookup operator.

The volume holds the dot product of every frame-1 feature vector with every frame-2 feature
vector, divided by sqrt(C) so its scale does not grow with the feature width. Average pooling
of the frame-2 dimensions gives a 4-level pyramid; the lookup samples a (2r+1)^2 window around
the current correspondence on every level, which lets the update block see both fine detail and
displacements of up to r * 2^(levels-1) feature pixels in one step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def correlation_volume(fmap1: torch.Tensor, fmap2: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x (B, C, H, W) -> (B*H*W, 1, H, W) correlation, computed in fp32.

    Reduced-precision features lose the small differences that make matching sharp, so the
    product is always taken in float32.
    """
    batch, channels, height, width = fmap1.shape
    f1 = fmap1.float().flatten(2)
    f2 = fmap2.float().flatten(2)
    corr = torch.bmm(f1.transpose(1, 2), f2) / channels**0.5
    return corr.reshape(batch * height * width, 1, height, width)


def lookup_offsets(radius: int, device: torch.device) -> torch.Tensor:
    """Integer window offsets, shape (2r+1, 2r+1, 2), to add to (x, y) coordinates.

    The x offset varies along the first window axis: the update block's first layer was trained
    on channels in this order, so checkpoints from the original code depend on it.
    """
    steps = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    slow, fast = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([slow, fast], dim=-1)


def sample_bilinear(volume: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Sample ``volume`` (N, 1, H, W) at pixel coordinates ``coords`` (N, h, w, 2) in (x, y) order.

    Pixel centres sit on integer coordinates and samples outside the map read zero. Maps must be
    at least 2x2 (a 1-pixel side has no extent to normalise by); the engine checks input sizes.
    """
    height, width = volume.shape[-2:]
    x, y = coords.unbind(-1)
    grid = torch.stack([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class CorrelationPyramid:
    """Precomputed pyramid of the full all-pairs volume, queried once per iteration."""

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

    @property
    def out_channels(self) -> int:
        return self.num_levels * (2 * self.radius + 1) ** 2

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        """Correlation features around ``coords`` (B, 2, H, W) -> (B, levels*(2r+1)^2, H, W)."""
        centres = coords.permute(0, 2, 3, 1).reshape(-1, 1, 1, 2).float()
        window = self.offsets.view(1, 2 * self.radius + 1, 2 * self.radius + 1, 2)
        features = []
        for level, volume in enumerate(self.levels):
            sampled = sample_bilinear(volume, centres / 2**level + window)
            features.append(sampled.view(self.batch, self.height, self.width, -1))
        return torch.cat(features, dim=-1).permute(0, 3, 1, 2).contiguous()
