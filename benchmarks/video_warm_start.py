"""Video: speed and accuracy of `raft video`'s engine with and without warm start.

Each clip is decoded once (its first ``--max-frames`` frames, scaled so the longer side is at
most ``--max-side``) and streamed through ``FlowEngine.estimate_sequence``, the code `raft video`
runs, cold and warm-started, for each iteration cap. Per run it reports pairs per second (the
engine's own time, not decoding), the mean iterations the adaptive stop used, and the
photometric error: the mean |frame1 - frame2 warped back by the flow| (grey levels, pixels whose
sample point lies inside the frame), the only accuracy measure a clip without ground truth has.

The cave_2 clip holds Sintel cave_2 clean: its frame k is Sintel frame k+1 (checked by comparing
the decoded frame with the PNG), so its pair 1 -> 2 has ground truth, Sintel frame_0002.flo;
there the EPE is reported as well (a warm start from pair 0 -> 1).

    python benchmarks/video_warm_start.py --weights weights/raft-small.pt --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from rafttool.api import FlowEngine
from rafttool.engine.model import DEFAULT_TOLERANCES
from rafttool.evaluate import endpoint_error
from rafttool.flowops import warp_backward
from rafttool.io.flowfile import read_flow
from rafttool.io.images import read_image
from rafttool.io.video import open_frames

GT_CLIP = "mmflow_demo/sintel_cave_2_clean_demo.mp4"
GT_PAIR = 1  # video frames 1 -> 2 = Sintel frames 2 -> 3
GT_FLOW = "sintel/training/flow/cave_2/frame_0002.flo"
GT_FRAME = "sintel/training/clean/cave_2/frame_0002.png"  # must equal video frame GT_PAIR


def decode(path: Path, max_frames: int, max_side: int) -> list[np.ndarray]:
    source = open_frames(path)
    scale = min(1.0, max_side / max(source.info.width, source.info.height))
    return [frame for _, frame in itertools.islice(source.frames(0, None, 1, scale), max_frames)]


def photometric_error(image1: np.ndarray, image2: np.ndarray, flow: np.ndarray) -> float:
    warped, inside = warp_backward(image2.astype(np.float32), flow)
    return float(np.abs(image1.astype(np.float32) - warped).mean(axis=-1)[inside].mean())


def run_clip(engine: FlowEngine, frames: list[np.ndarray], iters: int, warm: bool, gt: np.ndarray | None) -> dict:
    seconds, used, errors, epe = 0.0, [], [], None
    for index, pair in enumerate(engine.estimate_sequence(frames, iters=iters, warm_start=warm)):
        seconds += pair.seconds
        used.append(pair.result.iterations_run)
        errors.append(photometric_error(pair.image1, pair.image2, pair.flow))
        if gt is not None and index == GT_PAIR:
            epe = float(endpoint_error(pair.flow, gt).mean())
    return {
        "pairs/s": len(used) / seconds,
        "mean iterations": float(np.mean(used)),
        "photometric error": float(np.mean(errors)),
        **({"cave_2 EPE": epe} if epe is not None else {}),
    }


def ground_truth(data: Path, frames: list[np.ndarray]) -> np.ndarray | None:
    """Sintel's flow for the GT pair, if the clip's frame matches the Sintel frame it should be."""
    if not (data / GT_FLOW).exists() or len(frames) <= GT_PAIR + 1:
        return None
    sintel = read_image(data / GT_FRAME).astype(np.float32)
    if sintel.shape != frames[GT_PAIR].shape:
        return None
    difference = float(np.abs(sintel - frames[GT_PAIR]).mean())
    if difference > 8.0:  # video compression leaves ~3.5 grey levels; another frame differs by ~14
        raise SystemExit(f"video frame {GT_PAIR} differs from {GT_FRAME} by {difference:.1f} grey levels: mapping changed?")
    return read_flow(data / GT_FLOW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding videos/")
    parser.add_argument("--weights", help="RAFT weights (default: the bundled RAFT-small)")
    parser.add_argument("--model", default="small", choices=["small", "large"])
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--max-side", type=int, default=1024, help="downscale larger clips to this longer side")
    parser.add_argument("--iters", type=int, nargs="+", default=[4, 8, 12], help="iteration caps to compare")
    parser.add_argument("--tolerance", type=float, help="adaptive stop (px); negative: fixed iterations (default: the model's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    clips = sorted((args.data / "videos").rglob("*.mp4"))
    if not clips:
        raise SystemExit(f"no .mp4 clips under {args.data / 'videos'}")
    tolerance = DEFAULT_TOLERANCES[args.model] if args.tolerance is None else args.tolerance
    if tolerance < 0:
        tolerance = None
    engine = FlowEngine(args.model, args.weights, "cpu", tolerance=tolerance)
    rows = []
    for clip in clips:
        name = str(clip.relative_to(args.data / "videos"))
        frames = decode(clip, args.max_frames, args.max_side)
        gt = ground_truth(args.data, frames) if name == GT_CLIP else None
        list(engine.estimate_sequence(frames[:2], iters=1))  # warm-up: first-call allocations at this size
        for iters, warm in itertools.product(args.iters, (False, True)):
            row = {"clip": name, "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}", "pairs": len(frames) - 1,
                   "iters": iters, "warm start": warm, **run_clip(engine, frames, iters, warm, gt)}  # fmt: skip
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
