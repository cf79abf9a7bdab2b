"""rafttool: dense optical flow with RAFT, from Python or the `raft` command line.

>>> import rafttool
>>> flow = rafttool.estimate_flow("frame1.png", "frame2.png")  # doctest: +SKIP
>>> flow.shape  # (height, width, 2): per-pixel (u, v) displacement in pixels  # doctest: +SKIP
"""

from rafttool.api import FlowEngine, FlowResult, estimate_flow
from rafttool.engine.model import RAFT, raft_large, raft_small
from rafttool.engine.weights import average_weights, read_weights, save_weights

__all__ = ["FlowEngine", "FlowResult", "estimate_flow", "RAFT", "raft_large", "raft_small", "average_weights", "read_weights", "save_weights"]
__version__ = "0.1.0"
