"""The importable Python API: a reusable :class:`FlowEngine` and the one-call :func:`estimate_flow`.

Images go in as paths or numpy arrays (RGB; grayscale, RGBA and 16-bit are converted) and flow
comes out as float32 (H, W, 2) numpy arrays in pixels, (u, v) = (x, y) displacement from the
first image to the second.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch

from rafttool.engine.correlation import CorrMode, VolumeWorkspace, check_corr_mode
from rafttool.engine.cpu import fast_bf16
from rafttool.engine.int8 import int8_supported
from rafttool.engine.memory import keep_freed_memory
from rafttool.engine.model import DEFAULT_TOLERANCES, RAFT, build_model
from rafttool.engine.warm_start import forward_project
from rafttool.engine.weights import DEFAULT_MODEL, LoadedWeights, WeightsError, bundled_weights, load_into, read_weights
from rafttool.io.images import read_image, to_rgb_uint8

ImageLike = Union[str, os.PathLike, np.ndarray]


class DeviceError(ValueError):
    """The requested torch device is not present on this machine."""


def available_devices() -> list[str]:
    """Devices this machine can run on, best first."""
    devices = []
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices + ["cpu"]


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks the best present device; anything else must exist here."""
    present = available_devices()
    if name == "auto":
        return torch.device(present[0])
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    wanted = f"cuda:{device.index or 0}" if device.type == "cuda" else device.type
    if wanted not in present:
        raise DeviceError(f"device {name!r} is not available here; available: {', '.join(present)}")
    return device


@dataclass
class FlowResult:
    """Flow of one pair plus what a warm start of the next pair needs."""

    flow: np.ndarray
    low_res_flow: torch.Tensor
    iterations_run: int


@dataclass
class PairFlow:
    """One pair's flow from a stream, with the frames as the network saw them (for warping, viz)."""

    image1: np.ndarray
    image2: np.ndarray
    result: FlowResult
    seconds: float
    warm_started: bool = False

    @property
    def flow(self) -> np.ndarray:
        return self.result.flow


