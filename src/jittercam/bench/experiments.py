"""The paper's experiments (§4) as per-item rows: what each explains, for which class, and what it measures.

Each experiment turns a batch of samples into *units* (an image and the class to explain, named by the
`item` its rows carry), lists its *arms* (a method, built with the options the experiment needs, and a
`variant` label), and scores the maps an arm gives for the units. The runner (`runner.py`) explains each
arm once per batch and hands the same maps to every metric of the experiment.

Targets. The class explained is the model's top-1 prediction on the image for faithfulness,
local-accuracy, efficiency, size-sweep, consistency and layers (as RISE's deletion/insertion and
Grad-CAM++'s faithfulness define them), and the ground-truth class for weak-localisation and the
pointing game (the class whose boxes or mask are the reference). The metrics get that class explicitly,
so a method and its metric always look at the same class.

Rows (metric names lower-case; the report aggregates them, see each class):

==================  ===============================================================================
faithfulness        `y`, `o` per image; variant '' per method, `alpha=<a>` for the expansion sweep
local-accuracy      `deletion`, `insertion` (AUC per image) and their curves
weak-localisation   `val@<a>`, `mean@<a>`, `eng@<a>`: hit (IoU >= 0.5) at each threshold a
pointing            item `key#class`: `all` hit, and `difficult` hit for the difficult pairs
efficiency          `seconds` (wall clock of one explanation), `passes` (`method.passes()`)
size-sweep          variant `size=<n>`: `deletion`, `insertion` and curves
consistency         `spearman` between the method from a small input and the reference at full size
layers              variant `layer=<module>`: `deletion`, `insertion` and curves
groundtruth         singles: `energy`, `auc`; pairs: `separation`, `resolved`, `depth`; all: `seconds`,
                    `passes`; variants `size=<n>` (jittercam, upscale) and `fused` (layercam)
==================  ===============================================================================
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import metrics
from ..errors import JitterCamError
from ..methods import CAMMethod, method_class, method_options
from ..models import activation_input, find_target_layer

Build = Callable[..., CAMMethod]  # build(name, **options) -> a method with the run's options added


@dataclass(eq=False)
class Unit:
    """One explanation to make: the sample at row `row` of the batch, explained for `target`."""

    sample: Any  # jittercam.data.samples.Sample
    row: int
    item: str  # `results.item`: the sample's key, or key#class for a per-class item
    target: int
    difficult: bool = False

    @property
    def key(self) -> str:
        return self.sample.key


@dataclass(eq=False)
class Arm:
    """A method as one experiment runs it; `variant` tells apart arms of one method (size, layer)."""

    method: str  # the registry name, as asked for
    explainer: CAMMethod
    variant: str = ""
    sweep: bool = False  # faithfulness: the expansion sweep (instead of the plain rows)
    gallery: bool = True  # its maps go to the gallery (not for an arm that repeats another's maps)

    @property
    def label(self) -> str:
        return f"{self.method}[{self.variant}]" if self.variant else self.method


@dataclass
class Scores:
    """What `Experiment.score` returns: (variant, unit, metric, value) and (variant, unit, kind, curve)."""

    values: list[tuple[str, Unit, str, float]] = field(default_factory=list)
    curves: list[tuple[str, Unit, str, torch.Tensor]] = field(default_factory=list)


@dataclass
class Setting:
    """What the experiments need to know about the run."""

    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    batch_size: int | None  # for the metrics' forward passes; None: their default (or a tuned plan)


def _uses_layer(name: str) -> bool:
    return bool(getattr(method_class(name.split(":")[-1]), "uses_layer", True))


class Experiment:
    """Base class. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    paper: ClassVar[str]  # where in the paper
    default_methods: ClassVar[tuple[str, ...]]
    truth_targets: ClassVar[bool] = False  # explain the ground-truth classes (else the top-1)
    needs: ClassVar[frozenset[str]] = frozenset()  # what the dataset must have (`BenchmarkDataset.has`)
    options: ClassVar[dict[str, Any]] = {}  # the experiment's own options and their defaults
    one_at_a_time: ClassVar[bool] = False  # explain each unit alone (timing)
    reads_cache: ClassVar[bool] = True
    default_dataset: ClassVar[str | None] = None  # what --dataset / --model mean when not given
    default_model: ClassVar[str | None] = None

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise JitterCamError(f"{self.name} takes no option {min(unknown)!r}")
        self.settings = {**self.options, **{k: v for k, v in options.items() if v is not None}}

    def accepts(self, name: str) -> str | None:
        """Why `name` cannot take part (None when it can)."""
        return None

    def open_dataset(self, settings, model: nn.Module | None):
        """The dataset `settings` (a runner `Settings`) names; `model` is None while it is not loaded yet
        (a dataset drawn from its model, "groundtruth", is opened once it is)."""
        from ..data.samples import open_dataset

        spec = settings.dataset or self.default_dataset
        if spec is None:
            raise JitterCamError(f"{self.name} needs --dataset: offline, groundtruth, or a dataset folder")
        if spec == "groundtruth" and model is None:
            return None
        options = {k: v for k, v in settings.dataset_options.items() if v is not None}
        return open_dataset(spec, seed=settings.seed, model=model, **options)

    def showcase(self, keys: list[str], count: int) -> list[str]:
        """The items whose inputs and maps go to the gallery."""
        return keys[:count]

    def config(self) -> dict[str, Any]:
        """The experiment's options as they enter the configuration hash."""
        return dict(self.settings)

    def arms(self, names: Sequence[str], build: Build, setting: Setting) -> list[Arm]:
        return [Arm(name, build(name)) for name in names]

    def units(self, sample, row: int, top1: int | None) -> tuple[list[Unit], list[tuple[str, str]]]:
        """The sample's units, and (item, reason) for what of it cannot be evaluated."""
        reason = sample.reason_to_skip(self.needs)
        if reason:
            return [], [(sample.key, reason)]
        return [Unit(sample, row, sample.key, int(top1))], []

    def inputs(self, arm: Arm, images: torch.Tensor) -> torch.Tensor:
        """The images `arm` explains (consistency gives it a smaller copy)."""
        return images

    def prepare(self, setting: Setting, images: torch.Tensor, units: list[Unit], explain) -> Any:
        """Per-batch work shared by the arms; `explain(arm, images, units)` gives maps (cached)."""
        return None

    def score(self, setting: Setting, arm: Arm, images: torch.Tensor, units: list[Unit], maps: torch.Tensor,
              seconds: list[float], state: Any) -> Scores:
        raise NotImplementedError


