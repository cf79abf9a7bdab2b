"""Frames in and out: video files and folders of numbered images behind one interface.

Frames are decoded one at a time (never the whole clip), optionally ahead of the consumer in a
background thread, so memory stays flat however long the clip is. Video output is atomic like
every other writer: it goes to a temp file that is renamed into place only when complete.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from rafttool.io.atomic import atomic_write
from rafttool.io.errors import FlowFormatError
from rafttool.io.images import read_image

# FFmpeg's own log lines ("moov atom not found") would break the CLI's one-line errors; OpenCV
# reads the variable when it first opens a video, so setting it before any capture suffices.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Container -> codec OpenCV's bundled FFmpeg can always encode.
VIDEO_CODECS = {".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
FOLDER_FPS = 25.0

T = TypeVar("T")


class VideoError(FlowFormatError):
    """A video or frame folder that cannot be read or written; one-line message."""


def natural_key(path: str | os.PathLike[str]) -> list[int | str]:
    """Sort key under which frame2 < frame10 (plain string order puts frame10 first)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", os.fspath(path))]


def list_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` in natural order."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()), key=natural_key)


def resize_frame(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with area averaging when shrinking (no aliasing), bilinear when enlarging."""
    if (width, height) == (rgb.shape[1], rgb.shape[0]):
        return rgb
    shrinking = width * height < rgb.shape[0] * rgb.shape[1]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def scale_frame(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Resize by a factor, keeping at least one pixel per side."""
    return resize_frame(rgb, max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))


@dataclass(frozen=True)
class VideoInfo:
    """What ``raft info`` reports about a clip; ``frame_count`` is the container's claim for files."""

    path: str
    kind: str  # "video" or "images"
    frame_count: int
    fps: float
    width: int
    height: int
    codec: str | None = None

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


class FrameSource(ABC):
    """A sequence of RGB uint8 frames, read lazily; subclasses say where they come from."""

    info: VideoInfo

    def frames(self, start: int = 0, end: int | None = None, step: int = 1, scale: float = 1.0) -> Iterator[tuple[int, np.ndarray]]:
        """(index, frame) for indices start, start+step, ... below ``end``."""
        if start < 0 or step < 1 or scale <= 0 or (end is not None and end < start):
            raise ValueError(f"bad frame range start={start} end={end} step={step} scale={scale}")
        for index, frame in self._read(start, end, step):
            yield index, scale_frame(frame, scale)

    @abstractmethod
    def _read(self, start: int, end: int | None, step: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index, RGB frame) at the original size."""


class VideoFileSource(FrameSource):
    """A video file decoded by OpenCV (FFmpeg)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        capture = self._open()
        try:
            fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
            codec = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).strip("\0 ") or None
            self.info = VideoInfo(
                path=str(path),
                kind="video",
                frame_count=max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))),
                fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
                width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                codec=codec,
            )
        finally:
            capture.release()

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise VideoError(f"cannot open video '{self.path}': OpenCV cannot decode it (not a video, or a codec this build lacks)")
        return capture

    def _read(self, start: int, end: int | None, step: int) -> Iterator[tuple[int, np.ndarray]]:
        # Frames are skipped with grab() rather than seeking: seeking is inexact for many codecs.
        capture = self._open()
        try:
            index = 0
            while end is None or index < end:
                if not capture.grab():
                    return
                if index >= start and (index - start) % step == 0:
                    ok, bgr = capture.retrieve()
                    if not ok:
                        raise VideoError(f"cannot decode frame {index} of '{self.path}': the file is damaged")
                    yield index, np.ascontiguousarray(bgr[..., ::-1])
                index += 1
        finally:
            capture.release()


class ImageFolderSource(FrameSource):
    """A folder of numbered images played as a video, in natural file-name order."""

    def __init__(self, folder: Path) -> None:
        self.files = list_images(folder)
        if not self.files:
            raise VideoError(f"folder '{folder}' holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        first = read_image(self.files[0])
        self.info = VideoInfo(str(folder), "images", len(self.files), FOLDER_FPS, first.shape[1], first.shape[0])

    def _read(self, start: int, end: int | None, step: int) -> Iterator[tuple[int, np.ndarray]]:
        for index in range(start, len(self.files) if end is None else min(end, len(self.files)), step):
            frame = read_image(self.files[index])
            if frame.shape[:2] != (self.info.height, self.info.width):
                raise VideoError(
                    f"frame '{self.files[index]}' is {frame.shape[1]}x{frame.shape[0]} but "
                    f"'{self.files[0]}' is {self.info.width}x{self.info.height}: all frames must be the same size"
                )
            yield index, frame


def open_frames(path: str | os.PathLike[str]) -> FrameSource:
    """A video file or a folder of images as a :class:`FrameSource`."""
    path = Path(path)
    if path.is_dir():
        return ImageFolderSource(path)
    if not path.exists():
        raise VideoError(f"cannot open video '{path}': file not found")
    return VideoFileSource(path)


class _Finished:
    """End of a prefetched stream; carries the producer's exception, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` ahead of the consumer.

    Decoding then overlaps with the network's work on earlier frames. The producer's
    exceptions are re-raised in the consumer; closing the iterator stops the producer.
    """
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_Finished())
        except BaseException as error:  # handed to the consumer, which decides
            put(_Finished(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="rafttool-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if isinstance(item, _Finished):
                if item.error is not None:
                    raise item.error
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)


class VideoSink:
    """Receives RGB frames for an open :func:`video_writer`; the size is fixed by the first frame."""

    def __init__(self, temp: Path, target: Path, fps: float) -> None:
        self.temp, self.target, self.fps = temp, target, fps
        self.frames_written = 0
        self.size: tuple[int, int] | None = None
        self._writer: cv2.VideoWriter | None = None

    def write(self, rgb: np.ndarray) -> None:
        height, width = rgb.shape[:2]
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.target.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self.temp), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise VideoError(f"cannot write video '{self.target}': OpenCV has no encoder for it here")
            self.size = (width, height)
        elif (width, height) != self.size:
            raise VideoError(f"video frame is {width}x{height}, the video is {self.size[0]}x{self.size[1]}")
        self._writer.write(np.ascontiguousarray(rgb[..., ::-1]))
        self.frames_written += 1

    def release(self) -> None:
        if self._writer is not None:
            self._writer.release()


@contextmanager
def video_writer(path: str | os.PathLike[str], fps: float) -> Iterator[VideoSink]:
    """Write a video atomically: a temp file in the same folder, renamed when the block succeeds."""
    target = Path(path)
    if target.suffix.lower() not in VIDEO_CODECS:
        raise VideoError(f"cannot write video '{target}': unknown extension '{target.suffix}'; use one of {', '.join(VIDEO_CODECS)}")
    with atomic_write(target, keep_extension=True) as temp:
        sink = VideoSink(temp, target, fps if fps > 0 else FOLDER_FPS)
        try:
            yield sink
        finally:
            sink.release()
        if sink.frames_written == 0:
            raise VideoError(f"no frames to write to '{target}'")
