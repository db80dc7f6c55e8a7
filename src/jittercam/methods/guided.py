"""Guided Backpropagation (Springenberg et al. 2015) and the `guided:` wrapper (Guided Grad-CAM, Selvaraju
et al. 2017; Guided Jitter-CAM, the Jitter-CAM paper's §4.7)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import JitterCamError
from ..inputs import Target, resolve_targets
from ..maps import upsample
from .base import CAMMethod
from .gradient import GradCAM
from .registry import register_method, register_wrapper

Activations = type[nn.Module] | tuple[type[nn.Module], ...]


def as_activations(activations: Activations) -> tuple[type[nn.Module], ...]:
    """One activation class or several, as a tuple of `nn.Module` classes.

    Args:
        activations: an `nn.Module` class (`nn.ReLU`) or a sequence of them.

    Returns:
        The classes as a tuple.

    Raises:
        JitterCamError: `activations` is empty or holds something other than `nn.Module` classes.
    """
    kinds = (activations,) if isinstance(activations, type) else tuple(activations)
    if not kinds or not all(isinstance(kind, type) and issubclass(kind, nn.Module) for kind in kinds):
        raise JitterCamError(f"activations must be nn.Module classes such as nn.ReLU, got {activations!r}")
    return kinds


def guided_modules(model: nn.Module, activations: Activations) -> list[nn.Module]:
    """The modules of `model` that are instances of `activations`.

    Args:
        model: the classifier.
        activations: the activation classes to guide (`as_activations`).

    Returns:
        The matching modules, in `model.modules()` order.

    Raises:
        JitterCamError: there are none, since guided backpropagation would then be the plain gradient
            without saying so (or `activations` is not a valid set of classes).
    """
    activations = as_activations(activations)
    modules = [module for module in model.modules() if isinstance(module, activations)]
    if not modules:
        relu6 = any(isinstance(module, nn.ReLU6) for module in model.modules())
        hint = " (it has ReLU6 modules: pass activations=(nn.ReLU, nn.ReLU6))" if relu6 else ""
        names = ", ".join(kind.__name__ for kind in activations)
        raise JitterCamError(
            f"the model has no {names} module to guide{hint}; functional ReLUs (F.relu) cannot be guided, "
            "so guided backpropagation would be the plain gradient"
        )
    return modules


def _positive(gradient: torch.Tensor) -> torch.Tensor:
    return gradient.clamp(min=0)


def _guide(_module: nn.Module, _inputs, output) -> None:
    if isinstance(output, torch.Tensor) and output.requires_grad:
        output.register_hook(_positive)  # lives on this forward's graph, not on the model


@contextmanager
def _guiding(modules: list[nn.Module]) -> Iterator[None]:
    """Forward hooks on `modules` for the forwards inside the block, removed in `finally`. Each hook puts
    a tensor hook on the module's output that keeps only the positive part of the gradient arriving
    there; the module's own backward then applies its mask (x > 0 for ReLU, 0 < x < 6 for ReLU6). This
    is the one place a method hooks the model directly: `LayerCapture` hooks one layer's forward, and
    guided backpropagation changes the backward of every activation."""
    handles = []
    try:
        for module in modules:
            handles.append(module.register_forward_hook(_guide))
        yield
    finally:
        for handle in handles:
            handle.remove()


def guided_gradients(
    model: nn.Module, activations: Activations, images: torch.Tensor, target: Target
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward and one backward: the guided gradient of the target's logit with respect to the
    images, and the class indices explained.

    Gradients are taken with `torch.autograd.grad` with respect to a copy of the images only: no
    parameter gets a `.grad`, and the caller's images are untouched. Works under `no_grad` and
    `inference_mode`.

    Args:
        model: the classifier.
        activations: the activation classes whose backward is guided (`as_activations`).
        images: `(B, 3, H, W)` model inputs.
        target: an int, one class per image, or None for each image's top-1.

    Returns:
        `(gradients, classes)`: the `(B, 3, H, W)` guided gradient and the `(B,)` class indices.

    Raises:
        JitterCamError: the model has no module of `activations`, or a class index is out of range.
    """
    modules = guided_modules(model, activations)
    with torch.inference_mode(False), torch.enable_grad():
        pixels = images.detach().clone().requires_grad_(True)  # a normal tensor even from inference mode
        with _guiding(modules):
            logits = model(pixels)
        classes = resolve_targets(target, logits.detach()).clone()  # not an inference tensor
        score = logits.gather(1, classes[:, None]).sum()
        (gradients,) = torch.autograd.grad(score, pixels)
    return gradients, classes