def _targets(units: list[Unit], device: torch.device) -> torch.Tensor:
    return torch.tensor([u.target for u in units], dtype=torch.long, device=device)


def _rows(units: list[Unit], device: torch.device) -> torch.Tensor:
    return torch.tensor([u.row for u in units], dtype=torch.long, device=device)


def _local_accuracy(setting: Setting, variant: str, images, units, maps) -> Scores:
    """RISE's deletion and insertion (28 steps at 224 px: step = 8 × width), softmax of the target."""
    x = images[_rows(units, images.device)]
    games = metrics.deletion_insertion(setting.model, x, maps, _targets(units, x.device),
                                       batch_size=setting.batch_size)
    scores = Scores()
    for kind, curves in (("deletion", games.deletion), ("insertion", games.insertion)):
        for unit, area, curve in zip(units, curves.auc.tolist(), curves.scores, strict=True):
            scores.values.append((variant, unit, kind, area))
            scores.curves.append((variant, unit, kind, curve))
    return scores


def _class_units(experiment: Experiment, sample, row: int, per_class: bool):
    """One unit per ground-truth class that has what the experiment needs; the others are skips."""
    reason = sample.reason_to_skip(experiment.needs)
    if reason or not sample.labels:
        return [], [(sample.key, reason or f"{sample.key} has no ground-truth class")]
    units, skipped = [], []
    for label in sample.labels:
        item = f"{sample.key}#{label}" if per_class else sample.key
        reason = sample.reason_to_skip(experiment.needs, label)
        if reason:
            skipped.append((item, reason))
        else:
            units.append(Unit(sample, row, item, int(label), bool(sample.difficult.get(label, False))))
    return units, skipped


def _format(number: float) -> str:
    return f"{number:g}"


