"""Warm start for video: the previous pair's flow, carried onto the next frame's grid.

Between frames t-1 -> t and t -> t+1 motion changes little, so the vector a point had at x in
frame t-1 is a good guess for the same point, now at x + f(x) in frame t. Starting RAFT from
that guess instead of zero flow (as the original code does for Sintel) gives better flow for
the same number of iterations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def forward_project(low_res_flow: torch.Tensor) -> torch.Tensor:
    """Project a (B, 2, h, w) flow forward along itself, for use as the next pair's ``flow_init``.

    Each vector f(x) is splatted to the cell nearest to x + f(x); vectors leaving the grid are
    dropped. Where several land on one cell the fastest wins (under camera or object motion the
    nearer, occluding surface moves faster), ties averaged. Cells nothing lands on, uncovered
    background, take the mean of their nearest filled cells, filled ring by ring outwards.
    A grid that receives no vector at all projects to zero flow.
    """
    batch, _, height, width = low_res_flow.shape
    flow = low_res_flow.detach().float()
    cells = height * width
    ys, xs = torch.meshgrid(
        torch.arange(height, device=flow.device, dtype=torch.float32),
        torch.arange(width, device=flow.device, dtype=torch.float32),
        indexing="ij",
    )
    target_x = torch.round(xs + flow[:, 0])
    target_y = torch.round(ys + flow[:, 1])
    lands = (target_x >= 0) & (target_x < width) & (target_y >= 0) & (target_y < height)
    lands &= torch.isfinite(flow).all(dim=1)

    offsets = torch.arange(batch, device=flow.device).view(batch, 1, 1) * cells
    index = (offsets + target_y.clamp(0, height - 1).long() * width + target_x.clamp(0, width - 1).long())[lands]
    vectors = flow.permute(0, 2, 3, 1)[lands]
    speed = vectors.norm(dim=1)

    fastest = torch.full((batch * cells,), -1.0, device=flow.device).scatter_reduce(0, index, speed, reduce="amax")
    winners = speed >= fastest[index]
    sums = torch.zeros(batch * cells, 2, device=flow.device).index_add_(0, index[winners], vectors[winners])
    counts = torch.zeros(batch * cells, device=flow.device).index_add_(0, index[winners], torch.ones_like(speed[winners]))

    projected = (sums / counts.clamp(min=1).unsqueeze(1)).view(batch, height, width, 2).permute(0, 3, 1, 2)
    filled = (counts > 0).view(batch, 1, height, width)
    return _fill_from_neighbours(projected.contiguous(), filled).to(low_res_flow.dtype)


def _fill_from_neighbours(flow: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """Give each empty cell the mean of its filled 3x3 neighbours, repeating until none is empty."""
    batch, channels, height, width = flow.shape
    ones = torch.ones(1, 1, 3, 3, device=flow.device)
    while not filled.all():
        mask = filled.float()
        neighbour_sum = F.conv2d((flow * mask).view(batch * channels, 1, height, width), ones, padding=1)
        neighbour_count = F.conv2d(mask, ones, padding=1)
        newly = ~filled & (neighbour_count > 0)
        if not newly.any():
            break  # an item without any filled cell stays zero
        mean = neighbour_sum.view(batch, channels, height, width) / neighbour_count.clamp(min=1)
        flow = torch.where(newly, mean, flow)
        filled = filled | newly
    return flow
