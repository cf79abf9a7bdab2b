"""Frame sources (video files, image folders), read-ahead decoding and atomic video output."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from rafttool.io.video import (
    ImageFolderSource,
    VideoError,
    VideoFileSource,
    list_images,
    natural_key,
    open_frames,
    prefetch,
    video_writer,
)


def _frame(index: int, height: int = 32, width: int = 48) -> np.ndarray:
    """A frame whose mean brightness encodes its index, robust to lossy coding."""
    return np.full((height, width, 3), 20 + 30 * index, np.uint8)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (48, 32))
    for index in range(6):
        writer.write(_frame(index))
    writer.release()
    return path


def _indices(frames) -> list[int]:
    return [index for index, _ in frames]


def test_natural_order_puts_frame2_before_frame10(tmp_path: Path) -> None:
    for name in ("frame10.png", "frame2.png", "frame1.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["frame1.png", "frame2.png", "frame10.png"]
    assert sorted(["b/x10", "a/x2", "a/x10"], key=natural_key) == ["a/x2", "a/x10", "b/x10"]


def test_video_file_metadata_and_frame_selection(clip: Path) -> None:
    source = open_frames(clip)
    assert isinstance(source, VideoFileSource)
    info = source.info
    assert (info.frame_count, info.fps, info.width, info.height) == (6, 12.0, 48, 32)
    assert info.duration == pytest.approx(0.5)
    assert _indices(source.frames()) == [0, 1, 2, 3, 4, 5]
    frames = list(source.frames(start=1, end=6, step=2))
    assert _indices(frames) == [1, 3, 5]
    assert [round(float(f.mean()) / 30) for _, f in frames] == [round((20 + 30 * i) / 30) for i in (1, 3, 5)]
    (_, half), *_ = source.frames(scale=0.5)
    assert half.shape == (16, 24, 3) and half.dtype == np.uint8


def test_image_folder_is_a_video_in_natural_order(tmp_path: Path) -> None:
    for number, brightness in ((10, 3), (2, 2), (1, 1)):
        cv2.imwrite(str(tmp_path / f"f{number}.png"), _frame(brightness))
    source = open_frames(tmp_path)
    assert isinstance(source, ImageFolderSource) and source.info.frame_count == 3
    assert [int(f[0, 0, 0]) for _, f in source.frames()] == [50, 80, 110]


def test_folder_frames_must_share_a_size(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a1.png"), _frame(0))
    cv2.imwrite(str(tmp_path / "a2.png"), _frame(1, height=40))
    with pytest.raises(VideoError, match="same size"):
        list(open_frames(tmp_path).frames())


@pytest.mark.parametrize("make", ["missing", "garbage", "empty folder"])
def test_unreadable_sources_are_one_line_errors(tmp_path: Path, make: str) -> None:
    path = tmp_path / "x.mp4"
    if make == "garbage":
        path.write_bytes(b"not a video" * 10)
    elif make == "empty folder":
        path = tmp_path / "empty"
        path.mkdir()
    with pytest.raises(VideoError) as error:
        open_frames(path)
    assert "\n" not in str(error.value)


def test_prefetch_keeps_order_bounds_read_ahead_and_reraises() -> None:
    produced: list[int] = []

    def items():
        for index in range(100):
            produced.append(index)
            yield index

    stream = prefetch(items(), depth=3)
    assert next(stream) == 0
    threading.Event().wait(0.2)
    assert len(produced) <= 5  # one delivered, three queued, one waiting to be queued
    assert list(stream) == list(range(1, 100))

    def failing():
        yield 1
        raise VideoError("decoder broke")

    with pytest.raises(VideoError, match="decoder broke"):
        list(prefetch(failing()))


def test_prefetch_closed_early_stops_and_closes_the_producer() -> None:
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield 0
        finally:
            closed.set()

    stream = prefetch(endless(), depth=2)
    next(stream)
    stream.close()
    assert closed.wait(2)


def test_video_writer_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    with video_writer(target, fps=5) as sink:
        for index in range(4):
            sink.write(_frame(index))
    capture = cv2.VideoCapture(str(target))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 4
    capture.release()

    failed = tmp_path / "failed.mp4"
    with pytest.raises(KeyboardInterrupt), video_writer(failed, fps=5) as sink:
        sink.write(_frame(0))
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_video_writer_rejects_unknown_containers_and_size_changes(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="unknown extension"), video_writer(tmp_path / "x.gif", fps=5):
        pass
    with pytest.raises(VideoError, match="48x40"), video_writer(tmp_path / "x.mp4", fps=5) as sink:
        sink.write(_frame(0))
        sink.write(_frame(0, height=40))
    assert list(tmp_path.iterdir()) == []
