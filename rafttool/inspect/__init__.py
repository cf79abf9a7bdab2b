"""``raft inspect``: look inside one RAFT forward pass, section by section as the paper explains it."""

from rafttool.inspect.capture import Capture, PixelError, PixelTrace, capture, check_inputs, parse_pixel, to_json
from rafttool.inspect.report import write_report

__all__ = ["Capture", "PixelError", "PixelTrace", "capture", "check_inputs", "parse_pixel", "to_json", "write_report"]
