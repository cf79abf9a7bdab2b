"""Read and write flow fields in any supported format, chosen by the file extension.

Every reader returns float32 (H, W, 2) with NaN in both components of unknown or invalid pixels,
so callers never need to know which convention the file used.
"""

from __future__ import annotations

import os
import re
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rafttool.io.atomic import atomic_write
from rafttool.io.errors import FlowFormatError, as_flow_array, check_size, open_input
from rafttool.io.flo import read_flo, write_flo
from rafttool.io.kitti import read_kitti_flow, write_kitti_flow

SUPPORTED_READ_EXTENSIONS = (".flo", ".png", ".npy", ".npz", ".pfm")
SUPPORTED_WRITE_EXTENSIONS = (".flo", ".png", ".npy", ".npz")
NPZ_KEY = "flow"

# Errors numpy's header parser (tokenize, literal_eval) and zipfile raise on malformed bytes;
# anything else is a bug and should surface.
_PARSE_ERRORS = (
    ValueError,
    EOFError,
    SyntaxError,
    tokenize.TokenError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,
    RuntimeError,
)


def _one_line(exc: BaseException) -> str:
    """Parser messages can quote whole headers; keep the CLI's error to one short line."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 120 else text[:117] + "..."


def _finite_or_nan(flow: np.ndarray) -> np.ndarray:
    """Mark pixels with any non-finite component unknown in both components."""
    flow[~np.isfinite(flow).all(axis=2)] = np.nan
    return flow


def _read_npy_stream(stream: BinaryIO, available: int, name: str) -> np.ndarray:
    """Read one .npy array from ``stream`` without pickle, validating the header before allocating.

    ``available`` is the number of bytes from the stream's current position to its end.
    """
    start = stream.tell()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy's "created on Python 2" notice: noise for a CLI
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise FlowFormatError(
                    f"{name}: unsupported .npy format version {version}; save it with numpy.save"
                )
    except FlowFormatError:
        raise
    except _PARSE_ERRORS as exc:
        raise FlowFormatError(
            f"{name}: not a valid .npy array ({_one_line(exc)}); save the flow with numpy.save"
        ) from None
    if dtype.hasobject or not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise FlowFormatError(f"{name}: array dtype {dtype} is not a real number type; save float32 flow")
    if len(shape) != 3 or shape[2] != 2:
        hint = " (channels first? transpose to (H, W, 2))" if len(shape) == 3 and shape[0] == 2 else ""
        raise FlowFormatError(f"{name}: expected an array of shape (H, W, 2), got {tuple(shape)}{hint}")
    check_size(shape[0], shape[1], name)
    nbytes = shape[0] * shape[1] * 2 * dtype.itemsize
    remaining = available - (stream.tell() - start)
    if remaining != nbytes:
        raise FlowFormatError(f"{name}: array data is {remaining} bytes, its header says {nbytes}; the file is corrupt")
    values = np.frombuffer(stream.read(nbytes), dtype=dtype)
    return _finite_or_nan(values.reshape(shape, order="F" if fortran else "C").astype(np.float32))


def _read_npy(path: Path) -> np.ndarray:
    with open_input(path, ".npy file") as f:
        return _read_npy_stream(f, os.fstat(f.fileno()).st_size, str(path))


def _read_npz(path: Path) -> np.ndarray:
    """Read the array under key 'flow', or the only array in the archive whatever its key."""
    name = str(path)
    with open_input(path, ".npz file") as f:
        try:
            with zipfile.ZipFile(f) as archive:
                members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
                if NPZ_KEY in members:
                    info = members[NPZ_KEY]
                elif len(members) == 1:
                    (info,) = members.values()
                else:
                    raise FlowFormatError(
                        f"{name}: archive holds {sorted(members) or 'no arrays'} but no '{NPZ_KEY}'; "
                        f"save it with numpy.savez(path, {NPZ_KEY}=flow)"
                    )
                with archive.open(info) as member:
                    return _read_npy_stream(member, info.file_size, f"{name}[{info.filename}]")
        except FlowFormatError:
            raise
        except (*_PARSE_ERRORS, OSError) as exc:  # corrupt zip offsets make zipfile seek before the start
            raise FlowFormatError(
                f"{name}: not a valid .npz archive ({_one_line(exc)}); save it with numpy.savez"
            ) from None


_PFM_HEADER = re.compile(rb"\A(PF|Pf)\s+(\d+)\s+(\d+)\s+([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s")


def _read_pfm(path: Path) -> np.ndarray:
    """Read the first two channels of a PFM (rows stored bottom to top; negative scale = little-endian)."""
    name = str(path)
    with open_input(path, ".pfm file") as f:
        match = _PFM_HEADER.match(f.read(256))
        if match is None:
            raise FlowFormatError(f"{name}: not a PFM file (expected a 'PF' or 'Pf' header)")
        kind, width, height, scale = match.groups()
        if kind == b"Pf":
            raise FlowFormatError(
                f"{name}: single-channel PFM (disparity?) has no (u, v); flow needs a 3-channel 'PF' file"
            )
        width, height, scale = int(width), int(height), float(scale)
        check_size(height, width, name)
        if scale == 0.0:
            raise FlowFormatError(f"{name}: PFM scale is 0, so the byte order is undefined; the file is corrupt")
        expected = 3 * 4 * width * height
        found = os.fstat(f.fileno()).st_size - match.end()
        if found != expected:
            raise FlowFormatError(
                f"{name}: PFM data is {found} bytes, {width}x{height} needs {expected}; the file is corrupt"
            )
        f.seek(match.end())
        data = f.read()
    values = np.frombuffer(data, dtype="<f4" if scale < 0 else ">f4")
    flow = values.reshape(height, width, 3)[::-1, :, :2].astype(np.float32)
    return _finite_or_nan(flow)


def _read_kitti(path: Path) -> np.ndarray:
    flow, valid = read_kitti_flow(path)
    flow[~valid] = np.nan
    return flow


def _write_npy(path: Path, flow: np.ndarray) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, flow)


def _write_npz(path: Path, flow: np.ndarray) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **{NPZ_KEY: flow})


_READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".flo": read_flo,
    ".png": _read_kitti,
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".pfm": _read_pfm,
}
_WRITERS: dict[str, Callable[[Path, np.ndarray], None]] = {
    ".flo": write_flo,
    ".png": write_kitti_flow,
    ".npy": _write_npy,
    ".npz": _write_npz,
}


def _extension(path: Path, supported: tuple[str, ...], verb: str) -> str:
    ext = path.suffix.lower()
    if ext not in supported:
        raise FlowFormatError(
            f"cannot {verb} flow '{path}': unknown extension '{path.suffix}'; use one of {', '.join(supported)}"
        )
    return ext


def read_flow(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a flow file as float32 (H, W, 2), NaN where unknown/invalid; format chosen by extension."""
    path = Path(path)
    return _READERS[_extension(path, SUPPORTED_READ_EXTENSIONS, "read")](path)


def write_flow(path: str | os.PathLike[str], flow: np.ndarray) -> None:
    """Write flow atomically in the format named by the extension; NaN pixels are stored as unknown.

    The data goes to a temp file in the same directory that replaces ``path`` only when complete.
    """
    path = Path(path)
    ext = _extension(path, SUPPORTED_WRITE_EXTENSIONS, "write")
    _WRITERS[ext](path, as_flow_array(flow))