# ------------------------------------------------------------------------------------------ experiments
class Faithfulness(Experiment):
    """Table 1 and Fig. 5 (§4.3): Y, the softmax score of the top-1 class on the image, and O, its score
    on the image multiplied (in [0, 1] pixel space: `metrics.faithfulness`, multiply='pixel') by the
    map resized and min–max scaled. Every method asked for gets variant '' (Table 1: Grad-CAM,
    Grad-CAM++, Constant); the methods in `sweep` (Grad-CAM and Random by default) get variant
    `alpha=<a>` for each expansion factor a of `alphas` (Fig. 5: 0, 0.5, ..., 10), the map scaled by a
    and clipped at its maximum − 1e-4 (`metrics.expand_explanation`); a swept method's maps are computed
    once for both. The report computes AD = 100·mean(max(0, Y − O)/Y), IIC = 100·mean(Y < O), and how
    many images improved and by how much. The sweep is an arm of its own (variant 'sweep' in the runner's
    bookkeeping), so it can be added to a finished run."""

    name = "faithfulness"
    paper = "Table 1, Fig. 5"
    default_methods = ("gradcam", "gradcam++", "constant")
    options = {"alphas": metrics.EXPANSION_ALPHAS, "sweep": ("gradcam", "random")}

    def config(self) -> dict[str, Any]:
        return {"alphas": [float(a) for a in self.settings["alphas"]], "multiply": "pixel", "softmax": True}

    def arms(self, names, build, setting) -> list[Arm]:
        sweep = list(self.settings["sweep"])
        if sweep and not self.settings["alphas"]:
            raise JitterCamError("--alphas names no expansion factor")
        built = {name: build(name) for name in dict.fromkeys([*names, *sweep])}
        return ([Arm(name, built[name]) for name in names]
                + [Arm(name, built[name], variant="sweep", sweep=True, gallery=name not in names) for name in sweep])

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        x = images[_rows(units, images.device)]
        target = _targets(units, x.device)
        common = {"mean": setting.mean, "std": setting.std, "batch_size": setting.batch_size}
        scores = Scores()
        if not arm.sweep:
            plain = metrics.faithfulness(setting.model, x, maps, target, **common)
            for unit, y, o in zip(units, plain.original.tolist(), plain.masked.tolist(), strict=True):
                scores.values += [("", unit, "y", y), ("", unit, "o", o)]
            return scores
        alphas = [float(a) for a in self.settings["alphas"]]
        swept = metrics.expansion_faithfulness(setting.model, x, maps, target, alphas, **common)
        for unit, y, row in zip(units, swept.original.tolist(), swept.masked.tolist(), strict=True):
            for alpha, o in zip(alphas, row, strict=True):
                variant = f"alpha={_format(alpha)}"
                scores.values += [(variant, unit, "y", y), (variant, unit, "o", o)]
        return scores


class LocalAccuracy(Experiment):
    """Table 2 (§4.4): RISE's deletion and insertion AUC of the top-1 class per image (`metrics.
    deletion_insertion`: 28 steps at 224 px, deletion to zeros of the input tensor, insertion from
    RISE's blur), with both curves stored."""

    name = "local-accuracy"
    paper = "Table 2"
    default_methods = ("random", "centre", "gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam",
                       "rise", "jittercam")

    def config(self) -> dict[str, Any]:
        return {"step": "8 x width", "softmax": True}

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        return _local_accuracy(setting, arm.variant, images, units, maps)


class WeakLocalisation(Experiment):
    """Table 3 (§4.5): Fong & Vedaldi's thresholds on the map of the ground-truth class, resized to the
    S × S input the boxes are given in (`metrics.weak_localisation`): Val (min–max value >= a), Mean
    (>= a · mean) and Eng (the highest pixels holding a share a of the energy), a = 0, 0.05, ..., 0.95; a
    box around the kept pixels (`box`: 'all', theirs, or 'largest' connected component); a hit when its
    IoU with a box of the class is >= 0.5. Rows `val@a`, `mean@a`, `eng@a` are 0/1; the report gives
    100·(1 − max over a of the mean hit) as the % error. One unit per labelled class that has boxes:
    item = the key for a single-label image, `key#class` when the image has several labels; a class
    without boxes is a skip."""

    name = "weak-localisation"
    paper = "Table 3"
    default_methods = LocalAccuracy.default_methods
    truth_targets = True
    needs = frozenset({"labels", "boxes"})
    options = {"box": "all"}
    SCHEMES = {"val": "val", "mean": "mean", "energy": "eng"}

    def config(self) -> dict[str, Any]:
        return {**self.settings, "thresholds": list(metrics.THRESHOLDS), "iou": 0.5}

    def units(self, sample, row, top1):
        return _class_units(self, sample, row, per_class=len(sample.labels) > 1)

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        boxes = [unit.sample.boxes[unit.target] for unit in units]
        found = metrics.weak_localisation(maps, boxes, setting.input_size, box=self.settings["box"])
        scores = Scores()
        for scheme, prefix in self.SCHEMES.items():
            hits = found[scheme].hit.to(torch.uint8).tolist()
            for unit, row in zip(units, hits, strict=True):
                for alpha, hit in zip(metrics.THRESHOLDS, row, strict=True):
                    scores.values.append((arm.variant, unit, f"{prefix}@{_format(alpha)}", float(hit)))
        return scores


