"""Beyond the paper: local accuracy with the target layer moved, since the choice can reverse a ranking."""
from __future__ import annotations

from typing import Any

from ...probe import activation_input, find_target_layer
from . import parse
from .base import (
    DELETION_INSERTION_COLUMNS,
    Arm,
    Experiment,
    Option,
    Scores,
    Variant,
    deletion_insertion_scores,
    register_experiment,
    uses_layer,
)


@register_experiment
class Layers(Experiment):
    """Local accuracy (deletion, insertion, curves) per target layer. `layers` default: the probe's layer
    and the layer that feeds its activation (`activation_input`): EfficientNet-Lite0 `_swish` (the head's
    ReLU6) and `_bn1`; ResNet `layer4` and `layer4.2.bn3` (before the residual addition too: no module
    outputs the sum itself). Variant `layer=<name>`."""

    name = "layers"
    paper = "beyond the paper"
    order = 8
    title = "Target layer before and after the last activation"
    default_methods = ("gradcam", "jittercam")
    options = (Option("layers", None, "module names (default: the probe's layer and the one feeding its "
                      "activation)", "A,B", parse.names(required=True)),)
    columns = DELETION_INSERTION_COLUMNS

    def accepts(self, name: str) -> str | None:
        return None if uses_layer(name) else f"{name} does not use a target layer"

    def arms(self, names, build, setting) -> list[Arm]:
        layers = self.settings["layers"]
        if layers is None:
            probed = find_target_layer(setting.model)
            layers = [probed.name, activation_input(setting.model, probed)]
            self.settings["layers"] = layers
        return [Arm(name, build(name, target_layer=layer), variant=Variant("layer", layer)) for name in names
                for layer in layers]

    def config(self) -> dict[str, Any]:
        return {"step": "8 x width", "softmax": True}  # each layer is an arm of its own (variant)

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        return deletion_insertion_scores(setting, arm.variant, images, units, maps)
