"""Augmentation of real flow datasets for fine-tuning, and a torch ``Dataset`` over ``FlowSample`` lists.

Real benchmarks are small, so every geometric change must keep image and flow consistent (a
pixel x of frame 1 still lands on x + flow in frame 2), and sparse KITTI-style GT must never be
interpolated across its holes, which would invent vectors that were never measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from rafttool.data.datasets import DatasetError, FlowSample

# Linear interpolation of the 0/1 valid mask: only pixels computed purely from valid GT stay valid.
_DENSE_VALID_THRESHOLD = 0.999


def resize_sparse_flow(flow: np.ndarray, valid: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize sparse flow to ``size`` = (height, width) by moving each valid vector to its new pixel.

    Positions follow ``cv2.resize``'s pixel-centre convention, so the result lines up with images
    resized to the same size; vectors are scaled by the per-axis factors. Vectors landing on the
    same pixel (downscaling) overwrite each other; pixels nobody lands on are invalid.
    """
    height, width = valid.shape
    new_height, new_width = size
    scale_x, scale_y = new_width / width, new_height / height
    ys, xs = np.nonzero(valid)
    new_xs = np.rint((xs + 0.5) * scale_x - 0.5).astype(np.int64)
    new_ys = np.rint((ys + 0.5) * scale_y - 0.5).astype(np.int64)
    inside = (new_xs >= 0) & (new_xs < new_width) & (new_ys >= 0) & (new_ys < new_height)
    resized = np.zeros((new_height, new_width, 2), dtype=np.float32)
    resized_valid = np.zeros((new_height, new_width), dtype=bool)
    resized[new_ys[inside], new_xs[inside]] = flow[ys[inside], xs[inside]] * np.float32([scale_x, scale_y])
    resized_valid[new_ys[inside], new_xs[inside]] = True
    return resized, resized_valid


