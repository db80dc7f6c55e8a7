"""Table 4 (§4.5.1): TorchRay's pointing game, % accuracy on all pairs and on the difficult subset."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ... import metrics
from ...errors import JitterCamError
from ..paper import COCO, table
from ..stats import Stat
from . import parse
from .base import Column, Experiment, Option, Scores, class_units, register_experiment


@register_experiment
class Pointing(Experiment):
    """For every (image, class) pair of the ground truth that has a mask: the map of that class is resized
    to the original image, its first maximum is a hit when a pixel of the class's mask lies strictly within
    `tolerance` (15) pixels (`metrics.pointing_game`). Item `key#class`, metric `all` for every pair and
    `difficult` for the pairs of the difficult subset.

    The report gives `metrics.pointing_accuracy`'s mean over the classes that had a trial (`seen_mean`; on a
    whole COCO or VOC set every class has one, so it is TorchRay's number) with the overall accuracy beside
    it; the run's `num_classes` says how many classes there are."""

    name = "pointing"
    paper = "Table 4"
    order = 4
    title = "Pointing game: % accuracy (Table 4)"
    table_ref = "Table 4"
    default_methods = ("centre", "random", "gradcam", "gradcam++", "xgradcam", "scorecam", "jittercam")
    truth_targets = True
    needs = frozenset({"labels", "masks"})
    options = (Option("tolerance", 15.0, "hit tolerance in pixels (default: 15)", "PIXELS",
                      parse.number(float, minimum=0)),)
    columns: ClassVar[dict[str, str]] = {"all": "All", "difficult": "Difficult", "all_overall": "All (overall)",
               "difficult_overall": "Difficult (overall)"}
    paper_values = table(name, COCO, "Table 4", ("all", "difficult"), ("resnet50",), {
        "centre": (24.61, 17.93),
        "random": (12.33, 7.99),
        "gradcam": (53.47, 49.40),
        "gradcam++": (47.26, 42.93),
        "xgradcam": (53.46, 49.39),
        "scorecam": (47.28, 42.70),
        "jittercam": (64.08, 61.10),
    })
    paper_note = "Paper (Table 4): TorchRay's pointing game and its COCO ResNet50 (mean over classes)."

    def units(self, sample, row, top1):
        units, skipped = class_units(self, sample, row, per_class=True)
        empty = [unit for unit in units if not bool(sample.masks[unit.target].any())]
        skipped += [(unit.item, f"the mask of class {unit.target} is empty") for unit in empty]
        return [unit for unit in units if unit not in empty], skipped

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        scores = Scores()
        for index, unit in enumerate(units):  # masks differ in size from image to image
            mask = unit.sample.masks[unit.target].to(maps.device)
            hit = float(metrics.pointing_game(maps[index : index + 1], mask[None], self.settings["tolerance"]).hit)
            scores.add(arm.variant, unit, "all", hit)
            if unit.difficult:
                scores.add(arm.variant, unit, "difficult", hit)
        return scores

    @classmethod
    def summarise(cls, columns: Mapping[str, Column], config: Mapping[str, Any]) -> dict[str, Stat]:
        """`all` and `difficult`: the mean over classes with a trial, `<metric>_overall` beside it and
        `<metric>_classes` (classes with a trial); n = trials."""
        num_classes = config.get("num_classes")
        if num_classes is None:
            raise JitterCamError("pointing game: the run's configuration has no num_classes")
        result = {}
        for name, column in columns.items():
            if column.targets is None:
                raise ValueError("pointing columns need the class of each item")
            kept = [(t, v) for t, v in zip(column.targets.tolist(), column.values.tolist(), strict=True)
                    if not math.isnan(v)]
            if not kept:
                result[name] = result[f"{name}_overall"] = result[f"{name}_classes"] = Stat(math.nan, 0)
                continue
            classes, hits = zip(*kept, strict=True)
            if min(classes) < 0 or max(classes) >= num_classes:
                raise JitterCamError(f"pointing game: a class index {max(classes)} outside 0..{num_classes - 1}; "
                                     "the run's num_classes does not fit its rows")
            found = metrics.pointing_accuracy(torch.tensor(hits), list(classes), num_classes=int(num_classes))
            n = len(kept)
            result[name] = Stat(found.seen_mean, n)
            result[f"{name}_overall"] = Stat(found.overall, n)
            result[f"{name}_classes"] = Stat(float(found.seen), n)
        return result

    @classmethod
    def notes(cls, label, stats, items, config) -> list[str]:
        classes = config.get("num_classes")
        if classes is None:
            return []
        seen = max((int(s["all_classes"].value) for s in stats.values() if "all_classes" in s
                    and not math.isnan(s["all_classes"].value)), default=classes)
        source = config.get("num_classes_source", "the run's configuration")
        unseen = (f"; {classes - seen} classes without a trial are left out (TorchRay counts them 0, which on "
                  "the whole dataset never happens)") if seen < classes else ""
        return [f"{label}: mean over the {seen} classes with a trial, of {classes} ({source}){unseen}"]
