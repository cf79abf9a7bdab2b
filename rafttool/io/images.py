"""Image input/output normalised to one layout: uint8 (H, W, 3) RGB.

The model and the visualisations only ever see that layout, whatever bit depth, channel count or
pixel type the file had.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from rafttool.io.atomic import atomic_write
from rafttool.io.errors import FlowFormatError, open_input


def _to_uint8(pixels: np.ndarray, where: str) -> np.ndarray:
    """Map the pixel type onto 0..255: 16-bit scaled by 1/257 (so 65535 -> 255), floats clipped from [0, 1]."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    if np.issubdtype(pixels.dtype, np.floating):
        scaled = np.rint(np.clip(np.nan_to_num(pixels, nan=0.0), 0.0, 1.0) * 255.0)
        return scaled.astype(np.uint8)
    raise FlowFormatError(f"{where}: unsupported pixel type {pixels.dtype}; use 8- or 16-bit or float images")


def _normalise(pixels: np.ndarray, bgr: bool, where: str) -> np.ndarray:
    """Convert to contiguous uint8 RGB; ``bgr`` says the colour channels come in OpenCV order."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    elif pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise FlowFormatError(f"{where}: expected an (H, W) or (H, W, 1|3|4) image, got shape {pixels.shape}")
    color = pixels[..., 2::-1] if bgr else pixels[..., :3]  # drop alpha; it carries no motion cue
    if min(color.shape[:2]) == 0:
        raise FlowFormatError(f"{where}: image is empty ({color.shape[1]}x{color.shape[0]})")
    return np.ascontiguousarray(_to_uint8(color, where))


def decode_unchanged(data: bytes | np.ndarray, where: str, hint: str = "") -> np.ndarray:
    """Decode encoded image bytes as stored (bit depth, channels, BGR order), or raise with ``hint``."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise FlowFormatError(f"{where}: file is empty{hint}")
    try:
        decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        decoded = None
    if decoded is None:
        raise FlowFormatError(f"{where}: not an image OpenCV can decode{hint}")
    return decoded


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert an in-memory image to uint8 (H, W, 3).

    Arrays are taken as RGB(A), never BGR: only ``read_image`` knows the data came from OpenCV.
    Grayscale is replicated, alpha dropped, 16-bit scaled by 1/257, floats clipped from [0, 1].
    An array that already is contiguous uint8 RGB is returned as is, not copied.
    """
    return _normalise(np.asarray(array), bgr=False, where="image array")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read any image OpenCV decodes as uint8 (H, W, 3) RGB.

    Bytes are read by Python and decoded with ``cv2.imdecode`` because ``cv2.imread`` fails on
    non-ASCII paths on some platforms. IMREAD_UNCHANGED keeps 16-bit and float data intact
    for our own conversion; note that it also ignores EXIF orientation.
    """
    where = f"cannot read image '{os.fspath(path)}'"
    with open_input(path, "image") as f:
        data = np.fromfile(f, dtype=np.uint8)
    return _normalise(decode_unchanged(data, where), bgr=True, where=where)


def write_image(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write an RGB image atomically; the format follows the extension (.png, .jpg, ...)."""
    path = Path(path)
    bgr = to_rgb_uint8(rgb)[..., ::-1]
    try:
        ok, encoded = cv2.imencode(path.suffix, bgr)
    except cv2.error:
        ok = False
    if not ok:
        raise FlowFormatError(
            f"cannot write image '{path}': OpenCV has no encoder for '{path.suffix}'; use .png or .jpg"
        )
    with atomic_write(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