class FlowEngine:
    """A loaded RAFT model on a device, reused for many pairs.

    ``model`` picks the size ('small' or 'large'; :data:`~rafttool.engine.weights.DEFAULT_MODEL`
    unless given); ``weights`` a checkpoint of any supported layout (its size wins over
    ``model``); without ``weights`` the bundled weights of that size are used.
    ``half`` runs the network in reduced precision (bf16 on CPU, fp16 on CUDA); the correlation
    volume and coordinates stay fp32. ``None`` (the default) follows :func:`default_precision`.

    ``iters`` is the most refinement iterations a pair gets: a pass stops early once an
    iteration moves the flow by less than ``tolerance`` px on average (``tolerance=None`` always
    runs ``iters``). ``'auto'`` stops at :data:`DEFAULT_TOLERANCES` with the bundled weights and
    never with weights given by the user, so that official checkpoints give the original's flow.
    ``corr_mode`` stores the correlation volume ('full'), computes it per lookup
    ('on_demand', for frames too large for the volume) or picks by free memory ('auto').
    ``compile`` runs the encoders and the update step through ``torch.compile``: worth its
    start-up time (a minute or more per frame size) for long videos and on GPUs.

    ``int8`` runs the update block's large convolutions and the stored correlation volume's dot
    products in int8 (CPUs with VNNI: see :mod:`rafttool.engine.int8`). ``None`` (the default)
    follows :func:`default_precision`; ``int8=False`` with ``half`` left at ``None`` is all fp32.

    An engine keeps state between calls (the last frames' features, the correlation volume's
    memory), so use one engine per thread. An engine on the CPU also makes the process keep
    freed memory for reuse (:func:`~rafttool.engine.memory.keep_freed_memory`): without it,
    page faults on fresh memory take about a tenth of a pass.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        weights: str | os.PathLike | None = None,
        device: str = "auto",
        iters: int = 12,
        half: bool | None = None,
        tolerance: float | Literal["auto"] | None = "auto",
        corr_mode: CorrMode = "auto",
        compile: bool = False,
        int8: bool | None = None,
    ) -> None:
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            keep_freed_memory()
        loaded: LoadedWeights = read_weights(weights if weights is not None else bundled_weights(model))
        self.weights = loaded
        self.model: RAFT = load_into(build_model(loaded.model), loaded).to(self.device).eval()
        self.iters = iters
        bundled = _is_bundled(weights, loaded.model)
        chosen = default_precision(loaded.model, self.device, bundled)
        if half is None:
            half = int8 is None and chosen == "bf16"
        self.autocast_dtype = _half_dtype(self.device) if half else None
        self.tolerance = (DEFAULT_TOLERANCES[loaded.model] if bundled else None) if tolerance == "auto" else tolerance
        self.corr_mode = check_corr_mode(corr_mode)
        if int8 is None:
            int8 = not half and chosen == "int8"
        elif int8 and not (self.device.type == "cpu" and int8_supported()):
            raise ValueError("int8 needs a CPU with VNNI instructions and PyTorch's oneDNN int8 operators; leave int8 off (--fp32)")
        self.int8 = int8
        # Testing for convergence reads the update back to the host: free on a CPU, a pipeline
        # stall on a GPU, so there it is only done every few iterations.
        self.check_every = 1 if self.device.type == "cpu" else 3
        if compile:
            self.model.compile_for_inference()
        self._feature_cache: dict[bytes, torch.Tensor] = {}
        self._workspace = VolumeWorkspace()

    def _options(self) -> dict:
        """Keyword arguments of every forward pass (``RAFT.forward``)."""
        return {"tolerance": self.tolerance, "corr_mode": self.corr_mode, "check_every": self.check_every, "int8": self.int8,
                "workspace": self._workspace}

    def _features(self, images: torch.Tensor, keys: list[bytes]) -> torch.Tensor:
        """Feature maps of ``images``, computed only for those not in the last call's cache."""
        missing = list(dict.fromkeys(key for key in keys if key not in self._feature_cache))
        if missing:
            computed = self.model.features(images[[keys.index(key) for key in missing]])
            self._feature_cache.update(zip(missing, computed))
        features = torch.stack([self._feature_cache[key] for key in keys])
        self._feature_cache = {key: self._feature_cache[key] for key in keys}
        return features

    def _precision(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None)

    @property
    def precision(self) -> str:
        """What the network computes in: fp32, bf16 or fp16 (``half``), or int8 (the update block)."""
        if self.autocast_dtype is not None:
            return {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]
        return "int8" if self.int8 else "fp32"

    @property
    def model_name(self) -> str:
        return self.model.config.name

    @torch.inference_mode()
    def estimate_batch(
        self,
        images1: Sequence[ImageLike],
        images2: Sequence[ImageLike],
        iters: int | None = None,
        flow_init: torch.Tensor | None = None,
    ) -> list[FlowResult]:
        """Flow for a batch of pairs of equal size, in one forward pass.

        A frame seen in the previous call (the shared frame of consecutive video pairs) reuses
        the features computed then.
        """
        rgbs = [load_rgb(i) for i in [*images1, *images2]]
        batch1 = torch.stack([_to_tensor(rgb) for rgb in rgbs[: len(images1)]]).to(self.device)
        batch2 = torch.stack([_to_tensor(rgb) for rgb in rgbs[len(images1) :]]).to(self.device)
        if batch1.shape != batch2.shape:
            raise ValueError(
                f"images differ in size: {batch1.shape[-1]}x{batch1.shape[-2]} vs {batch2.shape[-1]}x{batch2.shape[-2]}; resize them to match"
            )
        with self._precision():
            fmap1, fmap2 = self._features(torch.cat([batch1, batch2]), [_digest(rgb) for rgb in rgbs]).chunk(2)
            output = self.model(
                batch1, batch2, iters=iters or self.iters, flow_init=flow_init, features=(fmap1, fmap2), **self._options()
            )
        flows = output.flow.float().permute(0, 2, 3, 1).cpu().numpy()
        return [
            FlowResult(flow=np.ascontiguousarray(f), low_res_flow=output.low_res_flow[i : i + 1], iterations_run=output.iterations_run)
            for i, f in enumerate(flows)
        ]

    def estimate(self, image1: ImageLike, image2: ImageLike, iters: int | None = None) -> np.ndarray:
        """Flow from ``image1`` to ``image2`` as a float32 (H, W, 2) array."""
        return self.estimate_batch([image1], [image2], iters=iters)[0].flow

    def estimate_pairs(
        self,
        pairs: Iterable[tuple[ImageLike, ImageLike]],
        iters: int | None = None,
        batch_size: int = 1,
    ) -> Iterator[PairFlow]:
        """Flow for a stream of pairs, in order, up to ``batch_size`` per forward pass.

        Pairs are consumed lazily, so only one batch is in memory however long the stream is.
        A batch is cut short where the image size changes, since a batch needs one size.
        """
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        for image1, image2 in pairs:
            rgb1, rgb2 = load_rgb(image1), load_rgb(image2)
            if pending and pending[0][0].shape != rgb1.shape:
                yield from self._run(pending, iters)
                pending = []
            pending.append((rgb1, rgb2))
            if len(pending) == batch_size:
                yield from self._run(pending, iters)
                pending = []
        if pending:
            yield from self._run(pending, iters)

    def estimate_sequence(
        self,
        frames: Iterable[ImageLike],
        iters: int | None = None,
        warm_start: bool = True,
        batch_size: int = 1,
    ) -> Iterator[PairFlow]:
        """Flow between each frame of a stream (a video) and the next, holding only two frames.

        With ``warm_start`` each pair starts from the previous pair's flow carried forward onto
        its grid (see :func:`forward_project`). That chains the pairs, so they run one at a time:
        ``batch_size`` > 1 needs ``warm_start=False``.
        """
        if warm_start and batch_size > 1:
            raise ValueError("warm start runs pairs one after another: use batch_size=1 or warm_start=False")
        pairs = itertools.pairwise(load_rgb(frame) for frame in frames)
        if not warm_start:
            yield from self.estimate_pairs(pairs, iters, batch_size)
            return
        previous: FlowResult | None = None
        for rgb1, rgb2 in pairs:
            flow_init = None if previous is None else forward_project(previous.low_res_flow)
            (pair,) = self._run([(rgb1, rgb2)], iters, flow_init)
            pair.warm_started = flow_init is not None
            previous = pair.result
            yield pair

    def _run(
        self, batch: list[tuple[np.ndarray, np.ndarray]], iters: int | None, flow_init: torch.Tensor | None = None
    ) -> list[PairFlow]:
        """One forward pass; each pair is charged an equal share of its time."""
        start = time.perf_counter()
        results = self.estimate_batch([p[0] for p in batch], [p[1] for p in batch], iters=iters, flow_init=flow_init)
        seconds = (time.perf_counter() - start) / len(batch)
        return [PairFlow(rgb1, rgb2, result, seconds) for (rgb1, rgb2), result in zip(batch, results)]


