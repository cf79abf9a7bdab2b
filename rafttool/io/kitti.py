"""KITTI 16-bit flow PNGs (Geiger et al., KITTI flow devkit).

On disk: R = u, G = v as ``value = flow * 64 + 2**15``, B = 1 where the flow is valid.
OpenCV hands PNG pixels over in BGR order, so in the cv2 array [..., 2] is u, [..., 1] is v
and [..., 0] is the valid flag.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from rafttool.io.atomic import atomic_write
from rafttool.io.errors import FlowFormatError, as_flow_array, open_input
from rafttool.io.images import decode_unchanged

SCALE = 64.0
OFFSET = 2**15
MAX_VALUE = (2**16 - 1 - OFFSET) / SCALE  # 511.984375, the largest representable component
MIN_VALUE = -OFFSET / SCALE  # -512.0


def decode_kitti_flow(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Decode KITTI PNG bytes into (flow float32 (H, W, 2), valid bool (H, W)).

    Invalid pixels keep whatever flow the file stores there (usually 0); mask with ``valid``.
    """
    image = decode_unchanged(data, name, hint="; expected a KITTI 16-bit flow PNG")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if image.dtype != np.uint16 or channels != 3:
        raise FlowFormatError(
            f"{name}: {channels}-channel {image.dtype} image is not a KITTI flow PNG "
            "(needs 3 channels of 16 bits: u, v, valid)"
        )
    flow = (image[..., [2, 1]].astype(np.float32) - OFFSET) / SCALE
    return flow, image[..., 0] > 0


def read_kitti_flow(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI flow PNG into (flow float32 (H, W, 2), valid bool (H, W))."""
    with open_input(path, "KITTI flow PNG") as f:
        data = f.read()
    return decode_kitti_flow(data, os.fspath(path))


def encode_kitti_flow(flow: np.ndarray, valid: np.ndarray | None = None) -> bytes:
    """Encode flow as KITTI PNG bytes.

    ``valid=None`` means valid where both components are finite; NaN pixels are always written
    invalid with zero flow. Components beyond [-512, 511.98] are clipped, not wrapped, so a large
    motion keeps its direction instead of flipping sign.
    """
    flow = as_flow_array(flow)
    finite = np.isfinite(flow).all(axis=2)
    if valid is None:
        valid = finite
    else:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != flow.shape[:2]:
            raise FlowFormatError(f"valid mask has shape {valid.shape}, flow is {flow.shape[:2]}; they must match")
        valid = valid & finite
    encoded = np.rint(np.clip(np.where(finite[..., None], flow, 0.0), MIN_VALUE, MAX_VALUE) * SCALE + OFFSET)
    bgr = np.stack([valid.astype(np.float32), encoded[..., 1], encoded[..., 0]], axis=2).astype(np.uint16)
    ok, png = cv2.imencode(".png", bgr)
    if not ok:
        raise FlowFormatError("OpenCV failed to encode the KITTI flow PNG")
    return png.tobytes()


def write_kitti_flow(path: str | os.PathLike[str], flow: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write a KITTI flow PNG atomically; see ``encode_kitti_flow`` for the encoding rules."""
    data = encode_kitti_flow(flow, valid)
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
