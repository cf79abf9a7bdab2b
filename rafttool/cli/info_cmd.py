"""``raft info``: what a file is and what is in it, recognised by content rather than by name."""

from __future__ import annotations

import json as jsonlib
import zipfile
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
import typer

from rafttool.cli.common import DebugOption, reports_errors
from rafttool.engine.weights import read_weights
from rafttool.flowops import flow_magnitude_stats
from rafttool.io import FlowFormatError, read_flow
from rafttool.io.errors import open_input
from rafttool.io.images import decode_unchanged
from rafttool.io.video import VideoError, open_frames

EXAMPLES = """\
[bold]Examples[/bold]

  raft info flow.flo

  raft info weights/raft-small.pt --json

  raft info clip.mp4

Recognises flow files (.flo, KITTI .png, .npy, .npz, .pfm), RAFT weights (original,
torchvision, rafttool), videos and folders of frames, and images."""

_WEIGHTS_EXTENSIONS = (".pt", ".pth", ".ckpt", ".bin", ".tar")


def _is_kitti_flow(data: bytes, name: str) -> bool:
    """KITTI flow is a 3-channel 16-bit PNG whose third channel (valid) holds only 0 and 1."""
    pixels = decode_unchanged(data, name)
    return pixels.dtype == np.uint16 and pixels.ndim == 3 and pixels.shape[2] == 3 and int(pixels[..., 0].max()) <= 1


def sniff(path: Path) -> str:
    """'flow', 'weights', 'video' or 'image', from the file's first bytes (the name only breaks ties)."""
    if path.is_dir():
        return "video"  # a folder of frames
    with open_input(path, "file") as f:
        head = f.read(512)
    suffix = path.suffix.lower()
    if head.startswith((b"PIEH", b"PF", b"Pf", b"\x93NUMPY")):
        return "flow"
    if head.startswith(b"PK"):  # zip: torch.save archives hold data.pkl, numpy's .npz hold .npy members
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            names = []
        if any(n.endswith("data.pkl") for n in names):
            return "weights"
        if names and all(n.endswith(".npy") for n in names):
            return "flow"
    if head.startswith(b"\x80") or suffix in _WEIGHTS_EXTENSIONS:  # legacy (pre-zip) torch pickles
        return "weights"
    if head.startswith(b"\x89PNG"):
        return "flow" if _is_kitti_flow(path.read_bytes(), str(path)) else "image"
    if cv2.haveImageReader(str(path)):
        return "image"
    return "video"


def _flow_info(path: Path) -> dict[str, Any]:
    return {"kind": "flow", "path": str(path), "format": path.suffix.lower().lstrip("."), **flow_magnitude_stats(read_flow(path))}


def _weights_info(path: Path) -> dict[str, Any]:
    weights = read_weights(path)
    return {
        "kind": "weights",
        "path": str(path),
        "model": f"raft-{weights.model}",
        "layout": weights.layout,
        "parameters": int(sum(t.numel() for t in weights.state_dict.values())),
        "metadata": weights.metadata,
    }


def _video_info(path: Path) -> dict[str, Any]:
    info = open_frames(path).info
    return {
        "kind": "video" if info.kind == "video" else "frames",
        "path": str(path),
        "frames": info.frame_count,
        "fps": round(info.fps, 3),
        "width": info.width,
        "height": info.height,
        "duration": round(info.duration, 3),
        **({"codec": info.codec} if info.codec else {}),
    }


def _image_info(path: Path) -> dict[str, Any]:
    pixels = decode_unchanged(path.read_bytes(), f"cannot read image '{path}'")
    return {
        "kind": "image",
        "path": str(path),
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "channels": 1 if pixels.ndim == 2 else int(pixels.shape[2]),
        "dtype": str(pixels.dtype),
    }


_DESCRIBE = {"flow": _flow_info, "weights": _weights_info, "video": _video_info, "image": _image_info}


def _lines(fields: dict[str, Any], prefix: str = "") -> list[str]:
    """Nested records as 'key: value' lines, nested keys joined with dots."""
    lines = []
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            lines += _lines(value, f"{prefix}{key}.")
        else:
            shown = f"{value:.4g}" if isinstance(value, float) else jsonlib.dumps(value) if isinstance(value, (dict, list)) else value
            lines.append(f"{prefix}{key}: {shown}")
    return lines


@reports_errors
def info(
    path: Annotated[Path, typer.Argument(help="A flow file, weights file, video, folder of frames or image.", show_default=False)],
    json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    debug: DebugOption = False,
) -> None:
    """Describe a flow file, RAFT weights, a video or an image."""
    kind = sniff(path)
    try:
        fields = _DESCRIBE[kind](path)
    except VideoError:
        if path.is_dir():
            raise
        raise FlowFormatError(f"cannot tell what '{path}' is: not a flow file, RAFT weights, a video OpenCV can open, or an image") from None
    typer.echo(jsonlib.dumps(fields, default=str) if json else "\n".join(_lines(fields)))
