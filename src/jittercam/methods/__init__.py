"""Explanation methods. Each registers itself under a name (`jittercam.methods.registry`); importing
this package imports them all."""
from __future__ import annotations

import importlib
import pkgutil

from ..inputs import Target, check_targets, default_batch_size
from .base import CAMMethod, activations_and_gradients, layer_activations
from .capture import LayerCapture

# imported in the order `compare --methods all` draws them: gradient CAMs, perturbation methods, the
# high-resolution competitors, guided maps, baselines, then the wrappers
from .gradient import GradCAM, GradCAMPlusPlus, XGradCAM  # isort: skip
from .scorecam import ScoreCAM  # isort: skip
from .ablation import AblationCAM  # isort: skip
from .rise import RISE  # isort: skip
from .layercam import HiResCAM, LayerCAM  # isort: skip
from .cameras import CAMERAS  # isort: skip
from .guided import Guided, GuidedBackprop  # isort: skip
from .baselines import CentreBaseline, ConstantBaseline, RandomBaseline  # isort: skip
from .jitter import EnlargingMethod, JitterCAM  # isort: skip
from .upscale import UpscaleCAM  # isort: skip
# the methods the peers ship and the high-resolution competitors (issue 23), in the figure's order after those
from .eigen import KPCACAM, EigenCAM, EigenGradCAM  # isort: skip
from .fem import FEM  # isort: skip
from .elementwise import GradCAMElementWise  # isort: skip
from .shapley import ShapleyCAM  # isort: skip
from .finer import FinerCAM  # isort: skip
from .smoothgrad import SmoothGradCAMPlusPlus  # isort: skip
from .sscam import ISCAM, SSCAM  # isort: skip
from .fullgrad import FullGrad  # isort: skip
from .refine import RefineCAM  # isort: skip
from .polycam import PolyCAM  # isort: skip
from .winsor import WinsorCAM  # isort: skip
from .rollout import AttentionRollout  # isort: skip
from .legrad import LeGrad  # isort: skip
from .registry import (
    available_methods,
    check_method_name,
    create,
    method_class,
    method_options,
    register_method,
    register_wrapper,
)

# every module of this package defines and registers its methods: import them all, so that adding a
# method touches one file
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "CAMERAS",
    "AblationCAM",
    "CAMMethod",
    "CentreBaseline",
    "ConstantBaseline",
    "EnlargingMethod",
    "Guided",
    "GuidedBackprop",
    "HiResCAM",
    "LayerCAM",
    "RISE",
    "RandomBaseline",
    "ScoreCAM",
    "UpscaleCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "JitterCAM",
    "LayerCapture",
    "Target",
    "XGradCAM",
    "EigenCAM",
    "EigenGradCAM",
    "KPCACAM",
    "FEM",
    "GradCAMElementWise",
    "ShapleyCAM",
    "FinerCAM",
    "SmoothGradCAMPlusPlus",
    "SSCAM",
    "ISCAM",
    "FullGrad",
    "RefineCAM",
    "PolyCAM",
    "WinsorCAM",
    "AttentionRollout",
    "LeGrad",
    "activations_and_gradients",
    "available_methods",
    "check_method_name",
    "check_targets",
    "create",
    "default_batch_size",
    "layer_activations",
    "method_class",
    "method_options",
    "register_method",
    "register_wrapper",
]
