"""ShapleyCAM (Cai 2025): Grad-CAM's channel weights corrected by the Hessian of the target's score,
a second-order Taylor estimate of each channel's Shapley value."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import JitterCamError
from ..inputs import resolve_targets
from ..probe import TargetLayer
from .base import CAMMethod
from .capture import LayerCapture
from .registry import register_method

SCORES = ("rest", "logit")


def target_score(logits: torch.Tensor, classes: torch.Tensor, score: str) -> torch.Tensor:
    """The utility explained, one per image.

    Args:
        logits: `(B, K)` the model's outputs.
        classes: `(B,)` the classes explained.
        score: "rest", the Residual Softmax Target-class utility y_c + log softmax(y)_c (= y_c − the
            cross-entropy of class c); "logit", y_c.

    Returns:
        `(B,)` scores, differentiable with respect to `logits`.
    """
    logit = logits.gather(1, classes[:, None])[:, 0]
    if score == "logit":
        return logit
    return logit + F.log_softmax(logits, dim=1).gather(1, classes[:, None])[:, 0]


def gradient_and_hvp(
    model, layer: TargetLayer, images: torch.Tensor, target: torch.Tensor | None, score: str = "rest"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward, one backward and one double backward through the network after the layer: the
    layer's activations A, the gradient g = ∂s/∂A of the score s and the Hessian-vector product H·A
    (H = ∂²s/∂A²), with A itself as the vector.

    The trunk up to the layer runs without autograd (`LayerCapture`'s "graph" mode): both derivatives are
    taken with respect to the activations only (`torch.autograd.grad`), never the parameters, and the
    double backward runs through the head only. The images of a batch are independent, so H is
    block-diagonal over the batch and one product serves every image. Where the score is linear in A (the
    logit after global average pooling and a linear layer) H·A is zero.

    Args:
        model: the classifier.
        layer: its probed target layer.
        images: `(B, 3, H, W)` model inputs.
        target: `(B,)` class indices, or None for each image's top-1 class.
        score: "rest" or "logit" (`target_score`).

    Returns:
        `(A, g, H·A)`, each `(B, C, h, w)`: A rectified where `layer.rectify` says so (g and H·A are taken
            at the layer's raw output, which is also the vector of the product).

    Raises:
        JitterCamError: a class index is out of range, or the target layer did not run for this input.
    """
    with torch.inference_mode(False):
        with LayerCapture.of(layer, "graph") as capture, torch.no_grad():
            logits = model(images)
        assert capture.output is not None  # leaving the capture raised if the layer did not run
        activations = capture.output
        classes = resolve_targets(target, logits.detach()).clone()
        with torch.enable_grad():
            utility = target_score(logits, classes, score).sum()
            (gradients,) = torch.autograd.grad(utility, activations, create_graph=True)
            hvp = None
            if gradients.requires_grad:
                (hvp,) = torch.autograd.grad(gradients, activations, grad_outputs=activations.detach(),
                                             allow_unused=True)
    raw = activations.detach()
    hvp = torch.zeros_like(raw) if hvp is None else hvp.detach()
    return (raw.relu() if layer.rectify else raw), gradients.detach(), hvp


@register_method("shapleycam")
class ShapleyCAM(CAMMethod):
    """ShapleyCAM (Huaiguang Cai, "CAMs as Shapley Value-based Explainers", arXiv 2501.06261, 2025):
    ReLU(Σ_c w_c A_c) with w_c = mean_ij (g − ½ H·A)_c — g the gradient of the score s with respect to the
    target layer's activations A, H·A the Hessian of s times A itself (a Hessian-vector product, one
    double backward through the network after the layer).

    The weights are those of the peer the author merged it into (jacobgil/pytorch-grad-cam 1.5.7,
    `ShapleyCAM.get_cam_weights`: `grads − 0.5 · hvp`, averaged over space; the author's repository
    caihuaiguang/pytorch-shapley-cam has the same). The score:

    * ``score="rest"`` (default): the paper's Residual Softmax Target-class utility, y_c + log p_c
      (y_c minus the cross-entropy of class c; pytorch-grad-cam's `ClassifierOutputReST`), which the
      paper proposes for ShapleyCAM and with which its experiments run (the author's
      `usage_examples/ADCC_imagenet_gist.py`);
    * ``score="logit"``: y_c, what pytorch-grad-cam explains when no target object is given
      (`ClassifierOutputTarget`). After global average pooling and a linear layer y_c is linear in A, so
      H·A = 0 and this is Grad-CAM exactly; the softmax in ReST is what makes H non-zero there.

    The map is at the target layer's resolution (`layer_map`: Jitter-CAM can wrap it,
    `jittercam:shapleycam`). One forward pass (and a backward and a double backward through the head).

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose activations are weighted: a submodule of
            `model` or its name; None (default) finds it by probing the model.
        score: "rest" (default) or "logit", as above.
        **options (Any): `batch_size`, `input_size` and `layer`, as `CAMMethod` takes them.

    Raises:
        JitterCamError: an unknown `score`, or as `CAMMethod` raises it.
    """

    precisions = ("fp32",)  # bf16: 5.1 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here

    def __init__(self, model, target_layer=None, *, score: str = "rest", **options) -> None:
        if score not in SCORES:
            raise JitterCamError(f"score must be one of {', '.join(map(repr, SCORES))}, not {score!r}")
        super().__init__(model, target_layer, **options)
        self.score = score

    def options(self) -> dict:
        return {**super().options(), "score": self.score}

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        activations, gradients, hvp = gradient_and_hvp(self.model, self.layer, images, target, self.score)
        weights = (gradients - 0.5 * hvp).mean(dim=(2, 3))
        return torch.einsum("bc,bchw->bhw", weights, activations).relu()
