"""Flow file formats: round trips, spec conformance, corrupt-input rejection and atomic writes."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rafttool.io.atomic as atomic_module
from rafttool.io import (
    SUPPORTED_WRITE_EXTENSIONS,
    FlowFormatError,
    decode_flo,
    decode_kitti_flow,
    encode_flo,
    encode_kitti_flow,
    read_flo,
    read_flow,
    read_kitti_flow,
    write_flo,
    write_flow,
    write_kitti_flow,
)

FUZZ = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def sample_flow(height: int = 4, width: int = 5, with_unknown: bool = True) -> np.ndarray:
    """Flow on the 1/64 grid (so KITTI stores it exactly) with one unknown pixel."""
    rng = np.random.default_rng(0)
    flow = (rng.integers(-2000, 2000, size=(height, width, 2)) / 64.0).astype(np.float32)
    if with_unknown:
        flow[1, 2] = np.nan
    return flow


def flo_bytes(width: int, height: int, payload: bytes | None = None) -> bytes:
    payload = bytes(8 * max(width, 0) * max(height, 0)) if payload is None else payload
    return struct.pack("<f", 202021.25) + struct.pack("<ii", width, height) + payload


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("ext", SUPPORTED_WRITE_EXTENSIONS)
def test_round_trip_keeps_values_and_unknown_pixels(tmp_path: Path, ext: str) -> None:
    flow = sample_flow()
    path = tmp_path / f"flow{ext}"
    write_flow(path, flow)
    back = read_flow(path)
    assert back.dtype == np.float32 and back.shape == flow.shape
    np.testing.assert_array_equal(back, flow)  # NaN positions must match too
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_extension_is_case_insensitive(tmp_path: Path) -> None:
    write_flow(tmp_path / "a.FLO", sample_flow())
    np.testing.assert_array_equal(read_flow(tmp_path / "a.FLO"), sample_flow())


@pytest.mark.parametrize("path", ["flow.txt", "flow", "flow.jpg"])
def test_unknown_extension_lists_supported(tmp_path: Path, path: str) -> None:
    with pytest.raises(FlowFormatError, match=r"\.flo, \.png, \.npy, \.npz"):
        write_flow(tmp_path / path, sample_flow())
    with pytest.raises(FlowFormatError, match=r"\.pfm"):
        read_flow(tmp_path / path)


@pytest.mark.parametrize("shape", [(2, 4, 5), (4, 5), (4, 5, 3), (0, 5, 2)])
def test_write_rejects_non_flow_arrays(tmp_path: Path, shape: tuple[int, ...]) -> None:
    with pytest.raises(FlowFormatError, match="shape|empty"):
        write_flow(tmp_path / "x.flo", np.zeros(shape, np.float32))
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_a_format_error(tmp_path: Path) -> None:
    for ext in (".flo", ".png", ".npy", ".npz", ".pfm"):
        with pytest.raises(FlowFormatError, match="file not found"):
            read_flow(tmp_path / f"missing{ext}")


# ---------------------------------------------------------------- .flo


def test_hand_built_flo_matches_spec() -> None:
    values = np.arange(12, dtype=np.float32) - 5.5  # W=3, H=2, (u, v) interleaved row-major
    data = b"PIEH" + struct.pack("<ii", 3, 2) + struct.pack("<12f", *values)
    assert struct.unpack("<f", data[:4])[0] == 202021.25
    flow = decode_flo(data)
    assert flow.shape == (2, 3, 2)
    assert flow[0, 1].tolist() == [values[2], values[3]]  # row 0, column 1
    assert flow[1, 0].tolist() == [values[6], values[7]]  # row 1, column 0
    assert encode_flo(flow) == data


def test_encode_flo_header_and_unknown_marker() -> None:
    flow = np.zeros((2, 3, 2), np.float32)
    flow[0, 0, 1] = np.inf
    data = encode_flo(flow)
    assert data[:12] == b"PIEH\x03\x00\x00\x00\x02\x00\x00\x00"
    assert len(data) == 12 + 8 * 6
    assert struct.unpack("<2f", data[12:20]) == (1e10, 1e10)  # a pixel with one bad component is unknown


def test_flo_written_by_us_reads_identically_with_opencv(tmp_path: Path) -> None:
    flow = sample_flow()
    write_flo(tmp_path / "a.flo", flow)
    theirs = cv2.readOpticalFlow(str(tmp_path / "a.flo"))
    known = np.isfinite(flow).all(axis=2)
    np.testing.assert_array_equal(theirs[known], flow[known])
    np.testing.assert_array_equal(theirs[~known], np.float32(1e10))


def test_flo_written_by_opencv_reads_identically(tmp_path: Path) -> None:
    flow = np.random.default_rng(1).normal(size=(3, 6, 2)).astype(np.float32)
    cv2.writeOpticalFlow(str(tmp_path / "cv.flo"), flow)
    np.testing.assert_array_equal(read_flo(tmp_path / "cv.flo"), flow)


def test_flo_unknown_marker_reads_as_nan_in_both_components() -> None:
    payload = struct.pack("<4f", 1.5, 2e9, -3.0, 0.25)
    flow = decode_flo(flo_bytes(2, 1, payload))
    assert np.isnan(flow[0, 0]).all()
    assert flow[0, 1].tolist() == [-3.0, 0.25]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PIEX" + struct.pack("<ii", 1, 1) + bytes(8), "not a .flo file"),
        (b"", "truncated"),
        (b"PIEH\x01\x00", "truncated"),
        (flo_bytes(2, 2)[:-1], "truncated"),
        (flo_bytes(2, 2) + b"\x00", "unexpected bytes"),
        (flo_bytes(0, 3), "empty"),
        (flo_bytes(3, -1), "empty"),
        (flo_bytes(2**15 + 1, 1, b""), "exceeds"),
        (flo_bytes(2**31 - 1, 2**31 - 1, b""), "exceeds"),
    ],
    ids=["bad-tag", "empty", "short-header", "truncated", "trailing", "zero-width", "negative-height", "too-wide",
         "huge"],
)
def test_flo_rejects_corrupt_input(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(FlowFormatError, match=message):
        decode_flo(data)
    (tmp_path / "bad.flo").write_bytes(data)
    with pytest.raises(FlowFormatError, match=message):
        read_flow(tmp_path / "bad.flo")


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=120),
        st.builds(
            lambda w, h, tail: flo_bytes(w, h, tail),
            st.integers(-3, 4),
            st.integers(-3, 4),
            st.binary(max_size=160),
        ),
    )
)
def test_decode_flo_fuzz(data: bytes) -> None:
    try:
        flow = decode_flo(data)
    except FlowFormatError:
        return
    assert flow.dtype == np.float32 and flow.ndim == 3 and flow.shape[2] == 2
    assert len(data) == 12 + flow.size * 4


# ---------------------------------------------------------------- KITTI PNG


def test_kitti_channel_order_on_disk(tmp_path: Path) -> None:
    flow = np.array([[[1.5, -2.25], [0.0, 3.0]]], np.float32)
    write_kitti_flow(tmp_path / "k.png", flow, valid=np.array([[True, False]]))
    raw = cv2.imread(str(tmp_path / "k.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (1, 2, 3)
    assert raw[0, 0].tolist() == [1, 2**15 - 144, 2**15 + 96]  # BGR: valid, v*64+2^15, u*64+2^15
    assert raw[0, 1, 0] == 0
    back, valid = read_kitti_flow(tmp_path / "k.png")
    np.testing.assert_array_equal(back, flow)
    assert valid.tolist() == [[True, False]]
    assert np.isnan(read_flow(tmp_path / "k.png")[0, 1]).all()


def test_kitti_clips_instead_of_wrapping(tmp_path: Path) -> None:
    flow = np.array([[[1000.0, -1000.0], [512.0, -512.0]]], np.float32)
    write_kitti_flow(tmp_path / "k.png", flow)
    back, valid = read_kitti_flow(tmp_path / "k.png")
    largest = (2**16 - 1 - 2**15) / 64
    assert largest == 511.984375
    assert back.tolist() == [[[largest, -512.0], [largest, -512.0]]]
    assert valid.all()


def test_kitti_nan_is_invalid_with_zero_flow(tmp_path: Path) -> None:
    flow = np.array([[[np.nan, 1.0], [2.0, 3.0]]], np.float32)
    write_kitti_flow(tmp_path / "k.png", flow, valid=np.ones((1, 2), bool))
    raw = cv2.imread(str(tmp_path / "k.png"), cv2.IMREAD_UNCHANGED)
    assert raw[0, 0].tolist() == [0, 2**15, 2**15]


@pytest.mark.parametrize(
    "image",
    [np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint16), np.zeros((2, 2, 4), np.uint16)],
    ids=["8-bit", "1-channel", "4-channel"],
)
def test_kitti_rejects_wrong_png_layout(tmp_path: Path, image: np.ndarray) -> None:
    cv2.imwrite(str(tmp_path / "bad.png"), image)
    with pytest.raises(FlowFormatError, match="not a KITTI flow PNG"):
        read_flow(tmp_path / "bad.png")


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b)))
def test_decode_kitti_fuzz(data: bytes) -> None:
    try:
        flow, valid = decode_kitti_flow(data)
    except FlowFormatError:
        return
    assert flow.shape[:2] == valid.shape


# ---------------------------------------------------------------- npy / npz / pfm


def test_npz_accepts_a_single_array_under_any_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", whatever=sample_flow())
    np.testing.assert_array_equal(read_flow(tmp_path / "a.npz"), sample_flow())


def test_npz_prefers_flow_key_and_lists_keys_when_ambiguous(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", other=np.zeros(3), flow=sample_flow())
    np.testing.assert_array_equal(read_flow(tmp_path / "a.npz"), sample_flow())
    np.savez(tmp_path / "b.npz", first=sample_flow(), second=sample_flow())
    with pytest.raises(FlowFormatError, match=r"\['first', 'second'\].*'flow'"):
        read_flow(tmp_path / "b.npz")


def test_npy_converts_dtype_and_fortran_order(tmp_path: Path) -> None:
    flow = np.asfortranarray(sample_flow(with_unknown=False).astype(">f8"))
    np.save(tmp_path / "a.npy", flow)
    back = read_flow(tmp_path / "a.npy")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, flow)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 4, 5), np.float32), "channels first"),
        (np.zeros((4, 5), np.float32), "shape"),
        (np.zeros((4, 5, 2), np.complex64), "dtype"),
        (np.empty((1, 1, 2), dtype=object), "dtype"),
    ],
)
def test_npy_rejects_non_flow_arrays(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "a.npy", array, allow_pickle=True)
    with pytest.raises(FlowFormatError, match=message):
        read_flow(tmp_path / "a.npy")
    np.savez(tmp_path / "a.npz", flow=array, allow_pickle=True)
    with pytest.raises(FlowFormatError, match=message):
        read_flow(tmp_path / "a.npz")


@pytest.mark.parametrize("change", [lambda b: b[:-3], lambda b: b + b"\x00"], ids=["truncated", "trailing"])
def test_npy_rejects_wrong_data_length(tmp_path: Path, change) -> None:
    np.save(tmp_path / "a.npy", sample_flow())
    (tmp_path / "a.npy").write_bytes(change((tmp_path / "a.npy").read_bytes()))
    with pytest.raises(FlowFormatError, match="corrupt"):
        read_flow(tmp_path / "a.npy")


def test_npz_corrupt_member_is_a_format_error(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as archive:
        archive.writestr("flow.npy", b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(FlowFormatError, match="not a valid"):
        read_flow(tmp_path / "a.npz")


def pfm_bytes(kind: bytes, width: int, height: int, scale: float, rows_bottom_up: np.ndarray) -> bytes:
    order = "<" if scale < 0 else ">"
    return kind + f"\n{width} {height}\n{scale}\n".encode() + rows_bottom_up.astype(f"{order}f4").tobytes()


@pytest.mark.parametrize("scale", [-1.0, 1.0], ids=["little-endian", "big-endian"])
def test_pfm_reads_bottom_up_rows_and_first_two_channels(tmp_path: Path, scale: float) -> None:
    top_down = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    top_down[0, 0, 2] = np.inf  # third channel is ignored
    (tmp_path / "a.pfm").write_bytes(pfm_bytes(b"PF", 3, 2, scale, top_down[::-1]))
    np.testing.assert_array_equal(read_flow(tmp_path / "a.pfm"), top_down[..., :2])


def test_pfm_rejects_single_channel_and_bad_sizes(tmp_path: Path) -> None:
    (tmp_path / "a.pfm").write_bytes(pfm_bytes(b"Pf", 2, 2, -1.0, np.zeros(4)))
    with pytest.raises(FlowFormatError, match="single-channel"):
        read_flow(tmp_path / "a.pfm")
    (tmp_path / "b.pfm").write_bytes(pfm_bytes(b"PF", 2, 2, -1.0, np.zeros(11)))
    with pytest.raises(FlowFormatError, match="corrupt"):
        read_flow(tmp_path / "b.pfm")
    (tmp_path / "c.pfm").write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    with pytest.raises(FlowFormatError, match="not a PFM"):
        read_flow(tmp_path / "c.pfm")


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def valid_file_bytes(ext: str) -> bytes:
    """A small valid file of each format, as a seed for mutation fuzzing."""
    flow = sample_flow(2, 3)
    if ext == ".pfm":
        return pfm_bytes(b"PF", 3, 2, -1.0, np.zeros((2, 3, 3)))
    buffer = io.BytesIO()
    if ext == ".npy":
        np.save(buffer, flow)
    elif ext == ".npz":
        np.savez(buffer, flow=flow)
    else:
        return encode_flo(flow) if ext == ".flo" else encode_kitti_flow(flow)
    return buffer.getvalue()


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) edits: overwrite a byte, delete a few, or insert one."""
    out = bytearray(data)
    for kind, position, value in edits:
        position %= max(len(out), 1)
        if kind == 0 and out:
            out[position] = value
        elif kind == 1:
            del out[position : position + 1 + value % 8]
        else:
            out[position:position] = bytes([value])
    return bytes(out)


