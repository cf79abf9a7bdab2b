"""All-pairs correlation pyramid and its lookup operator.

The volume holds the dot product of every frame-1 feature vector with every frame-2 feature
vector, divided by sqrt(C) so its scale does not grow with the feature width. Average pooling
of the frame-2 dimensions gives a 4-level pyramid; the lookup samples a (2r+1)^2 window around
the current correspondence on every level, which lets the update block see both fine detail and
displacements of up to r * 2^(levels-1) feature pixels in one step.

Two facts make this cheaper than the original code (kept in :mod:`rafttool.engine.reference`):

* The dot product is linear, so pooling the volume over frame-2 cells equals correlating with
  pooled frame-2 features. Every level is then one slice of a single matrix product, and a level
  can also be computed on demand, for just the cells a lookup reads.
* Window offsets are integers, so all (2r+1)^2 bilinear samples of one level share one set of
  interpolation weights: gather the (2r+2)^2 integer neighbourhood once and blend it, instead of
  running ``grid_sample`` with (2r+1)^2 sampling points per pixel.

:class:`CorrelationPyramid` stores the whole volume (fastest while it fits in memory);
:class:`OnDemandCorrelation` stores only the pooled features and costs O(H*W) memory, which is
what makes 4K frames possible. :func:`build_correlation` picks one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from rafttool.engine.int8 import int8_weights, to_uint8
from rafttool.engine.memory import heap_allocations
from rafttool.engine.onednn import product_into

CorrMode = Literal["auto", "full", "on_demand"]
CORR_MODES: tuple[str, ...] = ("auto", "full", "on_demand")

MEMORY_FRACTION = 0.5
"""'auto' stores the full volume only if it takes at most this share of the free memory: the
rest of the pass (encoders at full resolution, the update block, the caller's frames) needs room
too."""

CPU_FULL_VOLUME_BYTES = 4 * 2**30
"""On a CPU, 'auto' computes lookups on demand once one pair's volume would exceed 4 GiB, even
where it fits: past that, building the volume (which grows with the square of the frame area)
and reading it scattered costs about as much as the lookups, for many times the memory.
Measured (12 iterations, 2 threads, random weights, `benchmarks/memory_large_frames.py`,
2026-11-26): RAFT-small stored vs on demand 1.8 vs 3.5 s at 1280x720 (1.0 GiB volume), 3.9 vs
6.0 s at 1600x900 (2.5 GiB), 6.5 vs 8.1 s and 6.2 vs 0.8 GB at 1920x1080 (5.2 GiB); RAFT-large
18.5 vs 23.0 s and 6.7 vs 1.2 GB there."""

GATHER_BYTES = 4 * 2**20
"""Size of the neighbourhood features one on-demand lookup gathers at a time: a few MB, so they
are still in cache when their dot products are taken (2-4 MB measured fastest here)."""


class VolumeWorkspace:
    """Memory for the correlation volume, kept from one pass to the next.

    A new volume is fresh memory that the OS maps in page by page on first write: at 1024x436
    (260 MB) that takes as long as the matrix product that fills it. A caller that runs many
    passes (:class:`~rafttool.api.FlowEngine`) hands the same workspace to each and pays that
    once; it holds the largest volume seen until it is dropped. A volume handed out again is
    overwritten, so nothing may keep one past its pass. A training loop may pass one too: a
    step's volume is not read once its lookups have run, and :attr:`gradient` holds the
    volume's gradient (:class:`SharedGradient`), which nothing reads after the step.
    """

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None
        self._gradient: VolumeWorkspace | None = None

    @property
    def gradient(self) -> VolumeWorkspace:
        """A second workspace, for the volume's gradient in training."""
        if self._gradient is None:
            self._gradient = VolumeWorkspace()
        return self._gradient

    def take(self, size: int, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised flat tensor of ``size`` elements, on ``like``'s device and dtype."""
        buffer = self._buffer
        if buffer is None or buffer.numel() < size or buffer.device != like.device or buffer.dtype != like.dtype:
            self._buffer = None  # let the old one go before the new one is allocated
            buffer = self._buffer = like.new_empty(size)
        return buffer[:size]

    def renew(self, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The tensor ``build`` returns, held in place of the last one, for volumes that are not
        written with ``out=``. The last one is freed just before and ``build`` allocates from the
        heap, so a volume of the same size lands in the memory of the last, already mapped in;
        ``build`` should allocate nothing else."""
        self._buffer = None
        with heap_allocations():
            self._buffer = build()
        return self._buffer


def pooled_features(fmap2: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """``fmap2`` average-pooled 1, 2, 4, ... times: correlating with these gives the pyramid levels."""
    levels = [fmap2]
    for _ in range(num_levels - 1):
        levels.append(F.avg_pool2d(levels[-1], 2, stride=2))
    return levels


def run_length(radius: int) -> int:
    """Cells in one run a lookup reads per window row, 2r+2; also the zero cells that follow
    every level row in the lookup's tables and the least margin of zeros at their ends."""
    return 2 * radius + 2


def padded_levels(levels: list[torch.Tensor], radius: int) -> list[torch.Tensor]:
    """Pooled frame-2 features with :func:`run_length` zero columns on the right: their
    correlations are exact zeros, which the lookup's runs read where they leave a row."""
    return [F.pad(level, (0, run_length(radius))) for level in levels]


class _WindowLookup:
    """Geometry shared by both stores: which cells a lookup reads and how it blends them.

    The cells of all levels are numbered in one table (level after level, raster order) per row
    of a stored volume or per batch item. A lookup reads, for every (pixel, level) window, 2r+2
    *runs* of 2r+2 consecutive cells, one per window row: contiguous copies are what gathers do
    fastest. Every row of a level is followed by 2r+2 cells of zeros (frame-2 features padded
    with zero columns: :func:`padded_levels`), so a run sticking out of its row on either side
    reads zeros, and a window row outside the level reads a run of zeros at the table's start
    instead: ``grid_sample``'s zero padding, with no weights to mask anything out. Tables are
    stored with ``margin`` (at least 2r+2) cells of zeros at both ends, so that every run stays
    inside the buffer and the first run is all zeros.
    """

    def __init__(
        self, fmap1: torch.Tensor, fmap2_levels: list[torch.Tensor], radius: int, per_pixel_tables: bool, margin: int | None = None
    ) -> None:
        self.num_levels = len(fmap2_levels)
        self.radius = radius
        self.batch, _, self.height, self.width = fmap1.shape
        self.level_sizes: list[tuple[int, int]] = [(level.shape[-2], level.shape[-1] - run_length(radius)) for level in fmap2_levels]
        self.row_stride = [w + run_length(radius) for _, w in self.level_sizes]
        cells = [h * stride for (h, _), stride in zip(self.level_sizes, self.row_stride)]
        self.level_starts: list[int] = [sum(cells[:i]) for i in range(len(cells))]
        self.table_size = sum(cells)
        self.margin = run_length(radius) if margin is None else margin
        device = fmap1.device
        pixels = self.batch * self.height * self.width
        # Per (pixel, level) window, pixel-major: where its level starts in the padded table (the
        # pixel's own row of a stored volume, or its batch item's features), and the level's size.
        table = torch.arange(pixels, device=device)
        if not per_pixel_tables:
            table = table // (self.height * self.width)
        level_starts = torch.tensor(self.level_starts, device=device)
        self._starts = (table.unsqueeze(1) * self.table_size + level_starts + self.margin).view(-1)
        self._widths = torch.tensor([w for _, w in self.level_sizes], device=device).repeat(pixels)
        self._strides = torch.tensor(self.row_stride, device=device).repeat(pixels)
        self._heights = torch.tensor([h for h, _ in self.level_sizes], device=device).repeat(pixels)
        self._scales = torch.tensor([2.0**-i for i in range(self.num_levels)], device=device)
        self._steps = torch.arange(-radius, radius + 2, device=device)

    @property
    def out_channels(self) -> int:
        return self.num_levels * (2 * self.radius + 1) ** 2

    def _windows(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where each window's runs start, (M, 2r+2) for the M = B*H*W*L windows, and its
        fractional column and row positions, (M,) each.

        A row outside the level reads the zeros at the start of the table (the first margin);
        a run sticking out sideways reads the zeros that pad the rows.
        """
        r = self.radius
        xy = coords.float().permute(0, 2, 3, 1).reshape(-1, 2, 1) * self._scales  # (B*H*W, 2, L)
        x, y = xy[:, 0].reshape(-1), xy[:, 1].reshape(-1)
        # Clamping far-away centres keeps the index maths bounded, and every run within a row's
        # padding, and changes nothing: a window centred beyond the clamp lies entirely outside
        # its level either way.
        x = torch.minimum(x.clamp(min=-r - 2.0), (self._widths + r).to(x.dtype))
        y = torch.minimum(y.clamp(min=-r - 2.0), (self._heights + r).to(y.dtype))
        x0, y0 = x.floor(), y.floor()
        ys = y0.long().unsqueeze(1) + self._steps
        inside_rows = (ys >= 0) & (ys < self._heights.unsqueeze(1))
        row_starts = self._starts.unsqueeze(1) + ys * self._strides.unsqueeze(1) + x0.long().unsqueeze(1) - r
        return torch.where(inside_rows, row_starts, 0), x - x0, y - y0

    def _blend(self, values: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, y_major: bool) -> torch.Tensor:
        """(M, 2r+2 rows, 2r+2 columns) cell values -> (B, L*(2r+1)^2, H, W) bilinear samples.

        Channels are level-major with x as the slow window axis (the order the update block's
        weights expect), or y with ``y_major``: the order the blend leaves them in, which spares
        writing them transposed (1.4 of 7 ms per lookup at 1024x436) for callers that reorder
        their first convolution's weights instead
        (:func:`~rafttool.engine.update.swap_window_axes`). The result is a channels-last
        tensor, the layout the update block's convolutions run fastest on.
        """
        along_x = torch.lerp(values[..., :-1], values[..., 1:], fx.view(-1, 1, 1))
        top, bottom, fy = along_x[:, :-1], along_x[:, 1:], fy.view(-1, 1, 1)
        if y_major:
            samples = torch.lerp(top, bottom, fy)
        elif along_x.requires_grad:  # out= has no autograd
            samples = torch.lerp(top, bottom, fy).transpose(1, 2)
        else:  # written straight into x-major order, sparing a transposing copy
            side = 2 * self.radius + 1
            samples = along_x.new_empty(along_x.shape[0], side, side)
            torch.lerp(top, bottom, fy, out=samples.transpose(1, 2))
        return samples.reshape(self.batch, self.height, self.width, -1).permute(0, 3, 1, 2)

    def __call__(self, coords: torch.Tensor, y_major: bool = False) -> torch.Tensor:
        """Correlation features around ``coords`` (B, 2, H, W) -> (B, levels*(2r+1)^2, H, W),
        in x-major window order or with ``y_major`` in y-major order (see :meth:`_blend`)."""
        raise NotImplementedError


class CorrelationPyramid(_WindowLookup):
    """The full all-pairs volume of every level, computed once by one matrix product.

    ``levels[l]`` is level l as (B*H*W, 1, H_l, W_l), a view of the volume; rows run over
    frame-1 cells in raster order (``volume`` has the rows' zero padding too, see
    :class:`_WindowLookup`). The volume costs about B*(H*W)^2*4/3 floats: see
    :func:`full_volume_bytes` and :class:`OnDemandCorrelation` for frames where that is too much.
    """

    def __init__(
        self,
        fmap1: torch.Tensor,
        fmap2: torch.Tensor,
        num_levels: int = 4,
        radius: int = 4,
        workspace: VolumeWorkspace | None = None,
        int8: bool = False,
    ) -> None:
        with torch.autocast(fmap1.device.type, enabled=False):  # matching needs fp32, whatever the caller's autocast
            levels2 = padded_levels(pooled_features(fmap2.float(), num_levels), radius)
            batch, channels, height, width = fmap1.shape
            f1 = fmap1.float().flatten(2).transpose(1, 2) / channels**0.5  # (B, H*W, C)
            f2 = torch.cat([level.flatten(2) for level in levels2], dim=2)  # (B, C, cells)
            if int8 and (f1.requires_grad or f2.requires_grad):
                raise ValueError("an int8 volume has no gradients: build it under torch.inference_mode()")
            # The int8 volume is padded by a row of zero correlations at both ends.
            super().__init__(fmap1, levels2, radius, per_pixel_tables=True, margin=f2.shape[2] if int8 else None)
            size = batch * height * width * self.table_size
            training = f1.requires_grad or f2.requires_grad
            self._gradient = SharedGradient(None if workspace is None else workspace.gradient) if training else None
            if int8:
                buffer = _int8_volume(f1, f2, workspace)
            elif self._gradient is not None:  # training
                buffer = _TrainingVolume.apply(f1, f2, self.margin, self._gradient, workspace)
            else:
                buffer = padded_product(f1, f2, self.margin, workspace)
            self.volume = buffer[self.margin : size + self.margin].view(batch, height * width, self.table_size)
        self._buffer = buffer
        self._runs = buffer.detach().unfold(0, run_length(radius), 1)  # every run of 2r+2 consecutive cells, without a copy
        self.levels = [
            self.volume.view(-1, self.table_size)[:, start : start + h * stride].view(-1, 1, h, stride)[..., :w]
            for start, (h, w), stride in zip(self.level_starts, self.level_sizes, self.row_stride)
        ]

    def __call__(self, coords: torch.Tensor, y_major: bool = False) -> torch.Tensor:
        run_starts, wx, fy = self._windows(coords)
        if self._gradient is not None:
            return _TrainingLookup.apply(self._buffer, self, run_starts, wx, fy, y_major)
        values = self._runs.index_select(0, run_starts.view(-1)).view(*run_starts.shape, -1).float()
        return self._blend(values, wx, fy, y_major)


def padded_product(f1: torch.Tensor, f2: torch.Tensor, margin: int, workspace: VolumeWorkspace | None = None) -> torch.Tensor:
    """``f1 @ f2`` ((B, P, C) @ (B, C, cells)) flat, with ``margin`` zeros at both ends; the
    product lands in the padded buffer (by MKL directly, by oneDNN through cache-sized chunks),
    sparing a copy of the whole volume."""
    batch, pixels, _ = f1.shape
    size = batch * pixels * f2.shape[2]
    total = size + 2 * margin
    buffer = f1.new_empty(total) if workspace is None else workspace.take(total, f1)
    buffer[:margin] = 0
    buffer[size + margin :] = 0
    product_into(buffer[margin : size + margin].view(batch, pixels, -1), f1, f2)
    return buffer


class SharedGradient:
    """The volume's gradient from every lookup of one training pass, summed in one buffer.

    Left to autograd, each lookup's gradient would be its own zeroed tensor the size of the
    volume, and the iterations' gradients would then be added up: at batch 12, 320x448 crops and
    12 iterations that is 12 x 384 MB zeroed and summed per step, a quarter of a CPU training
    step. Here each lookup adds its cells' gradients in place (:class:`_TrainingLookup`), and
    :class:`_TrainingVolume` takes the sum once every lookup is done.
    """

    def __init__(self, workspace: VolumeWorkspace | None = None) -> None:
        self.workspace = workspace
        self.total: torch.Tensor | None = None
        self._cells = torch.empty(0, dtype=torch.long)

    def add(self, size: torch.Size, run_starts: torch.Tensor, gradient: torch.Tensor) -> None:
        """Adds ``gradient`` (M, runs, cells per run) to the runs of a flat volume of ``size``
        that start at ``run_starts`` (M, runs)."""
        if self.total is None:
            numel = size.numel()
            self.total = gradient.new_zeros(numel) if self.workspace is None else self.workspace.take(numel, gradient).zero_()
        if self._cells.shape != gradient.shape:  # one index buffer for every lookup of the pass
            self._cells = torch.empty(gradient.shape, dtype=torch.long, device=gradient.device)
        steps = torch.arange(gradient.shape[-1], device=gradient.device)
        cells = torch.add(run_starts.unsqueeze(-1), steps, out=self._cells)
        self.total.index_add_(0, cells.view(-1), gradient.reshape(-1))

    def take(self) -> torch.Tensor | None:
        """The sum so far, leaving the buffer empty (a second backward pass starts afresh)."""
        total, self.total = self.total, None
        return total


class _TrainingVolume(torch.autograd.Function):
    """:func:`padded_product` with a gradient, taken from :class:`SharedGradient`'s sum: autograd
    runs this backward only after every lookup that read the volume has run its own. Building
    the padded buffer here also spares training a padded copy of the volume and its gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, f1: torch.Tensor, f2: torch.Tensor, margin: int, shared: SharedGradient, workspace: VolumeWorkspace | None
    ) -> torch.Tensor:
        ctx.save_for_backward(f1, f2)
        ctx.margin, ctx.shared = margin, shared
        ctx.set_materialize_grads(False)
        return padded_product(f1, f2, margin, workspace)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        f1, f2 = ctx.saved_tensors
        total = ctx.shared.take()
        if gradient is not None:  # the volume was also read another way (a trace, say)
            total = gradient if total is None else total.add_(gradient)
        if total is None:
            return None, None, None, None, None
        batch, pixels, _ = f1.shape
        volume = total[ctx.margin : ctx.margin + batch * pixels * f2.shape[2]].view(batch, pixels, -1)
        grad_f1 = torch.bmm(volume, f2.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_f2 = torch.bmm(f1.transpose(1, 2), volume) if ctx.needs_input_grad[1] else None
        return grad_f1, grad_f2, None, None, None


class _TrainingLookup(torch.autograd.Function):
    """:class:`CorrelationPyramid`'s lookup with a gradient. The backward blends the samples'
    gradient back onto the 2r+2 x 2r+2 cells of each window (the transposed bilinear blend, in
    two passes, with no volume-sized or per-sample temporaries) and adds it to the pass's
    :class:`SharedGradient`; the volume itself gets none here (see there). No gradient flows to
    the coordinates: RAFT detaches them at every iteration."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, buffer: torch.Tensor, pyramid: CorrelationPyramid, run_starts: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, y_major: bool
    ) -> torch.Tensor:
        ctx.save_for_backward(run_starts, fx, fy)
        ctx.shared, ctx.size, ctx.y_major = pyramid._gradient, buffer.shape, y_major
        values = pyramid._runs.index_select(0, run_starts.view(-1)).view(*run_starts.shape, -1)
        return pyramid._blend(values, fx, fy, y_major)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> tuple[None, ...]:  # type: ignore[override]
        run_starts, fx, fy = ctx.saved_tensors
        side = run_starts.shape[1] - 1
        samples = gradient.permute(0, 2, 3, 1).reshape(-1, side, side)  # (M, window order)
        if not ctx.y_major:
            samples = samples.transpose(1, 2)  # (M, y, x)
        fx, fy = fx.view(-1, 1, 1), fy.view(-1, 1, 1)
        along_x = samples.new_empty(samples.shape[0], side + 1, side)  # gradient of the rows blended along x
        torch.mul(samples, 1 - fy, out=along_x[:, :side])
        along_x[:, side].zero_()
        along_x[:, 1:].addcmul_(samples, fy)
        cells = samples.new_empty(samples.shape[0], side + 1, side + 1)
        torch.mul(along_x, 1 - fx, out=cells[..., :side])
        cells[..., side].zero_()
        cells[..., 1:].addcmul_(along_x, fx)
        ctx.shared.add(ctx.size, run_starts, cells)
        return None, None, None, None, None, None


def _int8_volume(f1: torch.Tensor, f2: torch.Tensor, workspace: VolumeWorkspace | None) -> torch.Tensor:
    """The volume ``f1 @ f2`` from int8 dot products, stored in bf16, flat, with a row of zeros
    before and after (the lookup's runs may reach past either end).

    ``f1`` is (B, P, C) frame-1 features, quantized with one scale for the whole tensor (uint8
    with a zero point: they are signed), ``f2`` (B, C, cells) frame-2 cells, int8 with one
    scale per cell. oneDNN takes these dot products about three times faster than an fp32
    matrix product on a CPU with VNNI, and bf16 storage halves what is written and then read.
    """
    batch, _, cells = f2.shape
    products = []
    for item in range(batch):
        frame1 = F.pad(f1[item], (0, 0, int(item == 0), int(item == batch - 1))).contiguous()  # zero rows: zero products
        low, high = min(float(frame1.min()), 0.0), max(float(frame1.max()), 0.0)
        scale = max(high - low, 1e-12) / 255.0
        zero_point = round(-low / scale)
        x = to_uint8(frame1, scale, zero_point, saturate=True)
        cells_int8, cell_scales = int8_weights(f2[item].t().contiguous())  # oneDNN reads both operands row-major
        weights = torch.ops.onednn.qlinear_prepack(cells_int8, list(x.shape))
        zero_points = torch.zeros(cells, dtype=torch.int64)
        products.append(
            functools.partial(
                torch.ops.onednn.qlinear_pointwise,
                x, scale, zero_point, weights, cell_scales, zero_points, None, 1.0, 0, torch.bfloat16, "none", [], "",
            )  # fmt: skip
        )
    if batch == 1 and workspace is not None:
        return workspace.renew(products[0]).view(-1)
    return torch.cat([product() for product in products]).view(-1)


class OnDemandCorrelation(_WindowLookup):
    """Correlation computed at lookup time from pooled frame-2 features, never stored.

    Each lookup gathers the (2r+2)^2 frame-2 feature vectors around every correspondence on every
    level and takes their dot products with the frame-1 vector, a chunk of pixels at a time small
    enough to stay in cache, so memory stays O(H*W*C) at any frame size. Same values as
    :class:`CorrelationPyramid` up to rounding.
    """

    def __init__(
        self,
        fmap1: torch.Tensor,
        fmap2: torch.Tensor,
        num_levels: int = 4,
        radius: int = 4,
        gather_bytes: int = GATHER_BYTES,
    ) -> None:
        with torch.autocast(fmap1.device.type, enabled=False):
            levels2 = pooled_features(fmap2.float(), num_levels)
            tables = padded_levels(levels2, radius)
            super().__init__(fmap1, tables, radius, per_pixel_tables=False)
            channels = fmap1.shape[1]
            self._fmap2_levels = levels2
            self.fmap1 = (fmap1.float() / channels**0.5).permute(0, 2, 3, 1).reshape(-1, channels, 1)  # (B*H*W, C, 1)
            cells = torch.cat([level.flatten(2) for level in tables], dim=2).transpose(1, 2).reshape(-1)
            margin = cells.new_zeros(self.margin * channels)
            table = torch.cat([margin, cells, margin])  # (B*cells + margins) x C, flat
        side = run_length(radius)
        self._runs = table.unfold(0, side * channels, channels)  # every run of 2r+2 cells' features
        self._channels = channels
        window_bytes = side * side * channels * table.element_size()
        self.chunk = max(1, gather_bytes // (window_bytes * self.num_levels))  # pixels per gather

    def __call__(self, coords: torch.Tensor, y_major: bool = False) -> torch.Tensor:
        run_starts, fx, fy = self._windows(coords)
        side = run_starts.shape[1]
        per_pixel = self.num_levels * side * side
        starts = run_starts.view(-1, self.num_levels * side)  # one row of run starts per pixel
        pixels = starts.shape[0]
        with torch.autocast(coords.device.type, enabled=False):
            if self.fmap1.requires_grad or self._runs.requires_grad:  # training: out= has no autograd
                parts = [slice(first, first + self.chunk) for first in range(0, pixels, self.chunk)]
                products = torch.cat([self._correlate(starts, part, per_pixel) for part in parts])
            else:
                # One buffer for every chunk's gather and one for all products: a fresh few-MB
                # gather per chunk, freed among the small products kept, fragmented glibc's heap
                # until a 2560x1440 lookup held 4-22 GB (RAFT-large, measured).
                products = self.fmap1.new_empty(pixels, per_pixel, 1)
                gathered = self._runs.new_empty(min(self.chunk, pixels) * starts.shape[1], self._runs.shape[1])
                for first in range(0, pixels, self.chunk):
                    part = slice(first, first + self.chunk)
                    self._correlate(starts, part, per_pixel, gathered, products[part])
        return self._blend(products.view(-1, side, side), fx, fy, y_major)

    def _correlate(
        self, starts: torch.Tensor, part: slice, per_pixel: int, gathered: torch.Tensor | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Correlations of the pixels in ``part`` with their windows' cells, (pixels, per_pixel,
        1); into ``out``, through the ``gathered`` buffer, when given."""
        indices = starts[part].reshape(-1)
        if gathered is None:
            features = self._runs.index_select(0, indices)
        else:
            features = torch.index_select(self._runs, 0, indices, out=gathered[: len(indices)])
        features = features.view(-1, per_pixel, self._channels)
        if out is None:
            return torch.bmm(features, self.fmap1[part])
        return torch.bmm(features, self.fmap1[part], out=out)

    @property
    def levels(self) -> list[torch.Tensor]:
        """The full volume's levels, as :class:`CorrelationPyramid` has them: built on request
        (for inspection), at the full volume's memory cost."""
        f1 = self.fmap1.view(self.batch, -1, self._channels)
        return [torch.bmm(f1, level.flatten(2)).view(-1, 1, *level.shape[-2:]) for level in self._fmap2_levels]


def full_volume_bytes(batch: int, height: int, width: int, num_levels: int = 4) -> int:
    """Bytes of :class:`CorrelationPyramid`'s volume for (H, W) = the 1/8-resolution grid."""
    cells, h, w = 0, height, width
    for _ in range(num_levels):
        cells += h * w
        h, w = h // 2, w // 2
    return batch * height * width * cells * 4


def available_memory(device: torch.device) -> int:
    """Bytes free for new tensors on ``device``: the OS's estimate of available RAM on a CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_corr_mode(mode: str) -> CorrMode:
    """``mode`` if it names a correlation mode, else a ValueError saying which ones exist."""
    if mode not in CORR_MODES:
        raise ValueError(f"unknown correlation mode {mode!r}: use one of {', '.join(CORR_MODES)}")
    return mode  # type: ignore[return-value]


def choose_corr_mode(mode: str, batch: int, height: int, width: int, num_levels: int, device: torch.device) -> str:
    """'full' or 'on_demand' for a pass; 'auto' stores the volume only where it fits the budget."""
    if check_corr_mode(mode) != "auto":
        return mode
    per_pair = full_volume_bytes(1, height, width, num_levels)
    if device.type == "cpu" and per_pair > CPU_FULL_VOLUME_BYTES:
        return "on_demand"
    return "full" if batch * per_pair <= MEMORY_FRACTION * available_memory(device) else "on_demand"


def build_correlation(
    fmap1: torch.Tensor,
    fmap2: torch.Tensor,
    num_levels: int,
    radius: int,
    mode: str = "auto",
    workspace: VolumeWorkspace | None = None,
    int8: bool = False,
) -> CorrelationPyramid | OnDemandCorrelation:
    """The correlation lookup for one pass, stored in full (in ``workspace`` if given; from int8
    dot products in bf16 with ``int8``) or computed on demand in fp32 (see ``mode``)."""
    batch, _, height, width = fmap1.shape
    if choose_corr_mode(mode, batch, height, width, num_levels, fmap1.device) == "full":
        return CorrelationPyramid(fmap1, fmap2, num_levels, radius, workspace, int8)
    return OnDemandCorrelation(fmap1, fmap2, num_levels, radius)
