"""Winsor-CAM: Grad-CAM at every convolution, the layers weighted by their winsorised mean gradient and
summed — one forward and one backward."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import JitterCamError
from .base import CAMMethod
from .layercam import layer_gradients
from .refine import Layers, convolution_layers, min_max, multi_layers
from .registry import register_method

WEIGHTINGS = ("mean", "max")
INTERPOLATIONS = ("bilinear", "nearest")


def winsorised_weights(importance: torch.Tensor, percentile: float) -> torch.Tensor:
    """Winsor-CAM's layer weights from the layers' importances, per image: the positive importances are
    clipped at their `percentile`-th percentile (linear interpolation, as `torch.quantile`), then mapped
    linearly onto [0.1, 1] (all equal: 1); zero stays zero. `percentile` 0 gives every positive layer 1.

    Args:
        importance: `(B, L)` non-negative layer importances.
        percentile: the winsorisation percentile, in [0, 100].

    Returns:
        `(B, L)` weights.
    """
    positive = importance > 0
    if percentile == 0:
        return positive.to(importance.dtype)
    values = torch.where(positive, importance, torch.nan)
    ceiling = torch.nanquantile(values, percentile / 100, dim=1, keepdim=True)
    clipped = torch.where(positive, torch.minimum(importance, ceiling), importance)
    low = torch.where(positive, clipped, torch.inf).amin(dim=1, keepdim=True)
    high = torch.where(positive, clipped, -torch.inf).amax(dim=1, keepdim=True)
    span = high - low
    scaled = torch.where(span > 0, 0.1 + 0.9 * (clipped - low) / torch.where(span > 0, span, 1), 1.0)
    return torch.where(positive, scaled, 0.0)


@register_method("winsorcam")
class WinsorCAM(CAMMethod):
    """Wall et al. 2026 ("Winsor-CAM: Human-Tunable Visual Explanations from Deep Networks via Layer-Wise
    Winsorization", IEEE TPAMI; arXiv 2507.10846), as the authors' code computes it
    (USD-AI-ResearchLab/Winsor-CAM `winsorcam.py`: `WinsorcamClass.get_gradcams_and_importance` and
    `winsorize_stacked_gradcam`, called as in `simple_example/test.py`):

    1. at every `nn.Conv2d` output l (one forward, one backward): Grad-CAM G_l = ReLU(Σ_c w_lc A_lc),
       w_lc the spatial mean of the gradient, min–max scaled to [0, 1] (a constant map: 0);
    2. the layer's importance s_l = ReLU(mean_c w_lc) (`layer_weighting="max"`: ReLU(max_c w_lc));
    3. the positive s_l clipped at their `percentile`-th percentile and mapped onto [0.1, 1]
       (`winsorised_weights`);
    4. M = Σ_l ŝ_l G_l, each G_l resized (`interpolation`) to the largest layer's grid.

    The authors then resize M to the input with the same interpolation; that is left to
    `jittercam.upsample` (bilinear) like every raw map, so the map is at the largest convolution's grid
    (half the input for ResNets, whose first convolution has stride 2; `layer_map` False).

    Args:
        model: the classifier to explain.
        target_layer: the layers (modules or names); None (default): every convolution
            (`convolution_layers`), as the authors.
        percentile: the winsorisation percentile p in [0, 100]; 90 (default) as the authors' example, the
            function's own default is 99. Lower p weights the layers more equally, bringing the shallow
            layers' detail in.
        layer_weighting: "mean" (default, the authors' example) or "max": how a layer's channel weights
            make its importance.
        interpolation: "bilinear" (default, the authors' example) or "nearest" (their function's default):
            how the layers' maps are brought to the largest grid.
        batch_size: images per forward and backward pass; None: the measured plan's, else the device's
            default.
        input_size: the square input size the layers are probed at; None: the model card's.

    Raises:
        JitterCamError: a percentile outside [0, 100], an unknown `layer_weighting` or `interpolation`, a
            model with fewer than two convolutions, or as the probe raises it.
    """

    precisions = ("fp32",)  # bf16: 16 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    layer_map = False  # a sum over layers of every resolution

    def __init__(
        self,
        model: nn.Module,
        target_layer: Layers = None,
        *,
        percentile: float = 90.0,
        layer_weighting: str = "mean",
        interpolation: str = "bilinear",
        batch_size: int | None = None,
        input_size: int | None = None,
    ) -> None:
        if not 0 <= float(percentile) <= 100:
            raise JitterCamError(f"percentile must be in [0, 100], not {percentile!r}", option="percentile")
        if layer_weighting not in WEIGHTINGS:
            raise JitterCamError(f"layer_weighting must be one of {', '.join(map(repr, WEIGHTINGS))}, not "
                                 f"{layer_weighting!r}", option="layer_weighting")
        if interpolation not in INTERPOLATIONS:
            raise JitterCamError(f"interpolation must be one of {', '.join(map(repr, INTERPOLATIONS))}, not "
                                 f"{interpolation!r}", option="interpolation")
        self.percentile, self.layer_weighting, self.interpolation = float(percentile), layer_weighting, interpolation
        self.layers, self.named = multi_layers(model, target_layer, input_size, convolution_layers,
                                               "Winsor-CAM combines the Grad-CAMs of several convolutions; "
                                               "the model has {}")
        super().__init__(model, batch_size=batch_size, layer=max(self.layers, key=lambda one: one.map_size))

    def options(self) -> dict[str, Any]:
        return {"target_layer": [one.name for one in self.layers] if self.named else None,
                "batch_size": self.batch_size, "percentile": self.percentile,
                "layer_weighting": self.layer_weighting, "interpolation": self.interpolation}

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        activations, gradients, _ = layer_gradients(self.model, self.layers, images, target)
        size = max((tuple(a.shape[-2:]) for a in activations), key=lambda shape: shape[0] * shape[1])
        maps, importance = [], []
        for a, g in zip(activations, gradients):
            weights = g.mean(dim=(2, 3))
            cam = min_max(torch.einsum("bc,bchw->bhw", weights, a).relu())
            if tuple(cam.shape[-2:]) != size:
                options = {"align_corners": False} if self.interpolation == "bilinear" else {}
                cam = F.interpolate(cam[:, None], size=size, mode=self.interpolation, **options)[:, 0]
            maps.append(cam)
            importance.append(weights.mean(dim=1) if self.layer_weighting == "mean" else weights.amax(dim=1))
        scale = winsorised_weights(torch.stack(importance, dim=1).relu(), self.percentile)
        return torch.einsum("bl,blhw->bhw", scale, torch.stack(maps, dim=1))
