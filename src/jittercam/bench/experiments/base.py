"""What an experiment is: the units it explains, its arms, how it scores them, and everything the CLI and the
report need to know about it, declared on its class.

An experiment module defines one `Experiment` subclass and registers it (`@register_experiment`); nothing
else in the package names it. The class declares

* its options (`Option`): the `bench` flags are generated from them and their texts parsed by them;
* how it turns a sample into units (`units`), which arms it runs (`arms`) and how it scores an arm's maps
  (`score`), as typed rows (`Scores`);
* its set-level statistics (`summarise`), computed by the metrics' own set-level functions;
* its report section (`title`, `columns`, `sweep_panels`, ...) and the paper's numbers (`paper_values`).

Targets: the class explained is the model's top-1 prediction unless `truth_targets` (then the ground-truth
class whose boxes, mask or evidence are the reference). The metrics get that class explicitly, so a method
and its metric always look at the same class.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ... import metrics
from ...errors import JitterCamError
from ...methods import CAMMethod, method_class
from ..stats import Stat, mean

Build = Callable[..., CAMMethod]  # build(name, **options) -> a method with the run's options added


# --------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Option:
    """One option of an experiment: `jittercam bench` offers it as `--<name-with-dashes>`.

    Attributes:
        name: the option's name, as `Experiment(**options)` takes it.
        default: its value when not given.
        help: the flag's help text.
        metavar: the flag's metavar; None: argparse's default.
        parse: `parse(text, what)` turns the flag's text into the value (raising `JitterCamError` with
            `what`, the name the caller knows the option by); None: the text as it is.
        choices: the texts allowed; None: any.
        dataset: True for options that go to the dataset, not to the scoring.
    """

    name: str
    default: Any
    help: str
    metavar: str | None = None
    parse: Callable[[str, str], Any] | None = None
    choices: tuple[str, ...] | None = None
    dataset: bool = False

    @property
    def flag(self) -> str:
        """The command-line flag, `--<name-with-dashes>`."""
        return "--" + self.name.replace("_", "-")

    def value(self, text: str, what: str | None = None) -> Any:
        """The option's value from a flag's text.

        Args:
            text: the text given.
            what: the name the caller knows the option by, for messages; None: `name`.

        Returns:
            The value (`parse`'s, else the text).

        Raises:
            JitterCamError: the text is not among `choices`, or `parse` refuses it.
        """
        what = what or self.name
        if self.choices is not None and text not in self.choices:
            raise JitterCamError(f"{what} {text!r}: choose from {', '.join(self.choices)}")
        return text if self.parse is None else self.parse(text, what)


# --------------------------------------------------------------------------------------------- units, arms
@dataclass(eq=False)
class Unit:
    """One explanation to make: the sample at row `row` of the batch, explained for `target`.

    Attributes:
        sample: the `jittercam.data.Sample`.
        row: its row in the batch of images.
        item: the stored item: the sample's key, or key#class for a per-class item.
        target: the class explained.
        difficult: whether the pair is in the difficult subset.
    """

    sample: Any  # jittercam.data.samples.Sample
    row: int
    item: str  # the stored item: the sample's key, or key#class for a per-class item
    target: int
    difficult: bool = False

    @property
    def key(self) -> str:
        """The sample's key."""
        return self.sample.key


@dataclass(frozen=True)
class Variant:
    """What tells apart the arms of one method: a swept `parameter` at `value` (`size=9`, `alpha=2.5`,
    `layer=_bn1`), a named variant without value (`fused`), or nothing.

    Attributes:
        parameter: the swept parameter or the variant's name; "" for none.
        value: the parameter's value; None for a named variant or none.
    """

    parameter: str = ""
    value: float | str | None = None

    @property
    def label(self) -> str:
        """The stored label: `parameter=value`, the name alone, or ""."""
        if self.value is None:
            return self.parameter
        value = format(self.value, "g") if isinstance(self.value, float) else str(self.value)
        return f"{self.parameter}={value}"

    @property
    def number(self) -> float | None:
        """The swept value when it is a number (the report's sweeps)."""
        return self.value if isinstance(self.value, float) else None

    @staticmethod
    def of(label: str) -> Variant:
        """The variant a stored label names (`'size=9'` -> size at 9.0).

        Args:
            label: a stored label.

        Returns:
            The variant; a value that is not a number stays text.
        """
        parameter, equals, value = label.partition("=")
        if not equals:
            return Variant(label)
        try:
            return Variant(parameter, float(value))
        except ValueError:
            return Variant(parameter, value)


NO_VARIANT = Variant()
# faithfulness's expansion sweep is an arm of its own in the runner's bookkeeping (its rows carry alphas)
SWEEP = Variant("sweep")


@dataclass(eq=False)
class Arm:
    """A method as one experiment runs it.

    Attributes:
        method: the registry name, as asked for.
        explainer: the built method.
        variant: what tells it apart from the method's other arms.
        gallery: whether its maps go to the gallery (not for an arm that repeats another's maps).
    """

    method: str  # the registry name, as asked for
    explainer: CAMMethod
    variant: Variant = NO_VARIANT
    gallery: bool = True  # its maps go to the gallery (not for an arm that repeats another's maps)

    @property
    def label(self) -> str:
        """`method[variant]`, or the method alone."""
        return f"{self.method}[{self.variant.label}]" if self.variant.label else self.method


@dataclass(frozen=True)
class Value:
    """One stored result: `metric` of `unit` under `variant`.

    Attributes:
        variant: the arm's variant.
        unit: the unit scored.
        metric: the metric's name.
        value: the value; None when missing.
        curve: for a metric measured along a sweep (deletion's scores per step, weak localisation's hit per
            threshold); None otherwise.
    """

    variant: Variant
    unit: Unit
    metric: str
    value: float | None
    curve: torch.Tensor | None = None


@dataclass
class Scores:
    """The rows an arm's scoring produced.

    Attributes:
        values: the results, in the order added.
    """

    values: list[Value] = field(default_factory=list)

    def add(self, variant: Variant, unit: Unit, metric: str, value: float | None,
            curve: torch.Tensor | None = None) -> None:
        """Add one result (`Value`).

        Args:
            variant: the arm's variant.
            unit: the unit scored.
            metric: the metric's name.
            value: the value; None when missing.
            curve: the metric's curve, if it has one.
        """
        self.values.append(Value(variant, unit, metric, value, curve))


@dataclass
class Setting:
    """What the experiments need to know about the run.

    Attributes:
        model: the classifier.
        mean: the per-channel mean its inputs are normalised with.
        std: the per-channel standard deviation, likewise.
        input_size: the square input size in pixels.
        batch_size: for the metrics' forward passes; None: their default (or a tuned plan).
        fusion_layers: the model's stage outputs (LayerCAM fused).
        compile: the metrics' forward passes through torch.compile (`jittercam.compiled`).
    """

    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    batch_size: int | None  # for the metrics' forward passes; None: their default (or a tuned plan)
    fusion_layers: tuple[str, ...] = ()  # the model's stage outputs (LayerCAM fused)
    compile: bool = False  # the metrics' forward passes through torch.compile


@dataclass(frozen=True)
class Column:
    """One metric of one arm across items, as the report reads it back.

    Attributes:
        values: one value per item, NaN for missing.
        targets: the class each item explains.
        curves: `(items, points)` per-item curves, where the metric has them.
        items: the items' names.
    """

    values: np.ndarray
    targets: np.ndarray | None = None
    curves: np.ndarray | None = None
    items: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------- experiment
class Experiment:
    """Base class: subclasses set the class attributes and override what differs.

    Attributes:
        name: the experiment's name (`jittercam bench EXPERIMENT`).
        paper: where in the paper.
        title: the report's section title.
        default_methods: the methods run when none are named (the paper's rows).
        truth_targets: explain the ground-truth class instead of the top-1 prediction.
        needs: what the dataset must have (`BenchmarkDataset.has`).
        options: the experiment's options.
        one_at_a_time: explain each unit alone (timing).
        reads_cache: whether stored explanations are reused.
        default_dataset: the dataset when none is given.
        default_model: the model when none is given.
        columns: the metrics of the report's main table and their labels.
        sweep_panels: the panels of a sweep figure.
        sweep_caption: the sweep figure's caption.
        sweeps: whether numeric variants are a sweep (else every arm is a row of the main table).
        table_ref: the paper's table the report mirrors.
        paper_values: the paper's numbers (`jittercam.bench.paper.PaperValue`).
        paper_note: a note the report adds to the section (on the paper's numbers).
        paired: metrics read item by item together.
        sweep_reference: the unswept method drawn as a reference in sweep figures.
        order: where the report puts it (the paper's order).

    Args:
        **options (Any): values of the experiment's `options`, by name; None keeps the default.

    Raises:
        JitterCamError: an option the experiment does not take.
    """

    name: ClassVar[str]
    paper: ClassVar[str]  # where in the paper
    title: ClassVar[str]  # the report's section title
    default_methods: ClassVar[tuple[str, ...]]
    truth_targets: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset()  # what the dataset must have (`BenchmarkDataset.has`)
    options: ClassVar[tuple[Option, ...]] = ()
    one_at_a_time: ClassVar[bool] = False  # explain each unit alone (timing)
    reads_cache: ClassVar[bool] = True
    default_dataset: ClassVar[str | None] = None  # what the dataset and model are when not given
    default_model: ClassVar[str | None] = None
    # the report: the metrics of the main table and their labels, the panels of a sweep figure, whether
    # numeric variants are a sweep (else every arm is a row of the main table), the paper's table it mirrors
    columns: ClassVar[dict[str, str]] = {}
    sweep_panels: ClassVar[tuple[str, ...]] = ()
    sweep_caption: ClassVar[str | None] = None
    sweeps: ClassVar[bool] = True
    table_ref: ClassVar[str | None] = None
    paper_values: ClassVar[tuple[Any, ...]] = ()  # jittercam.bench.paper.PaperValue
    paper_note: ClassVar[str | None] = None
    paired: ClassVar[tuple[tuple[str, str], ...]] = ()  # metrics read item by item together
    sweep_reference: ClassVar[str | None] = None  # the unswept method drawn as a reference in sweep figures
    order: ClassVar[int] = 100  # where the report puts it (the paper's order)

    def __init__(self, **options: Any) -> None:
        known = {option.name: option.default for option in self.options}
        unknown = set(options) - set(known)
        if unknown:
            raise JitterCamError(f"{self.name} takes no option {min(unknown)!r}")
        self.settings = {**known, **{k: v for k, v in options.items() if v is not None}}

    @classmethod
    def option(cls, name: str) -> Option | None:
        """The option called `name`.

        Args:
            name: the option's name.

        Returns:
            The option, or None when the experiment has none of that name.
        """
        return next((option for option in cls.options if option.name == name), None)

    def accepts(self, name: str) -> str | None:
        """Why method `name` cannot take part.

        Args:
            name: a method's registry name.

        Returns:
            The reason, or None when it can.
        """
        return None

    def check_dataset(self, spec: str | None) -> None:
        """Refuse a dataset this experiment cannot run on.

        Args:
            spec: the dataset as given; None when none was given.

        Raises:
            JitterCamError: the experiment cannot run on it.
        """

    def dataset_options(self) -> dict[str, Any]:
        """The options of this experiment that go to its dataset.

        Returns:
            name -> value, for those that are set.
        """
        return {o.name: self.settings[o.name] for o in self.options if o.dataset and self.settings[o.name] is not None}

    def showcase(self, keys: list[str], count: int) -> list[str]:
        """The items whose inputs and maps go to the gallery.

        Args:
            keys: the items' keys, in order.
            count: how many to pick.

        Returns:
            The keys picked (the default: the first `count`).
        """
        return keys[:count]

    def config(self) -> dict[str, Any]:
        """The experiment's options as they enter the configuration hash.

        Returns:
            name -> value, the dataset's options left out.
        """
        dataset = {option.name for option in self.options if option.dataset}
        return {k: v for k, v in self.settings.items() if k not in dataset}

    def arms(self, names: Sequence[str], build: Build, setting: Setting) -> list[Arm]:
        """The arms the experiment runs.

        Args:
            names: the methods asked for, by registry name.
            build: `build(name, **options)` gives a method with the run's options added.
            setting: the run.

        Returns:
            The arms (the default: one per name, without variant).
        """
        return [Arm(name, build(name)) for name in names]

    def units(self, sample: Any, row: int, top1: int | None) -> tuple[list[Unit], list[tuple[str, str]]]:
        """The sample's units, and (item, reason) for what of it cannot be evaluated.

        Args:
            sample: the `jittercam.data.Sample`.
            row: its row in the batch.
            top1: the model's top-1 class for it; None when the runner did not compute it.

        Returns:
            `(units, skipped)`: the default is one unit for the top-1 class, or none and the reason.

        Raises:
            ValueError: the default needs `top1` and it is None.
        """
        reason = sample.reason_to_skip(self.needs)
        if reason:
            return [], [(sample.key, reason)]
        if top1 is None:
            raise ValueError(f"{self.name} explains the top-1 class: the runner gives it")
        return [Unit(sample, row, sample.key, int(top1))], []

    def explanations_per_unit(self) -> int:
        """How many maps of the method one unit costs, for the run's cost estimate: its own, and those the
        metric makes again (the sanity check's on each randomised copy).

        Returns:
            The count (the default: 1).
        """
        return 1

    def inputs(self, arm: Arm, images: torch.Tensor) -> torch.Tensor:
        """The images `arm` explains (consistency gives it a smaller copy).

        Args:
            arm: the arm.
            images: the batch of model inputs.

        Returns:
            The images to explain (the default: `images`).
        """
        return images

    def prepare(self, setting: Setting, images: torch.Tensor, units: list[Unit], explain: Callable) -> Any:
        """Per-batch work shared by the arms.

        Args:
            setting: the run.
            images: the batch of model inputs.
            units: the batch's units.
            explain: `explain(arm, images, units)` gives maps (cached).

        Returns:
            The state handed to `score` (the default: None).
        """
        return None

    def score(self, setting: Setting, arm: Arm, images: torch.Tensor, units: list[Unit], maps: torch.Tensor,
              seconds: list[float], state: Any) -> Scores:
        """Score one arm's maps of a batch.

        Args:
            setting: the run.
            arm: the arm.
            images: the batch of model inputs.
            units: the units explained.
            maps: their raw `(N, h, w)` maps, one per unit.
            seconds: the time each explanation took.
            state: what `prepare` returned.

        Returns:
            The rows to store.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ report
    @classmethod
    def summarise(cls, columns: Mapping[str, Column], config: Mapping[str, Any]) -> dict[str, Stat]:
        """The set-level statistics of one arm from its per-item columns (NaN: missing, left out).

        Args:
            columns: metric -> its column.
            config: the run's configuration.

        Returns:
            statistic -> value (the default: the mean of every metric).
        """
        return {name: mean(column.values) for name, column in columns.items()}

    @classmethod
    def series(cls, columns: Mapping[str, Column]) -> dict[float, Stat] | None:
        """A statistic along a property of the items (the ground truth's share of pairs resolved per
        separation), for the report's extra tables.

        Args:
            columns: metric -> its column.

        Returns:
            property value -> statistic; None when the experiment has none.
        """
        return None

    @classmethod
    def notes(cls, label: str, stats: Mapping[str, Mapping[str, Stat]], items: Mapping[str, int],
              config: Mapping[str, Any]) -> list[str]:
        """Lines under the main table for one model.

        Args:
            label: the model's label.
            stats: arm label -> statistics.
            items: arm label -> how many items it has.
            config: the run's configuration.

        Returns:
            The lines (the default: none).
        """
        return []

    @classmethod
    def extra_report(cls, group: Any, writer: Any) -> None:
        """Tables and figures beyond the main table and the sweeps.

        Args:
            group: the results of this experiment the report reads.
            writer: `jittercam.bench.report`'s `SectionWriter`.
        """


# --------------------------------------------------------------------------------------------- helpers
def uses_layer(name: str) -> bool:
    """Whether method `name` (a wrapper's base for `WRAPPER:BASE`) reads a target layer.

    Args:
        name: a method's registry name.

    Returns:
        Its class's `uses_layer`.
    """
    return bool(getattr(method_class(name.split(":")[-1]), "uses_layer", True))


def targets_of(units: list[Unit], device: torch.device) -> torch.Tensor:
    """The units' classes.

    Args:
        units: the units.
        device: where the tensor goes.

    Returns:
        `(N,)` long class indices.
    """
    return torch.tensor([u.target for u in units], dtype=torch.long, device=device)


def rows_of(units: list[Unit], device: torch.device) -> torch.Tensor:
    """The units' rows in the batch.

    Args:
        units: the units.
        device: where the tensor goes.

    Returns:
        `(N,)` long row indices.
    """
    return torch.tensor([u.row for u in units], dtype=torch.long, device=device)


def class_units(experiment: Experiment, sample: Any, row: int, per_class: bool
                ) -> tuple[list[Unit], list[tuple[str, str]]]:
    """One unit per ground-truth class that has what the experiment needs; the others are skips.

    Args:
        experiment: the experiment (its `needs`).
        sample: the `jittercam.data.Sample`.
        row: its row in the batch.
        per_class: store each class as its own item (key#class) instead of the sample's key.

    Returns:
        `(units, skipped)`: the units, and (item, reason) for each class (or the sample) left out.
    """
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


# --------------------------------------------------------------------------------------------- registry
_EXPERIMENTS: dict[str, type[Experiment]] = {}


def register_experiment(cls: type[Experiment]) -> type[Experiment]:
    """Class decorator: make an experiment available to `jittercam bench`, the runner and the report.

    Args:
        cls: the `Experiment` subclass.

    Returns:
        `cls`, unchanged.

    Raises:
        ValueError: its name is already registered.
    """
    if cls.name in _EXPERIMENTS:
        raise ValueError(f"experiment name {cls.name!r} is taken")
    _EXPERIMENTS[cls.name] = cls
    return cls


def available_experiments() -> list[str]:
    """The registered experiments in the report's order (`Experiment.order`, then the name).

    Returns:
        Their names.
    """
    return sorted(_EXPERIMENTS, key=lambda name: (_EXPERIMENTS[name].order, name))


def experiment_class(name: str) -> type[Experiment]:
    """The experiment called `name`.

    Args:
        name: a registered experiment's name.

    Returns:
        Its class.

    Raises:
        JitterCamError: no experiment has that name.
    """
    if name not in _EXPERIMENTS:
        raise JitterCamError(f"unknown experiment {name!r}; choose from: {', '.join(available_experiments())}")
    return _EXPERIMENTS[name]


def find_experiment(name: str) -> type[Experiment] | None:
    """The experiment called `name`, or None (a store may hold one this version does not know).

    Args:
        name: an experiment's name.

    Returns:
        Its class, or None.
    """
    return _EXPERIMENTS.get(name)


def deletion_insertion_scores(setting: Setting, variant: Variant, images: torch.Tensor, units: list[Unit],
                              maps: torch.Tensor) -> Scores:
    """RISE's deletion and insertion (28 steps at 224 px: step = 8 × width), softmax of the target: the AUC
    per unit with its curve.

    Args:
        setting: the run (model, batch size).
        variant: the arm's variant.
        images: the batch of model inputs.
        units: the units explained.
        maps: their raw `(N, h, w)` maps, one per unit.

    Returns:
        "deletion" and "insertion" rows per unit.
    """
    x = images[rows_of(units, images.device)]
    games = metrics.deletion_insertion(setting.model, x, maps, targets_of(units, x.device),
                                       batch_size=setting.batch_size, compile=setting.compile)
    scores = Scores()
    for kind, curves in (("deletion", games.deletion), ("insertion", games.insertion)):
        for unit, area, curve in zip(units, curves.auc.tolist(), curves.scores, strict=True):
            scores.add(variant, unit, kind, area, curve)
    return scores


def deletion_insertion_summary(columns: Mapping[str, Column]) -> dict[str, Stat]:
    """The means of deletion and insertion, and Fig. 2's deletion + (1 − insertion) from the two means.

    Args:
        columns: metric -> its column.

    Returns:
        statistic -> value; `COMBINED` when both metrics are there.
    """
    result = {name: mean(column.values) for name, column in columns.items()}
    if "deletion" in result and "insertion" in result:
        d, i = result["deletion"], result["insertion"]
        result[COMBINED] = Stat(d.value + 1.0 - i.value, min(d.n, i.n))
    return result


COMBINED = "del+1-ins"
DELETION_INSERTION_COLUMNS = {"deletion": "Del", "insertion": "Ins"}
