"""The names `jittercam.data.samples` had before the datasets became registered files: the shared pieces
now live in `jittercam.data.base`, the opening in `jittercam.data.registry`. Kept so that existing imports
work; new code imports from those modules (or from `jittercam.data`)."""
from .base import (
    KINDS,
    BenchmarkDataset,
    Sample,
    box_mask,
    class_tables,
    difficult_pairs,
    input_boxes,
    model_input,
    read_difficult_flags,
    read_picture,
)
from .registry import open_dataset

__all__ = [
    "KINDS",
    "BenchmarkDataset",
    "Sample",
    "box_mask",
    "class_tables",
    "difficult_pairs",
    "input_boxes",
    "model_input",
    "open_dataset",
    "read_difficult_flags",
    "read_picture",
]
