"""Peak memory and time of one pair at large frame sizes, stored vs on-demand correlation.

Each configuration runs in its own subprocess, so its peak resident set size (VmHWM) is its own:
the weights, both frames, the encoders' activations and the correlation (stored volume or
pooled features). Random weights and frames: memory and time do not depend on them, and the
iterations are fixed (no adaptive stop) so every run does the same work.

    python benchmarks/memory_large_frames.py                       # 1920x1080, full vs on_demand
    python benchmarks/memory_large_frames.py --sizes 3840x2160 --corr on_demand
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from rafttool.engine.correlation import full_volume_bytes


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(model_name: str, width: int, height: int, corr: str, iters: int) -> None:
    import torch

    from rafttool.engine.model import build_model

    torch.manual_seed(0)
    model = build_model(model_name).eval()
    image = torch.rand(1, 3, height, width + 8) * 255
    image1, image2 = image[..., 8:].contiguous(), image[..., :-8].contiguous()
    del image
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        output = model(image1, image2, iters=iters, corr_mode=corr)
    record = {
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_gb": peak_rss_bytes() / 2**30,
        "iterations": output.iterations_run,
        "finite": bool(torch.isfinite(output.flow).all()),
    }
    print(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["small", "large"])
    parser.add_argument("--sizes", nargs="+", default=["1920x1080"], help="WIDTHxHEIGHT")
    parser.add_argument("--corr", nargs="+", default=["full", "on_demand"])
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "SIZE", "CORR", "ITERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, size, corr, iters = args.child
        width, height = (int(v) for v in size.split("x"))
        child(model, width, height, corr, int(iters))
        return
    print(f"{'model':<6} {'size':>10} {'corr':>10} {'volume GB':>10} {'peak RSS GB':>12} {'wall s':>8} {'cpu s':>8} {'iters':>6}")
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        volume = full_volume_bytes(1, -(-height // 8), -(-width // 8)) / 2**30
        for model in args.models:
            for corr in args.corr:
                command = [sys.executable, __file__, "--child", model, size, corr, str(args.iters)]
                run = subprocess.run(command, capture_output=True, text=True)
                if run.returncode != 0:
                    reason = (run.stderr.strip().splitlines() or [f"exit code {run.returncode}"])[-1]
                    print(f"{model:<6} {size:>10} {corr:>10} {volume:10.1f}  failed: {reason}")
                    continue
                r = json.loads(run.stdout.strip().splitlines()[-1])
                print(
                    f"{model:<6} {size:>10} {corr:>10} {volume:10.1f} {r['peak_rss_gb']:12.2f} "
                    f"{r['seconds']:8.1f} {r['cpu_seconds']:8.1f} {r['iterations']:6d}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
