"""The numbers the Jitter-CAM paper reports in §4 (Hartley et al., BMVC 2021), as data for the report.

Every value of Tables 1–5 and the figures quoted in the text of §4.2 and §4.3, copied from
`../shared/paper/jitter-cam-paper.txt`, keyed by experiment (the `jittercam bench` experiment that
reproduces it), model, dataset, method (this project's registry names) and metric (lower-case, as in the
report's CSV). All Tables 1–3 and 5 are on the ImageNet validation set (50,000 images); Table 4 is the
pointing game on COCO val2014 with TorchRay's multi-label ResNet50.

What the paper leaves open, and what this module assumes:
- §4.2 (Spearman 0.95) and §4.3 (improved counts, mean improvements) do not name the model. §4.3's counts
  are ResNet50's: 20,103 / 50,000 = 40.21 % is exactly Table 1's ResNet50 Grad-CAM IIC and 19,348 / 50,000
  = 38.70 % its Grad-CAM++ IIC (Constant: 24,094 → 48.19 % against the table's 48.22). §4.2 is taken as
  ResNet50 too, the paper's main model (its 160 px → 5 × 5 fits ResNet50 and DenseNet121 alike).
- Table 5 gives no machine. Fig. 2 and Fig. 5 are plots without printed values: only what the text says
  about them is kept, in `NOTES`.
- The paper's Jitter-CAM is Jitter-CAM over Grad-CAM, our `jittercam` (= `jittercam:gradcam`).
"""
from __future__ import annotations

from dataclasses import dataclass

IMAGENET = "imagenet-val"
COCO = "coco-val2014"
MODELS = ("resnet50", "densenet121", "inception_v3")


@dataclass(frozen=True)
class PaperValue:
    experiment: str
    model: str
    dataset: str
    method: str
    metric: str
    value: float
    source: str  # where in the paper


def _table(experiment: str, dataset: str, source: str, metrics: tuple[str, ...], models: tuple[str, ...],
           rows: dict[str, tuple[float, ...]]) -> list[PaperValue]:
    """A table laid out as in the paper: per method, the metrics of the first model, then the next one."""
    values = []
    for method, numbers in rows.items():
        assert len(numbers) == len(metrics) * len(models), method
        for index, number in enumerate(numbers):
            model, metric = models[index // len(metrics)], metrics[index % len(metrics)]
            values.append(PaperValue(experiment, model, dataset, method, metric, number, source))
    return values


# Table 1: faithfulness, IIC (higher is better) and AD (lower is better), per model.
_TABLE_1 = _table("faithfulness", IMAGENET, "Table 1", ("iic", "ad"), MODELS, {
    "gradcam": (40.21, 14.04, 39.65, 13.22, 40.46, 16.98),
    "gradcam++": (38.70, 14.22, 37.54, 13.69, 38.89, 17.02),
    "constant": (48.22, 2.70, 49.14, 1.08, 47.36, 1.32),
})

# §4.3: images whose confidence the masked image improved, and the mean improvement O - Y over them.
_SECTION_4_3 = _table("faithfulness", IMAGENET, "§4.3", ("improved", "mean_improvement"), ("resnet50",), {
    "constant": (24094, 0.022),
    "gradcam": (20103, 0.091),
    "gradcam++": (19348, 0.081),
})

# Table 2: local accuracy, AUC of deletion (lower is better) and insertion (higher is better), 28 steps.
_TABLE_2 = _table("local-accuracy", IMAGENET, "Table 2", ("deletion", "insertion"), MODELS, {
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

# Table 3: weak localisation, % localisation error at each scheme's best threshold (lower is better).
_TABLE_3 = _table("weak-localisation", IMAGENET, "Table 3", ("val", "mean", "eng"), MODELS, {
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

# Table 4: pointing game on COCO val2014, % accuracy on all pairs and on the difficult subset.
_TABLE_4 = _table("pointing", COCO, "Table 4", ("all", "difficult"), ("resnet50",), {
    "centre": (24.61, 17.93),
    "random": (12.33, 7.99),
    "gradcam": (53.47, 49.40),
    "gradcam++": (47.26, 42.93),
    "xgradcam": (53.46, 49.39),
    "scorecam": (47.28, 42.70),
    "jittercam": (64.08, 61.10),
})

# Table 5: mean seconds per explanation, and the forward passes it needs.
_TABLE_5 = _table("efficiency", IMAGENET, "Table 5", ("seconds", "passes"), MODELS, {
    "gradcam": (0.03, 1, 0.07, 1, 0.06, 1),
    "gradcam++": (0.03, 1, 0.07, 1, 0.06, 1),
    "xgradcam": (0.03, 1, 0.07, 1, 0.06, 1),
    "scorecam": (3.83, 2048, 1.92, 1024, 5.01, 2048),
    "ablationcam": (0.60, 2048, 0.30, 1024, 0.60, 2048),
    "rise": (17.58, 8000, 18.24, 8000, 24.27, 8000),
    "jittercam": (0.37, 64, 0.40, 64, 0.67, 81),
})

# §4.2: mean Spearman correlation, Jitter-CAM from 160 px brought to 7 × 7 against Grad-CAM at 224 px.
_SECTION_4_2 = [PaperValue("consistency", "resnet50", IMAGENET, "jittercam", "spearman", 0.95, "§4.2")]

PAPER: tuple[PaperValue, ...] = tuple(
    _TABLE_1 + _SECTION_4_3 + _TABLE_2 + _TABLE_3 + _TABLE_4 + _TABLE_5 + _SECTION_4_2
)

# What the paper says about its figures and tables in words, shown under our tables.
NOTES: dict[str, str] = {
    "faithfulness": "Paper (Fig. 5, ResNet50): multiplying Grad-CAM's or the random baseline's map by any "
    "factor from 0.5 to 10 (clipped) improves both AD and IIC over plain Grad-CAM. Improved is a count: the "
    "paper's (§4.3) is out of 50,000 images.",
    "size-sweep": "Paper (Fig. 2, ResNet50, m = 7 to 20): deletion plateaus around m = 14, insertion never "
    "improves on m = 7, deletion + (1 - insertion) is lowest at m = 14 (2m); Inception is best at 16 × 16.",
    "consistency": "Paper (§4.2): the model is not named; its value is shown beside ResNet50.",
    "efficiency": "Paper (Table 5): the machine is not named.",
    "pointing": "Paper (Table 4): TorchRay's pointing game and its COCO ResNet50 (mean over classes).",
}

# Our registry names that are the method the paper names.
ALIASES = {"jittercam:gradcam": "jittercam"}

_INDEX = {(v.experiment, v.model, v.dataset, v.method, v.metric): v.value for v in PAPER}


def paper_method(method: str) -> str:
    """The paper's name for one of our method names (`jittercam:gradcam` → `jittercam`)."""
    return ALIASES.get(method, method)


def paper_value(experiment: str, model: str, dataset: str, method: str, metric: str) -> float | None:
    """The paper's number for this cell, or None where the paper has none (another model or dataset, a
    variant, a method or metric it did not report)."""
    return _INDEX.get((experiment, model, dataset, paper_method(method), metric))


def paper_methods(experiment: str) -> list[str]:
    """The methods of the paper's table for `experiment`, in the paper's row order."""
    return list(dict.fromkeys(v.method for v in PAPER if v.experiment == experiment))
