"""Middlebury ``.flo`` files (Baker et al. 2011).

Layout, little-endian: float32 tag 202021.25 (the bytes ``b"PIEH"``), int32 width, int32 height,
then float32 (u, v) pairs row by row. A component with magnitude above 1e9 marks the pixel unknown;
we expose unknown pixels as NaN in both components so downstream code can mask with ``np.isnan``,
and write NaN back as 1e10 so other tools (OpenCV, the Middlebury code) read it as unknown.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from rafttool.io.atomic import atomic_write
from rafttool.io.errors import FlowFormatError, as_flow_array, check_size, open_input

TAG = b"PIEH"  # float32 202021.25, little-endian
HEADER_SIZE = 12
UNKNOWN_THRESHOLD = 1e9
UNKNOWN_VALUE = 1e10


def _parse_header(header: bytes, total_size: int, name: str) -> tuple[int, int]:
    """Return (height, width) after checking the tag, the size and that the payload fits exactly."""
    if len(header) < HEADER_SIZE:
        raise FlowFormatError(f"{name}: truncated .flo file ({total_size} bytes, header needs {HEADER_SIZE})")
    if header[:4] != TAG:
        raise FlowFormatError(f"{name}: not a .flo file (tag {header[:4]!r}, expected {TAG!r})")
    width, height = struct.unpack("<ii", header[4:HEADER_SIZE])
    check_size(height, width, name)
    expected = HEADER_SIZE + 8 * width * height
    if total_size < expected:
        raise FlowFormatError(
            f"{name}: truncated .flo file ({total_size} bytes, {width}x{height} needs {expected}); re-export it"
        )
    if total_size > expected:
        raise FlowFormatError(
            f"{name}: {total_size - expected} unexpected bytes after the {width}x{height} flow; the file is corrupt"
        )
    return height, width


def _to_flow(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reshape the payload and turn the unknown-flow marker into NaN."""
    flow = values.reshape(height, width, 2).astype(np.float32)  # native byte order, writable copy
    flow[~(np.abs(flow) <= UNKNOWN_THRESHOLD).all(axis=2)] = np.nan
    return flow


def decode_flo(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode ``.flo`` bytes into float32 (H, W, 2); unknown pixels are NaN."""
    height, width = _parse_header(data[:HEADER_SIZE], len(data), name)
    return _to_flow(np.frombuffer(data, dtype="<f4", offset=HEADER_SIZE), height, width)


def read_flo(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a ``.flo`` file into float32 (H, W, 2); unknown pixels are NaN.

    The header is checked against the file size before the payload is read, so a corrupt
    header cannot trigger a huge allocation.
    """
    name = os.fspath(path)
    with open_input(path, ".flo file") as f:
        height, width = _parse_header(f.read(HEADER_SIZE), os.fstat(f.fileno()).st_size, name)
        return _to_flow(np.fromfile(f, dtype="<f4", count=2 * height * width), height, width)


def encode_flo(flow: np.ndarray) -> bytes:
    """Encode (H, W, 2) flow as ``.flo`` bytes; pixels with a non-finite component become unknown."""
    flow = as_flow_array(flow).astype("<f4")  # copy: we overwrite unknown pixels below
    flow[~np.isfinite(flow).all(axis=2)] = UNKNOWN_VALUE
    height, width = flow.shape[:2]
    return TAG + struct.pack("<ii", width, height) + flow.tobytes()


def write_flo(path: str | os.PathLike[str], flow: np.ndarray) -> None:
    """Write a ``.flo`` file atomically (see ``atomic_write``)."""
    data = encode_flo(flow)
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
