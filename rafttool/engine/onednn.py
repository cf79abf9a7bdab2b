"""fp32 matrix products by oneDNN, called directly, for inference on the CPU.

PyTorch sends fp32 matrix products (and 1x1 convolutions with one thread) to MKL's GEMM, which
on AMD CPUs runs its AVX2 code at about half the AVX-512 speed oneDNN's kernels reach there
(2-core AMD EPYC, 2 threads: 7040 x 256 @ 256 x 7040 in 196 ms against 133 ms; 448 x 256 @
256 x 256 0.32 against 0.17 ms). The operators used here are PyTorch's own oneDNN bindings
(``torch.ops.mkldnn``), the ones its compiler emits; this module is the one place that calls
them, and :func:`available` says whether this build has them.
"""

from __future__ import annotations

import functools

import torch

from rafttool.engine.cpu import best_time

ROW_CHUNK_BYTES = 16 * 2**20
"""Rows per product call in :func:`product_into`: each call's fresh output stays in the heap
glibc keeps (:func:`~rafttool.engine.memory.keep_freed_memory`, blocks up to 32 MiB) and in the
last-level cache for its copy (7040 x 256 @ 256 x 9387, 2 threads: 99 ms in 512-row chunks, 169
ms in 1024-row ones, 226 ms by MKL straight into the buffer)."""
REQUIRED_GAIN = 0.9
"""oneDNN must take at most this share of MKL's time for :func:`product_into` to use it."""


@functools.cache
def available() -> bool:
    """Whether this PyTorch build has the oneDNN operators used here."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def grouped_pointwise(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A 1x1 convolution of ``x`` (B, C, H, W) with ``groups`` groups by oneDNN, whatever the
    thread count (PyTorch's dispatch takes 1x1 convolutions to MKL with one thread)."""
    return torch.ops.mkldnn._convolution_pointwise(x, weight, None, [0, 0], [1, 1], [1, 1], groups, "none", [], "")


def _rows_into(out: torch.Tensor, left: torch.Tensor, right_t: torch.Tensor) -> torch.Tensor:
    """``out`` (M, N) = ``left`` (M, K) @ ``right_t``.T by oneDNN, in row chunks of about
    :data:`ROW_CHUNK_BYTES` of output (oneDNN cannot write into a given buffer)."""
    rows = max(1, ROW_CHUNK_BYTES // (4 * out.shape[1]))
    for start in range(0, left.shape[0], rows):
        chunk = left[start : start + rows].contiguous()
        out[start : start + rows].copy_(torch.ops.mkldnn._linear_pointwise(chunk, right_t, None, "none", [], ""))
    return out


@functools.cache
def _product_gain(threads: int) -> float:
    """oneDNN's time over MKL's for a 512 x 256 @ 256 x 4096 product written into a buffer,
    with ``threads`` (about 0.5 on a 2-core AMD EPYC)."""
    generator = torch.Generator().manual_seed(0)
    left, right = torch.randn(512, 256, generator=generator), torch.randn(256, 4096, generator=generator)
    right_t, out = right.t().contiguous(), torch.empty(512, 4096)
    with torch.inference_mode():
        by_mkl = best_time(3, lambda: torch.mm(left, right, out=out))
        by_onednn = best_time(3, lambda: _rows_into(out, left, right_t))
    return by_onednn / by_mkl


def products_pay() -> bool:
    """Whether :func:`product_into` runs oneDNN here: timed once per process and thread count
    (about 30 ms)."""
    return available() and _product_gain(torch.get_num_threads()) <= REQUIRED_GAIN


def _takes(first: torch.Tensor, *operands: torch.Tensor | None) -> bool:
    """Whether a product of ``first`` (and ``operands``) goes to oneDNN: fp32 on the CPU, no
    gradient wanted, ``torch.compile`` not tracing, and :func:`products_pay`."""
    wants_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (first, *operands))
    return (
        first.device.type == "cpu" and first.dtype == torch.float32 and not wants_grad
        and not torch.compiler.is_compiling() and products_pay()
    )  # fmt: skip


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a 2-D ``x``, by oneDNN where :func:`_takes` it (the 1x1
    convolutions of channels-last inference)."""
    if not _takes(x, weight, bias):
        return torch.nn.functional.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


def product_into(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``out`` (B, M, N) = ``left`` (B, M, K) @ ``right`` (B, K, N), by oneDNN where :func:`_takes`
    it, else ``torch.bmm``."""
    if not _takes(out, left, right):
        return torch.bmm(left, right, out=out)
    for batch in range(out.shape[0]):
        _rows_into(out[batch], left[batch], right[batch].t().contiguous())
    return out
