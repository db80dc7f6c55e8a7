"""FullGrad (Srinivas & Fleuret, NeurIPS 2019): the input-gradient term and the bias-gradient terms of
every convolution and batch norm, each made positive, scaled and brought to the input's size, summed —
a map at the input's resolution."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import JitterCamError
from ..inputs import resolve_targets
from .base import CAMMethod
from .registry import register_method

VARIANTS = ("paper", "pytorch-grad-cam")
_EPS = {"paper": 1e-6, "pytorch-grad-cam": 1e-7}


def bias_layers(model: nn.Module, variant: str = "paper") -> list[nn.Module]:
    """The modules whose bias-gradients FullGrad adds up, in `model.modules()` order.

    Args:
        model: the classifier.
        variant: "paper": every `nn.Conv2d` with a bias and every `nn.BatchNorm2d` with running statistics,
            subclasses included (the authors' `FullGradExtractor`, which uses `isinstance`);
            "pytorch-grad-cam": modules whose type is exactly `nn.Conv2d` or `nn.BatchNorm2d` and whose
            `bias` is not None (its `layer_with_2D_bias`).

    Returns:
        The modules (possibly none).
    """
    return [module for module in model.modules() if _has_bias(module, variant)]


def _has_bias(module: nn.Module, variant: str) -> bool:
    if variant == "pytorch-grad-cam" and type(module) not in (nn.Conv2d, nn.BatchNorm2d):
        return False
    if isinstance(module, nn.BatchNorm2d):  # the effective bias needs the running statistics
        with_bias = module.bias is not None or variant == "paper"
        return with_bias and module.running_mean is not None
    return isinstance(module, nn.Conv2d) and module.bias is not None


def effective_bias(module: nn.Module) -> torch.Tensor:
    """A layer's bias per output channel: a convolution's `bias`; for a batch norm in eval mode, the
    constant of (x − μ)·w/√(σ² + ε) + b as an affine function of x, b − μ·w/√(σ² + ε).

    Args:
        module: a convolution with a bias, or a batch norm with running statistics.

    Returns:
        `(C,)` the bias, detached.
    """
    if isinstance(module, nn.BatchNorm2d):
        assert module.running_mean is not None and module.running_var is not None
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        shift = -module.running_mean * scale
        return (shift if module.bias is None else shift + module.bias).detach()
    assert isinstance(module.bias, torch.Tensor)
    return module.bias.detach()


@contextmanager
def _keeping(modules: list[nn.Module], kept: list[tuple[nn.Module, torch.Tensor]]) -> Iterator[None]:
    """Forward hooks on `modules` for the forwards inside the block, removed in `finally`: every call's
    output is kept in `kept` (with its module) and a clone goes downstream, so that an in-place operation
    after the layer (ResNet's `ReLU(inplace=True)` after a batch norm) cannot change the tensor whose
    gradient is taken. `LayerCapture` hooks one call of one layer, which must run; FullGrad needs every
    call of every bias layer, some of which may not run (an auxiliary head in eval mode)."""

    def keep(module: nn.Module, _inputs, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            return None
        kept.append((module, output))
        return output.clone()

    handles = []
    try:
        for module in modules:
            handles.append(module.register_forward_hook(keep))
        yield
    finally:
        for handle in handles:
            handle.remove()


@register_method("fullgrad")
class FullGrad(CAMMethod):
    """FullGrad (Srinivas & Fleuret, "Full-Gradient Representation for Neural Network Visualization",
    NeurIPS 2019): with s the target's logit, the saliency map

        ψ(∇_x s ⊙ x) + Σ_layers Σ_c ψ(∇_{z} s ⊙ b)_c

    where z is a layer's output and b its bias per channel (a batch norm's effective bias, b − μ·w/σ),
    and ψ takes the absolute value, min–max scales it and resizes it to the input's size; the colour
    channels and each layer's channels are summed. One forward and one backward (from the input, so the
    trunk's graph is built): `passes()` is 1. The map is at the INPUT's resolution (`uses_layer` and
    `layer_map` False: there is no target layer, and no wrapper takes it).

    * ``variant="paper"`` (default), as the authors' code (idiap/fullgrad-saliency, `FullGrad.saliency`,
      `_postProcess`, `FullGradExtractor`): ψ scales each term by its min and max over all its channels
      and positions at once (|t| − min) / (max − min + 1e-6), and resizes bilinearly with
      `align_corners=True`; layers are found with `isinstance` (subclasses of `nn.Conv2d` too).
    * ``variant="pytorch-grad-cam"``: jacobgil/pytorch-grad-cam 1.5.7 (`FullGrad`,
      `scale_accross_batch_and_channels`): ψ scales every channel by its own min and max (+ 1e-7), the
      input term too, and resizes with half-pixel centres (OpenCV); layers of exactly the types
      `nn.Conv2d` and `nn.BatchNorm2d`. Its final min–max scaling is left to `jittercam.upsample`.

    Biases of linear layers are in the full-gradient decomposition but not in the map (they have no
    spatial extent), as in both. A model without a convolution with a bias or a batch norm is refused: its
    map would be the input-gradient term alone.

    Args:
        model (nn.Module): the classifier to explain.
        variant: "paper" (default) or "pytorch-grad-cam", as above.
        **options (Any): `batch_size`, as `CAMMethod` takes it (no `target_layer`).

    Raises:
        JitterCamError: an unknown `variant`; a model with no layer to take a bias-gradient from; a
            `target_layer`; or as `CAMMethod` raises it.
    """

    precisions = ("fp32",)  # bf16: 11 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    uses_layer = False
    layer_map = False

    def __init__(self, model: nn.Module, *, variant: str = "paper", **options) -> None:
        if variant not in VARIANTS:
            raise JitterCamError(f"variant must be one of {', '.join(map(repr, VARIANTS))}, not {variant!r}")
        super().__init__(model, **options)
        self.variant = variant
        self.layers = bias_layers(model, variant)
        if not self.layers:
            kinds = "nn.Conv2d with a bias or nn.BatchNorm2d" + (" (exact types)" if variant != "paper" else "")
            raise JitterCamError(f"FullGrad needs layers with a bias to take gradients at ({kinds}); "
                                 f"{type(model).__name__} has none")

    def options(self) -> dict:
        return {"batch_size": self.batch_size, "variant": self.variant}

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        size = tuple(images.shape[-2:])
        kept: list[tuple[nn.Module, torch.Tensor]] = []
        with torch.inference_mode(False), torch.enable_grad():
            pixels = images.detach().clone().requires_grad_(True)
            with _keeping(self.layers, kept):
                logits = self.model(pixels)
            classes = resolve_targets(target, logits.detach()).clone()
            score = logits.gather(1, classes[:, None]).sum()
            found = torch.autograd.grad(score, [pixels] + [out for _, out in kept], allow_unused=True)
        with torch.no_grad():
            total = self._term(found[0] * pixels.detach(), size)
            for (module, _), gradient in zip(kept, found[1:]):
                if gradient is not None:
                    total += self._term(gradient * effective_bias(module)[:, None, None], size)
        return total

    def _term(self, values: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """ψ of one `(B, C, h, w)` term, its channels summed, at `size`."""
        values = values.abs()
        eps = _EPS[self.variant]
        dims = (1, 2, 3) if self.variant == "paper" else (2, 3)
        low = values.amin(dim=dims, keepdim=True)
        span = values.amax(dim=dims, keepdim=True) - low
        summed = ((values - low) / (span + eps)).sum(dim=1)
        if tuple(summed.shape[-2:]) == size:
            return summed
        corners = self.variant == "paper"
        return F.interpolate(summed[:, None], size=size, mode="bilinear", align_corners=corners)[:, 0]