READ_EXTENSIONS = [".flo", ".png", ".npy", ".npz", ".pfm"]
EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=4)


@FUZZ
@given(
    case=st.one_of(
        st.tuples(st.sampled_from(READ_EXTENSIONS), st.binary(max_size=300)),
        st.tuples(st.sampled_from([".npy", ".npz"]), st.binary(max_size=300).map(lambda b: b"\x93NUMPY\x01\x00" + b)),
        st.builds(
            lambda ext, edits: (ext, mutate(valid_file_bytes(ext), edits)), st.sampled_from(READ_EXTENSIONS), EDITS
        ),
    )
)
def test_file_readers_fuzz(fuzz_dir: Path, case: tuple[str, bytes]) -> None:
    ext, data = case
    path = fuzz_dir / f"fuzz{ext}"
    path.write_bytes(data)
    try:
        flow = read_flow(path)
    except FlowFormatError:
        return
    assert flow.dtype == np.float32 and flow.ndim == 3 and flow.shape[2] == 2


def test_npy_header_that_breaks_the_tokenizer(tmp_path: Path) -> None:
    header = b"{'descr': 1 " + b" " * 19 + b"\n"
    (tmp_path / "a.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
    with pytest.raises(FlowFormatError, match="not a valid .npy"):
        read_flow(tmp_path / "a.npy")


# ---------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("ext", SUPPORTED_WRITE_EXTENSIONS)
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_write_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ext: str, error: type[BaseException]
) -> None:
    def half_written_then_fail(src: Path, dst: Path) -> None:
        assert Path(src).stat().st_size > 0  # the temp file really held data when we failed
        raise error("interrupted")

    monkeypatch.setattr(atomic_module.os, "replace", half_written_then_fail)
    with pytest.raises(error):
        write_flow(tmp_path / f"out{ext}", sample_flow())
    assert list(tmp_path.iterdir()) == []


def test_failed_write_mid_stream_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.npy"
    target.write_bytes(b"old")

    def partial_save(file, array, *args, **kwargs) -> None:
        file.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", partial_save)
    with pytest.raises(KeyboardInterrupt):
        write_flow(target, sample_flow())
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]
    assert target.read_bytes() == b"old"