def _resize_dense_flow(flow: np.ndarray, valid: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize dense flow by interpolation; pixels that mixed in any invalid neighbour become invalid."""
    height, width = valid.shape
    new_height, new_width = size
    scale = np.float32([new_width / width, new_height / height])
    resized = cv2.resize(flow, (new_width, new_height), interpolation=cv2.INTER_LINEAR) * scale
    weight = cv2.resize(valid.astype(np.float32), (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    return resized, weight >= _DENSE_VALID_THRESHOLD


def _gray(image: np.ndarray) -> np.ndarray:
    """Luma of float RGB (ITU-R 601 weights, as photo tools use for saturation and contrast)."""
    return image @ np.float32([0.299, 0.587, 0.114])


@dataclass
class FlowAugmentor:
    """Random scale/stretch, flips, crop, colour jitter and occlusion erasing for one training pair.

    Defaults follow RAFT's fine-tuning recipe: scales 2^[-0.2, 0.5], stretch 2^[-0.2, 0.2] per
    axis, colour jitter 0.4/0.4/0.4 and hue 0.5/pi, different jitter per frame with p=0.2 (real
    cameras change exposure between frames), and 1-2 grey boxes in frame 2 with p=0.5 to teach
    the model to fill in occlusions from context.
    """

    crop_size: tuple[int, int]  # (height, width)
    min_scale: float = -0.2  # log2
    max_scale: float = 0.5
    spatial_prob: float = 0.8
    stretch_prob: float = 0.8
    max_stretch: float = 0.2  # log2
    h_flip_prob: float = 0.5
    v_flip_prob: float = 0.1
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.5 / math.pi  # fraction of the full hue circle
    asymmetric_color_prob: float = 0.2
    eraser_prob: float = 0.5
    eraser_size: tuple[int, int] = (50, 100)  # side lengths in pixels, inclusive

    def __call__(
        self,
        image1: np.ndarray,
        image2: np.ndarray,
        flow: np.ndarray,
        valid: np.ndarray,
        rng: np.random.Generator,
        sparse: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Augment uint8 RGB frames with finite float32 flow and a bool valid mask; returns the same types.

        ``sparse`` selects scatter resizing for GT that covers only some pixels (KITTI, HD1K).
        The output is ``crop_size``; areas padded in to reach it are invalid.
        """
        image1, image2, flow, valid = self._spatial(image1, image2, flow, valid, rng, sparse)
        image1, image2 = self._photometric(image1, image2, rng)
        image2 = self._erase(image2, rng)
        return image1, image2, flow, valid

    def _spatial(
        self,
        image1: np.ndarray,
        image2: np.ndarray,
        flow: np.ndarray,
        valid: np.ndarray,
        rng: np.random.Generator,
        sparse: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        height, width = valid.shape
        crop_height, crop_width = self.crop_size
        if rng.random() < self.spatial_prob:
            scale_x = scale_y = 2.0 ** rng.uniform(self.min_scale, self.max_scale)
            if rng.random() < self.stretch_prob:
                scale_x *= 2.0 ** rng.uniform(-self.max_stretch, self.max_stretch)
                scale_y *= 2.0 ** rng.uniform(-self.max_stretch, self.max_stretch)
            # Never shrink below the crop: a crop that is mostly padding carries little supervision.
            size = (
                max(round(height * scale_y), min(height, crop_height)),
                max(round(width * scale_x), min(width, crop_width)),
            )
            if size != (height, width):
                image1 = cv2.resize(image1, size[::-1], interpolation=cv2.INTER_LINEAR)
                image2 = cv2.resize(image2, size[::-1], interpolation=cv2.INTER_LINEAR)
                resize = resize_sparse_flow if sparse else _resize_dense_flow
                flow, valid = resize(flow, valid, size)
        if rng.random() < self.h_flip_prob:
            image1, image2, flow, valid = image1[:, ::-1], image2[:, ::-1], flow[:, ::-1], valid[:, ::-1]
            flow = flow * np.float32([-1.0, 1.0])
        if rng.random() < self.v_flip_prob:
            image1, image2, flow, valid = image1[::-1], image2[::-1], flow[::-1], valid[::-1]
            flow = flow * np.float32([1.0, -1.0])
        return self._crop(image1, image2, flow, valid, rng)

    def _crop(
        self,
        image1: np.ndarray,
        image2: np.ndarray,
        flow: np.ndarray,
        valid: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Random crop to ``crop_size``, zero-padding (invalid) bottom/right first if the frame is smaller."""
        crop_height, crop_width = self.crop_size
        pad_y, pad_x = max(crop_height - valid.shape[0], 0), max(crop_width - valid.shape[1], 0)
        if pad_y or pad_x:
            image1, image2, flow, valid = (
                np.pad(a, ((0, pad_y), (0, pad_x)) + ((0, 0),) * (a.ndim - 2)) for a in (image1, image2, flow, valid)
            )
        top = int(rng.integers(0, valid.shape[0] - crop_height + 1))
        left = int(rng.integers(0, valid.shape[1] - crop_width + 1))
        window = (slice(top, top + crop_height), slice(left, left + crop_width))
        return tuple(np.ascontiguousarray(a[window]) for a in (image1, image2, flow, valid))

    def _photometric(
        self, image1: np.ndarray, image2: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if rng.random() < self.asymmetric_color_prob:
            return self._jitter(image1, self._color_params(rng)), self._jitter(image2, self._color_params(rng))
        params = self._color_params(rng)
        return self._jitter(image1, params), self._jitter(image2, params)

    def _color_params(self, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """(brightness, contrast, saturation factors, hue shift as a fraction of the circle)."""
        return (
            rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness),
            rng.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast),
            rng.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation),
            rng.uniform(-self.hue, self.hue),
        )

    @staticmethod
    def _jitter(image: np.ndarray, params: tuple[float, float, float, float]) -> np.ndarray:
        brightness, contrast, saturation, hue = params
        pixels = np.clip(image.astype(np.float32) * brightness, 0, 255)
        mean = _gray(pixels).mean()
        pixels = np.clip((pixels - mean) * contrast + mean, 0, 255)
        gray = _gray(pixels)[..., None]
        pixels = np.clip((pixels - gray) * saturation + gray, 0, 255)
        if hue:
            hsv = cv2.cvtColor(pixels / 255.0, cv2.COLOR_RGB2HSV)  # float input: hue in degrees
            hsv[..., 0] = (hsv[..., 0] + hue * 360.0) % 360.0
            pixels = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
        return np.rint(np.clip(pixels, 0, 255)).astype(np.uint8)

    def _erase(self, image2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Paint 1-2 boxes of frame 2's mean colour: pixels of frame 1 that become occluded."""
        if rng.random() >= self.eraser_prob:
            return image2
        image2 = image2.copy()
        mean = image2.reshape(-1, 3).mean(axis=0)
        height, width = image2.shape[:2]
        low, high = self.eraser_size
        for _ in range(int(rng.integers(1, 3))):
            top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
            box_height, box_width = (int(v) for v in rng.integers(low, high + 1, size=2))
            image2[top : top + box_height, left : left + box_width] = mean
        return image2


class TrainingPairs(torch.utils.data.Dataset):
    """Real pairs as training items with the synthetic generator's keys, so the trainer can mix them.

    Items are ``image1``/``image2`` float32 3xHxW in 0..255, ``flow`` float32 2xHxW (0 where
    unknown) and ``valid`` float32 HxW. Without an augmentor, frames keep their size, so batches
    then need equal-size samples.
    """

    def __init__(self, samples: Sequence[FlowSample], augmentor: FlowAugmentor | None = None) -> None:
        missing = [s for s in samples if s.flow_path is None]
        if missing:
            raise DatasetError(
                f"{len(missing)} of {len(samples)} pairs have no ground-truth flow "
                f"(first: '{missing[0].image1_path}'); training needs GT for every pair"
            )
        self.samples = list(samples)
        self.augmentor = augmentor
        self._rng: np.random.Generator | None = None
        self._rng_seed: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def _generator(self) -> np.random.Generator:
        """A generator seeded from torch's per-process seed.

        DataLoader gives each worker (and each epoch's workers) a distinct torch seed; reseeding when
        it changes keeps workers from replaying the same augmentations, and ``torch.manual_seed`` in
        the main process makes runs reproducible.
        """
        seed = torch.initial_seed()
        if self._rng is None or self._rng_seed != seed:
            self._rng, self._rng_seed = np.random.default_rng(seed), seed
        return self._rng

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        data = sample.load()
        image1, image2, valid = data["image1"], data["image2"], data["valid"]
        flow = np.where(valid[..., None], data["flow"], 0.0).astype(np.float32)
        if self.augmentor is not None:
            image1, image2, flow, valid = self.augmentor(
                image1, image2, flow, valid, self._generator(), sparse=sample.sparse
            )
        return {
            "image1": torch.from_numpy(np.ascontiguousarray(image1.transpose(2, 0, 1))).float(),
            "image2": torch.from_numpy(np.ascontiguousarray(image2.transpose(2, 0, 1))).float(),
            "flow": torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1))),
            "valid": torch.from_numpy(np.ascontiguousarray(valid)).float(),
        }