def reduce_channels(gradients: torch.Tensor) -> torch.Tensor:
    """The largest absolute value over the channels, as in Simonyan et al.'s saliency maps (the sign of
    an input gradient says nothing about where the evidence is).

    Args:
        gradients: `(B, C, H, W)` input gradients.

    Returns:
        `(B, H, W)` maps.
    """
    return gradients.abs().amax(dim=-3)


class _PixelMethod(CAMMethod):
    """A method whose raw result has the input's channels: `attribute_channels` gives `(B, 3, H, W)`, the
    contract's `attribute` reduces it with `reduce_channels`."""

    uses_layer = False
    layer_map = False

    def attribute(self, images: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Maps at the input's resolution: `reduce_channels(attribute_channels(...))`.

        Args:
            images: `(B, 3, H, W)` model inputs.
            target: an int, one class per image, or None for each image's top-1.

        Returns:
            `(B, H, W)` maps on the images' device.
        """
        return reduce_channels(self.attribute_channels(images, target))

    def attribute_channels(self, images: torch.Tensor, target: Target = None) -> torch.Tensor:
        """The result before reducing the channels.

        Args:
            images: `(B, 3, H, W)` model inputs.
            target: an int, one class per image, or None for each image's top-1.

        Returns:
            `(B, 3, H, W)` on the images' device.
        """
        return super().attribute(images, target)  # chunks of `_explain`, which keeps the channels


@register_method("guidedbackprop")
class GuidedBackprop(_PixelMethod):
    """Springenberg et al. 2015: the gradient of the target logit with respect to the input pixels, with
    every ReLU's backward letting through only positive gradients at positive inputs:
    R = 1[x > 0] · max(R_out, 0).

    Covered, as Captum's `captum.attr.GuidedBackprop` (0.9): `nn.ReLU` modules (in-place ones too, as in
    torchvision's ResNets), each call of a module that runs several times. Not covered, as in Captum:
    functional ReLUs (`F.relu`, `torch.relu` — all of torchvision's Inception v3, DenseNet's last one)
    and other activations, whose backward stays the plain one. Unlike Captum, `nn.ReLU6` modules are
    guided too by default (R = 1[0 < x < 6] · max(R_out, 0)), so that EfficientNet-Lite0, whose only
    activation is ReLU6, can be explained; `activations=(nn.ReLU,)` is Captum's choice exactly (both are
    the same on every model without ReLU6). A model with no module of these classes is refused
    (`JitterCamError`) rather than silently given the plain gradient.

    Where the rectification happens differs from Captum's, not the numbers: Captum rectifies the gradient
    reaching the ReLU's input, we rectify the gradient reaching its output and let the ReLU's own backward
    mask it. The two are equal wherever the ReLU's input feeds nothing but the ReLU (every torchvision
    classifier); where it also feeds a skip connection, Captum rectifies the skip's share of the gradient
    too, which Springenberg et al.'s rule (changing the ReLU's backward only) does not.

    `attribute` returns `(B, H, W)`: max over the colour channels of |gradient| (`reduce_channels`);
    `attribute_channels` returns the gradient itself, `(B, 3, H, W)`. One forward and one backward.
    The model is left as it was: the hooks live only during the forward (`_guiding`), gradients go to the
    input only.

    Args:
        model: the classifier to explain.
        target_layer: must be None: guided backpropagation uses no layer.
        activations: the activation classes whose backward is guided: `(nn.ReLU, nn.ReLU6)` by default,
            `(nn.ReLU,)` as Captum.
        **options (Any): `batch_size` and `input_size`, as `CAMMethod` takes them.

    Raises:
        JitterCamError: the model has no module of `activations`; a `target_layer` is given; or as
            `CAMMethod` raises it.
    """

    precisions = ("fp32",)  # bf16: 67 % from fp32 on Lite0, relative max, CPU (bound: 1 %)

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        activations: Activations = (nn.ReLU, nn.ReLU6),
        **options,
    ) -> None:
        super().__init__(model, target_layer, **options)
        self.activations = as_activations(activations)
        guided_modules(model, self.activations)  # refused now, not at the first call

    def options(self) -> dict:
        return {"activations": _names(self.activations), "batch_size": self.batch_size}

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return guided_gradients(self.model, self.activations, images, target)[0]


@register_wrapper("guided", default_base="gradcam", needs_layer_map=False)
class Guided(_PixelMethod):
    """Guided Backpropagation ⊙ the base method's map: Guided Grad-CAM (Selvaraju et al. 2017) by
    default, Guided Jitter-CAM (the Jitter-CAM paper's §4.7) as `guided:jittercam`; any method of the
    contract can be the base (`base`, a class or a built instance).

    1. G = guided gradients `(B, 3, H, W)` of the target logit (`GuidedBackprop`, same `activations`);
    2. M = the base map for the same class (the top-1 of the image when `target` is None, found by the
       guided forward and handed to the base), resized bilinearly (align_corners=False) to H × W and
       min–max normalised per map to [0, 1] (`jittercam.upsample`);
    3. `attribute_channels` = G · M `(B, 3, H, W)`, Grad-CAM's Guided Grad-CAM; `attribute` =
       max over channels of |G · M| = max_c |G_c| · M (M ≥ 0), `(B, H, W)`, consistent with
       `GuidedBackprop`.

    Normalising M before the product (as pytorch-grad-cam's Guided Grad-CAM does; the Grad-CAM paper only
    says "upsampled") makes the product independent of the base map's scale, which differs between
    methods and images (a raw Grad-CAM is in logit units, a Jitter-CAM an average of them); the
    subtraction of the minimum zeroes the least relevant region. Costs 1 + the base's passes.

    Args:
        model: the classifier to explain.
        base: the base method, a class (built here for `model` with `target_layer`, `batch_size` and
            `input_size`) or a built instance; Grad-CAM by default.
        target_layer: the base method's target layer, when `base` is a class; None finds it by probing.
        batch_size: images per forward pass, for the guided pass and the base it builds; None: the
            measured plan's, else the device's default.
        input_size: the square input size the base's target layer is probed at; None: the model card's.
        activations: the activation classes whose backward is guided, as `GuidedBackprop` takes them.

    Raises:
        JitterCamError: the model has no module of `activations`; `target_layer` is given with a built
            base; or as the base's constructor raises it.
    """

    uses_layer = True  # as its default base does; each instance follows its own base

    def __init__(
        self,
        model: nn.Module,
        base: type[CAMMethod] | CAMMethod = GradCAM,
        target_layer: nn.Module | str | None = None,
        *,
        batch_size: int | None = None,
        input_size: int | None = None,
        activations: Activations = (nn.ReLU, nn.ReLU6),
    ) -> None:
        if isinstance(base, type):
            base = base(model, target_layer, batch_size=batch_size, input_size=input_size)
        elif target_layer is not None:
            raise JitterCamError("target_layer goes to the base method when the base is already built")
        self.base = base
        self.uses_layer = base.uses_layer  # the probe, if any, is the base's
        super().__init__(model, batch_size=batch_size, layer=base.layer)
        self.activations = as_activations(activations)
        guided_modules(model, self.activations)

    def passes(self, input_size: int | None = None) -> int:
        return 1 + self.base.passes(input_size)

    def options(self) -> dict:
        return {"base": self.base, "activations": _names(self.activations), "batch_size": self.batch_size}

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        gradients, classes = guided_gradients(self.model, self.activations, images, target)
        weights = upsample(self.base(images, classes), tuple(images.shape[-2:]))
        return gradients * weights[:, None].to(gradients.dtype)


def _names(activations: tuple[type[nn.Module], ...]) -> tuple[str, ...]:
    return tuple(kind.__name__ for kind in activations)
