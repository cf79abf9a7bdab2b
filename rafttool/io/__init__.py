"""Flow-file formats and image input/output; every bad input raises ``FlowFormatError``."""

from rafttool.io.atomic import atomic_write
from rafttool.io.errors import FlowFormatError
from rafttool.io.flo import decode_flo, encode_flo, read_flo, write_flo
from rafttool.io.flowfile import SUPPORTED_READ_EXTENSIONS, SUPPORTED_WRITE_EXTENSIONS, read_flow, write_flow
from rafttool.io.images import read_image, to_rgb_uint8, write_image
from rafttool.io.kitti import decode_kitti_flow, encode_kitti_flow, read_kitti_flow, write_kitti_flow

__all__ = [
    "SUPPORTED_READ_EXTENSIONS",
    "SUPPORTED_WRITE_EXTENSIONS",
    "FlowFormatError",
    "atomic_write",
    "decode_flo",
    "decode_kitti_flow",
    "encode_flo",
    "encode_kitti_flow",
    "read_flo",
    "read_flow",
    "read_image",
    "read_kitti_flow",
    "to_rgb_uint8",
    "write_flo",
    "write_flow",
    "write_image",
    "write_kitti_flow",
]
