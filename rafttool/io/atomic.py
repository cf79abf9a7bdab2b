"""Atomic file output: a reader never sees a half-written file, and a failed write leaves nothing."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike[str], keep_extension: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    ``keep_extension`` ends the temp name with the target's extension, for writers that pick the
    container from it (OpenCV's VideoWriter).

    The temp file lives in the same directory so ``os.replace`` is a same-filesystem rename.
    On any exception, KeyboardInterrupt included, the temp file is removed and ``path`` is untouched.
    It is created with mode 0o666 so the umask, not a private temp mode, decides the final permissions.
    """
    target = Path(path)
    suffix = f".tmp{target.suffix}" if keep_extension else ".tmp"
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}{suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