def default_precision(model: str, device: torch.device, bundled: bool) -> Literal["fp32", "int8", "bf16"]:
    """What a pass computes in unless told otherwise. Reduced precision only for the bundled
    weights, each measured before it ships to keep the EPE within 2% of fp32 (weights/README.md),
    and only on a CPU where it is the faster one: bf16 for RAFT-large where bf16 is timed fast
    (AMX: its wide encoders run 2.8x faster than in fp32, and faster than in int8, whose AMX
    kernels moved large8's KITTI EPE by 3.4%; on the AMD EPYC its convolutions run 2x faster); int8 elsewhere on CPUs with
    VNNI (on the EPYC's VNNI kernels large8's EPE stayed within 0.3% of fp32 on every family)
    and for RAFT-small (its narrow encoders gain nothing from bf16). Weights given by the user run fp32: the original's numbers."""
    if not bundled or device.type != "cpu":
        return "fp32"
    if model == "large" and fast_bf16():
        return "bf16"
    return "int8" if int8_supported() else "fp32"


def load_rgb(image: ImageLike) -> np.ndarray:
    """A path or an array -> uint8 (H, W, 3) RGB."""
    if isinstance(image, np.ndarray):
        return to_rgb_uint8(image)
    return read_image(Path(image))


def _is_bundled(weights: str | os.PathLike | None, model: str) -> bool:
    """Whether ``weights`` are the bundled ones of ``model``: the only weights whose accuracy in
    reduced precision has been measured (each bundled file is, before it ships)."""
    if weights is None:
        return True
    try:
        return Path(weights).resolve() == bundled_weights(model).resolve()
    except WeightsError:
        return False


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()


def _digest(rgb: np.ndarray) -> bytes:
    """A key that identifies a frame by its content."""
    return hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=16, person=repr(rgb.shape).encode()[:16]).digest()


def _half_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type in ("cuda", "mps") else torch.bfloat16


@lru_cache(maxsize=4)
def _cached_engine(model: str, weights: str | None, device: str, half: bool | None) -> FlowEngine:
    return FlowEngine(model=model, weights=weights, device=device, half=half)


def estimate_flow(
    image1: ImageLike,
    image2: ImageLike,
    model: str = DEFAULT_MODEL,
    weights: str | os.PathLike | None = None,
    iters: int = 12,
    device: str = "auto",
    half: bool | None = None,
) -> np.ndarray:
    """Optical flow from ``image1`` to ``image2``: float32 (H, W, 2) array of (u, v) in pixels.

    The engine is cached, so repeated calls with the same settings load the model once.

    >>> flow = estimate_flow("frame1.png", "frame2.png")  # doctest: +SKIP
    """
    engine = _cached_engine(model, None if weights is None else str(weights), device, half)
    return engine.estimate(image1, image2, iters=iters)
