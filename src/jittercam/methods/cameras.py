"""CAMERAS (Jalwana, Akhtar, Bennamoun & Mian, CVPR 2021): activations and gradients of the input at
several resolutions, averaged at the input's resolution — a map at the input size."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import JitterCamError
from .base import CAMMethod, activations_and_gradients
from .jitter import check_square
from .registry import register_method

# the authors' default: range(224, 1000, 100), for 224 px inputs
REFERENCE_INPUT = 224
REFERENCE_SIZES = tuple(range(224, 1000, 100))
# elements of one (B, channels, p, p) block of upsampled activations: the mean maps are made a block of
# channels at a time (all 2048 channels of ResNet50 at 224 px would be 411 MB per image and tensor)
_BLOCK = 1 << 24


def default_sizes(pixels: int) -> list[int]:
    """The authors' 8 sizes (224, 324, ..., 924) for a 224 px input, scaled with the input otherwise."""
    return [round(size * pixels / REFERENCE_INPUT) for size in REFERENCE_SIZES]


def _check_sizes(sizes: Sequence[int] | None) -> list[int] | None:
    if sizes is None:
        return None
    if (
        isinstance(sizes, (str, bytes))
        or not isinstance(sizes, Sequence)
        or not sizes
        or any(isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in sizes)
    ):
        raise JitterCamError(f"sizes must be a non-empty list of positive pixel sizes, got {sizes!r}")
    return list(sizes)


def _upsample(tensors: torch.Tensor, pixels: int) -> torch.Tensor:
    if tensors.shape[-1] == pixels and tensors.shape[-2] == pixels:
        return tensors
    return F.interpolate(tensors, size=(pixels, pixels), mode="bilinear", align_corners=False)


@register_method("cameras")
class CAMERAS(CAMMethod):
    """CAMERAS ("Enhanced Resolution And Sanity preserving Class Activation Mapping for image saliency"),
    as the authors' code computes it (VisMIL/CAMERAS `CAMERAS.py`):

    1. the (normalised) input of p × p pixels is resized to each of `sizes` (bicubic, half-pixel centres;
       the input as it is where the size is p);
    2. at each size, one forward and one backward: the target layer's activations A_s and the gradient
       G_s = ∂y_t/∂A_s of the target's **logit** (the authors back-propagate a one-hot vector from the
       logits; no softmax);
    3. A_s and G_s are resized to p × p (bilinear, half-pixel centres) and averaged over the sizes;
    4. the map is ReLU(Σ_c mean_s(A_s)_c ⊙ mean_s(G_s)_c), at the input's resolution (`layer_map` False).

    The authors' common size is their first resolution, which is the input's size (224) by default; here
    it is always the input's size p. `sizes` None is their range(224, 1000, 100) — 8 sizes, 224 to 924 —
    for a 224 px input, and the same sizes scaled by p / 224 otherwise (`default_sizes`); a list gives the
    sizes in pixels as they are. Square inputs only.

    One class at every size: the target, or each image's top-1 class on the input as given (from the
    forward at p when p is among the sizes, otherwise from one more forward). The authors' code does the
    same when a class is given; with no class it takes each size's own top-1 and leaves out the sizes
    whose top-1 differs from the first size's: `same_top1=True` does that (per image; with no target
    only), an image left with no size getting an all-zero map.

    The authors' code runs one image on CUDA; this runs every image of a chunk together at each size, on
    the input's device. `passes()` is the number of sizes (a forward and a backward each).
    """

    layer_map = False

    def __init__(
        self,
        model: nn.Module,
        target_layer=None,
        *,
        sizes: Sequence[int] | None = None,
        same_top1: bool = False,
        **options,
    ) -> None:
        super().__init__(model, target_layer, **options)
        self.sizes = _check_sizes(sizes)
        self.same_top1 = bool(same_top1)

    def sizes_for(self, pixels: int) -> list[int]:
        """The input sizes explained for a p × p input."""
        return self.sizes if self.sizes is not None else default_sizes(pixels)

    def passes(self, input_size: int | None = None) -> int:
        return len(self.sizes_for(input_size or self.layer.input_size))

    def options(self) -> dict:
        return {**super().options(), "sizes": self.sizes, "same_top1": self.same_top1}

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        check_square(images)
        pixels = images.shape[-1]
        sizes = sorted(self.sizes_for(pixels), key=lambda size: size != pixels)  # p first: its top-1 is the target
        own_top1 = self.same_top1 and target is None  # each size explains its own top-1, kept where it agrees
        if target is None and sizes[0] != pixels:
            with torch.no_grad():
                target = self.model(images).argmax(dim=1)
        activations, gradients, kept = [], [], []
        for size in sizes:
            resized = images
            if size != pixels:
                resized = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)
            a, g, classes = activations_and_gradients(self.model, self.layer, resized, None if own_top1 else target)
            target = classes if target is None else target
            activations.append(a)
            gradients.append(g)
            kept.append(classes == target)
        agree = torch.stack(kept).to(activations[0].dtype) if own_top1 else None
        return _mean_product(activations, gradients, pixels, agree).relu()


def _mean_product(
    activations: list[torch.Tensor], gradients: list[torch.Tensor], pixels: int, kept: torch.Tensor | None = None
) -> torch.Tensor:
    """Σ_c mean_s(↑A_s)_c ⊙ mean_s(↑G_s)_c at p × p, ↑ the bilinear resize, a block of channels at a time
    (channels last: twice as fast a resize on the CPU, and the channel sum runs along memory). `kept`
    `(S, B)` of 0/1 leaves sizes out per image: the means are over the kept sizes."""
    batch, channels = activations[0].shape[:2]
    if kept is None:
        kept = activations[0].new_ones(len(activations), batch)
    weights = (kept / kept.sum(dim=0).clamp_min(1))[:, :, None, None, None]  # no size kept: all zero
    block = max(1, _BLOCK // (batch * pixels * pixels))
    total = activations[0].new_zeros(batch, pixels, pixels)
    for start in range(0, channels, block):
        part = slice(start, start + block)
        mean_a = _weighted_sum([a[:, part] for a in activations], pixels, weights)
        mean_g = _weighted_sum([g[:, part] for g in gradients], pixels, weights)
        total += (mean_a * mean_g).sum(dim=1)
    return total


def _weighted_sum(tensors: list[torch.Tensor], pixels: int, weights: torch.Tensor) -> torch.Tensor:
    """Σ_s weights[s] · ↑tensors[s], `weights` `(S, B, 1, 1, 1)`."""
    total = None
    for tensor, weight in zip(tensors, weights):
        up = _upsample(tensor.contiguous(memory_format=torch.channels_last), pixels)
        total = up * weight if total is None else total.addcmul_(up, weight)
    return total
