"""Poly-CAM: score-weighted CAMs at every resolution of the network, multiplied from the deepest map down
to the shallowest, each locally normalised — a map at the shallowest layer's resolution."""
from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import JitterCamError
from ..inputs import check_flag, resolve_targets
from ..probe import TargetLayer
from .base import CAMMethod, pair_chunks
from .capture import LayerCapture
from .refine import Layers, multi_layers, resolution_levels
from .registry import register_method

VARIANTS = {"+": "+", "-": "-", "−": "-", "±": "±", "+-": "±", "+/-": "±"}


def class_probability(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The softmax probability of `classes` (a sigmoid for a one-output model), as Poly-CAM scores.

    Args:
        logits: `(N, K)` logits.
        classes: `(N,)` class indices.

    Returns:
        `(N,)` probabilities.
    """
    probabilities = logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(dim=1)
    return probabilities.gather(1, classes[:, None])[:, 0]


def percentile_normalise(maps: torch.Tensor, outlier: float) -> torch.Tensor:
    """Poly-CAM's [0, 1] scaling of each map (aenglebert/polycam `_PolyCAM.normalize`): (M − p_low) /
    max(p_high, 1e-12), clipped to [0, 1], with p_low and p_high the `outlier` and 100 − `outlier`
    percentiles over the map's positions (linear interpolation). The authors divide by p_high, not by
    p_high − p_low; so does this.

    Args:
        maps: `(..., h, w)` maps.
        outlier: the percentile left out at each end (0.1 in the authors' code).

    Returns:
        The maps scaled, same shape.
    """
    flat = maps.flatten(-2).float()
    ordered = flat.sort(dim=-1).values  # percentiles by hand: torch.quantile refuses inputs of 2**24 values
    count = flat.shape[-1]

    def percentile(q: float) -> torch.Tensor:
        position = q / 100 * (count - 1)
        below = int(position)
        above = min(below + 1, count - 1)
        fraction = position - below
        start, end = ordered[..., below : below + 1], ordered[..., above : above + 1]
        return start + fraction * (end - start)

    low, high = percentile(outlier), percentile(100 - outlier)
    return ((flat - low) / high.clamp_min(1e-12)).clamp(0, 1).view_as(maps)


def _bilinear(maps: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


@register_method("polycam")
class PolyCAM(CAMMethod):
    """Englebert et al. 2022 ("Poly-CAM: High resolution class activation map for convolutional neural
    networks", ICPR 2022; arXiv 2204.13359), as the authors' code computes it (aenglebert/polycam
    `polycam/core.py` `_PolyCAM.compute_cams`, `polycam/polycam.py` `PCAMp`, `PCAMm`, `PCAMpm`,
    `polycam/utils.py` `find_layer_list`):

    1. at each layer l, from the shallowest to the deepest resolution, each channel's activation A_lc is
       scaled to [0, 1] (`percentile_normalise`), upsampled (bilinear) to the input and used as a mask;
       the channel's weight is, with p(·) the softmax probability of the target class:
       PCAM+ w = p(x ⊙ m); PCAM− w = ReLU(p(x) − p(x ⊙ (1 − m))); PCAM± w = ReLU(p(x ⊙ m) + p(x) −
       p(x ⊙ (1 − m)));
    2. the layer's map M_l = ReLU(Σ_c w_c A_lc);
    3. from the deepest layer down: P_L = M_L, and P_l = ReLU(N(M_l) ⊙ up(P_{l+1})), where N divides M_l by
       itself resized (bilinear) to the deeper map's grid and back, floored at 1e-12 (LNorm, `lnorm=True`),
       and up is bilinear to M_l's grid.

    The map is P_1, at the shallowest layer's grid (the authors' last `cam_list` entry before their
    percentile scaling and upsampling; `layer_map` False).

    Args:
        model: the classifier to explain.
        target_layer: the layers (modules or names), in forward order; None (default): the last map of each
            resolution (`resolution_levels`, the authors' `find_layer_list`: ResNet `relu`, `layer1` …
            `layer4`).
        variant: "±" (default; the paper's headline PCAM±, "+-" also accepted), "+" or "-" ("−").
        outlier: the percentile clipped at each end when a channel becomes a mask (0.1, the authors').
        lnorm: the local normalisation of step 3 (True, the authors'; False for their ablation).
        batch_size: masked images per forward pass; None: the measured plan's, else the device's default.
        input_size: the square input size the layers are probed at; None: the model card's.

    Raises:
        JitterCamError: an unknown `variant`, `outlier` outside [0, 50), fewer than two layers, or as the
            probe raises it.
    """

    precisions = ("fp32",)  # bf16: 4.2 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    layer: TargetLayer  # the finest of `layers`: never None here
    layer_map = False  # the recursion ends at the shallowest layer's grid

    def __init__(
        self,
        model: nn.Module,
        target_layer: Layers = None,
        *,
        variant: str = "±",
        outlier: float = 0.1,
        lnorm: bool = True,
        batch_size: int | None = None,
        input_size: int | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise JitterCamError(f"variant must be one of '+', '-', '±', not {variant!r}", option="variant")
        if not 0 <= float(outlier) < 50:
            raise JitterCamError(f"outlier must be a percentile in [0, 50), not {outlier!r}", option="outlier")
        self.variant, self.outlier, self.lnorm = VARIANTS[variant], float(outlier), check_flag(lnorm, "lnorm")
        self.layers, self.named = multi_layers(model, target_layer, input_size, resolution_levels,
                                               "Poly-CAM refines a deep map with shallower ones; it needs at "
                                               "least two layers, {} found")
        super().__init__(model, batch_size=batch_size, layer=max(self.layers, key=lambda one: one.map_size))
        self._channels: list[int] | None = None

    def options(self) -> dict[str, Any]:
        return {"target_layer": [one.name for one in self.layers] if self.named else None,
                "batch_size": self.batch_size, "variant": self.variant, "outlier": self.outlier,
                "lnorm": self.lnorm}

    def passes(self, input_size: int | None = None) -> int:
        """Forward passes for one image: 1, then one per channel of every layer (two for PCAM±).

        Args:
            input_size: the square input size in pixels; None: the probe's.

        Returns:
            The number of forward passes.
        """
        if self._channels is None:
            size = input_size or self.layer.input_size
            probe = torch.zeros(1, 3, size, size, device=next(self.model.parameters()).device,
                                dtype=next(self.model.parameters()).dtype)
            self._channels = [a.shape[1] for a in self._activations(probe)[0]]
        return 1 + (2 if self.variant == "±" else 1) * sum(self._channels)

    def _activations(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        with torch.no_grad(), ExitStack() as stack:
            captures = [stack.enter_context(LayerCapture.of(one, "record")) for one in self.layers]
            logits = self.model(images)
        outputs = []
        for capture, one in zip(captures, self.layers):
            assert capture.output is not None
            outputs.append(capture.output.relu() if one.rectify else capture.output)
        return outputs, logits

    def _scores(self, images: torch.Tensor, masks: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """p(target | x ⊙ m) for every image and channel mask; masks `(B, C, h, w)`."""
        batch, channels = masks.shape[:2]
        size = images.shape[-2:]
        flat = masks.flatten(0, 1)
        scores = torch.empty(batch * channels, device=images.device)
        for pairs in pair_chunks(batch * channels, self.chunk_size(images), images.device):
            image = pairs // channels
            up = _bilinear(flat[pairs][:, None], size)
            with torch.no_grad():
                scores[pairs] = class_probability(self.model(images[image] * up).float(), classes[image])
        return scores.view(batch, channels)

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        activations, logits = self._activations(images)
        classes = resolve_targets(target, logits)
        baseline = class_probability(logits.float(), classes)[:, None]
        maps = []
        for a in activations:
            masks = percentile_normalise(a, self.outlier)
            if self.variant == "+":
                weights = self._scores(images, masks, classes)
            elif self.variant == "-":
                weights = (baseline - self._scores(images, 1 - masks, classes)).relu()
            else:
                kept, removed = self._scores(images, masks, classes), self._scores(images, 1 - masks, classes)
                weights = (kept + baseline - removed).relu()
            maps.append(torch.einsum("bc,bchw->bhw", weights, a.float()).relu()[:, None])
        refined = maps[-1]
        for current in reversed(maps[:-1]):
            if self.lnorm:
                local = _bilinear(_bilinear(current, refined.shape[-2:]), current.shape[-2:])
                current = current / local.clamp_min(1e-12)
            refined = (current * _bilinear(refined, current.shape[-2:])).relu()
        return refined[:, 0]
