"""The numbers the Jitter-CAM paper reports in §4 (Hartley et al., BMVC 2021), as data: each experiment
module declares its table (`Experiment.paper_values`) with `table`, copied from the paper's text.

Values are keyed by model, dataset, method (this project's registry names) and metric (lower-case, as in
the report's CSV). Tables 1–3 and 5 are on the ImageNet validation set (50,000 images); Table 4 is the
pointing game on COCO val2014 with TorchRay's multi-label ResNet50.

What the paper leaves open, and what the experiments assume:
- §4.2 (Spearman 0.95) and §4.3 (improved counts, mean improvements) do not name the model. §4.3's counts
  are ResNet50's: 20,103 / 50,000 = 40.21 % is exactly Table 1's ResNet50 Grad-CAM IIC and 19,348 / 50,000
  = 38.70 % its Grad-CAM++ IIC (Constant: 24,094 → 48.19 % against the table's 48.22). §4.2 is taken as
  ResNet50 too, the paper's main model (its 160 px → 5 × 5 fits ResNet50 and DenseNet121 alike).
- Table 5 gives no machine. Fig. 2 and Fig. 5 are plots without printed values: only what the text says
  about them is kept, in each experiment's `paper_note`.
- The paper's Jitter-CAM is Jitter-CAM over Grad-CAM, our `jittercam` (= `jittercam:gradcam`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..data.coco import CocoDataset
from ..data.imagenet import ImageNetDataset

IMAGENET = ImageNetDataset.name
COCO = CocoDataset.name
MODELS = ("resnet50", "densenet121", "inception_v3")  # the paper's models, in its column order

# our registry names that are the method the paper names
ALIASES = {"jittercam:gradcam": "jittercam"}


@dataclass(frozen=True)
class PaperValue:
    experiment: str
    model: str
    dataset: str
    method: str
    metric: str
    value: float
    source: str  # where in the paper


def table(experiment: str, dataset: str, source: str, metrics: tuple[str, ...], models: tuple[str, ...],
          rows: dict[str, tuple[float, ...]]) -> tuple[PaperValue, ...]:
    """A table laid out as in the paper: per method, the metrics of the first model, then the next one."""
    values = []
    for method, numbers in rows.items():
        if len(numbers) != len(metrics) * len(models):
            raise ValueError(f"{source}: {method} has {len(numbers)} numbers for {len(metrics)} x {len(models)}")
        for index, number in enumerate(numbers):
            model, metric = models[index // len(metrics)], metrics[index % len(metrics)]
            values.append(PaperValue(experiment, model, dataset, method, metric, number, source))
    return tuple(values)


def paper_method(method: str) -> str:
    """The paper's name for one of our method names (`jittercam:gradcam` → `jittercam`)."""
    return ALIASES.get(method, method)


def lookup(values: tuple[PaperValue, ...], model: str, dataset: str, method: str, metric: str) -> float | None:
    """The paper's number for this cell among `values`, or None where the paper has none."""
    name = paper_method(method)
    return next((v.value for v in values if (v.model, v.dataset, v.method, v.metric) == (model, dataset, name, metric)),
                None)


def methods_of(values: tuple[PaperValue, ...]) -> list[str]:
    """The methods of a paper table, in the paper's row order."""
    return list(dict.fromkeys(v.method for v in values))
