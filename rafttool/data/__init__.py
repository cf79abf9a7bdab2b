"""Real optical-flow datasets: finding pairs in the benchmarks' own layouts, and augmenting them for training."""

from rafttool.data.augment import FlowAugmentor, TrainingPairs, resize_sparse_flow
from rafttool.data.datasets import (
    DatasetError,
    FlowSample,
    detect_datasets,
    find_chairs,
    find_hd1k,
    find_kitti,
    find_list,
    find_middlebury,
    find_sintel,
    find_things,
)

__all__ = [
    "DatasetError",
    "FlowAugmentor",
    "FlowSample",
    "TrainingPairs",
    "detect_datasets",
    "find_chairs",
    "find_hd1k",
    "find_kitti",
    "find_list",
    "find_middlebury",
    "find_sintel",
    "find_things",
    "resize_sparse_flow",
]
