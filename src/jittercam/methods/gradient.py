"""Grad-CAM and the gradient-weighted CAMs that differ from it only in the channel weights."""
from __future__ import annotations

import torch

from .base import CAMMethod, Target, activations_and_gradients


class _GradientWeightedCAM(CAMMethod):
    """ReLU(Σ_c w_c A_c): one forward and one backward per chunk; subclasses define the weights w."""

    def _explain(self, images: torch.Tensor, target: Target) -> torch.Tensor:
        activations, gradients, _ = activations_and_gradients(self.model, self.layer, images, target)
        weights = self.channel_weights(activations, gradients)
        return torch.einsum("bc,bchw->bhw", weights, activations).relu()

    @staticmethod
    def channel_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GradCAM(_GradientWeightedCAM):
    """Selvaraju et al. 2017: w_c = spatial mean of the gradient of the target logit."""

    @staticmethod
    def channel_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=(2, 3))


class GradCAMPlusPlus(_GradientWeightedCAM):
    """Chattopadhyay et al. 2018, closed form for an exponential score (as pytorch-grad-cam):
    α = g² / (2g² + Σ_ij A · g³), α = 0 where g = 0, and w_c = Σ_ij α · ReLU(g)."""

    @staticmethod
    def channel_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        g2 = gradients.pow(2)
        g3 = gradients.pow(3)
        activation_sums = activations.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + activation_sums * g3 + 1e-6)
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        return (alpha * gradients.relu()).sum(dim=(2, 3))


class XGradCAM(_GradientWeightedCAM):
    """Fu et al. 2020 (axiom-based): w_c = Σ_ij g · A / (Σ_ij A + 1e-7)."""

    @staticmethod
    def channel_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return (gradients * activations).sum(dim=(2, 3)) / (activations.sum(dim=(2, 3)) + 1e-7)
