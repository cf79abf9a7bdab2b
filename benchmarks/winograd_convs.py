"""Winograd against direct convolutions, and the lookup, at the sizes the update loop sees.

Each row times one convolution of the update block (or an encoder layer, or a larger frame's
grid) on random channels-last input: ``F.conv2d`` directly and by
:func:`rafttool.engine.winograd.convolve` with its input buffer kept (as within a pass).
The last column says whether the engine would take the Winograd route at that size.
The last rows time one correlation lookup of a stored RAFT-small volume at 1024x436 (a 128x55
grid), in the x-major window order the update block's weights take and in the y-major order
the CPU inference steps take (their first convolution's weights reordered instead).

    python benchmarks/winograd_convs.py --threads 1
    python benchmarks/winograd_convs.py --quick   # every row at 1/8 the size: checks it runs
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from rafttool.engine import winograd
from rafttool.engine.correlation import VolumeWorkspace, build_correlation
from rafttool.engine.memory import keep_freed_memory
from rafttool.engine.model import coordinate_grid

# (what, C_in, C_out, kernel, height, width) at 1/8 resolution unless said otherwise
CASES = [
    ("RAFT-small GRU gates z, r (1024x436)", 178, 192, (3, 3), 55, 128),
    ("RAFT-small flow head", 96, 128, (3, 3), 55, 128),
    ("RAFT-small motion encoder fuse", 128, 80, (3, 3), 55, 128),
    ("RAFT-large GRU gates, 1x5", 256, 256, (1, 5), 55, 128),
    ("RAFT-large GRU gates, 5x1", 256, 256, (5, 1), 55, 128),
    ("RAFT-large motion encoder", 256, 192, (3, 3), 55, 128),
    ("narrow: 64 -> 32", 64, 32, (3, 3), 55, 128),
    ("RAFT-small GRU gates at 1280x720", 178, 192, (3, 3), 90, 160),
    ("RAFT-small GRU gates at 1920x1080", 178, 192, (3, 3), 135, 240),
    ("RAFT-large encoder, 1/4 resolution", 96, 96, (3, 3), 110, 256),
    ("RAFT-large encoder, 1/2 resolution", 64, 64, (3, 3), 220, 512),
]


def best_ms(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row; the best counts")
    parser.add_argument("--quick", action="store_true", help="every grid 8x smaller, one timed run: checks the script runs")
    args = parser.parse_args()
    shrink, repeats = (8, 1) if args.quick else (1, args.repeats)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as FlowEngine does
    torch.manual_seed(0)
    print(f"{'convolution':<40} {'shape':>22} {'direct ms':>10} {'winograd ms':>12} {'fits cache':>10}")
    with torch.inference_mode():
        for what, c_in, c_out, kernel, height, width in CASES:
            height, width = max(4, height // shrink), max(4, width // shrink)
            conv = nn.Conv2d(c_in, c_out, kernel, padding=(kernel[0] // 2, kernel[1] // 2))
            x = torch.randn(1, c_in, height, width).contiguous(memory_format=torch.channels_last)
            direct = best_ms(lambda: conv(x), repeats)
            weight, buffer = winograd.transform_weight(conv.weight), winograd.TileBuffer(kernel)
            wino = best_ms(lambda: winograd.convolve([x], weight, kernel, conv.bias, buffer), repeats)
            fits = winograd.fits(x.shape, c_in, kernel) and winograd.worthwhile(conv)
            shape = f"{c_in}->{c_out} {kernel[0]}x{kernel[1]} {height}x{width}"
            print(f"{what:<40} {shape:>22} {direct:10.3f} {wino:12.3f} {str(fits):>10}")
        height, width = max(16, 55 // shrink), max(16, 128 // shrink)  # 4 levels need 8 rows
        fmap1, fmap2 = torch.randn(2, 1, 128, height, width)
        correlation = build_correlation(fmap1, fmap2, 4, 3, "full", VolumeWorkspace())
        coords = coordinate_grid(1, height, width, torch.device("cpu")) + torch.randn(1, 2, height, width) * 3
        for order, y_major in (("x-major", False), ("y-major", True)):
            lookup = best_ms(lambda: correlation(coords, y_major), repeats)
            print(f"RAFT-small lookup (radius 3, {width}x{height} grid), {order}: {lookup:.3f} ms")


if __name__ == "__main__":
    main()