class Pointing(Experiment):
    """Table 4 (§4.5.1): TorchRay's pointing game for every (image, class) pair of the ground truth that
    has a mask: the map of that class is resized to the original image, its first maximum is a hit when
    a pixel of the class's mask lies strictly within `tolerance` (15) pixels (`metrics.pointing_game`).
    Item `key#class`, metric `all` for every pair and `difficult` for the pairs of the difficult subset.
    The report takes TorchRay's mean over the classes (num_classes from the run's configuration)."""

    name = "pointing"
    paper = "Table 4"
    default_methods = ("centre", "random", "gradcam", "gradcam++", "xgradcam", "scorecam", "jittercam")
    truth_targets = True
    needs = frozenset({"labels", "masks"})
    options = {"tolerance": 15.0}

    def units(self, sample, row, top1):
        units, skipped = _class_units(self, sample, row, per_class=True)
        empty = [unit for unit in units if not bool(sample.masks[unit.target].any())]
        skipped += [(unit.item, f"the mask of class {unit.target} is empty") for unit in empty]
        return [unit for unit in units if unit not in empty], skipped

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        scores = Scores()
        for index, unit in enumerate(units):  # masks differ in size from image to image
            mask = unit.sample.masks[unit.target].to(maps.device)
            hit = float(metrics.pointing_game(maps[index : index + 1], mask[None], self.settings["tolerance"]).hit)
            scores.values.append((arm.variant, unit, "all", hit))
            if unit.difficult:
                scores.values.append((arm.variant, unit, "difficult", hit))
        return scores


class Efficiency(Experiment):
    """Table 5 (§4.6): the wall-clock seconds of one explanation of the top-1 class (one image at a time,
    the method's own batching of its passes inside; CUDA synchronised; the first explanation of each
    method in a run is a warm-up and not recorded; never read from the explanation cache) and
    `method.passes()` at the input size."""

    name = "efficiency"
    paper = "Table 5"
    default_methods = ("gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam", "rise", "jittercam")
    one_at_a_time = True
    reads_cache = False

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        passes = float(arm.explainer.passes(setting.input_size))
        scores = Scores()
        for unit, spent in zip(units, seconds, strict=True):
            scores.values += [(arm.variant, unit, "seconds", spent), (arm.variant, unit, "passes", passes)]
        return scores


def _check_sized(name: str) -> str | None:
    if "size" not in method_options(name):
        return f"{name} has no map size to vary (jittercam and upscale have)"
    return None


class SizeSweep(Experiment):
    """Fig. 2 (§3): Jitter-CAM's final map size m + d from m to m + 13 (`sizes`; m is the probe's map
    size at the input size), deletion and insertion per size as in local-accuracy; variant `size=<n>`.
    The report adds deletion + (1 − insertion)."""

    name = "size-sweep"
    paper = "Fig. 2"
    default_methods = ("jittercam",)
    options = {"sizes": None}

    def accepts(self, name: str) -> str | None:
        return _check_sized(name)

    def arms(self, names, build, setting) -> list[Arm]:
        arms = []
        for name in names:
            sizes = self.settings["sizes"]
            if sizes is None:
                m = build(name).layer.map_size
                sizes = list(range(m, m + 14))
                self.settings["sizes"] = sizes
            arms += [Arm(name, build(name, size=int(n)), variant=f"size={int(n)}") for n in sizes]
        return arms

    def config(self) -> dict[str, Any]:
        return {"step": "8 x width", "softmax": True}  # each size is an arm of its own (variant)

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        return _local_accuracy(setting, arm.variant, images, units, maps)


