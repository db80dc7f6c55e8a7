"""The probe: which layer of any classifier a CAM method weights, found by one forward pass.

`find_target_layer` records every module call of a no-grad forward of a fixed random image and describes
the target layer as a `TargetLayer`: the last module output that is still a 4-D map with a spatial size
above 1 before global pooling, its map size m and total stride k at the input size. No table of model
names is involved.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .card import model_card, model_device, model_dtype
from .errors import JitterCamError

__all__ = ["TargetLayer", "activation_input", "find_target_layer"]


@dataclass(frozen=True, eq=False)
class TargetLayer:
    """The layer whose activations a CAM weights, and its geometry at `input_size`.

    Attributes:
        name: the module's name in `model.named_modules()`.
        module: the module itself.
        call: which call of `module` in one forward is meant (0-based): a module may run more than once
            (EfficientNet-Lite's activation runs in the stem and in the head).
        input_size: the square input size, in pixels, the geometry was probed at.
        map_size: m, the side of the layer's (square) map at `input_size`.
        stride: k = round(input_size / m), the network's total stride there (at least 1).
        num_classes: the number of the model's outputs.
        rectify: the map is taken before the network's functional ReLU (DenseNet's `features`), so the
            methods apply a ReLU to it.
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
    except Exception as exc:  # noqa: BLE001 - whatever an arbitrary model raises on the probe is reported
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
    shape.

    Args:
        model: the classifier.
        layer: its probed target layer (`find_target_layer`).

    Returns:
        The module's name in `model.named_modules()`.

    Raises:
        JitterCamError: the layer's map is not an activation's output (DenseNet's `features` is the norm
            itself, rectified by the methods), no such module exists (Inception's `Mixed_7c` concatenates
            its branches), or it runs again after feeding the layer.
    """
    records, _ = _record_forward(model, layer.input_size)
    position = next(i for i, r in enumerate(records) if r.module is layer.module and r.call == layer.call)
    chosen = records[position]
    if chosen.kind != "other" or chosen.weighted:
        raise JitterCamError(f"layer {layer.name!r} is not an activation's output, so there is no layer before "
                             "its activation; name both layers instead")
    before = next((r for r in reversed(records[:position]) if r.weighted), None)
    if before is None or before.shape != chosen.shape:
        raise JitterCamError(f"no module before the activation of {layer.name!r} outputs its map; name both "
                             "layers instead")
    if any(r.module is before.module and r.call > before.call for r in records):
        raise JitterCamError(
            f"{before.name!r} runs again after feeding {layer.name!r}; name both layers instead"
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

    Args:
        model: the classifier; put in eval mode for the probe's forward, and back in its mode after it.
        target_layer: a submodule of `model` or its name in `model.named_modules()` (taken at its last
            call); None (default) chooses as above.
        input_size: the square input size in pixels of the probe; None: the model card's.

    Returns:
        The layer and its geometry at `input_size`.

    Raises:
        JitterCamError: the model fails on the probe image or does not return `(batch, classes)` logits;
            `target_layer` is not a submodule of `model`, does not run or is not a 4-D map; the automatic
            choice finds no 4-D feature map, or one with most weighted layers after it; the map is not
            square.
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
