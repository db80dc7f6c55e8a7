"""§4.2: can Jitter-CAM recreate Grad-CAM from a smaller input?"""
from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F

from ... import metrics
from ...errors import JitterCamError
from ..paper import IMAGENET, table
from . import parse
from .base import Arm, Experiment, Option, Scores, register_experiment
from .size_sweep import check_sized


@register_experiment
class Consistency(Experiment):
    """The image (the S × S input tensor, resized bilinearly with antialiasing to `low_size`, 160 by default)
    is explained by the method with its final size set to m, the reference method's map size at S
    (ResNet50: 5 × 5 at 160 → 7 × 7), and compared with the `reference` method (Grad-CAM) at S by
    Spearman's rank correlation over the m × m pixels (`metrics.rank_correlation`; NaN for a constant map).
    Both explain the top-1 class at S. Resizing the input tensor instead of the photo differs from the
    paper by the resampling only."""

    name = "consistency"
    paper = "§4.2"
    order = 7
    title = "Consistency: Spearman between Jitter-CAM from a smaller input and Grad-CAM (§4.2)"
    table_ref = "§4.2"
    default_methods = ("jittercam",)
    options = (
        Option("low_size", 160, "the small input (default: 160)", "PIXELS", parse.number(int, minimum=32)),
        Option("reference", "gradcam", "the method at full size (default: gradcam)", "METHOD", parse.method),
    )
    columns: ClassVar[dict[str, str]] = {"spearman": "Spearman"}
    paper_values = table(name, IMAGENET, "§4.2", ("spearman",), ("resnet50",), {"jittercam": (0.95,)})
    paper_note = "Paper (§4.2): the model is not named; its value is shown beside ResNet50."

    def accepts(self, name: str) -> str | None:
        return check_sized(name)

    def arms(self, names, build, setting) -> list[Arm]:
        if self.settings["low_size"] >= setting.input_size:
            raise JitterCamError(
                f"low_size {self.settings['low_size']} must be below the input size {setting.input_size}"
            )
        self.reference = Arm(self.settings["reference"], build(self.settings["reference"]))
        if self.reference.explainer.layer is None:
            raise JitterCamError(f"the consistency reference {self.reference.method} has no target layer")
        m = self.reference.explainer.layer.map_size
        return [Arm(name, build(name, size=m)) for name in names]

    def inputs(self, arm, images):
        if arm is self.reference:
            return images
        size = self.settings["low_size"]
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    def prepare(self, setting, images, units, explain):
        return explain(self.reference, images, units)[0]

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        rho = metrics.rank_correlation(maps, state.to(maps.device))
        scores = Scores()
        for unit, value in zip(units, rho.tolist(), strict=True):
            scores.add(arm.variant, unit, "spearman", value)
        return scores

    @classmethod
    def notes(cls, label, stats, items, config) -> list[str]:
        notes = []
        for arm, found in stats.items():
            missing = items.get(arm, 0) - found["spearman"].n if "spearman" in found else 0
            if missing > 0:
                noun = "item" if missing == 1 else "items"
                notes.append(f"{label}: {arm}: {missing} {noun} without a Spearman value (a constant map) left out")
        return notes
