"""Explanation methods. Each registers itself under a name (`jittercam.methods.registry`); importing
this package imports them all."""
from __future__ import annotations

from ..inputs import Target, check_targets, default_batch_size
from .base import CAMMethod, activations_and_gradients, layer_activations
from .capture import LayerCapture
from .gradient import GradCAM, GradCAMPlusPlus, XGradCAM
from .jitter import JitterCAM
from .registry import (
    available_methods,
    check_method_name,
    create,
    method_class,
    method_options,
    register_method,
    register_wrapper,
)

__all__ = [
    "CAMMethod",
    "GradCAM",
    "GradCAMPlusPlus",
    "JitterCAM",
    "LayerCapture",
    "Target",
    "XGradCAM",
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
