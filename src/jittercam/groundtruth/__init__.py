"""Ground truth for explanations (issue 14): a synthetic dataset whose class evidence is known exactly,
two-object images at a chosen separation, and a small CNN trained on it (`jittercam groundtruth train`)."""
from .dataset import MEAN, PATTERNS, STD, GroundTruthDataset, Item, Pair, pattern
from .model import GroundTruthNet, build
from .train import TrainResult, default_path, load, occlusion_check, train

__all__ = [
    "MEAN",
    "PATTERNS",
    "STD",
    "GroundTruthDataset",
    "GroundTruthNet",
    "Item",
    "Pair",
    "TrainResult",
    "build",
    "default_path",
    "load",
    "occlusion_check",
    "pattern",
    "train",
]
