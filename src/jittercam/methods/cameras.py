"""CAMERAS (Jalwana, Akhtar, Bennamoun & Mian, CVPR 2021): activations and gradients of the input at
several resolutions, averaged at the input's resolution — a map at the input size."""
from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import JitterCamError
from ..inputs import check_flag
from ..maps import resize
from ..models import TargetLayer
from ..probe import size_refusal
from .base import CAMMethod, activations_and_gradients, at_size, size_message
from .jitter import check_square
from .registry import register_method

# the authors' default: range(224, 1000, 100), for 224 px inputs
REFERENCE_INPUT = 224
REFERENCE_SIZES = tuple(range(224, 1000, 100))
# elements of one (B, columns, Σn_s, C) block of column-resized activations (64 MiB of float32)
_BLOCK = 1 << 24


def default_sizes(pixels: int) -> list[int]:
    """The authors' 8 sizes (224, 324, ..., 924) for a 224 px input, scaled with the input otherwise.

    Args:
        pixels: the input's side p, in pixels.

    Returns:
        The 8 sizes `round(size · p / 224)`, in pixels.
    """
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
    it is always the input's size p. Square inputs only.

    One class at every size: the target, or each image's top-1 class on the input as given (from the
    forward at p when p is among the sizes, otherwise from one more forward). The authors' code does the
    same when a class is given; with no class it takes each size's own top-1 and leaves out the sizes
    whose top-1 differs from the first size's: `same_top1=True` does that.

    The authors' code runs one image on CUDA; this runs every image of a chunk together at each size, on
    the input's device. `passes()` is the number of sizes (a forward and a backward each).

    Args:
        model: the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose activations and gradients are taken: a
            submodule of `model` or its name; None (default) finds it by probing the model.
        sizes: the input sizes, in pixels as they are; None (default) is the authors' range(224, 1000, 100)
            — 8 sizes, 224 to 924 — for a 224 px input, and the same sizes scaled by p / 224 otherwise
            (`default_sizes`).
        same_top1: with no target only, leave out per image the sizes whose own top-1 class differs from
            the first size's (the authors' code without a class); an image left with no size gets an
            all-zero map. False by default.
        **options (Any): `batch_size`, `input_size`, `layer` and `precision`, as `CAMMethod` takes them.

    A model that does not take the authors' sizes (HRNet and DLA need multiples of 32) gets the default
    sizes rounded to the nearest multiple of its stride (`multiple`); this is found when the method is built,
    by one forward at the smallest size other than the input's.

    Raises:
        JitterCamError: `sizes` is not a non-empty list of positive integers; the model does not run at the
            smallest of the sizes other than its input size (checked when built: a fixed-size transformer);
            or as `CAMMethod` raises it; when called, the images are not square, or the model does not run at
            one of the sizes.
    """

    precisions = ("fp32",)  # bf16: 8.8 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here

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
        self.same_top1 = check_flag(same_top1, "same_top1")
        self.multiple = 1  # the default sizes are rounded to this multiple (the stride, where the model needs it)
        self._check_model_sizes()

    def _check_model_sizes(self) -> None:
        """One forward at the smallest size other than the probe's input: a model that refuses the authors'
        sizes (324, 424, ... are no multiples of 32: HRNet, DLA) gets the default sizes rounded to its stride;
        one that refuses those too (a fixed-size transformer), or a given size, is refused in one line."""
        pixels = self.layer.input_size
        others = sorted(size for size in self.sizes_for(pixels) if size != pixels)
        if not others:
            return
        reason = size_refusal(self.model, others[0])
        if reason is not None and self.sizes is None and others[0] % self.layer.stride:
            self.multiple = self.layer.stride
            others = sorted(size for size in self.sizes_for(pixels) if size != pixels)
            reason = None if not others else size_refusal(self.model, others[0])
        if reason is not None:
            raise JitterCamError(size_message("CAMERAS", others[0], reason))

    def sizes_for(self, pixels: int) -> list[int]:
        """The input sizes explained for a p × p input.

        Args:
            pixels: the input's side p, in pixels.

        Returns:
            The sizes in pixels: `sizes` as given, else `default_sizes(pixels)`, each rounded to the nearest
                multiple of the network's stride when the model takes no others (`multiple`).
        """
        if self.sizes is not None:
            return self.sizes
        step = self.multiple
        return sorted({max(step, round(size / step) * step) for size in default_sizes(pixels)})

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
            with at_size("CAMERAS", size):
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
    """Σ_c mean_s(↑A_s)_c ⊙ mean_s(↑G_s)_c at p × p, ↑ the bilinear resize; `kept` `(S, B)` of 0/1 leaves
    sizes out per image (the means are over the kept sizes; none kept: all zero).

    Computed without the C × p × p resized tensors (411 MB per image and size for ResNet50 at 224 px, most
    of CAMERAS's time on a CPU when made directly). The resize is separable, ↑X = R_s X R_sᵀ with R_s the
    p × n_s matrix of bilinear weights, so with the rows of every size stacked, R = [R_1 … R_S] (p × Σn_s):

        H_A[x] = the Σn_s × C matrix whose rows of size s are w_s · Σ_j R_s[x, j] A_s[:, :, j]ᵀ
        map[y, x] = Σ_{I,K} R[y, I] R[y, K] (H_A[x] H_G[x]ᵀ)[I, K]

    one Gram matrix over the channels per column x (Σn_s = 164 rows for ResNet50's 8 sizes), equal to the
    direct computation up to float rounding (tests compare the two).

    When every G_s is constant over space — the target layer feeds global average pooling and a linear
    layer (ResNet, EfficientNet), whose gradient is W_c / (h·w) at every position — mean_s(↑G_s)_c is a
    number ḡ_c per channel and the map is Σ_s w_s ↑(Σ_c ḡ_c A_s,c): one channel resized per size."""
    batch, channels = activations[0].shape[:2]
    if kept is None:
        kept = activations[0].new_ones(len(activations), batch)
    weights = (kept / kept.sum(dim=0).clamp_min(1))[:, :, None, None, None]
    if all(_constant_over_space(g) for g in gradients):
        mean_g = sum(w[:, :, 0, 0] * g[:, :, 0, 0] for w, g in zip(weights, gradients))  # (B, C)
        total = sum(resize(w[:, 0] * torch.einsum("bc,bchw->bhw", mean_g, a), pixels)
                    for w, a in zip(weights, activations))
        assert isinstance(total, torch.Tensor)  # not sum()'s 0: there is at least one size
        return total
    rows = [_resize_matrix(a.shape[-1], pixels, a) for a in activations]
    stacked = torch.cat(rows, dim=1).T  # (I, p): Rᵀ
    bounds = [0, *accumulate(r.shape[1] for r in rows)]

    def by_column(tensors):  # (B, j, i·C): one matmul with R_s resizes along the columns
        return [(t * w).permute(0, 3, 2, 1).reshape(batch, t.shape[-1], -1) for t, w in zip(tensors, weights)]

    sides = by_column(activations), by_column(gradients)
    columns = max(1, _BLOCK // (batch * bounds[-1] * channels))
    total = activations[0].new_empty(batch, pixels, pixels)
    buffers = [activations[0].new_empty(batch, min(columns, pixels), bounds[-1], channels) for _ in sides]
    for start in range(0, pixels, columns):
        part = slice(start, min(start + columns, pixels))
        count = part.stop - part.start
        for buffer, tensors in zip(buffers, sides):  # H_A, then H_G, for these columns
            for s, (matrix, tensor) in enumerate(zip(rows, tensors)):
                torch.matmul(matrix[part], tensor, out=buffer[:, :count, bounds[s] : bounds[s + 1]].flatten(2))
        gram = buffers[0][:, :count] @ buffers[1][:, :count].transpose(-1, -2)  # (B, x, I, K)
        total[:, :, part] = ((gram @ stacked) * stacked).sum(dim=2).transpose(1, 2)
    return total


def _constant_over_space(tensor: torch.Tensor) -> bool:
    return bool(torch.equal(tensor, tensor[:, :, :1, :1].expand_as(tensor)))


def _resize_matrix(size: int, pixels: int, like: torch.Tensor) -> torch.Tensor:
    """The p × n matrix R with R x = the bilinear (half-pixel centres) resize of a length-n vector x to p."""
    identity = torch.eye(size, device=like.device, dtype=like.dtype)
    if size == pixels:
        return identity
    return F.interpolate(identity[None], size=pixels, mode="linear", align_corners=False)[0].T
