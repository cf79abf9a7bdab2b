"""An optional record of a forward pass's intermediate tensors, for inspection and teaching.

The model calls ``trace.record`` at each stage when a trace is passed, so whatever reads the
internals sees exactly what the engine computed, not a second copy of the model's code.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch


class Trace:
    """Collects named tensors (detached, on the CPU); per-iteration values accumulate in lists.

    ``objects`` keeps non-tensor helpers such as the correlation pyramid, so its lookup can be
    queried again for arbitrary points after the pass.
    """

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.per_iteration: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.objects: dict[str, Any] = {}

    def record(self, name: str, value: torch.Tensor) -> None:
        self.values[name] = value.detach().float().cpu()

    def record_iteration(self, name: str, value: torch.Tensor) -> None:
        self.per_iteration[name].append(value.detach().float().cpu())

    def keep(self, name: str, obj: Any) -> None:
        self.objects[name] = obj
