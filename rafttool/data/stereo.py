"""The real stereo pair with ground truth that scikit-image ships (Middlebury 2014 'motorcycle').

A rectified stereo pair is optical flow with v = 0: a left-image pixel at x appears in the right
image at x - d, so the flow from left to right is (-d, 0). It is real camera data that every
machine with scikit-image has, which makes it our always-available end-to-end check. Never train
on it.
"""

from __future__ import annotations

import os

import numpy as np

from rafttool.io.images import read_image


def motorcycle_pair() -> dict[str, np.ndarray]:
    """``image1`` (left), ``image2`` (right) uint8 RGB, ``flow`` HxWx2 with NaN where unknown, ``valid``."""
    try:
        import skimage.data
    except ImportError:
        raise ValueError("the motorcycle stereo pair needs scikit-image: pip install 'rafttool[train]'") from None
    folder = os.path.dirname(skimage.data.__file__)
    disparity = np.load(os.path.join(folder, "motorcycle_disp.npz"))["arr_0"].astype(np.float32)
    valid = np.isfinite(disparity)
    flow = np.stack([np.where(valid, -disparity, np.nan), np.where(valid, 0.0, np.nan)], axis=-1).astype(np.float32)
    return {
        "image1": read_image(os.path.join(folder, "motorcycle_left.png")),
        "image2": read_image(os.path.join(folder, "motorcycle_right.png")),
        "flow": flow,
        "valid": valid,
    }
