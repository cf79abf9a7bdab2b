"""Image reading normalises every layout to uint8 RGB; writing is atomic."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rafttool.io import FlowFormatError, read_image, to_rgb_uint8, write_image


def cv2_write(path: Path, pixels: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), pixels)
    return path


def test_bgr_file_comes_back_rgb(tmp_path: Path) -> None:
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30
    image = read_image(cv2_write(tmp_path / "c.png", bgr))
    assert image.dtype == np.uint8 and image.shape == (2, 3, 3)
    assert image[0, 0].tolist() == [30, 20, 10]


def test_grayscale_is_replicated(tmp_path: Path) -> None:
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    image = read_image(cv2_write(tmp_path / "g.png", gray))
    assert image.shape == (2, 3, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], gray)


def test_alpha_is_dropped(tmp_path: Path) -> None:
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[...] = (1, 2, 3, 0)  # fully transparent: colour is kept, not composited
    image = read_image(cv2_write(tmp_path / "a.png", bgra))
    assert image.shape == (2, 2, 3) and image[1, 1].tolist() == [3, 2, 1]


def test_16_bit_is_scaled_by_1_over_257(tmp_path: Path) -> None:
    gray = np.array([[0, 257 * 5, 65535, 1000]], np.uint16)
    image = read_image(cv2_write(tmp_path / "g16.png", gray))
    assert image[0, :, 0].tolist() == [0, 5, 255, 4]  # 1000 / 257 = 3.89 -> 4
    bgr = np.zeros((1, 1, 3), np.uint16)
    bgr[0, 0] = (0, 257 * 100, 65535)
    assert read_image(cv2_write(tmp_path / "c16.png", bgr))[0, 0].tolist() == [255, 100, 0]


def test_arrays_are_taken_as_rgb() -> None:
    rgb = np.zeros((1, 2, 3), np.uint8)
    rgb[0, 0] = (200, 100, 50)
    np.testing.assert_array_equal(to_rgb_uint8(rgb), rgb)
    rgba = np.concatenate([rgb, np.full((1, 2, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgb)


def test_float_arrays_are_clipped_from_unit_range() -> None:
    values = np.array([[-0.5, 0.0, 0.5, 1.0, 2.0, np.nan]], np.float32)
    assert to_rgb_uint8(values)[0, :, 1].tolist() == [0, 0, 128, 255, 255, 0]


@pytest.mark.parametrize("shape", [(4, 4, 2), (4, 4, 5), (4,), (0, 3, 3)])
def test_rejects_shapes_that_are_not_images(shape: tuple[int, ...]) -> None:
    with pytest.raises(FlowFormatError, match="image"):
        to_rgb_uint8(np.zeros(shape, np.uint8))


def test_rejects_unsupported_pixel_type() -> None:
    with pytest.raises(FlowFormatError, match="int32"):
        to_rgb_uint8(np.zeros((2, 2), np.int32))


def test_missing_empty_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(FlowFormatError, match=r"cannot read image '.*x\.png': file not found"):
        read_image(tmp_path / "x.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(FlowFormatError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_bytes(b"hello, not an image")
    with pytest.raises(FlowFormatError, match="not an image OpenCV can decode"):
        read_image(tmp_path / "text.png")
    with pytest.raises(FlowFormatError, match="directory"):
        read_image(tmp_path)


def test_write_read_round_trip_with_non_ascii_path(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    path = tmp_path / "bild_äöü_画像.png"
    write_image(path, rgb)
    np.testing.assert_array_equal(read_image(path), rgb)
    assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)[0, 0].tolist() == rgb[0, 0, ::-1].tolist()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_write_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(FlowFormatError, match="no encoder"):
        write_image(tmp_path / "x.unknown", np.zeros((2, 2, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
