"""Convolutions by Winograd's minimal filtering (Toom-Cook), for inference on the CPU.

Along an axis where the kernel has 3 or 5 taps, 4 or 6 outputs need 12 or 30 multiplications
per input/output channel pair done directly; Winograd's algorithm gets them from 6 or 10, by
taking a tile of the input (the outputs plus the kernel's overhang) and the kernel into a domain
where the convolution is an elementwise product. A 3x3 kernel takes 36 products for a 4x4 block
instead of 144; RAFT-large's 1x5 and 5x1 GRU kernels take 10 for 6 outputs instead of 30. Over
many channels the elementwise products are independent matrix products (tiles x C_in) @ (C_in x
C_out), one per tile cell, which oneDNN runs near its peak as one grouped 1x1 convolution. Where
that beats the direct convolution depends on the CPU and the layer, so each layer shape is timed
both ways on its first calls and then takes the faster route (:func:`_faster_route`). The result
is the same sum (exact in exact arithmetic); in fp32 it differs from the direct convolution by
1e-5 to 1e-4 of the output's range, which the exact path's tolerance (1e-3 px mean) covers many
times over.

Tensors live in the transformed domain as ``(tiles, tile cells, channels)``, the layout of a
channels-last input to that grouped convolution; a convolution over a concatenation is the sum
of the convolutions over its parts, so callers can multiply parts by their own weights and add
them there, before one output transform.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rafttool.engine import timing_cache
from rafttool.engine.derived import derived
from rafttool.engine.matmul_convs import run_direct
from rafttool.engine.onednn import available as onednn_available, grouped_pointwise
from rafttool.engine.update import ConvGRUCell, UpdateBlock

OUTPUTS = {1: 1, 3: 4, 5: 6}
"""Outputs per tile along an axis, by the kernel's taps along it (1 tap: no transform)."""
POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0)
"""Interpolation points, besides infinity, in the order they are taken: the smallest first, as
the transforms' rounding error grows with them. F(4, 3) uses the first 5 (rounding about 1e-5
of the output's range); F(6, 5) all 9 (4e-5 to 1e-4, against 3e-6 for F(4, 5) with the first 7,
which was 15% slower: 16.2 against 13.7-15.3 ms for RAFT-large's 256 -> 256 gates at 128x55;
the flow moved no more either way: RAFT-large, random weights, 1.9e-4 px max, 2.2e-5 mean)."""


def _product(roots: Sequence[float]) -> list[float]:
    """Coefficients, constant first, of the monic polynomial with these roots."""
    coefficients = [1.0]
    for root in roots:
        shifted = [0.0, *coefficients]
        coefficients = [high - root * low for high, low in zip(shifted, [*coefficients, 0.0])]
    return coefficients


@functools.cache
def _axis_transforms(taps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input transform B^T, kernel transform G, output transform A^T) of F(outputs, taps)
    along one axis, float64 (for 1 tap, the 1x1 identity). Row j of B^T is the polynomial
    vanishing at every point but the j-th (the last row: at all of them); G evaluates the kernel
    at the points and divides by that polynomial's value there; A^T evaluates the output's powers."""
    outputs = OUTPUTS[taps]
    tile = outputs + taps - 1
    points = POINTS[: tile - 1]
    input_t = torch.zeros(tile, tile, dtype=torch.float64)
    kernel = torch.zeros(tile, taps, dtype=torch.float64)
    output_t = torch.zeros(outputs, tile, dtype=torch.float64)
    for j, point in enumerate(points):
        others = [p for p in points if p != point]
        input_t[j] = torch.tensor(_product(others) + [0.0])
        kernel[j] = torch.tensor([point**k for k in range(taps)]) / math.prod(point - p for p in others)
        output_t[:, j] = torch.tensor([point**i for i in range(outputs)])
    input_t[-1] = torch.tensor(_product(points))
    kernel[-1, -1] = output_t[-1, -1] = 1.0
    return input_t, kernel, output_t


def _tile_shape(taps: int) -> tuple[int, int]:
    """(input tile, outputs per tile) along an axis."""
    return OUTPUTS[taps] + taps - 1, OUTPUTS[taps]


def _grid(kernel_size: tuple[int, int], height: int, width: int) -> tuple[int, int]:
    """Tiles down and across an input of ``height`` x ``width`` (the last ones may overhang)."""
    (_, out_h), (_, out_w) = _tile_shape(kernel_size[0]), _tile_shape(kernel_size[1])
    return -(-height // out_h), -(-width // out_w)


@functools.cache
def _axis_matrices(kernel_size: tuple[int, int], device: torch.device) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((input, output) transform down, (input, output) transform across) of the tiles, fp32."""
    return tuple(  # type: ignore[return-value]
        (input_t.float().to(device), output_t.float().to(device))
        for input_t, _, output_t in (_axis_transforms(taps) for taps in kernel_size)
    )


