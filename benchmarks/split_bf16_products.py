"""Whether fp32 products computed as three bf16 products on AMX would speed up the exact path.

Each fp32 operand is split into a bf16 high part and the bf16 rounding of what is left; the
three partial products (high x high, high x low, low x high) go into one product with a three
times longer inner dimension, run with oneDNN's bf16 arithmetic for fp32 matmuls. Prints time
and max error (against float64) for fp32 and for the split form, on one large product and on
the batched shape of a RAFT-large Winograd layer at 1024x436, and the cost of splitting the input.

    python benchmarks/split_bf16_products.py --threads 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch


def _milliseconds(work: Callable[[], torch.Tensor], repeats: int) -> float:
    work()
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - start) / repeats * 1e3


def _split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    high = x.bfloat16().float()
    return high, (x - high).bfloat16().float()


def _compare(name: str, left: torch.Tensor, right: torch.Tensor, repeats: int) -> None:
    dim = left.dim() - 1
    exact = torch.matmul(left.double(), right.double())
    right_high, right_low = _split(right)
    right3 = torch.cat([right_high, right_low, right_high], dim - 1)

    def split_left() -> torch.Tensor:
        high, low = _split(left)
        return torch.cat([high, high, low], dim)

    left3 = split_left()
    torch.backends.mkldnn.matmul.fp32_precision = "ieee"
    fp32_ms = _milliseconds(lambda: torch.matmul(left, right), repeats)
    fp32_error = (torch.matmul(left, right).double() - exact).abs().max().item()
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    split_ms = _milliseconds(lambda: torch.matmul(left3, right3), repeats)
    split_error = (torch.matmul(left3, right3).double() - exact).abs().max().item()
    torch.backends.mkldnn.matmul.fp32_precision = "ieee"
    split_input_ms = _milliseconds(split_left, repeats)
    print(
        f"{name}: fp32 {fp32_ms:.2f} ms (max error {fp32_error:.1e}), three bf16 products {split_ms:.2f} ms "
        f"(max error {split_error:.1e}), splitting the input {split_input_ms:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    _compare("4096x576 by 576x256", torch.randn(4096, 576, generator=generator), torch.randn(576, 256, generator=generator), args.repeats)
    _compare(
        "Winograd batch 36 x 448x576 by 576x256",
        torch.randn(36, 448, 576, generator=generator),
        torch.randn(36, 576, 256, generator=generator),
        args.repeats,
    )


if __name__ == "__main__":
    main()
