"""Operations on flow fields: backward warping, forward-backward consistency, summary statistics."""

from __future__ import annotations

import cv2
import numpy as np

from rafttool.io.errors import FlowFormatError, as_flow_array

_REMAP_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


def warp_backward(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``image`` (frame 2) at x + flow(x) to bring it onto frame 1: warped(x) = img2(x + flow(x)).

    Bilinear via ``cv2.remap``; samples outside the frame blend with zeros. Works for (H, W) and
    (H, W, C) arrays of uint8, uint16, int16, float32 or float64 and keeps the dtype. Also returns a
    bool mask of pixels whose sample point lies inside the frame (and whose flow is known).
    """
    image = np.asarray(image)
    flow = as_flow_array(flow)
    if image.dtype not in _REMAP_DTYPES:
        raise FlowFormatError(f"cannot warp an image of dtype {image.dtype}; convert it to uint8 or float32")
    if image.ndim not in (2, 3) or image.shape[:2] != flow.shape[:2]:
        raise FlowFormatError(
            f"image shape {image.shape} does not match flow {flow.shape[:2]}; use the flow computed for this image"
        )
    height, width = flow.shape[:2]
    xs = np.arange(width, dtype=np.float32)[None, :] + flow[..., 0]
    ys = np.arange(height, dtype=np.float32)[:, None] + flow[..., 1]
    known = np.isfinite(xs) & np.isfinite(ys)
    inside = known & (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
    # Unknown flow samples a point outside the frame (-> zeros); clipping keeps huge values out of
    # OpenCV's fixed-point range while leaving every outside point at least a pixel outside.
    map_x = np.clip(np.where(known, xs, -2.0), -2.0, width + 1.0).astype(np.float32)
    map_y = np.clip(np.where(known, ys, -2.0), -2.0, height + 1.0).astype(np.float32)
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped.reshape(image.shape), inside


def forward_backward_occlusion(
    flow_fw: np.ndarray, flow_bw: np.ndarray, alpha1: float = 0.01, alpha2: float = 0.5
) -> np.ndarray:
    """Bool mask, True where frame-1 pixels are occluded or their flow is inconsistent.

    A pixel passes when the backward flow at its target undoes its forward flow:
    |f + b'|^2 <= alpha1 (|f|^2 + |b'|^2) + alpha2 with b'(x) = b(x + f(x)) (Sundaram et al. 2010).
    Targets outside frame 2 and unknown flow count as occluded.
    """
    flow_fw = as_flow_array(flow_fw, "forward flow")
    flow_bw = as_flow_array(flow_bw, "backward flow")
    if flow_fw.shape != flow_bw.shape:
        raise FlowFormatError(
            f"forward flow {flow_fw.shape[:2]} and backward flow {flow_bw.shape[:2]} differ in size; "
            "compute both on the same frame pair"
        )
    bw_warped, inside = warp_backward(flow_bw, flow_fw)
    mismatch = np.sum((flow_fw + bw_warped) ** 2, axis=2)
    bound = alpha1 * (np.sum(flow_fw**2, axis=2) + np.sum(bw_warped**2, axis=2)) + alpha2
    return ~inside | ~np.isfinite(mismatch) | (mismatch > bound)


def flow_magnitude_stats(flow: np.ndarray) -> dict[str, float | int | None]:
    """JSON-ready summary for ``raft info``: speed over known pixels and how many are unknown.

    Mean and max are None when no pixel is known (JSON has no NaN).
    """
    flow = as_flow_array(flow)
    known = np.isfinite(flow).all(axis=2)
    speed = np.hypot(flow[known, 0].astype(np.float64), flow[known, 1].astype(np.float64))
    return {
        "height": int(flow.shape[0]),
        "width": int(flow.shape[1]),
        "mean_magnitude": float(speed.mean()) if speed.size else None,
        "max_magnitude": float(speed.max()) if speed.size else None,
        "unknown_pixels": int(flow.shape[0] * flow.shape[1] - speed.size),
    }
