"""What this CPU computes fast, from the kernel's description of it (``/proc/cpuinfo``, Linux;
elsewhere nothing is assumed). Precision choices depend on it: a bf16 convolution runs 3x
faster than fp32 on a CPU with AMX and 1.5-2x slower on one with AVX512-BF16 alone."""

from __future__ import annotations

import functools

import torch


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


def fast_bf16() -> bool:
    """Whether oneDNN's bf16 convolutions outrun fp32 here: on CPUs with AMX tiles (a 3x3
    64->64 convolution at 218x512, one thread: 23 ms bf16, 67 ms fp32)."""
    return "amx_bf16" in cpu_flags() and torch.backends.mkldnn.is_available()
