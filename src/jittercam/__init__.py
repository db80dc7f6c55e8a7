"""jittercam: Jitter-CAM and the CAM family for PyTorch image classifiers."""
import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    # torch's OpenMP threads spin while they wait for each other; when another process holds a core the
    # spinning thread starves the working one (Jitter-CAM: over 60 s per image instead of 4 s under a
    # 2-process load on 2 cores). Passive waiting costs nothing measurable on an idle machine. OpenMP reads
    # this once, when torch loads it, so it only helps when jittercam is imported before torch.
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import data
from .errors import JitterCamError
from .maps import minmax, resize, upsample
from .methods import (
    CAMERAS,
    RISE,
    AblationCAM,
    CAMMethod,
    GradCAM,
    GradCAMPlusPlus,
    Guided,
    GuidedBackprop,
    HiResCAM,
    JitterCAM,
    LayerCAM,
    LayerCapture,
    ScoreCAM,
    UpscaleCAM,
    XGradCAM,
    available_methods,
    create,
    register_method,
)
from .models import ModelCard, TargetLayer, available_models, find_target_layer, load_model, model_card

# plug-in packages that register model sources and datasets of their own (as torchvision's __init__
# imports its subpackages); the package's __init__ is the container, not a layer
from . import groundtruth  # noqa: F401  # isort: skip
from . import sources  # noqa: F401  # isort: skip

__version__ = "0.1.0"

__all__ = [
    "CAMERAS",
    "RISE",
    "AblationCAM",
    "Guided",
    "GuidedBackprop",
    "HiResCAM",
    "LayerCAM",
    "LayerCapture",
    "ScoreCAM",
    "UpscaleCAM",
    "data",
    "CAMMethod",
    "GradCAM",
    "GradCAMPlusPlus",
    "JitterCAM",
    "JitterCamError",
    "ModelCard",
    "TargetLayer",
    "XGradCAM",
    "available_methods",
    "available_models",
    "create",
    "find_target_layer",
    "load_model",
    "minmax",
    "model_card",
    "register_method",
    "resize",
    "upsample",
]