class Consistency(Experiment):
    """§4.2: can Jitter-CAM recreate Grad-CAM from a smaller input? The image (the S × S input tensor,
    resized bilinearly with antialiasing to `low_size`, 160 by default) is explained by the method with
    its final size set to m, the reference method's map size at S (ResNet50: 5 × 5 at 160 → 7 × 7), and
    compared with the `reference` method (Grad-CAM) at S by Spearman's rank correlation over the m × m
    pixels (`metrics.rank_correlation`; NaN for a constant map). Both explain the top-1 class at S.
    Resizing the input tensor instead of the photo differs from the paper by the resampling only."""

    name = "consistency"
    paper = "§4.2"
    default_methods = ("jittercam",)
    options = {"low_size": 160, "reference": "gradcam"}

    def accepts(self, name: str) -> str | None:
        return _check_sized(name)

    def arms(self, names, build, setting) -> list[Arm]:
        if self.settings["low_size"] >= setting.input_size:
            raise JitterCamError(
                f"--low-size {self.settings['low_size']} must be below the input size {setting.input_size}"
            )
        self.reference = Arm(self.settings["reference"], build(self.settings["reference"]))
        if self.reference.explainer.layer is None:
            raise JitterCamError(f"the consistency reference {self.reference.method} has no target layer")
        m = self.reference.explainer.layer.map_size
        return [Arm(name, build(name, size=m)) for name in names]

    def inputs(self, arm, images):
        if arm is self.reference:
            return images
        size = self.settings["low_size"]
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    def prepare(self, setting, images, units, explain):
        return explain(self.reference, images, units)[0]

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        rho = metrics.rank_correlation(maps, state.to(maps.device))
        return Scores([(arm.variant, unit, "spearman", value) for unit, value in zip(units, rho.tolist(), strict=True)])


class Layers(Experiment):
    """Beyond the paper: local-accuracy (deletion, insertion, curves) with the target layer moved, since
    the choice can reverse a ranking. `layers` default: the probe's layer and the layer that feeds its
    activation (`activation_input`): EfficientNet-Lite0 `_swish` (the head's ReLU6) and `_bn1`; ResNet
    `layer4` and `layer4.2.bn3` (before the residual addition too: no module outputs the sum itself).
    Variant `layer=<name>`."""

    name = "layers"
    paper = "beyond the paper"
    default_methods = ("gradcam", "jittercam")
    options = {"layers": None}

    def accepts(self, name: str) -> str | None:
        return None if _uses_layer(name) else f"{name} does not use a target layer"

    def arms(self, names, build, setting) -> list[Arm]:
        layers = self.settings["layers"]
        if layers is None:
            probed = find_target_layer(setting.model)
            layers = [probed.name, activation_input(setting.model, probed)]
            self.settings["layers"] = layers
        return [Arm(name, build(name, target_layer=layer), variant=f"layer={layer}") for name in names
                for layer in layers]

    def config(self) -> dict[str, Any]:
        return {"step": "8 x width", "softmax": True}  # each layer is an arm of its own (variant)

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        return _local_accuracy(setting, arm.variant, images, units, maps)


