"""Finer-CAM (Zhang et al., CVPR 2025): a gradient CAM of the target's logit against the logits of its
most similar classes, so that the evidence shared with them cancels."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import JitterCamError
from ..inputs import resolve_targets
from ..probe import TargetLayer
from .base import CAMMethod
from .registry import method_class, register_method

# the registered methods whose map depends on the class only through the gradient of its logit at the layer:
# Finer-CAM hands them the contrastive score as that logit
BASES = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")
VARIANTS = {"paper": 0.6, "pytorch-grad-cam": 1.0}  # each variant's default gamma


def references(logits: torch.Tensor, classes: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` classes whose logits are nearest to the target's, the target left out.

    Args:
        logits: `(B, K)` the model's outputs.
        classes: `(B,)` the target classes.
        count: how many reference classes (at most K − 1).

    Returns:
        `(B, count)` class indices, nearest first.
    """
    distance = (logits - logits.gather(1, classes[:, None])).abs()
    distance = distance.scatter(1, classes[:, None], float("inf"))
    return distance.topk(count, dim=1, largest=False).indices


def contrastive_score(
    logits: torch.Tensor, classes: torch.Tensor, others: torch.Tensor, gamma: float, variant: str = "paper"
) -> torch.Tensor:
    """Finer-CAM's score per image.

    Args:
        logits: `(B, K)` the model's outputs (the score is differentiable with respect to them).
        classes: `(B,)` the target classes c.
        others: `(B, T)` the reference classes d_t.
        gamma: the comparison strength γ.
        variant: "paper": y_c − γ · mean_t y_{d_t}; "pytorch-grad-cam": Σ_t p_t (y_c − γ y_{d_t}) /
            (Σ_t p_t + 1e-9) with p = softmax(y), differentiated through p as well.

    Returns:
        `(B,)` scores.
    """
    target = logits.gather(1, classes[:, None])
    compared = logits.gather(1, others)
    if variant == "paper":
        return (target - gamma * compared.mean(dim=1, keepdim=True))[:, 0]
    weights = logits.softmax(dim=1).gather(1, others)
    return (weights * (target - gamma * compared)).sum(dim=1) / (weights.sum(dim=1) + 1e-9)


class _ContrastiveModel(nn.Module):
    """The classifier with one output: Finer-CAM's score for the classes set in `classes` (None: each
    image's top-1). A base method explains its output 0, and its gradient is the contrastive score's."""

    def __init__(self, model: nn.Module, finer: FinerCAM) -> None:
        super().__init__()
        self.model = model
        self._finer = [finer]  # a list, so that the method is not registered as a submodule
        self.classes: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        finer = self._finer[0]
        logits = self.model(images)
        with torch.no_grad():
            classes = resolve_targets(self.classes, logits.detach()).clone()
            others = references(logits.detach(), classes, finer.references)
        return contrastive_score(logits, classes, others, finer.gamma, finer.variant)[:, None]


@register_method("finercam")
class FinerCAM(CAMMethod):
    """Finer-CAM ("Finer-CAM: Spotting the Difference Reveals Finer Details for Visual Explanation",
    Zhang et al., CVPR 2025, arXiv 2501.11309): the base CAM (Grad-CAM by default) of the score
    y_c − γ · (1/T) Σ_t y_{d_t} instead of y_c, where d_1..d_T are the T classes whose logits are nearest
    to y_c (the target excluded; chosen from this forward's logits). Evidence the target shares with
    the classes it is most easily confused with cancels; what remains tells it apart.

    * ``variant="paper"`` (default): the paper's mean over the references with γ = 0.6 and T = 3 (the
      authors' "aggregate" setting, Imageomics/Finer-CAM `generate_cams.py`); torchcam 0.5 implements
      exactly this (`torchcam.methods.FinerCAM`, `_contrastive_scores`).
    * ``variant="pytorch-grad-cam"``: jacobgil/pytorch-grad-cam 1.5.7 (`FinerCAM.forward` and
      `FinerWeightedTarget`): Σ_t p_t (y_c − γ y_{d_t}) / (Σ_t p_t + 1e-9), p the softmax of the logits
      (its gradient included), with γ = 1 by default (its `alpha`).

    The base is a registered method, named by `base_method`: one whose map depends on the class only
    through the gradient of its logit at the target layer (`BASES`: gradcam, gradcam++, xgradcam,
    hirescam, layercam). It runs on the model with the contrastive score as its only output. The map is
    the base's, at the target layer's resolution (`jittercam:finercam` wraps it; under Jitter-CAM each
    patch chooses its references from its own logits). One forward pass, as the base.

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the base's layer: a submodule of `model` or its name; None
            (default) finds it by probing the model.
        base_method: the registered name of the base CAM ("gradcam" by default), one of `BASES`.
        gamma: the comparison strength γ; None (default): the variant's (0.6 for "paper", 1 for
            "pytorch-grad-cam"). γ = 0 is the base method itself (for "paper").
        references: T, the number of reference classes (3 by default; at most the number of classes − 1).
        variant: "paper" (default) or "pytorch-grad-cam", as above.
        **options (Any): `batch_size`, `input_size`, `layer` and `precision` (the base's precisions), as
            `CAMMethod` takes them.

    Raises:
        JitterCamError: a `base_method` not in `BASES`; an unknown `variant`; `gamma` not a finite number
            ≥ 0; `references` not a positive integer, or more than the model has classes besides the
            target; or as `CAMMethod` raises it.
    """

    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        base_method: str = "gradcam",
        gamma: float | None = None,
        references: int = 3,
        variant: str = "paper",
        **options,
    ) -> None:
        if base_method not in BASES:
            raise JitterCamError(f"base_method must be one of {', '.join(BASES)}, not {base_method!r}")
        if variant not in VARIANTS:
            raise JitterCamError(f"variant must be one of {', '.join(map(repr, VARIANTS))}, not {variant!r}")
        gamma = VARIANTS[variant] if gamma is None else gamma
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma < float("inf"):
            raise JitterCamError(f"gamma must be a finite number >= 0, got {gamma!r}")
        if isinstance(references, bool) or not isinstance(references, int) or references < 1:
            raise JitterCamError(f"references must be a positive integer, got {references!r}")
        base_class = method_class(base_method)
        self.precisions = base_class.precisions
        super().__init__(model, target_layer, **options)
        if references > self.layer.num_classes - 1:
            raise JitterCamError(f"references={references}, but the model has {self.layer.num_classes} classes: "
                                 f"at most {self.layer.num_classes - 1} besides the target")
        self.base_method, self.gamma, self.references, self.variant = base_method, float(gamma), references, variant
        self._contrastive = _ContrastiveModel(model, self)
        extra: dict[str, Any] = {} if self.precision == "fp32" else {"precision": self.precision}
        self.base = base_class(self._contrastive, layer=self.layer, batch_size=self.batch_size, **extra)

    def passes(self, input_size: int | None = None) -> int:
        return self.base.passes(input_size)

    def options(self) -> dict:
        return {**super().options(), "base_method": self.base_method, "gamma": self.gamma,
                "references": self.references, "variant": self.variant}

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        self._contrastive.classes = target
        try:
            return self.base._explain(images, torch.zeros(images.shape[0], dtype=torch.long, device=images.device))
        finally:
            self._contrastive.classes = None
