"""Freed memory kept in the process, so that inference does not pay page faults every iteration.

An inference pass allocates and frees tensors of a few MB dozens of times per iteration. By
default glibc serves blocks that large with fresh mappings from the OS and hands freed heap back
as soon as a little is free, and the OS maps fresh memory in page by page on first write: a
RAFT-small pass at 1024x436 took 67,000-73,000 page faults (two runs), about a tenth of its time.
:func:`keep_freed_memory` makes glibc keep such blocks for the next allocation (6,800-8,800).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536  # glibc's default: mappings allowed
_MMAP_THRESHOLD = 32 * 2**20  # the most glibc accepts on 64-bit systems
_TRIM_THRESHOLD = 2**30


@functools.cache
def keep_freed_memory() -> bool:
    """For the rest of the process, have glibc serve blocks up to 32 MiB from its heap and keep up
    to 1 GiB of freed heap instead of returning it to the OS. The peak RSS barely changes (what a
    pass frees, the next pass reuses). Returns whether it took effect: False off Linux/glibc."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


@contextlib.contextmanager
def heap_allocations() -> Iterator[None]:
    """Within the block, glibc serves even blocks over 32 MiB from its heap, so that one freed
    just before (a volume of the previous pass, the same size) is handed out again instead of
    fresh memory that the OS maps in page by page. Outside it, such blocks are mapped and
    unmapped as usual, which keeps large frames' peak memory down."""
    mallopt = _mallopt()
    if mallopt is None:
        yield
        return
    mallopt(_M_MMAP_MAX, 0)
    try:
        yield
    finally:
        mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)


@functools.cache
def _mallopt() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """glibc's ``mallopt``, or None off Linux/glibc (musl has none)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
