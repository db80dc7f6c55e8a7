"""Explanation methods and the one registry that maps names to them."""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import JitterCamError
from ..inputs import Target, check_targets, default_batch_size
from .base import CAMMethod, activations_and_gradients
from .gradient import GradCAM, GradCAMPlusPlus, XGradCAM
from .jitter import JitterCAM

_METHODS: dict[str, type[CAMMethod]] = {}


def register_method(name: str) -> Callable[[type[CAMMethod]], type[CAMMethod]]:
    """Class decorator: make a method available to `create` and the CLI under `name`."""

    def decorator(cls: type[CAMMethod]) -> type[CAMMethod]:
        _METHODS[name] = cls
        return cls

    return decorator


for _name, _cls in {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM}.items():
    register_method(_name)(_cls)


def available_methods() -> list[str]:
    """Registered names, plus `jittercam` (over Grad-CAM) and `jittercam:BASE` for every other base."""
    return sorted(_METHODS) + ["jittercam"] + [f"jittercam:{name}" for name in sorted(_METHODS)]


def method_class(name: str) -> type[CAMMethod]:
    if name not in _METHODS:
        raise JitterCamError(f"unknown method {name!r}; choose from: {', '.join(available_methods())}")
    return _METHODS[name]


def check_method_name(name: str) -> None:
    """Raise `JitterCamError` for a name `create` would not know, without building anything."""
    jitter, _, base = name.partition(":")
    if jitter == "jittercam":
        method_class(base or "gradcam")
    else:
        method_class(name)


def create(name: str, model: nn.Module, **options) -> CAMMethod:
    """Build the method called `name` for `model`; `options` go to its constructor
    (`target_layer`, `batch_size`, and for Jitter-CAM `size`, `interpolation`, `count_start`)."""
    check_method_name(name)
    jitter, _, base = name.partition(":")
    if jitter == "jittercam":
        return JitterCAM(model, base=method_class(base or "gradcam"), **options)
    return method_class(name)(model, **options)


__all__ = [
    "CAMMethod",
    "GradCAM",
    "GradCAMPlusPlus",
    "JitterCAM",
    "Target",
    "XGradCAM",
    "activations_and_gradients",
    "available_methods",
    "check_method_name",
    "check_targets",
    "create",
    "default_batch_size",
    "register_method",
]
