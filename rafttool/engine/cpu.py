"""What this CPU computes fast, from the kernel's description of it (``/proc/cpuinfo``, Linux;
elsewhere nothing is assumed) and, where the flags do not settle it, from a timing. Precision
choices depend on it: a bf16 convolution runs 3x faster than fp32 on a CPU with AMX, 1.5-2x
slower on an Intel Xeon with AVX512-BF16 alone, and 2x faster on an AMD EPYC with the same flag."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import torch
from torch import nn


@functools.cache
def _description() -> dict[str, str]:
    """The first processor's ``key: value`` lines (every core reports the same)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str | None:
    """The CPU's marketing name, where the system reports it."""
    return _description().get("model name")


def cpu_flags() -> frozenset[str]:
    """The instruction-set extensions the CPU reports."""
    return frozenset(_description().get("flags", "").split())


def has_vnni() -> bool:
    """int8 dot products in one instruction (AVX512-VNNI, AVX-VNNI or AMX-INT8), which oneDNN's
    int8 convolutions need to beat fp32."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"}) and torch.backends.mkldnn.is_available()


BF16_REQUIRED_SPEEDUP = 1.3
"""How much faster than fp32 a bf16 convolution must run for bf16 to count as fast here."""


def best_time(repeats: int, function: Callable[[], object]) -> float:
    """Seconds of the fastest of ``repeats`` calls, after one untimed call (allocations,
    oneDNN primitive creation)."""
    function()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def _bf16_speedup(threads: int) -> float:
    """fp32 time over bf16 autocast's (as the engine runs it) for a 96-channel 3x3 convolution
    at 128x64, with ``threads``: 2.0 on a 2-core AMD EPYC (AVX512-BF16, no AMX), about 3 with AMX,
    0.5-0.7 on an Intel Xeon with AVX512-BF16 alone."""
    generator = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(96, 96, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(1, 96, 64, 128, generator=generator).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fp32 = best_time(3, lambda: conv(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = best_time(3, lambda: conv(x))
    return fp32 / bf16


def fast_bf16() -> bool:
    """Whether oneDNN's bf16 convolutions outrun fp32 here: only CPUs with bf16 instructions
    (AVX512-BF16 or AMX) are timed, once per process and thread count (10-20 ms), since the
    flag alone does not tell (see the module's note)."""
    if not cpu_flags() & {"avx512_bf16", "amx_bf16"} or not torch.backends.mkldnn.is_available():
        return False
    return _bf16_speedup(torch.get_num_threads()) >= BF16_REQUIRED_SPEEDUP
