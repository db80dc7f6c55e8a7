"""Beyond the paper (issue 24): relevance mass and rank accuracy (Arras et al. 2022, CLEVR-XAI)."""
from __future__ import annotations

import math
from typing import Any, ClassVar

from ... import metrics
from ...methods.registry import default_names
from ..stats import Stat, mean
from .base import Experiment, Option, Scores, class_units, register_experiment


@register_experiment
class Relevance(Experiment):
    """For every (image, class) pair with a mask, the map of that class against the class's mask, as the
    dataset gives it: the union of its boxes at the picture's size on the offline set (and ImageNet, VOC),
    COCO's masks, the exact evidence on the ground truth (`--dataset groundtruth --model groundtruth`: the
    patch, or both patches of a pair). The map is resized to the mask (`jittercam.maps.resize`).

    `mass`: relevance mass accuracy, the share of the map's relevance inside the mask
    (`metrics.relevance_mass`); `rank`: relevance rank accuracy, the share of the mask among the map's |mask|
    most relevant pixels (`metrics.relevance_rank`); `share`: the mask's share of the image, the rank
    accuracy of a map that tells nothing (all tied). `relevance` says which relevance counts (default
    'positive', the authors': negatives clipped; 'signed' is Quantus's default), `ties` how the rank breaks
    ties at the K-th value (default 'average', the expectation over random orders). Item = the key for a
    single-label image, `key#class` when it has several labels; a class without a mask, or with an empty
    one, is a skip. The report gives the means with their 95 % intervals, higher is better for both."""

    name = "relevance"
    paper = "beyond the paper: Arras et al. 2022 (CLEVR-XAI)"
    order = 10
    title = "Relevance mass and rank accuracy (Arras et al. 2022, beyond the paper)"
    default_methods = tuple(default_names())  # every method of the registry, wrappers over their default base
    truth_targets = True
    needs = frozenset({"labels", "masks"})
    options = (
        Option("relevance", "positive", "which relevance counts: positive (default: negatives clipped, the "
               "authors'), signed (Quantus's default) or abs", choices=metrics.RELEVANCE),
        Option("ties", "average", "rank accuracy's ties at the K-th value: average (default: the expectation "
               "over random orders) or first (row-major)", choices=metrics.TIES),
    )
    columns: ClassVar[dict[str, str]] = {"mass": "Mass accuracy", "rank": "Rank accuracy",
                                         "share": "Mask share (chance)"}

    def config(self) -> dict[str, Any]:
        return {"relevance": self.settings["relevance"], "ties": self.settings["ties"], "resize": "bilinear to mask"}

    def units(self, sample, row, top1):
        units, skipped = class_units(self, sample, row, per_class=len(sample.labels) > 1)
        empty = [unit for unit in units if not bool(sample.masks[unit.target].any())]
        skipped += [(unit.item, f"the mask of class {unit.target} is empty") for unit in empty]
        return [unit for unit in units if unit not in empty], skipped

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        scores = Scores()
        relevance, ties = self.settings["relevance"], self.settings["ties"]
        for index, unit in enumerate(units):  # masks differ in size from image to image
            mask = unit.sample.masks[unit.target].to(maps.device)[None]
            one = maps[index: index + 1]
            scores.add(arm.variant, unit, "mass", float(metrics.relevance_mass(one, mask, relevance=relevance)))
            scores.add(arm.variant, unit, "rank",
                       float(metrics.relevance_rank(one, mask, relevance=relevance, ties=ties)))
            scores.add(arm.variant, unit, "share", float(mask.float().mean()))
        return scores

    @classmethod
    def summarise(cls, columns, config) -> dict[str, Stat]:
        """The mean of each metric (NaN: missing, left out) with its interval."""
        return {name: mean(column.values) for name, column in columns.items()}

    @classmethod
    def notes(cls, label, stats, items, config) -> list[str]:
        """The chance level of the rank accuracy: the masks' mean share of the image."""
        shares = [values["share"] for values in stats.values() if "share" in values and values["share"].n]
        if not shares:
            return []
        share = max(shares, key=lambda stat: stat.n)
        options = config.get("options", {}) if isinstance(config.get("options"), dict) else {}
        relevance = options.get("relevance", "positive")
        chance = "" if math.isnan(share.value) else f"{100 * share.value:.1f}"
        return [f"{label}: higher is better; a map that tells nothing has a rank accuracy of the mask's share of the "
                f"image ({chance} % on average over these {share.n} pairs) and the mass of a uniform map is the "
                f"same share; relevance counted: {relevance} (`jittercam.metrics.relevance_mass`, `relevance_rank`)"]
