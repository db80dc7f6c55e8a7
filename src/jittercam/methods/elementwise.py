"""Element-wise Grad-CAM: the gradient times the activation at every position and channel, each product
rectified before the channels are summed."""
from __future__ import annotations

import torch

from ..probe import TargetLayer
from .base import CAMMethod, activations_and_gradients
from .registry import register_method


@register_method("elementwise")
class GradCAMElementWise(CAMMethod):
    """Element-wise Grad-CAM: M = Σ_c ReLU(∂y_t/∂A_c ⊙ A_c), y_t the target's logit — HiResCAM's
    product with the ReLU moved inside the sum, so evidence against the class in one channel cannot
    cancel evidence for it in another at the same position (LayerCAM rectifies the gradient alone).

    It has no paper: jacobgil/pytorch-grad-cam defines it (`GradCAMElementWise.get_cam_image`:
    ``np.maximum(grads * activations, 0).sum(axis=1)``), and this is that map, raw (the peer resizes and
    min–max scales it). The peer's ``eigen_smooth`` (Eigen-CAM of the rectified products) is `eigengradcam`'s
    relative and is left out. One forward and one backward; the map is at the target layer's resolution.

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose activations and gradients are taken: a
            submodule of `model` or its name; None (default) finds it by probing the model.
        **options (Any): `batch_size`, `input_size`, `layer` and `precision` ("fp32", "bf16" or "fp16":
            the forward under autocast), as `CAMMethod` takes them.

    Raises:
        JitterCamError: as `CAMMethod` raises it.
    """

    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here

    precisions = ("fp32", "bf16", "fp16")

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        activations, gradients, _ = activations_and_gradients(self.model, self.layer, images, target, self.precision)
        return (gradients * activations).relu().sum(dim=1)
