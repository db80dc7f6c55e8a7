"""RefineCAM: the product of a base CAM's maps at several layers, each scaled to [0, 1] — and the layer
lists the multi-layer methods share (one map per resolution level, every convolution)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..card import model_card
from ..errors import JitterCamError
from ..maps import resize
from ..probe import TargetLayer, _grids, _record_forward, find_target_layer
from .base import CAMMethod
from .gradient import _GradientWeightedCAM
from .layercam import HiResCAM, LayerCAM, _layer_map, layer_gradients
from .registry import create, method_class, register_method

_PADDING = (nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
            nn.modules.padding._ReplicationPadNd)

Layers = nn.Module | str | Sequence[nn.Module | str] | None


def _as_layer(record, input_size: int, num_classes: int) -> TargetLayer:
    height, width = record.shape[-2:]
    if height != width:
        raise JitterCamError(f"layer {record.name!r} gives a {height}x{width} map; square maps only")
    return TargetLayer(
        name=record.name, module=record.module, call=record.call, input_size=input_size,
        map_size=int(height), stride=max(1, round(input_size / int(height))), num_classes=num_classes,
        grid=(int(height), int(width)),
    )


def resolution_levels(model: nn.Module, input_size: int | None = None) -> list[TargetLayer]:
    """The last feature map at each resolution of a CNN, in forward order, down to its target layer: the
    module call that ends each run of maps of one size (a container ends after its children), pooling
    outputs left out — ResNet's `relu`, `layer1` … `layer4`; the rule of Poly-CAM's `find_layer_list`
    (aenglebert/polycam `polycam/utils.py`) and the layers RefineCAM's authors name (liuktc/RefineCAM
    `run_experiments.py`: `layer1` … `layer4` for ResNets). The deepest level is the probed target layer
    (`find_target_layer`, rectified where it says so).

    Args:
        model: the classifier (a CNN: (B, C, h, w) maps).
        input_size: the square input size in pixels; None: the model card's.

    Returns:
        The layers, shallowest first.

    Raises:
        JitterCamError: the probe refuses the model, or its target layer is not a (B, C, h, w) map.
    """
    input_size = input_size or model_card(model).input_size
    target = find_target_layer(model, None, input_size)
    if target.layout != "nchw":
        raise JitterCamError(f"the multi-layer methods need a CNN's (B, C, h, w) maps; the target layer "
                             f"{target.name!r} is a {target.layout} layout")
    records, logits = _record_forward(model, input_size)
    grids = [g.record for g in _grids(records) if g.layout == "nchw" and not isinstance(g.record.module, _PADDING)]
    levels, current = [], None
    for record in grids:
        if record.module is target.module and record.call == target.call:
            break
        if current is not None and record.shape[-1] < current.shape[-1]:
            levels.append(current)
        if current is None or record.shape[-1] <= current.shape[-1]:
            current = record  # a map larger than the last one (a padded copy) does not start a level
    found = [_as_layer(r, input_size, int(logits.shape[1])) for r in levels if r.shape[-1] > target.map_size]
    return [*found, target]


def convolution_layers(model: nn.Module, input_size: int | None = None) -> list[TargetLayer]:
    """Every `nn.Conv2d` of the model whose output is a map of more than one pixel, at its last call, in
    forward order (Winsor-CAM's layers: USD-AI-ResearchLab/Winsor-CAM `WinsorcamClass`, hooks on every
    `nn.Conv2d`).

    Args:
        model: the classifier.
        input_size: the square input size in pixels; None: the model card's.

    Returns:
        The layers, in the order their last calls finish.

    Raises:
        JitterCamError: the probe refuses the model, or a convolution's map is not square.
    """
    input_size = input_size or model_card(model).input_size
    records, logits = _record_forward(model, input_size)
    last = {}
    for record in records:
        if isinstance(record.module, nn.Conv2d) and len(record.shape) == 4 and record.shape[-1] > 1:
            last[record.module] = record
    ordered = sorted(last.values(), key=lambda r: next(i for i, x in enumerate(records) if x is r))
    return [_as_layer(r, input_size, int(logits.shape[1])) for r in ordered]


def named_layers(model: nn.Module, layers: Layers, input_size: int | None) -> list[TargetLayer] | None:
    """`target_layer` as a list of probed layers, or None when it is None.

    Args:
        model: the classifier.
        layers: one layer or a list of layers (modules or names), or None.
        input_size: the square input size the layers are probed at; None: the model card's.

    Returns:
        The probed layers in the order given, or None.

    Raises:
        JitterCamError: an empty list, or the probe refuses a layer.
    """
    if layers is None:
        return None
    if isinstance(layers, (nn.Module, str)):
        layers = [layers]
    if not layers:
        raise JitterCamError("target_layer is an empty list; name at least two layers", option="target_layer")
    return [find_target_layer(model, one, input_size) for one in layers]


def multi_layers(
    model: nn.Module, target_layer: Layers, input_size: int | None, default, too_few: str
) -> tuple[list[TargetLayer], bool]:
    """The layers a multi-layer method reads: `target_layer` probed (`named_layers`), else `default(model,
    input_size)`; fewer than two are refused.

    Args:
        model: the classifier.
        target_layer: one layer or a list of layers (modules or names), or None for the default.
        input_size: the square input size the layers are probed at; None: the model card's.
        default: `(model, input_size) -> layers`, the method's own choice.
        too_few: the refusal, with `{}` where the count of layers found goes.

    Returns:
        `(layers, named)`: the probed layers, and whether `target_layer` named them.

    Raises:
        JitterCamError: an empty list, a layer the probe refuses, or fewer than two layers.
    """
    layers = named_layers(model, target_layer, input_size)
    named = layers is not None
    if layers is None:
        layers = default(model, input_size)
    if len(layers) < 2:
        raise JitterCamError(too_few.format(len(layers)), option="target_layer")
    return layers, named


def min_max(maps: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """(M − min M) / (max M − min M + eps) per map; a constant map gives zeros.

    Args:
        maps: `(B, h, w)` maps.
        eps: added to the range (pytorch-grad-cam's `scale_cam_image` adds 1e-7); 0: none.

    Returns:
        `(B, h, w)` maps in [0, 1].
    """
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low + eps
    return torch.where(span > 0, (flat - low) / torch.where(span > 0, span, 1), 0).view_as(maps)


SCALINGS = ("paper", "pytorch-grad-cam")


@register_method("refinecam")
class RefineCAM(CAMMethod):
    """Domeniconi et al. 2026 ("How to Evaluate and Refine your CAM", arXiv 2605.14641): a base CAM at
    several layers, each layer's map scaled to [0, 1], brought to one grid and multiplied element by
    element — the deep layers' coarse maps mask the shallow layers' sharp but noisy ones.

    The arXiv text's method section was not available here; the definition is the authors' code
    (liuktc/RefineCAM: `utils/mix_attributions.MultiplierMix`, per-layer maps min–max normalised by
    `utils/util.min_max_normalize` in `run_experiments.py`, layers `layer4` … `layer1` of a ResNet, base
    Grad-CAM++ among others) and both peers (torchcam 0.5.0 `RefineCAM.fuse_cams`, pytorch-grad-cam 1.5.7
    `RefineCAM.forward`, both with Grad-CAM++ as the default base):

    * ``scaling="paper"`` (default; torchcam's form): each layer's map min–max scaled at its own
      resolution, resized (bilinear, half-pixel centres) to the finest layer's grid, multiplied. The
      authors' code upsamples to the input size before multiplying, but as a separate, exchangeable step of
      its pipeline (`upscale_methods`), so the raw map stays on the finest layer's grid.
    * ``scaling="pytorch-grad-cam"``: what pytorch-grad-cam computes. Its per-layer base call already
      returns maps min–max scaled (eps 1e-7) and resized to the input (`BaseCAM.forward`,
      `scale_cam_image` twice); the loop meant to rectify and scale each layer to [0, 1] rebinds its loop
      variable and changes nothing — harmless here, since the maps are in [0, 1] already. So: min–max at
      the layer's grid, resize to the input, min–max again, multiply; the map is at the input's size.

    The two differ by where the product is taken (on the finest grid or at the input's size) and by the
    second min–max after the resize.

    Args:
        model: the classifier to explain.
        target_layer: the layers (modules or names, at least two); None (default): the last map at each of
            the `levels` deepest resolutions (`resolution_levels`: ResNet `layer1` … `layer4`, as the
            authors).
        base_method: the registered name of the per-layer CAM, one whose map is at its layer's resolution
            ("gradcam++" by default, as the authors and both peers; "gradcam", "layercam", "scorecam", …).
        base_options: the base's own options (e.g. `{"epsilon": 1e-6}` for pytorch-grad-cam's Grad-CAM++).
        scaling: "paper" (default) or "pytorch-grad-cam", as above.
        levels: how many resolution levels the default layers span (4, as the authors).
        batch_size: images per forward pass; None: the measured plan's, else the device's default.
        input_size: the square input size the layers are probed at; None: the model card's.

    Raises:
        JitterCamError: an unknown `scaling` or `base_method`, a base whose map is not at its layer's resolution,
            fewer than two layers, or as the probe raises it.
    """

    precisions = ("fp32",)  # bf16: 4.2 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    layer_map = False  # the product of several layers' maps: no single layer's resolution

    def __init__(
        self,
        model: nn.Module,
        target_layer: Layers = None,
        *,
        base_method: str = "gradcam++",
        base_options: dict[str, Any] | None = None,
        scaling: str = "paper",
        levels: int = 4,
        batch_size: int | None = None,
        input_size: int | None = None,
    ) -> None:
        if scaling not in SCALINGS:
            raise JitterCamError(f"scaling must be one of {', '.join(map(repr, SCALINGS))}, not {scaling!r}",
                                 option="scaling")
        if not isinstance(levels, int) or levels < 2:
            raise JitterCamError(f"levels must be an integer of at least 2, not {levels!r}", option="levels")
        self.scaling, self.levels, self.base_method = scaling, levels, base_method
        self.base_options = dict(base_options or {})
        layers, _ = multi_layers(model, target_layer, input_size,
                                 lambda net, size: resolution_levels(net, size)[-levels:],
                                 "RefineCAM multiplies the maps of at least two layers; {} found")
        self.layers = layers
        finest = max(layers, key=lambda one: one.map_size)
        super().__init__(model, batch_size=batch_size, layer=finest)
        kind = method_class(base_method)
        if not (kind.uses_layer and kind.layer_map):
            raise JitterCamError(f"RefineCAM needs a base whose map is at its layer's resolution (gradcam++, "
                                 f"gradcam, layercam, scorecam, ...), not {base_method!r}", option="base_method")
        self.bases = [create(base_method, model, layer=one, batch_size=batch_size, **self.base_options)
                      for one in layers]
        self._one_pass = all(isinstance(b, (_GradientWeightedCAM, LayerCAM, HiResCAM)) for b in self.bases)

    def passes(self, input_size: int | None = None) -> int:
        """Forward passes for one image: 1 where the base is a gradient CAM (every layer from one forward
        and one backward), else the sum of the base's at each layer.

        Args:
            input_size: the square input size in pixels; None: the probe's.

        Returns:
            The number of forward passes.
        """
        if self._one_pass:
            return 1
        return sum(b.passes(input_size) for b in self.bases)

    def options(self) -> dict[str, Any]:
        return {"target_layer": [one.name for one in self.layers], "base_method": self.base_method,
                "base_options": self.base_options, "scaling": self.scaling, "batch_size": self.batch_size}

    def layer_maps(self, images: torch.Tensor, target: torch.Tensor | None) -> list[torch.Tensor]:
        """The base's raw map at each layer, in the order of `self.layers`.

        Args:
            images: `(B, 3, H, W)` model inputs.
            target: `(B,)` class indices, or None for each image's top-1.

        Returns:
            One `(B, h_l, w_l)` map per layer.
        """
        if not self._one_pass:
            return [b._explain(images, target) for b in self.bases]
        activations, gradients, _ = layer_gradients(self.model, self.layers, images, target)
        maps = []
        for b, a, g in zip(self.bases, activations, gradients):
            if isinstance(b, _GradientWeightedCAM):
                maps.append(torch.einsum("bc,bchw->bhw", b.channel_weights(a, g), a).relu())
            elif isinstance(b, LayerCAM):
                maps.append(_layer_map(a, g))
            else:
                assert isinstance(b, HiResCAM)
                cam = (g * a).sum(dim=1)
                maps.append(cam.relu() if b.relu else cam)
        return maps

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        maps = [m.relu() for m in self.layer_maps(images, target)]
        if self.scaling == "pytorch-grad-cam":
            size = tuple(images.shape[-2:])
            scaled = [min_max(resize(min_max(m, 1e-7), size), 1e-7) for m in maps]
        else:
            size = max((tuple(m.shape[-2:]) for m in maps), key=lambda shape: shape[0] * shape[1])
            scaled = [resize(min_max(m), size) for m in maps]
        return torch.stack(scaled).prod(dim=0)
