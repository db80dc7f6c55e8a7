"""The probe: which layer of any classifier a CAM method weights, found by one forward pass.

`find_target_layer` records every module call of a no-grad forward of a fixed random image and describes
the target layer as a `TargetLayer`: the last module output that is still a 4-D map with a spatial size
above 1 before global pooling (or a token or channels-last grid of a vision transformer), its map size m
and total stride k at the input size. No table of model names is involved.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
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
        layout: how the output holds the map: "nchw" (B, C, h, w), "nhwc" (a channels-last grid, Swin's
            final norm) or "tokens" (B, prefix + h·w, C); `to_map` makes it (B, C, h, w).
        prefix: the tokens before the grid (class, distillation, register tokens); 0 unless "tokens".
        grid: the map's (h, w) at `input_size`.
    """

    name: str
    module: nn.Module = field(repr=False)
    call: int
    input_size: int
    map_size: int  # m
    stride: int  # k = round(input_size / m)
    num_classes: int
    rectify: bool = False
    layout: str = "nchw"
    prefix: int = 0
    grid: tuple[int, int] | None = None

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        """The layer's output as the `(B, C, h, w)` map the methods weight: channels-last grids are
        permuted, token sequences lose their `prefix` tokens and are laid out on their grid.

        Args:
            output: the layer's output, in its `layout`.

        Returns:
            `(B, C, h, w)`: a view where the layout allows one (autograd passes through it).

        Raises:
            JitterCamError: a token sequence whose grid cannot be told from its length.
        """
        if self.layout == "nhwc":
            return output.permute(0, 3, 1, 2)
        if self.layout == "tokens":
            batch, count, channels = output.shape
            height, width = self._grid_of(count - self.prefix)
            return output[:, self.prefix :].transpose(1, 2).reshape(batch, channels, height, width)
        return output

    def from_map(self, grid_map: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_map`: a `(B', C, h, w)` map back in the layer's layout, the prefix tokens
        taken from `output` (the layer's real output; repeated when it holds one image).

        Args:
            grid_map: the map handed downstream.
            output: the layer's output this forward, in its `layout`.

        Returns:
            The tensor the rest of the network gets.
        """
        if self.layout == "nhwc":
            return grid_map.permute(0, 2, 3, 1).contiguous()
        if self.layout == "tokens":
            tokens = grid_map.flatten(2).transpose(1, 2)
            prefix = output[:, : self.prefix].to(tokens.dtype)
            if prefix.shape[0] != tokens.shape[0]:
                prefix = prefix.expand(tokens.shape[0], -1, -1)
            return torch.cat([prefix, tokens], dim=1)
        return grid_map

    def _grid_of(self, count: int) -> tuple[int, int]:
        if self.grid is not None and self.grid[0] * self.grid[1] == count:
            return self.grid
        side = math.isqrt(count)
        if side * side != count:
            raise JitterCamError(f"layer {self.name!r} gives {count} tokens, which is not a square grid")
        return side, side


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
    input: torch.Tensor | None = None  # a linear layer's input (the classifier's tells whether it is rectified)

    @property
    def shape(self) -> tuple[int, ...]:
        return () if self.output is None else tuple(self.output.shape)


def _leaf_kind(module: nn.Module) -> str:
    if isinstance(module, _POOLING):
        return "pool"
    if isinstance(module, _NORMALISATION):
        return "norm"
    return "other"


@contextmanager
def _probing(model: nn.Module, input_size: int, hooks: list[tuple[nn.Module, Callable]]):
    """The probe's fixed random image on the model's device and dtype, with its seeded generator, while
    `hooks` are on the modules and the model is in eval mode (a probe in train mode would move BatchNorm's
    running statistics); hooks and mode are undone on leaving, however the forward ends."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    was_training = model.training
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, input_size, input_size, generator=generator)
    try:
        model.eval()
        yield image.to(model_device(model), model_dtype(model)), generator
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def size_refusal(model: nn.Module, pixels: int) -> str | None:
    """Whether the model runs at `pixels` × `pixels`: one no-grad forward of the probe's image there (in eval
    mode, restored after).

    Args:
        model: the classifier.
        pixels: the square input size tried.

    Returns:
        None when it runs; else the first line of what the model raised (out-of-memory errors propagate).
    """
    try:
        with _probing(model, pixels, []) as (image, _), torch.no_grad():
            model(image)
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the model raises at a size it does not take
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


def _record_forward(model: nn.Module, input_size: int) -> tuple[list[_Record], torch.Tensor]:
    """One no-grad forward of a fixed random image, recording every module call in the order the calls
    finish (a container finishes after its children). Outputs are kept so that tensors can be compared."""
    records: list[_Record] = []
    calls: dict[nn.Module, int] = {}
    # the kind of leaf that last returned each tensor (a container returns its last child's tensor, and
    # an in-place activation returns its input); the records keep the tensors alive, so ids stay unique
    producer: dict[int, str] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs, output) -> None:
            call = calls.get(module, 0)
            calls[module] = call + 1
            leaf = next(module.children(), None) is None
            weighted = leaf and next(module.parameters(recurse=False), None) is not None
            if not isinstance(output, torch.Tensor):
                records.append(_Record(name, module, call, None, "other", weighted))
                return
            if leaf:
                producer[id(output)] = _leaf_kind(module)
            first = inputs[0] if isinstance(module, nn.Linear) and inputs else None
            records.append(_Record(name, module, call, output, producer.get(id(output), "other"), weighted, first))

        return record

    hooks = [(module, hook(name)) for name, module in model.named_modules() if name]
    try:
        with _probing(model, input_size, hooks) as (image, _), torch.no_grad():
            logits = model(image)
    except Exception as exc:  # noqa: BLE001 - whatever an arbitrary model raises on the probe is reported
        raise JitterCamError(f"the model failed on a {input_size}x{input_size} probe image: {exc}") from None
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


@dataclass
class _Grid:
    """A record whose output is a grid of positions: its layout, prefix tokens and grid (h, w)."""

    position: int
    record: _Record
    layout: str
    prefix: int = 0
    grid: tuple[int, int] | None = None


_MAX_PREFIX = 16  # class, distillation and register tokens before the grid


def _grids(records: list[_Record]) -> list[_Grid]:
    """Every record of one image whose output is a map: NCHW maps, channels-last grids (B, h, w, C) and
    token sequences (B, prefix + h·w, C) whose C and h·w are those of an earlier grid (the patch
    embedding's). A 4-D output with a token sequence's length among its sides is an attention matrix or a
    per-head tensor, never a map."""
    found: list[_Grid] = []
    channels: dict[int, tuple[int, int]] = {}  # grid (h, w) of the latest map with these channels
    lengths: set[int] = set()  # token counts seen
    for position, record in enumerate(records):
        shape = record.shape
        if len(shape) == 3 and shape[0] == 1 and shape[2] in channels:
            height, width = channels[shape[2]]
            if 0 <= shape[1] - height * width <= _MAX_PREFIX:
                lengths.add(shape[1])
                found.append(_Grid(position, record, "tokens", shape[1] - height * width, (height, width)))
            continue
        if not _is_feature_map(record) or shape[0] != 1 or lengths & set(shape[2:]):
            continue
        if shape[1] == shape[2] != shape[3]:  # a square grid, channels last (Swin)
            channels[shape[3]] = (shape[1], shape[2])
            found.append(_Grid(position, record, "nhwc", grid=(shape[1], shape[2])))
        else:
            channels[shape[1]] = (shape[2], shape[3])
            found.append(_Grid(position, record, "nchw", grid=(shape[2], shape[3])))
    return found


def _pick_auto(model: nn.Module, records: list[_Record], input_size: int) -> _Grid:
    grids = _grids(records)
    if not grids:
        raise JitterCamError(
            "no module of the model outputs a feature map (B, C, h, w), a channels-last grid or a token grid, "
            "so there is no layer to take a CAM from; pass target_layer= naming one"
        )
    chosen = grids[-1]
    if chosen.layout == "tokens" and chosen.prefix:
        head = next((r for r in reversed(records) if r.input is not None), None)
        # a query/key/value projection (Hugging Face's separate q_proj/k_proj/v_proj) passes a gradient to
        # the grid through the attention, but is no map of the residual stream: never a candidate
        stream = [g for g in grids if g.layout == "tokens" and not isinstance(g.record.module, nn.Linear)]
        chosen = _last_with_grid_gradient(model, stream, head, input_size)
    position = chosen.position
    before = sum(r.weighted for r in records[: position + 1])
    after = sum(r.weighted for r in records[position + 1 :])
    if after > before:
        name, (height, width) = chosen.record.name, chosen.grid or chosen.record.shape[-2:]
        raise JitterCamError(
            f"the last feature map of this model is {name!r} ({height}x{width}), "
            f"but {after} of its {before + after} weighted layers run after it, so a CAM there would not "
            "explain the decision (a vision transformer's patch embedding is such a layer); pass "
            "target_layer= naming a late convolutional feature map"
        )
    return chosen


def _last_with_grid_gradient(model: nn.Module, tokens: list[_Grid], head: _Record | None, input_size: int) -> _Grid:
    """The last token layer whose grid tokens reach the classifier. A class-token ViT's head reads the
    class token alone, and the blocks after the last attention treat each token apart, so the grid tokens
    of the last block's output get no gradient: the layer is the last block's attention input
    (`blocks[-1].norm1`, pytorch-grad-cam's choice), the last place where the grid reaches the class token.
    The gradient is taken of a fixed random mix of the classifier's input features, not of a logit, so that
    a zero-initialised head (torchvision's ViT with random weights) cannot hide the path.
    """
    kept: dict[int, torch.Tensor] = {}
    features: list[torch.Tensor] = []
    wanted = {(id(g.record.module), g.record.call): index for index, g in enumerate(tokens)}
    calls: dict[nn.Module, int] = {}

    def hook(module: nn.Module, inputs, output):
        call = calls.get(module, 0)
        calls[module] = call + 1
        if head is not None and module is head.module and call == head.call:
            features.append(inputs[0])
        index = wanted.get((id(module), call))
        if index is None or not isinstance(output, torch.Tensor):
            return None
        kept[index] = output
        return output.clone()  # an in-place op downstream cannot spoil the kept tensor's graph

    modules = {g.record.module for g in tokens} | ({head.module} if head is not None else set())
    with _probing(model, input_size, [(module, hook) for module in modules]) as (image, generator), \
            torch.inference_mode(False), torch.enable_grad():
        logits = model(image)
        output = features[0] if features else logits
        mix = torch.randn(output.shape, generator=generator).to(output.device, output.dtype)
        indices = sorted(kept)
        found = torch.autograd.grad((output * mix).sum(), [kept[i] for i in indices], allow_unused=True)
    for index, gradient in reversed(list(zip(indices, found))):
        if gradient is not None and bool(gradient[:, tokens[index].prefix :].ne(0).any()):
            return tokens[index]
    raise JitterCamError("no token layer of this model passes a gradient to its grid tokens, so there is no "
                         "layer to take a CAM from; pass target_layer= naming one")


def _is_last_map(chosen: _Record, records: list[_Record]) -> bool:
    """Whether `chosen` outputs the same tensor as the last feature map, whatever name it was given by
    (DenseNet's `features` and `features.norm5`)."""
    last = next((r for r in reversed(records) if _is_feature_map(r)), None)
    return last is not None and last.output is chosen.output


def _rectified_downstream(chosen: _Record, records: list[_Record]) -> bool:
    """Whether the network rectifies `chosen`'s map before its classifier: the last linear layer's input is
    the spatial mean of ReLU(map) (DenseNet's functional `F.relu`; a hybrid's
    LayerNorm2d feeding the pooling directly is not rectified)."""
    features = next((r.input for r in reversed(records) if r.input is not None), None)
    if features is None or chosen.output is None:
        return False
    pooled = features.flatten(1)
    rectified = chosen.output.relu().mean(dim=(2, 3)).flatten(1)
    if pooled.shape != rectified.shape:
        return False
    return bool(torch.allclose(pooled, rectified, rtol=1e-4, atol=1e-5))


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
    its last call. A last map with most of the network after it (a patch embedding whose grid the network
    does not keep) is refused rather than explained.

    Token sequences (B, prefix + h·w, C) with the patch embedding's C and grid, and channels-last grids
    (B, h, w, C), are maps too (`TargetLayer.layout`). When the last one has prefix tokens, the layer is the
    last whose grid tokens pass a gradient to the classifier (one backward): a class-token ViT's last block
    treats tokens apart after its attention, so that is the last block's attention input. A 4-D output
    with a token count among its sides (an attention matrix, a per-head tensor) is never a map.

    Args:
        model: the classifier; put in eval mode for the probe's forward, and back in its mode after it.
        target_layer: a submodule of `model` or its name in `model.named_modules()` (taken at its last
            call); None (default) chooses as above.
        input_size: the square input size in pixels of the probe; None: the model card's.

    Returns:
        The layer and its geometry at `input_size`.

    Raises:
        JitterCamError: the model fails on the probe image or does not return `(batch, classes)` logits;
            `target_layer` is not a submodule of `model`, does not run, is not a map or is an attention
            matrix; the automatic choice finds no map, none whose grid tokens reach the classifier, or one
            with most weighted layers after it; the map is not square.
    """
    input_size = input_size or model_card(model).input_size
    records, logits = _record_forward(model, input_size)
    if target_layer is None:
        chosen = _pick_auto(model, records, input_size)
    else:
        name, module = _resolve(model, target_layer)
        mine = [r for r in records if r.module is module]
        if not mine:
            raise JitterCamError(f"target layer {name!r} does not run in the model's forward")
        last = mine[-1]
        grids = _grids(records)
        lengths = {g.record.shape[1] for g in grids if g.layout == "tokens"}
        known = next((g for g in grids if g.record is last), None)
        if known is not None:
            chosen = known
        elif len(last.shape) == 4 and lengths & set(last.shape[2:]):
            raise JitterCamError(f"target layer {name!r} outputs shape {last.shape}, an attention matrix or a "
                                 "per-head tensor over the tokens, not a map of the image")
        elif len(last.shape) == 4:
            position = next(i for i, r in enumerate(records) if r is last)
            chosen = _Grid(position, last, "nchw", grid=(last.shape[2], last.shape[3]))
        else:
            raise JitterCamError(f"target layer {name!r} outputs shape {last.shape}, not a 4-D map, a "
                                 "channels-last grid or a token grid after the patch embedding")
    record = chosen.record
    rectify = (
        chosen.layout == "nchw" and record.kind == "norm" and _is_last_map(record, records)
        and _rectified_downstream(record, records)
    )
    height, width = chosen.grid or record.shape[-2:]
    if height != width:
        raise JitterCamError(f"target layer {record.name!r} gives a {height}x{width} map; square maps only")
    return TargetLayer(
        name=record.name,
        module=record.module,
        call=record.call,
        input_size=input_size,
        map_size=int(height),
        stride=max(1, round(input_size / int(height))),
        num_classes=int(logits.shape[1]),
        rectify=rectify,
        layout=chosen.layout,
        prefix=chosen.prefix,
        grid=(int(height), int(width)),
    )
