"""Table 5 (§4.6): seconds and forward passes per explanation."""
from __future__ import annotations

from typing import ClassVar

from ..paper import IMAGENET, MODELS, table
from .base import Experiment, Scores, register_experiment


@register_experiment
class Efficiency(Experiment):
    """The wall-clock seconds of one explanation of the top-1 class (one image at a time, the method's own
    batching of its passes inside; CUDA synchronised; the first explanation of each method in a run is a
    warm-up and not recorded; never read from the explanation cache) and `method.passes()` at the input
    size."""

    name = "efficiency"
    paper = "Table 5"
    order = 5
    title = "Efficiency: seconds and forward passes per explanation (Table 5)"
    table_ref = "Table 5"
    default_methods = ("gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam", "rise", "jittercam")
    one_at_a_time = True
    reads_cache = False
    columns: ClassVar[dict[str, str]] = {"seconds": "Seconds", "passes": "Passes"}
    paper_values = table(name, IMAGENET, "Table 5", ("seconds", "passes"), MODELS, {
        "gradcam": (0.03, 1, 0.07, 1, 0.06, 1),
        "gradcam++": (0.03, 1, 0.07, 1, 0.06, 1),
        "xgradcam": (0.03, 1, 0.07, 1, 0.06, 1),
        "scorecam": (3.83, 2048, 1.92, 1024, 5.01, 2048),
        "ablationcam": (0.60, 2048, 0.30, 1024, 0.60, 2048),
        "rise": (17.58, 8000, 18.24, 8000, 24.27, 8000),
        "jittercam": (0.37, 64, 0.40, 64, 0.67, 81),
    })
    paper_note = "Paper (Table 5): the machine is not named."

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        passes = float(arm.explainer.passes(setting.input_size))
        scores = Scores()
        for unit, spent in zip(units, seconds, strict=True):
            scores.add(arm.variant, unit, "seconds", spent)
            scores.add(arm.variant, unit, "passes", passes)
        return scores
