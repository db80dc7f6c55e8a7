"""Table 3 (§4.5): weak localisation, % error at each scheme's best threshold."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ... import metrics
from ..paper import IMAGENET, MODELS, table
from ..stats import Stat
from .base import Column, Experiment, Option, Scores, class_units, register_experiment

SCHEMES = {"val": "val", "mean": "mean", "energy": "eng"}  # `metrics.weak_localisation`'s -> the paper's


@register_experiment
class WeakLocalisation(Experiment):
    """Fong & Vedaldi's thresholds on the map of the ground-truth class, resized to the S × S input the boxes
    are given in (`metrics.weak_localisation`): Val (min–max value >= a), Mean (>= a · mean) and Eng (the
    highest pixels holding a share a of the energy), a = 0, 0.05, ..., 0.95; a box around the kept pixels
    (`box`: 'all', theirs, or 'largest' connected component); a hit when its IoU with a box of the class is
    >= 0.5. Each scheme is one row per unit: its hits (0/1) at every threshold as a curve. The report gives
    `metrics.localisation_error` (100 · (1 − the best threshold's mean hit)) per scheme.

    One unit per labelled class that has boxes: item = the key for a single-label image, `key#class` when
    the image has several labels; a class without boxes is a skip."""

    name = "weak-localisation"
    paper = "Table 3"
    order = 3
    title = "Weak localisation: % error at the best threshold (Table 3)"
    table_ref = "Table 3"
    default_methods = ("random", "centre", "gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam",
                       "rise", "jittercam")
    truth_targets = True
    needs = frozenset({"labels", "boxes"})
    options = (Option("box", "all", "box around all kept pixels (default, Fong & Vedaldi) or the largest "
                      "connected component", choices=("all", "largest")),)
    columns: ClassVar[dict[str, str]] = {"val": "Val", "mean": "Mean", "eng": "Eng"}
    paper_values = table(name, IMAGENET, "Table 3", ("val", "mean", "eng"), MODELS, {
        "random": (57.43, 58.96, 57.39, 57.43, 58.96, 57.39, 57.74, 59.10, 57.66),
        "centre": (47.58, 48.18, 47.68, 47.58, 48.18, 47.68, 48.56, 48.34, 47.84),
        "gradcam": (45.94, 45.89, 44.35, 45.44, 44.99, 43.48, 44.84, 45.29, 44.60),
        "gradcam++": (45.76, 45.83, 43.85, 44.89, 44.88, 42.88, 45.05, 44.94, 44.87),
        "xgradcam": (45.94, 45.89, 44.35, 45.67, 45.38, 43.96, 44.84, 45.29, 44.60),
        "scorecam": (47.53, 46.86, 45.32, 47.29, 46.35, 44.74, 45.72, 45.59, 45.19),
        "ablationcam": (45.88, 45.88, 44.30, 45.52, 45.26, 43.71, 45.25, 45.34, 45.00),
        "rise": (52.99, 54.10, 50.76, 51.50, 52.99, 48.38, 55.57, 56.66, 53.05),
        "jittercam": (39.83, 42.30, 40.64, 40.24, 41.55, 40.44, 38.38, 39.10, 39.86),
    })

    def config(self) -> dict[str, Any]:
        return {**self.settings, "thresholds": list(metrics.THRESHOLDS), "iou": 0.5}

    def units(self, sample, row, top1):
        return class_units(self, sample, row, per_class=len(sample.labels) > 1)

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        boxes = [unit.sample.boxes[unit.target] for unit in units]
        found = metrics.weak_localisation(maps, boxes, setting.input_size, box=self.settings["box"])
        scores = Scores()
        for scheme, metric in SCHEMES.items():
            hits = found[scheme].hit.float().cpu()
            for unit, row in zip(units, hits, strict=True):
                scores.add(arm.variant, unit, metric, None, row)
        return scores

    @classmethod
    def summarise(cls, columns: Mapping[str, Column], config: Mapping[str, Any]) -> dict[str, Stat]:
        """Per scheme the % error at its best threshold (`<scheme>`) and that threshold
        (`<scheme>_threshold`, the smallest on a tie)."""
        thresholds = list(config.get("options", {}).get("thresholds", metrics.THRESHOLDS))
        result = {}
        for scheme, column in columns.items():
            hits = column.curves
            n = 0 if hits is None else int((~torch.as_tensor(hits).isnan().any(dim=1)).sum())
            if not n:
                result[scheme], result[f"{scheme}_threshold"] = Stat(math.nan, 0), Stat(math.nan, 0)
                continue
            error = metrics.localisation_error(torch.as_tensor(hits))
            result[scheme] = Stat(error.error, n)
            result[f"{scheme}_threshold"] = Stat(float(thresholds[error.index]), n)
        return result
