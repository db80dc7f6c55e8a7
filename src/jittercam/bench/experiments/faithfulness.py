"""Table 1 and Fig. 5 (§4.3): average drop and increase in confidence, and the expansion sweep."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ... import metrics
from ...errors import JitterCamError
from ..paper import IMAGENET, MODELS, table
from ..stats import Stat
from . import parse
from .base import SWEEP, Arm, Column, Experiment, Option, Scores, Variant, register_experiment, rows_of, targets_of


@register_experiment
class Faithfulness(Experiment):
    """Y, the softmax score of the top-1 class on the image, and O, its score on the image multiplied (in
    [0, 1] pixel space: `metrics.faithfulness`, multiply='pixel') by the map resized and min–max scaled.

    Every method asked for gets the plain rows (Table 1: Grad-CAM, Grad-CAM++, Constant); the methods in
    `sweep` (Grad-CAM and Random by default) get variant `alpha=<a>` for each expansion factor a of `alphas`
    (Fig. 5: 0, 0.5, ..., 10), the map scaled by a and clipped at its maximum − 1e-4 (`metrics.
    expand_explanation`); a swept method's maps are computed once for both. The report computes AD, IIC,
    how many images improved and by how much (`metrics.average_drop`, `increase_in_confidence`,
    `improvement`). The sweep is an arm of its own in the runner's bookkeeping, so it can be added to a
    finished run."""

    name = "faithfulness"
    paper = "Table 1, Fig. 5"
    order = 1
    title = "Faithfulness: average drop and increase in confidence (Table 1, §4.3, Fig. 5)"
    table_ref = "Table 1 and §4.3"
    default_methods = ("gradcam", "gradcam++", "constant")
    options = (
        Option("alphas", metrics.EXPANSION_ALPHAS, "expansion factors (default: 0,0.5,...,10)", "A,B,...",
               parse.numbers(float, minimum=0)),
        Option("sweep", ("gradcam", "random"), "methods of the expansion sweep (default: gradcam,random)",
               "a,b|none", parse.names(methods=True)),
    )
    columns: ClassVar[dict[str, str]] = {"iic": "IIC", "ad": "AD", "improved": "Improved",
                                         "mean_improvement": "Mean impr."}
    paired = (("y", "o"),)
    sweep_panels = ("ad", "iic")
    sweep_caption = "Fig. 5: AD and IIC as the maps are expanded"
    sweep_reference = "gradcam"
    paper_values = (
        # Table 1: IIC (higher is better) and AD (lower is better), per model
        table(name, IMAGENET, "Table 1", ("iic", "ad"), MODELS, {
            "gradcam": (40.21, 14.04, 39.65, 13.22, 40.46, 16.98),
            "gradcam++": (38.70, 14.22, 37.54, 13.69, 38.89, 17.02),
            "constant": (48.22, 2.70, 49.14, 1.08, 47.36, 1.32),
        })
        # §4.3: images whose confidence the masked image improved, and the mean improvement O - Y over them
        + table(name, IMAGENET, "§4.3", ("improved", "mean_improvement"), ("resnet50",), {
            "constant": (24094, 0.022),
            "gradcam": (20103, 0.091),
            "gradcam++": (19348, 0.081),
        })
    )
    paper_note = ("Paper (Fig. 5, ResNet50): multiplying Grad-CAM's or the random baseline's map by any factor "
                  "from 0.5 to 10 (clipped) improves both AD and IIC over plain Grad-CAM. Improved is a count: "
                  "the paper's (§4.3) is out of 50,000 images.")

    def config(self) -> dict[str, Any]:
        return {"alphas": [float(a) for a in self.settings["alphas"]], "multiply": "pixel", "softmax": True}

    def arms(self, names, build, setting) -> list[Arm]:
        sweep = list(self.settings["sweep"])
        if sweep and not self.settings["alphas"]:
            raise JitterCamError("alphas names no expansion factor")
        built = {name: build(name) for name in dict.fromkeys([*names, *sweep])}
        return ([Arm(name, built[name]) for name in names]
                + [Arm(name, built[name], variant=SWEEP, gallery=name not in names) for name in sweep])

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        x = images[rows_of(units, images.device)]
        target = targets_of(units, x.device)
        common = {"mean": setting.mean, "std": setting.std, "batch_size": setting.batch_size}
        scores = Scores()
        if arm.variant != SWEEP:
            plain = metrics.faithfulness(setting.model, x, maps, target, **common)
            for unit, y, o in zip(units, plain.original.tolist(), plain.masked.tolist(), strict=True):
                scores.add(arm.variant, unit, "y", y)
                scores.add(arm.variant, unit, "o", o)
            return scores
        alphas = [float(a) for a in self.settings["alphas"]]
        swept = metrics.expansion_faithfulness(setting.model, x, maps, target, alphas, **common)
        for unit, y, row in zip(units, swept.original.tolist(), swept.masked.tolist(), strict=True):
            for alpha, o in zip(alphas, row, strict=True):
                variant = Variant("alpha", alpha)
                scores.add(variant, unit, "y", y)
                scores.add(variant, unit, "o", o)
        return scores

    @classmethod
    def summarise(cls, columns: Mapping[str, Column], config: Mapping[str, Any]) -> dict[str, Stat]:
        """AD, IIC, improved and mean improvement from Y and O paired by item (NaN pairs left out)."""
        result = super().summarise({k: v for k, v in columns.items() if k not in ("y", "o")}, config)
        if "y" not in columns or "o" not in columns:
            return result
        y = torch.as_tensor(columns["y"].values, dtype=torch.float64)
        o = torch.as_tensor(columns["o"].values, dtype=torch.float64)
        complete = int((~(y.isnan() | o.isnan())).sum())
        if not complete:
            return {**result, **{k: Stat(math.nan, 0) for k in ("ad", "iic", "improved", "mean_improvement")}}
        kept = ~(y.isnan() | o.isnan()) & (y > 0)
        gained = metrics.improvement(y, o)
        result["ad"] = Stat(float(metrics.average_drop(y, o)), int(kept.sum()))
        result["iic"] = Stat(float(metrics.increase_in_confidence(y, o)), complete)
        result["improved"] = Stat(float(gained.count), complete)
        result["mean_improvement"] = Stat(gained.mean if gained.count else math.nan, gained.count)
        return result
