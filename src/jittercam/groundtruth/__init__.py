"""Ground truth for explanations (issue 14): a synthetic dataset whose class evidence is known exactly,
two-object images at a chosen separation, and a small CNN trained on it (`jittercam groundtruth train`).

Importing this package registers the model source (`load_model`, in `train`) and the benchmark dataset
(`open_dataset`, in `benchmark`)."""
from .benchmark import GroundTruthBenchmark, for_model
from .dataset import MEAN, PATTERNS, STD, GroundTruthDataset, Item, Pair, pattern
from .model import GroundTruthNet, build
from .train import TrainResult, default_path, load, occlusion_check, train

__all__ = [
    "MEAN",
    "PATTERNS",
    "STD",
    "GroundTruthBenchmark",
    "GroundTruthDataset",
    "GroundTruthNet",
    "Item",
    "Pair",
    "TrainResult",
    "build",
    "default_path",
    "for_model",
    "load",
    "occlusion_check",
    "pattern",
    "train",
]
