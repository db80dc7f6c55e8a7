"""Beyond the paper (issue 24): ROAD (Rong et al. 2022), removal with noisy linear imputation instead of
deletion's constant, most- and least-relevant first."""
from __future__ import annotations

import zlib
from typing import Any, ClassVar

from ... import metrics
from ...errors import JitterCamError
from . import parse
from .base import Experiment, Option, Scores, register_experiment, rows_of, targets_of


@register_experiment
class ROAD(Experiment):
    """`metrics.road` on the top-1 class of each image: the softmax probability of that class after removing p% of the
    pixels most relevant first (MoRF, lower is better) and least relevant first (LeRF, higher is better), the
    removed pixels filled by noisy linear imputation (noise 0.01 in [0, 1] pixel units, the authors'), ties in the
    map broken by the authors' jitter (`ties`). Per item: `morf` and `lerf`, the means over the percentages
    (pytorch-grad-cam's `ROAD…Average`; the curve of probabilities beside each), `combined` = (LeRF − MoRF)/2 (its
    `ROADCombined`, higher is better), and `morf_accuracy` / `lerf_accuracy`, the share of percentages at which the
    top-1 class is unchanged (the authors' and Quantus's accuracy, per image; the curve of 0/1 beside each). The
    noise of each item is seeded by `noise_seed` and the item's key, so that a resumed run draws what a whole one
    would. Runs on any dataset: `--dataset offline`, or `--dataset groundtruth --model groundtruth`."""

    name = "road"
    paper = "beyond the paper (ROAD, Rong et al. 2022)"
    order = 20
    title = "ROAD: removal with noisy linear imputation, MoRF and LeRF (Rong et al. 2022)"
    default_methods = ("random", "centre", "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam",
                       "scorecam", "ablationcam", "rise", "cameras", "guidedbackprop", "jittercam")
    options = (
        Option("percentages", metrics.PERCENTAGES, "percentages of pixels removed (default: 10,20,...,90)",
               "P,P,...", parse.numbers(float, minimum=0)),
        Option("noise", 0.01, "std of the imputation noise in [0, 1] pixel units (default: 0.01)", "STD",
               parse.number(float, minimum=0)),
        Option("ties", "jitter", "how tied map values are ordered: jitter (the authors': 1e-4 N(0,1) on the "
               "min-max scaled map) or stable (row-major) (default: jitter)", choices=("jitter", "stable")),
        Option("noise_seed", 0, "seed of the imputation noise, combined with each item's key (default: 0)", "N",
               parse.number(int)),
    )
    columns: ClassVar[dict[str, str]] = {"morf": "MoRF", "lerf": "LeRF", "combined": "Combined",
                                         "morf_accuracy": "MoRF acc.", "lerf_accuracy": "LeRF acc."}
    paper_note = ("Not in the paper. MoRF (lower is better) and LeRF (higher is better) are the target's softmax "
                  "probability averaged over the percentages of pixels removed; Combined = (LeRF - MoRF)/2 "
                  "(pytorch-grad-cam's ROADCombined, higher is better); accuracies: the share of percentages "
                  "at which the top-1 class survives.")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        percentages = self.settings["percentages"]
        if not percentages or any(not 0 <= float(p) < 100 for p in percentages):
            raise JitterCamError(f"percentages must be at least 0 and below 100, got {list(percentages)!r}",
                                 option="percentages")

    def config(self) -> dict[str, Any]:
        return {"percentages": [float(p) for p in self.settings["percentages"]],
                "noise": float(self.settings["noise"]), "noise_space": "pixels",
                "noise_seed": int(self.settings["noise_seed"]), "ties": self.settings["ties"],
                "imputation": "noisy linear (1/6 edge, 1/12 diagonal)", "softmax": True}

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        x = images[rows_of(units, images.device)]
        targets = targets_of(units, x.device)
        scores = Scores()
        for index, unit in enumerate(units):  # one seed per item: resumable, independent of the batch
            seed = (int(self.settings["noise_seed"]) * 1_000_003 + zlib.crc32(unit.item.encode())) % 2**63
            result = metrics.road(setting.model, x[index:index + 1], maps[index:index + 1],
                                  targets[index:index + 1], self.settings["percentages"],
                                  noise=float(self.settings["noise"]), std=setting.std, seed=seed,
                                  ties=self.settings["ties"], batch_size=setting.batch_size)
            for order in ("morf", "lerf"):
                curve = getattr(result, f"{order}_scores")[0]
                hits = getattr(result, f"{order}_accuracy")[0]
                scores.add(arm.variant, unit, order, float(curve.mean()), curve)
                scores.add(arm.variant, unit, f"{order}_accuracy", float(hits.mean()), hits)
            scores.add(arm.variant, unit, "combined", float(result.combined[0]))
        return scores
