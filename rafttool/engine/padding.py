"""Padding to the network's stride, and the minimum input size.

Frames are padded by edge replication, split evenly between the two sides, to a multiple of 8;
this is what the original evaluation code does, so checkpoints see the borders they were made for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

STRIDE = 8


class InputSizeError(ValueError):
    """The frames are too small for the correlation pyramid."""


def check_input_size(height: int, width: int, levels: int = 4) -> None:
    """Every pyramid level needs at least 2x2 cells, or the lookup's coordinates degenerate."""
    smallest = _padded(min(height, width)) // STRIDE // 2 ** (levels - 1)
    if smallest < 2:
        need = STRIDE * 2**levels - (STRIDE - 1)
        raise InputSizeError(
            f"frames are {width}x{height} px, too small for RAFT: both sides must be at least {need} px; "
            "resize them up first"
        )


def _padded(size: int) -> int:
    return -(-size // STRIDE) * STRIDE


@dataclass(frozen=True)
class Padding:
    """Replicate padding (left, right, top, bottom) of one frame size."""

    left: int
    right: int
    top: int
    bottom: int

    @classmethod
    def for_size(cls, height: int, width: int) -> "Padding":
        pad_h = _padded(height) - height
        pad_w = _padded(width) - width
        return cls(pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        if not (self.left or self.right or self.top or self.bottom):
            return images
        return F.pad(images, [self.left, self.right, self.top, self.bottom], mode="replicate")

    def unpad(self, tensor: torch.Tensor) -> torch.Tensor:
        height, width = tensor.shape[-2:]
        return tensor[..., self.top : height - self.bottom, self.left : width - self.right]
