"""Fig. 2 (§3): deletion and insertion against Jitter-CAM's final map size."""
from __future__ import annotations

from typing import Any, ClassVar

from ...methods import method_options
from . import parse
from .base import (
    COMBINED,
    DELETION_INSERTION_COLUMNS,
    Arm,
    Experiment,
    Option,
    Scores,
    Variant,
    deletion_insertion_scores,
    deletion_insertion_summary,
    register_experiment,
)


def check_sized(name: str) -> str | None:
    """Why method `name` cannot be run at several map sizes (None when it can)."""
    if "size" not in method_options(name):
        return f"{name} has no map size to vary (jittercam and upscale have)"
    return None


@register_experiment
class SizeSweep(Experiment):
    """Jitter-CAM's final map size m + d from m to m + 13 (`sizes`; m is the probe's map size at the input
    size), deletion and insertion per size as in local-accuracy; variant `size=<n>`. The report adds
    deletion + (1 − insertion)."""

    name = "size-sweep"
    paper = "Fig. 2"
    order = 6
    title = "Jitter-CAM size sweep (Fig. 2)"
    default_methods = ("jittercam",)
    options = (Option("sizes", None, "Jitter-CAM sizes (default: m..m+13)", "N,N|A-B", parse.numbers(int, 1)),)
    columns: ClassVar[dict[str, str]] = {**DELETION_INSERTION_COLUMNS, COMBINED: "Del+(1-Ins)"}
    sweep_panels = ("deletion", "insertion", COMBINED)
    sweep_caption = "Fig. 2: deletion and insertion against the Jitter-CAM size"
    paper_note = ("Paper (Fig. 2, ResNet50, m = 7 to 20): deletion plateaus around m = 14, insertion never "
                  "improves on m = 7, deletion + (1 - insertion) is lowest at m = 14 (2m); Inception is best at "
                  "16 × 16.")

    def accepts(self, name: str) -> str | None:
        return check_sized(name)

    def arms(self, names, build, setting) -> list[Arm]:
        arms = []
        for name in names:
            sizes = self.settings["sizes"]
            if sizes is None:
                m = build(name).layer.map_size
                sizes = list(range(m, m + 14))
                self.settings["sizes"] = sizes
            arms += [Arm(name, build(name, size=int(n)), variant=Variant("size", float(n))) for n in sizes]
        return arms

    def config(self) -> dict[str, Any]:
        return {"step": "8 x width", "softmax": True}  # each size is an arm of its own (variant)

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        return deletion_insertion_scores(setting, arm.variant, images, units, maps)

    @classmethod
    def summarise(cls, columns, config):
        return deletion_insertion_summary(columns)