@functools.cache
def _output_transform(kernel_size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """The 2-D output transform as one (outputs x cells) matrix, the Kronecker product of the
    axes': one product writes the outputs, where two would write the half-transformed tiles
    too (a 3x3 kernel's at 55x128: 117 -> 147 ms over a RAFT-large pass, 2 threads)."""
    (_, down), (_, across) = _axis_matrices(kernel_size, device)
    return torch.kron(down, across)


def _transform_tiles(windows: torch.Tensor, down: torch.Tensor, across: torch.Tensor) -> torch.Tensor:
    """``down`` and ``across`` applied along the tile axes of ``windows`` (tiles, tile_h,
    tile_w, C); (tiles, new cells, C), a tile's cells running across fastest. One axis after the
    other: 6 + 6 multiply-adds per value of a 6x6 tile instead of the 36 of their Kronecker
    product (a 3x3 kernel's input transform at 55x128, 256 channels: 2.05 against 2.59 ms with
    2 threads, measured on the Xeon in the earlier cells-major layout)."""
    tiles, rows, cols, channels = windows.shape
    if cols > 1:
        windows = torch.matmul(across, windows.reshape(tiles * rows, cols, channels))  # (tiles*rows, new cols, C)
    windows = windows.reshape(tiles, rows, -1)
    if rows > 1:
        windows = torch.matmul(down, windows)  # (tiles, new rows, new cols * C)
    return windows.reshape(tiles, down.shape[0] * across.shape[0], channels)


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """A (C_out, C_in, kh, kw) kernel in the transformed domain, fp32, as the weight of a 1x1
    convolution with one group per tile cell: (cells * C_out, C_in, 1, 1)."""
    _, kernel_h, _ = _axis_transforms(weight.shape[2])
    _, kernel_w, _ = _axis_transforms(weight.shape[3])
    transformed = torch.einsum("ai,ocij,bj->aboc", kernel_h.to(weight.device), weight.detach().double(), kernel_w.to(weight.device))
    return transformed.reshape(-1, weight.shape[1], 1, 1).float().contiguous()


def _grouped_product(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(tiles, cells, C_in) times a :func:`transform_weight` kernel, cell by cell: (tiles,
    cells, C_out), as one grouped 1x1 convolution by oneDNN (36 products of 448 x 256 @ 256 x
    256, 2 threads on an AMD EPYC: 13.0 ms by ``torch.bmm``, whose MKL code runs AVX2 there,
    6.2 ms this way)."""
    tiles, cells, channels = values.shape
    grouped = values.contiguous().view(1, tiles, 1, cells * channels).permute(0, 3, 1, 2)  # channels-last
    return grouped_pointwise(grouped, weight, cells).permute(0, 2, 3, 1).view(tiles, cells, -1)


@dataclass
class Tiles:
    """An input in the transformed domain: ``values`` is (batch * tiles, cells, channels), for
    a convolution with ``kernel_size`` of a (batch, C, height, width) input."""

    values: torch.Tensor
    kernel_size: tuple[int, int]
    batch: int
    height: int
    width: int

    def multiply(self, weight: torch.Tensor, channels: slice = slice(None), accumulate: torch.Tensor | None = None) -> torch.Tensor:
        """The product with a :func:`transform_weight` over ``channels`` of the input, added to
        ``accumulate`` (a product over other channels) when given."""
        products = _grouped_product(self.values[:, :, channels], weight)
        return products if accumulate is None else products.add_(accumulate)


class TileBuffer:
    """A zero-bordered, channels-last input buffer for one convolution, kept for a pass: each
    iteration rewrites only the interior (no concatenation, no padding, no zero fill)."""

    def __init__(self, kernel_size: tuple[int, int]) -> None:
        self.kernel_size = kernel_size
        self.padded = torch.empty(0)
        self.shape = (0, 0, 0, 0)

    def interior(self, like: torch.Tensor, channels: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """A (B, C, H, W) view of the buffer's interior for inputs shaped like ``like`` with
        ``channels`` channels in all, channels ``start:stop`` of them; (re)allocated, zeroed, on
        a new shape."""
        batch, _, height, width = like.shape
        if self.shape != (batch, channels, height, width):
            (tile_h, out_h), (tile_w, out_w) = (_tile_shape(taps) for taps in self.kernel_size)
            rows, cols = _grid(self.kernel_size, height, width)
            padded_h, padded_w = rows * out_h + tile_h - out_h, cols * out_w + tile_w - out_w
            self.padded = like.new_zeros(batch, padded_h, padded_w, channels)
            self.shape = (batch, channels, height, width)
        top, left = self.kernel_size[0] // 2, self.kernel_size[1] // 2
        return self.padded[:, top : top + height, left : left + width, start:stop].permute(0, 3, 1, 2)

    def fill(self, parts: Sequence[torch.Tensor]) -> Tiles:
        """Writes the channel-wise concatenation of ``parts`` (each (B, C_i, H, W)) into the
        interior, then :meth:`transform`."""
        channels = sum(part.shape[1] for part in parts)
        start = 0
        for part in parts:
            self.interior(part, channels, start, start + part.shape[1]).copy_(part)
            start += part.shape[1]
        return self.transform()

    def transform(self) -> Tiles:
        """The buffer cut into overlapping tiles (input side: a tile's outputs plus the kernel's
        overhang) and taken to the transformed domain."""
        batch, channels, height, width = self.shape
        (tile_h, out_h), (tile_w, out_w) = (_tile_shape(taps) for taps in self.kernel_size)
        windows = self.padded.unfold(1, tile_h, out_h).unfold(2, tile_w, out_w)  # (B, rows, cols, C, tile_h, tile_w)
        windows = windows.permute(0, 1, 2, 4, 5, 3).flatten(0, 2)  # (tiles, tile_h, tile_w, C), a view
        (down, _), (across, _) = _axis_matrices(self.kernel_size, self.padded.device)
        return Tiles(_transform_tiles(windows, down, across), self.kernel_size, batch, height, width)


def untile(products: torch.Tensor, like: Tiles) -> torch.Tensor:
    """Transformed-domain ``products`` (tiles, cells, C_out) back to a (B, C_out, H, W) output,
    channels-last, for the geometry of ``like``."""
    (_, out_h), (_, out_w) = _tile_shape(like.kernel_size[0]), _tile_shape(like.kernel_size[1])
    rows, cols = _grid(like.kernel_size, like.height, like.width)
    out_channels = products.shape[2]
    blocks = torch.matmul(_output_transform(like.kernel_size, products.device), products)  # (tiles, outputs, C_out)
    blocks = blocks.view(like.batch, rows, cols, out_h, out_w, out_channels).permute(0, 1, 3, 2, 4, 5)
    out = blocks.reshape(like.batch, rows * out_h, cols * out_w, out_channels)
    return out[:, : like.height, : like.width].permute(0, 3, 1, 2)


def convolve(
    parts: Sequence[torch.Tensor], weight: torch.Tensor, kernel_size: tuple[int, int],
    bias: torch.Tensor | None = None, buffer: TileBuffer | None = None,
) -> torch.Tensor:  # fmt: skip
    """A stride-1, 'same' convolution of the concatenation of ``parts`` with a
    :func:`transform_weight` kernel; channels-last output. A ``buffer`` kept from an earlier
    call with the same shapes saves the zero fill."""
    inputs = (buffer or TileBuffer(kernel_size)).fill(parts)
    out = untile(inputs.multiply(weight), inputs)
    return out if bias is None else out.add_(bias.view(1, -1, 1, 1))  # out is a fresh tensor


MIN_CHANNELS = 64
"""Below this many input or output channels the transforms cost more than the products save
(`benchmarks/winograd_convs.py`, 1 thread: 3x3, 64 -> 32 channels at 55x128 1.9 ms against 1.6
direct; 96 -> 128 5.3 against 9.4)."""


def computes(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is one this module computes: 'same'-padded, stride 1, no dilation or
    groups, 1, 3 or 5 taps along each axis and more than 1 along one."""
    kernel = conv.kernel_size
    return (
        all(taps in OUTPUTS for taps in kernel) and kernel != (1, 1)
        and conv.padding == (kernel[0] // 2, kernel[1] // 2)
        and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
    )  # fmt: skip


CACHE_BYTES = 24 * 2**20
"""The most transformed input worth it: beyond about this, the transforms' traffic leaves the
caches and the direct convolution wins (1 thread, transformed input -> Winograd vs direct;
`benchmarks/winograd_convs.py`: 178 -> 192 channels 3x3 at 90x160, 22.5 MB, 32.0 vs 52.2 ms; at
135x240, 52 MB, 130.4 vs 117.9 ms; scratch runs of the same timing: 96 -> 128 at 135x240, 26.9
MB, 56.8 vs 42.0 ms; 178 -> 192 at 270x480 (4K) 666 vs 523 ms; RAFT-large's 256 -> 256 5x1 gates
at 135x240, 54 MB, 163 vs 129 ms)."""


def fits(shape: torch.Size | tuple[int, ...], channels: int, kernel_size: tuple[int, int]) -> bool:
    """Whether a ``channels``-wide input of a (B, C, H, W) ``shape`` stays within
    :data:`CACHE_BYTES` once transformed for ``kernel_size``."""
    batch, _, height, width = shape
    (tile_h, _), (tile_w, _) = _tile_shape(kernel_size[0]), _tile_shape(kernel_size[1])
    rows, cols = _grid(kernel_size, height, width)
    return batch * rows * cols * tile_h * tile_w * channels * 4 <= CACHE_BYTES


def worthwhile(conv: nn.Conv2d) -> bool:
    """Whether this module computes ``conv`` and it is wide enough to gain from it (whether its
    input :func:`fits` the caches depends on the frame size)."""
    return computes(conv) and min(conv.in_channels, conv.out_channels) >= MIN_CHANNELS


SWITCH_VARIABLE = "RAFTTOOL_WINOGRAD"
"""Environment variable that settles the route without timing: ``on`` (Winograd wherever this
module computes a layer) or ``off`` (never); anything else, or unset: timed per layer."""
REQUIRED_GAIN = 0.9
"""Winograd must take at most this share of the direct route's time to be used: where the two
are close, the direct one's rounding (the original's) is worth more than a few percent."""

_route_choices: dict[tuple[object, ...], bool] = {}
"""Whether Winograd won, by layer shape and thread count, for the rest of the process (timed
here or read from :mod:`~rafttool.engine.timing_cache`)."""


def _switch() -> str:
    return os.environ.get(SWITCH_VARIABLE, "").strip().lower()


def route_policy() -> str:
    """How this process picks between the routes, in words (for benchmark tables)."""
    if not onednn_available() or _switch() == "off":
        return "direct convolutions"
    return "Winograd convolutions" if _switch() == "on" else "Winograd convolutions where timed faster"


def _faster_route(key: tuple[object, ...], winograd: Callable[[], torch.Tensor], direct: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``winograd()`` or ``direct()``, which compute the same thing up to rounding: the one that
    runs faster for this ``key`` (a layer's shapes) with this many threads. The first call of a
    key runs each route once untimed (kernel transforms, buffers, oneDNN primitives) and once
    timed, on the real input, and returns the winner's result, so that a pass computes the
    same numbers whether or not it was the first: three extra convolutions per layer shape,
    once per machine (the choice is kept on disk, :mod:`~rafttool.engine.timing_cache`). Which
    route wins differs by CPU and by layer: on the 2-core AMD EPYC, RAFT-large's 256-channel
    1x5 gates take 0.68 of the direct time, RAFT-small's 178 -> 192 3x3 gates 0.92,
    its 96 -> 128 flow head 1.25 (`benchmarks/winograd_convs.py --threads 2`); on the Intel Xeon
    the route was first tuned on, 128-channel 3x3 layers took 0.55-0.6."""
    choice = _known_route(key)
    if choice is not None:
        return winograd() if choice else direct()
    winograd(), direct()
    start = time.perf_counter()
    by_winograd = winograd()
    middle = time.perf_counter()
    by_direct = direct()
    choice = middle - start <= REQUIRED_GAIN * (time.perf_counter() - middle)
    timed = (*key, torch.get_num_threads())
    _route_choices[timed] = choice
    timing_cache.remember(_stored_name(timed), choice)
    return by_winograd if choice else by_direct


def _stored_name(timed: tuple[object, ...]) -> str:
    return "winograd " + repr(timed)


def _known_route(key: tuple[object, ...]) -> bool | None:
    """Whether :func:`_faster_route` takes Winograd for ``key``, or None while untimed here and
    in earlier processes on this machine (:mod:`~rafttool.engine.timing_cache`)."""
    switch = _switch()
    if switch in ("on", "off"):
        return switch == "on"
    timed = (*key, torch.get_num_threads())
    if timed not in _route_choices:
        stored = timing_cache.recall(_stored_name(timed))
        if stored is None:
            return None
        _route_choices[timed] = bool(stored)
    return _route_choices[timed]


def applies(x: torch.Tensor) -> bool:
    """Whether a convolution of ``x`` may take the Winograd route: CPU inference, no autograd,
    no autocast (the transforms would amplify bf16 rounding), not while ``torch.compile``
    traces it (the compiler fuses the plain layers its own way), and oneDNN at hand for the
    products (each layer then goes the way it is timed faster, :func:`_faster_route`)."""
    return (
        x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling() and onednn_available() and _switch() != "off"
    )  # fmt: skip


class WinogradConvs:
    """A :data:`~rafttool.engine.matmul_convs.ConvRunner` that computes every convolution it is
    handed by :func:`convolve` where :func:`worthwhile` and its transformed input :func:`fits`,
    and directly otherwise. Transformed kernels are kept with the convolutions
    (:func:`~rafttool.engine.derived.derived`, looked up once per runner), input buffers for the
    runner's life: build one per pass (or per frame)."""

    def __init__(self) -> None:
        self.kernels: dict[nn.Conv2d, tuple[torch.Tensor, TileBuffer]] = {}

    def __call__(self, conv: nn.Conv2d, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        shape = (parts[0].shape[0], 0, *parts[0].shape[2:])
        if not worthwhile(conv) or not fits(shape, sum(part.shape[1] for part in parts), conv.kernel_size):  # type: ignore[arg-type]
            return run_direct(conv, parts)
        if conv not in self.kernels:
            weight = derived(conv, "winograd", [conv.weight], lambda: transform_weight(conv.weight))
            self.kernels[conv] = (weight, TileBuffer(conv.kernel_size))  # type: ignore[arg-type]
        weight, buffer = self.kernels[conv]
        key = ("conv", conv.kernel_size, conv.out_channels, tuple(part.shape for part in parts))
        return _faster_route(key, lambda: convolve(parts, weight, buffer.kernel_size, conv.bias, buffer), lambda: run_direct(conv, parts))


class _WinogradCell:
    """:meth:`ConvGRUCell.step` for ``context``. [h, motion] is transformed once for the z and r
    gates and the candidate's share over the motion features; only r * h is transformed again,
    and the candidate's two shares are added before one output transform. The context's share
    of the gates is computed once, by Winograd's algorithm too."""

    def __init__(self, cell: ConvGRUCell, context: torch.Tensor) -> None:
        self.hidden = hidden = cell.convz.out_channels
        kernel_size: tuple[int, int] = cell.convz.kernel_size  # type: ignore[assignment]
        self.inputs, self.reset_hidden = TileBuffer(kernel_size), TileBuffer(kernel_size)
        sources = [tensor for conv in (cell.convz, cell.convr, cell.convq) for tensor in (conv.weight, conv.bias)]
        self.zr, self.q_over_hidden, self.q_over_motion, over_context, bias = derived(
            cell, f"winograd-{context.shape[1]}", sources, functools.partial(_transformed_gates, cell, context.shape[1])
        )
        shares = convolve([context], over_context, kernel_size, bias)
        self.context_zr, self.context_q = shares[:, : 2 * hidden], shares[:, 2 * hidden :]

    def __call__(self, h: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        inputs = self.inputs.fill([h, motion])
        z, r = untile(inputs.multiply(self.zr), inputs).add_(self.context_zr).sigmoid_().chunk(2, dim=1)
        q_over_motion = inputs.multiply(self.q_over_motion, channels=slice(self.hidden, None))
        torch.mul(r, h, out=self.reset_hidden.interior(h, self.hidden))
        q = untile(self.reset_hidden.transform().multiply(self.q_over_hidden, accumulate=q_over_motion), inputs)
        q = q.add_(self.context_q).tanh_()
        return torch.lerp(h, q, z, out=q)


class _FasterCell:
    """:meth:`ConvGRUCell.step` for ``context`` by :class:`_WinogradCell` or directly, whichever
    :func:`_faster_route` picks for the cell's shapes; direct alone where the transformed inputs
    would not fit the caches. Only the routes it may take are built."""

    def __init__(self, cell: ConvGRUCell, context: torch.Tensor) -> None:
        self.key = ("gru", cell.convz.kernel_size, cell.convz.in_channels, cell.convz.out_channels, tuple(context.shape))
        widest = max(cell.convz.in_channels - context.shape[1], context.shape[1])
        choice = _known_route(self.key) if fits(context.shape, widest, cell.convz.kernel_size) else False  # type: ignore[arg-type]
        self.winograd = None if choice is False else _WinogradCell(cell, context)
        self.direct = None if choice is True else functools.partial(ConvGRUCell.step, plan=cell.plan(context))

    def __call__(self, h: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        if self.winograd is None or self.direct is None:
            return (self.winograd or self.direct)(h, motion)  # type: ignore[misc]
        winograd, direct = self.winograd, self.direct
        return _faster_route(self.key, lambda: winograd(h, motion), lambda: direct(h, motion))


def _transformed_gates(cell: ConvGRUCell, context_channels: int) -> tuple[torch.Tensor, ...]:
    """A cell's :meth:`~ConvGRUCell.gate_weights`, transformed: (z and r gates, the candidate's
    share over h, its share over the motion features, all gates' over the context, biases)."""
    zr, q, over_context, bias = cell.gate_weights(context_channels)
    q = transform_weight(q)
    hidden = cell.convz.out_channels
    return transform_weight(zr), q[:, :hidden].contiguous(), q[:, hidden:].contiguous(), transform_weight(over_context), bias.detach()


class WinogradUpdateStep:
    """One inference iteration of ``block`` (:meth:`UpdateBlock.step`, the same numbers up to
    float rounding) with its wide convolutions by Winograd's algorithm where their transformed
    inputs fit the caches (at 1024x436 all of them; from about 1280x720 on, fewer); prepared
    once per pass, for the pass's context. ``corr_y_major``: the correlation features come in
    y-major window order (:meth:`~rafttool.engine.correlation.CorrelationPyramid.__call__`)."""

    def __init__(self, block: UpdateBlock, context: torch.Tensor, corr_y_major: bool = False) -> None:
        self.block = block
        self.corr_y_major = corr_y_major
        self.cells = [_FasterCell(cell, context) for cell in block.gru.cells]
        self.convs = WinogradConvs()

    def __call__(self, hidden: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        motion = self.block.motion_encoder(flow, corr, self.convs, self.corr_y_major)
        for cell in self.cells:
            hidden = cell(hidden, motion)
        return hidden, self.block.flow_head.step(hidden, self.convs), motion
