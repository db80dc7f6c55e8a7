"""Grad-CAM and the gradient-weighted CAMs that differ from it only in the channel weights."""
from __future__ import annotations

import torch

from .base import GradientMapMethod
from .registry import register_method


class _GradientWeightedCAM(GradientMapMethod):
    """ReLU(Σ_c w_c A_c): one forward and one backward per chunk; subclasses define the weights w."""

    def gradient_map(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        weights = self.channel_weights(activations, gradients)
        return torch.einsum("bc,bchw->bhw", weights, activations).relu()

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_method("gradcam")
class GradCAM(_GradientWeightedCAM):
    """Selvaraju et al. 2017: w_c = spatial mean of the gradient of the target logit.

    Args:
        model: the classifier to explain.
        target_layer: the layer whose activations are weighted: a submodule of `model` or its name; None
            (default) finds it by probing the model (`find_target_layer`).
        batch_size: images per forward and backward pass; None: the measured plan's, else the device's
            default.
        input_size: the square input size the target layer is probed at; None: the model card's.
        layer: an already probed target layer, skipping the probe.
        precision: "fp32" (default), "bf16" or "fp16" (the forward under autocast); maps are float32 either
            way.

    Raises:
        JitterCamError: as `CAMMethod` raises it.
    """

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """w_c = the spatial mean of g.

        Args:
            activations: `(B, C, h, w)` activations A of the target layer.
            gradients: `(B, C, h, w)` gradient g of the target's logit with respect to A.

        Returns:
            `(B, C)` channel weights w_c.
        """
        return gradients.mean(dim=(2, 3))


def plusplus_weights(
    activations: torch.Tensor,
    first: torch.Tensor,
    second: torch.Tensor,
    third: torch.Tensor,
    epsilon: float = 0.0,
) -> torch.Tensor:
    """Grad-CAM++'s channel weights (Chattopadhyay et al. 2018, eq. 19) from the first three derivatives:
    α = D² / (2D² + Σ_ab A_ab · D³), α = 0 where the denominator is 0, and w_c = Σ_ij α · ReLU(D¹).

    Grad-CAM++ passes g, g², g³ of one gradient g; Smooth Grad-CAM++ their averages over noisy inputs.

    Args:
        activations: `(B, C, h, w)` activations A of the target layer.
        first: `(B, C, h, w)` first derivative D¹ (the gradient, or its average).
        second: `(B, C, h, w)` D² (g², or its average).
        third: `(B, C, h, w)` D³ (g³, or its average).
        epsilon: added to the denominator (0: the paper); when nonzero, α = 0 where D¹ = 0 too
            (pytorch-grad-cam's form).

    Returns:
        `(B, C)` channel weights w_c.
    """
    denominator = 2 * second + activations.sum(dim=(2, 3), keepdim=True) * third + epsilon
    alpha = torch.where(denominator != 0, second / torch.where(denominator != 0, denominator, 1), 0)
    if epsilon:
        alpha = torch.where(first != 0, alpha, 0)
    return (alpha * first.relu()).sum(dim=(2, 3))


@register_method("gradcam++")
class GradCAMPlusPlus(_GradientWeightedCAM):
    """Chattopadhyay et al. 2018, eq. 19 (the closed form for an exponential score):
    α = g² / (2g² + Σ_ij A · g³), with α = 0 where the denominator is 0, and w_c = Σ_ij α · ReLU(g).

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose activations are weighted: a submodule of
            `model` or its name; None (default) finds it by probing the model (`find_target_layer`).
        epsilon: added to the denominator. The paper has none (the default, 0); pytorch-grad-cam adds
            1e-6 (and sets α = 0 where g = 0), which is as large as the squared gradients of a network's head
            (EfficientNet-Lite0: median g² ≈ 7.8e-7) and moves its maps 15–18 % from eq. 19 there.
        **options (Any): `batch_size`, `input_size`, `layer` and `precision`, as `CAMMethod` takes them.

    Raises:
        JitterCamError: as `CAMMethod` raises it.
    """

    def __init__(self, model, target_layer=None, *, epsilon: float = 0.0, **options) -> None:
        super().__init__(model, target_layer, **options)
        self.epsilon = float(epsilon)

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """w_c = Σ_ij α · ReLU(g), α of eq. 19.

        Args:
            activations: `(B, C, h, w)` activations A of the target layer.
            gradients: `(B, C, h, w)` gradient g of the target's logit with respect to A.

        Returns:
            `(B, C)` channel weights w_c.
        """
        return plusplus_weights(activations, gradients, gradients.pow(2), gradients.pow(3), self.epsilon)

    def options(self) -> dict:
        return {**super().options(), "epsilon": self.epsilon}


@register_method("xgradcam")
class XGradCAM(_GradientWeightedCAM):
    """Fu et al. 2020 (axiom-based): w_c = Σ_ij g · A / (Σ_ij A + 1e-7). After global average pooling and
    one linear layer g is constant over space, so this equals Grad-CAM there.

    Args:
        model: the classifier to explain.
        target_layer: the layer whose activations are weighted: a submodule of `model` or its name; None
            (default) finds it by probing the model (`find_target_layer`).
        batch_size: images per forward and backward pass; None: the measured plan's, else the device's
            default.
        input_size: the square input size the target layer is probed at; None: the model card's.
        layer: an already probed target layer, skipping the probe.
        precision: "fp32" (default), "bf16" or "fp16" (the forward under autocast); maps are float32 either
            way.

    Raises:
        JitterCamError: as `CAMMethod` raises it.
    """

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """w_c = Σ_ij g · A / (Σ_ij A + 1e-7).

        Args:
            activations: `(B, C, h, w)` activations A of the target layer.
            gradients: `(B, C, h, w)` gradient g of the target's logit with respect to A.

        Returns:
            `(B, C)` channel weights w_c.
        """
        return (gradients * activations).sum(dim=(2, 3)) / (activations.sum(dim=(2, 3)) + 1e-7)
