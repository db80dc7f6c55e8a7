"""jittercam: Jitter-CAM and the CAM family for PyTorch image classifiers."""
from . import data
from .errors import JitterCamError
from .maps import normalize, resize, upsample
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
    "model_card",
    "normalize",
    "register_method",
    "resize",
    "upsample",
]
