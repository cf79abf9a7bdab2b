"""Classical OpenCV optical-flow methods as baselines, called like our engine.

A baseline takes two uint8 RGB frames and returns float32 (H, W, 2) flow, so ``raft eval`` and
``raft bench`` put RAFT and these side by side through one code path. Every method is given
8-bit grayscale frames: that is the input OpenCV's implementations are built and tuned for (DIS
and the contrib methods reject colour outright). Parameters are the library defaults or the
standard published settings, never tuned on evaluation data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from rafttool.io.images import to_rgb_uint8

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]

CONTRIB_HINT = "it needs OpenCV's contrib modules: pip install opencv-contrib-python-headless"


class BaselineUnavailable(RuntimeError):
    """The method exists but this OpenCV build lacks it; callers note it and skip it."""


@dataclass(frozen=True)
class Baseline:
    """A named OpenCV method: how to build its ``cv2.DenseOpticalFlow`` object."""

    name: str
    summary: str
    create: Callable[[], cv2.DenseOpticalFlow]
    needs_contrib: bool = False


def _dis(preset: int) -> Callable[[], cv2.DenseOpticalFlow]:
    return lambda: cv2.DISOpticalFlow_create(preset)


def _farneback() -> cv2.DenseOpticalFlow:
    # The settings of OpenCV's own Farneback tutorial: 3-level pyramid halving each level,
    # 15 px window, 3 iterations, 5-pixel polynomial neighbourhood with sigma 1.2.
    return cv2.FarnebackOpticalFlow_create(
        numLevels=3, pyrScale=0.5, fastPyramids=False, winSize=15, numIters=3, polyN=5, polySigma=1.2, flags=0
    )


def _contrib(factory: str) -> Callable[[], cv2.DenseOpticalFlow]:
    # Looked up at call time: cv2.optflow exists only in opencv-contrib builds.
    return lambda: getattr(cv2.optflow, factory)()


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("dis-ultrafast", "DIS, ultrafast preset (Kroeger et al. 2016)", _dis(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)),
        Baseline("dis-fast", "DIS, fast preset", _dis(cv2.DISOPTICAL_FLOW_PRESET_FAST)),
        Baseline("dis-medium", "DIS, medium preset", _dis(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)),
        Baseline("farneback", "Farneback 2003 polynomial expansion", _farneback),
        Baseline("tvl1", "Dual TV-L1 (Zach et al. 2007), OpenCV defaults", _contrib("DualTVL1OpticalFlow_create"), True),
        Baseline("deepflow", "DeepFlow (Weinzaepfel et al. 2013)", _contrib("createOptFlow_DeepFlow"), True),
    )
}
ALIASES = {"dis": "dis-medium"}
METHOD_NAMES = ("raft", *ALIASES, *BASELINES)


def canonical_name(name: str) -> str:
    """The method a name or alias stands for ('dis' -> 'dis-medium'), or ValueError listing them."""
    name = ALIASES.get(name.lower(), name.lower())
    if name != "raft" and name not in BASELINES:
        raise ValueError(f"unknown method {name!r}: use one of {', '.join(METHOD_NAMES)}")
    return name


def contrib_available() -> bool:
    return hasattr(cv2, "optflow")


def make_baseline(name: str) -> Predictor:
    """A predictor for the named OpenCV method; BaselineUnavailable when this OpenCV lacks it.

    The OpenCV object is created once and reused: none of these methods carries state from one
    call to the next unless asked to, so reuse only saves the allocations.
    """
    canonical = canonical_name(name)
    if canonical not in BASELINES:
        raise ValueError(f"{name!r} is our network, not an OpenCV baseline")
    baseline = BASELINES[canonical]
    if baseline.needs_contrib and not contrib_available():
        raise BaselineUnavailable(f"{baseline.name} skipped: {CONTRIB_HINT}")
    method = baseline.create()

    def predict(image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
        flow = method.calc(to_gray(image1), to_gray(image2), None)
        return np.ascontiguousarray(flow, dtype=np.float32)

    return predict


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (or anything ``to_rgb_uint8`` accepts) -> uint8 single-channel luma."""
    return cv2.cvtColor(to_rgb_uint8(image), cv2.COLOR_RGB2GRAY)
