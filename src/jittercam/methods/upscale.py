"""Upscale-CAM: the base method once, on the input Jitter-CAM enlarges — the gain of scale without jitter."""
from __future__ import annotations

import torch

from ..card import model_device
from ..maps import resize
from .base import at_size, check_size
from .jitter import EnlargingMethod, check_square, enlarge
from .registry import register_wrapper


@register_wrapper("upscale", default_base="gradcam", needs_layer_map=True)
class UpscaleCAM(EnlargingMethod):
    """Not in the paper: the control experiment for Jitter-CAM. For a p × p input whose base map is m × m
    (total stride k, the probe's, as Jitter-CAM uses it) and `size` = m + d, the input is enlarged to
    p + d·k pixels exactly as Jitter-CAM enlarges it (`enlarge`, bilinear with align_corners=False by
    default, `interpolation="nearest"` as an option) and the base method explains the whole enlarged image
    once, for the top-1 class of the *original* image when `target` is None. The map has Jitter-CAM's
    size, (m + d) × (m + d), so the two differ only in the jitter.

    Cost: one pass (`passes()` is the base's at the enlarged size), but of (p + d·k)² pixels instead of
    p²: about (1 + d/m)² of one pass at p — 4× at the default size (d = m), against (d + 1)² passes of
    p² pixels for Jitter-CAM (64 on a 7 × 7 network). Like Jitter-CAM, a `target` of None costs one more
    forward at p pixels (no backward) to find the class, not counted in `passes()`.

    When the network's geometry does not scale exactly — Inception v3: m = 8 at 299 px, k = 37, but 17 × 17
    at 595 px instead of 16 × 16 — the base map is resized bilinearly (align_corners=False) to m + d.
    Resizing, not cropping: both maps span the whole enlarged image, as Jitter-CAM's does, so a cell keeps
    its place in the image; a crop would shift the map by half a cell and drop a border row.

    Args:
        model: the classifier to explain.
        base: the base method, a class or a built instance (Grad-CAM by default), as `EnlargingMethod`
            takes it.
        size: m + d; None doubles m; `size == m` returns exactly the base method's map of the original
            input.
        target_layer: the base method's target layer, when `base` is a class; None finds it by probing.
        batch_size: the number of images per forward (the base gets it too); None: the measured plan's,
            else the device's default.
        input_size: the square input size the base's target layer is probed at; None: the model card's.
        interpolation: how the input is enlarged: "bilinear" (default, align_corners=False) or "nearest".
        precision: "fp32" (default), or "bf16"/"fp16" where the base supports it.

    Raises:
        JitterCamError: as `EnlargingMethod` raises it; the model does not run at the enlarged size of its
            input size (a fixed-size vision transformer: checked when built, by one forward there); when
            called, the images are not square, or the model does not run at their enlarged size.
    """

    def check_input_sizes(self) -> None:
        """A fixed-size model (a vision transformer without `dynamic_img_size`, MaxViT's windows) is refused
        here, in one line, by one forward at the enlarged size of the probe's input."""
        pixels = self.layer.input_size
        m, size = self.geometry(pixels, model_device(self.model))
        if size != m:
            check_size(self.model, "Upscale-CAM", pixels + (size - m) * self.layer.stride)

    def passes(self, input_size: int | None = None) -> int:
        pixels = input_size or self.layer.input_size
        m, size = self.geometry(pixels, model_device(self.model))
        return self.base.passes(pixels + (size - m) * self.layer.stride)

    def compiled_pieces(self, input_size: int) -> set[tuple[str | None, int]]:
        m, size = self.geometry(input_size, model_device(self.model))
        return self.base.compiled_pieces(input_size + (size - m) * self.layer.stride)

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        check_square(images)
        pixels = images.shape[-1]
        m, size = self.geometry(pixels, images.device)
        if size == m:
            return self.base(images, target)
        target = self._original_top1(images, target)
        enlarged = pixels + (size - m) * self.layer.stride
        with at_size("Upscale-CAM", enlarged):
            maps = self.base(enlarge(images, enlarged, self.interpolation), target)
        return resize(maps, size)

    def _explain_many(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._explain(images, targets)  # the base takes the (B, K) classes as they are
