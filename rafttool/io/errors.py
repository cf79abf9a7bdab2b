"""The one error type for bad input, plus the checks shared by every reader and writer.

Every problem with a file or array the user handed us is a ``FlowFormatError`` (a ``ValueError``),
so the CLI can print it as one line instead of a traceback.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

# Larger than any real frame, small enough that a corrupt header cannot make us allocate gigabytes.
MAX_SIDE = 2**15


class FlowFormatError(ValueError):
    """Bad or corrupt input; the message says what is wrong and what to do about it."""


def open_input(path: str | os.PathLike[str], what: str) -> BinaryIO:
    """Open ``path`` for binary reading, turning OS errors into a one-line ``FlowFormatError``."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        reason = "file not found"
    except IsADirectoryError:
        reason = "it is a directory, not a file"
    except PermissionError:
        reason = "permission denied"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise FlowFormatError(f"cannot read {what} '{os.fspath(path)}': {reason}")


def check_size(height: int, width: int, where: str) -> None:
    """Reject sizes that are empty or too large to be a real frame (usually a corrupt header)."""
    if height <= 0 or width <= 0:
        raise FlowFormatError(f"{where}: size {width}x{height} is empty; the file is corrupt")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise FlowFormatError(
            f"{where}: size {width}x{height} exceeds {MAX_SIDE} pixels per side; the file is corrupt"
        )


def as_flow_array(flow: np.ndarray, where: str = "flow") -> np.ndarray:
    """Return ``flow`` as float32 (H, W, 2), or say why it is not a flow field."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        hint = " (channels first? transpose to (H, W, 2))" if flow.ndim == 3 and flow.shape[0] == 2 else ""
        raise FlowFormatError(f"{where}: expected an array of shape (H, W, 2), got {flow.shape}{hint}")
    if not (np.issubdtype(flow.dtype, np.floating) or np.issubdtype(flow.dtype, np.integer)):
        raise FlowFormatError(f"{where}: expected real numbers, got dtype {flow.dtype}")
    check_size(flow.shape[0], flow.shape[1], where)
    return flow.astype(np.float32, copy=False)