def default_sizes(m: int) -> list[int]:
    """Jitter-CAM / Upscale-CAM sizes for the ground truth: m + 2, m + 4, 1.5 m and 2 m (the default)."""
    return sorted({m + 2, m + 4, m + m // 2, 2 * m})


class GroundTruth(Experiment):
    """Beyond the paper (issue 14): maps against evidence known by construction, on the ground-truth model
    (`jittercam.groundtruth`: a small CNN trained here on patterns whose pixels are exactly known) and its
    held-out images (`jittercam.groundtruth.benchmark`), for the true class.

    Single-patch images (`single-*`): `energy`, the share of the map's mass (negatives clipped) on the
    evidence mask (`metrics.energy_in_mask`), and `auc`, the ROC AUC of the map's values as a detector of
    the evidence pixels (`metrics.evidence_auc`). Two-patch images (`pair-s<separation>-r<replicate>`):
    `separation` (centre distance, px), `resolved` (0/1: `metrics.two_peaks`, two peaks of at least
    `floor` of the map's range with a dip of at least `dip` between them along the line through the
    centres) and `depth`. Every item: `seconds` (the arm's batch time divided by its explanations) and
    `passes` (`method.passes()`). The report turns each arm's (separation, resolved) pairs into the
    resolving power (`metrics.resolving_power`) and the resolved share per separation.

    The pairs lie on a horizontal line unless `angle` says otherwise (the dataset is then named
    `groundtruth-<angle>deg`, a group of its own in the report).

    Arms: every method asked for; a method with a map size (jittercam, upscale) once per size of `sizes`
    (default m + 2, m + 4, 1.5 m, 2 m: the cost curve), variant `size=<n>`; LayerCAM also fused over the
    model's `fusion_layers` (variant `fused`; `fused` names other layers, 'none' leaves it out)."""

    name = "groundtruth"
    paper = "beyond the paper: evidence known by construction"
    default_methods = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam", "rise",
                       "cameras", "upscale", "jittercam")
    truth_targets = True
    needs = frozenset({"labels", "masks", "evidence"})
    default_dataset = "groundtruth"
    default_model = "groundtruth"
    options = {"sizes": None, "fused": None, "singles": None, "separations": None, "replicates": None,
               "angle": None, "dip": 0.2, "floor": 0.5}
    _DATASET_OPTIONS = ("singles", "separations", "replicates", "angle")

    def config(self) -> dict[str, Any]:
        return {"dip": float(self.settings["dip"]), "floor": float(self.settings["floor"]),
                "energy": "negatives clipped", "auc": "Mann-Whitney, ties halved"}

    def open_dataset(self, settings, model):
        if settings.dataset not in (None, "groundtruth"):
            raise JitterCamError(f"groundtruth runs on its own synthetic images (--dataset groundtruth, the default), "
                                 f"not {settings.dataset}")
        if model is None:
            return None
        from ..groundtruth.benchmark import for_model

        options = {key: self.settings[key] for key in self._DATASET_OPTIONS if self.settings[key] is not None}
        dataset = for_model(model, settings.seed, **options)
        if settings.input_size not in (None, dataset.size):
            raise JitterCamError(f"the ground-truth images are {dataset.size} px: leave out --input-size")
        return dataset

    def showcase(self, keys, count):
        """Pairs of the first replicate at `count` separations, evenly spread from the closest to the widest."""
        first = [key for key in keys if key.startswith("pair-") and key.endswith("-r00")]
        if not first or count <= 0:
            return keys[:count]
        if count == 1:
            return first[:1]
        picks = sorted({round(i * (len(first) - 1) / (count - 1)) for i in range(count)})
        return [first[i] for i in picks]

    def arms(self, names, build, setting) -> list[Arm]:
        arms = []
        for name in names:
            explainer = build(name)
            if "size" in method_options(name):
                sizes = self.settings["sizes"] or default_sizes(explainer.layer.map_size)
                arms += [Arm(name, build(name, size=int(n)), variant=f"size={int(n)}", gallery=n == max(sizes))
                         for n in sizes]
                continue
            arms.append(Arm(name, explainer))
            if name == "layercam":
                layers = self.settings["fused"]
                if layers is None:
                    layers = tuple(getattr(setting.model, "fusion_layers", ()))
                if layers:
                    arms.append(Arm(name, build(name, target_layer=list(layers)), variant="fused"))
        return arms

    def units(self, sample, row, top1):
        label = sample.labels[0] if sample.labels else None
        reason = sample.reason_to_skip(self.needs, label)
        if reason or label is None:
            return [], [(sample.key, reason or f"{sample.key} has no ground-truth class")]
        return [Unit(sample, row, sample.key, int(label))], []

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        scores = Scores()
        passes = float(arm.explainer.passes(setting.input_size))
        for unit, spent in zip(units, seconds, strict=True):
            scores.values += [(arm.variant, unit, "seconds", spent), (arm.variant, unit, "passes", passes)]
        singles = [i for i, unit in enumerate(units) if unit.sample.meta.get("kind") == "single"]
        if singles:
            chosen = [units[i] for i in singles]
            masks = torch.stack([unit.sample.masks[unit.target] for unit in chosen]).to(maps.device)
            energy = metrics.energy_in_mask(maps[singles], masks).tolist()
            auc = metrics.evidence_auc(maps[singles], masks).tolist()
            for unit, e, a in zip(chosen, energy, auc, strict=True):
                scores.values += [(arm.variant, unit, "energy", e), (arm.variant, unit, "auc", a)]
        pairs = [i for i, unit in enumerate(units) if unit.sample.meta.get("kind") == "pair"]
        if pairs:
            chosen = [units[i] for i in pairs]
            centres = torch.tensor([unit.sample.meta["centres"] for unit in chosen], dtype=torch.float64)
            found = metrics.two_peaks(maps[pairs], centres, setting.input_size, dip=float(self.settings["dip"]),
                                      floor=float(self.settings["floor"]))
            for unit, resolved, depth in zip(chosen, found.resolved.tolist(), found.depth.tolist(), strict=True):
                scores.values += [(arm.variant, unit, "separation", float(unit.sample.meta["separation"])),
                                  (arm.variant, unit, "resolved", float(resolved)),
                                  (arm.variant, unit, "depth", depth)]
        return scores


EXPERIMENTS: dict[str, type[Experiment]] = {
    cls.name: cls
    for cls in (Faithfulness, LocalAccuracy, WeakLocalisation, Pointing, Efficiency, SizeSweep, Consistency, Layers,
                GroundTruth)
}
