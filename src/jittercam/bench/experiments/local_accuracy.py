"""Table 2 (§4.4): RISE's deletion and insertion AUC of the top-1 class per image."""
from __future__ import annotations

from typing import Any

from ..paper import IMAGENET, MODELS, table
from .base import (
    DELETION_INSERTION_COLUMNS,
    Experiment,
    Scores,
    deletion_insertion_scores,
    register_experiment,
)


@register_experiment
class LocalAccuracy(Experiment):
    """`metrics.deletion_insertion`: 28 steps at 224 px, deletion to zeros of the input tensor, insertion from
    RISE's blur; the AUC and the curve of each per image."""

    name = "local-accuracy"
    paper = "Table 2"
    order = 2
    title = "Local accuracy: deletion and insertion AUC (Table 2)"
    table_ref = "Table 2"
    default_methods = ("random", "centre", "gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam",
                       "rise", "jittercam")
    columns = DELETION_INSERTION_COLUMNS
    # AUC of deletion (lower is better) and insertion (higher is better), 28 steps
    paper_values = table(name, IMAGENET, "Table 2", ("deletion", "insertion"), MODELS, {
        "random": (0.303, 0.413, 0.280, 0.382, 0.287, 0.425),
        "centre": (0.177, 0.420, 0.172, 0.374, 0.165, 0.460),
        "gradcam": (0.142, 0.576, 0.137, 0.536, 0.128, 0.585),
        "gradcam++": (0.147, 0.564, 0.141, 0.524, 0.132, 0.572),
        "xgradcam": (0.142, 0.576, 0.137, 0.540, 0.128, 0.585),
        "scorecam": (0.150, 0.568, 0.142, 0.532, 0.131, 0.579),
        "ablationcam": (0.144, 0.567, 0.140, 0.531, 0.129, 0.577),
        "rise": (0.131, 0.540, 0.131, 0.513, 0.162, 0.528),
        "jittercam": (0.118, 0.551, 0.120, 0.522, 0.107, 0.570),
    })

    def config(self) -> dict[str, Any]:
        return {"step": "8 x width", "softmax": True}

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        return deletion_insertion_scores(setting, arm.variant, images, units, maps)
