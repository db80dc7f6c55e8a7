"""From the benchmark's per-item rows to the paper's numbers: pure functions over arrays, no store, no I/O.

Every statistic is a `Stat(value, n)`: the number and how many items it rests on. Missing values (SQLite
stores NaN as NULL; the report passes both as NaN) are left out of means and of `n`. The definitions:

- faithfulness (Table 1, §4.3; Grad-CAM++ paper eqs.): with Y the score on the image and O the score on the
  masked image, paired by item: AD = 100 · mean(max(0, Y − O) / Y) (items with Y ≤ 0 left out),
  IIC = 100 · mean(1[Y < O]), improved = count(Y < O), mean_improvement = mean(O − Y | O > Y).
- weak localisation (Table 3; Fong & Vedaldi): per-item hits 0/1 under `scheme@threshold`; the % error of a
  scheme is 100 · (1 − max over thresholds of the mean hit), the best threshold reported with it (the
  smallest one on a tie).
- pointing game (Table 4; TorchRay): per class c, hits_c / max(trials_c, 1); the figure is 100 × their mean
  over ALL `num_classes` classes (a class without trials counts 0), the overall 100 · hits / trials beside it.
- deletion + (1 − insertion) (Fig. 2): from the two means.
- mean curves: the per-item deletion / insertion curves averaged point by point.
- ground truth: the resolving power of an arm is `metrics.resolving_power` of its pairs' (separation,
  resolved), with `RESOLVED_SHARE` of the pairs needed at a separation and at every larger one; the
  resolution curve is the share of pairs resolved at each separation.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import JitterCamError

FAITHFULNESS_PAIR = ("y", "o")
RESOLUTION_PAIR = ("separation", "resolved")
PAIRED = (FAITHFULNESS_PAIR, RESOLUTION_PAIR)  # metrics read item by item together
RESOLVED_SHARE = 0.75  # 6 of 8 pairs: one unlucky background does not undo a separation
COMBINED = "del+1-ins"
# the weak-localisation schemes under the paper's column names (`jittercam.metrics` says `energy`)
SCHEME_NAMES = {"energy": "eng"}
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Stat:
    value: float
    n: int


@dataclass(frozen=True)
class Column:
    """One metric of one method (and variant): per-item values, and the class each item explains."""

    values: np.ndarray  # float64, NaN for missing
    targets: np.ndarray | None = None  # int64, same length (needed by the pointing game only)

    @staticmethod
    def of(values: Iterable[float | None], targets: Iterable[int | None] | None = None) -> Column:
        array = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        classes = None if targets is None else np.array([-1 if t is None else t for t in targets], dtype=np.int64)
        return Column(array, classes)


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[~np.isnan(array)]


def mean(values: Sequence[float] | np.ndarray) -> Stat:
    """NaN-safe mean: NaN (a missing value) is left out of the mean and of n; no value gives NaN, 0."""
    kept = _finite(values)
    return Stat(float(kept.mean()) if kept.size else math.nan, int(kept.size))


def faithfulness(y: Sequence[float] | np.ndarray, o: Sequence[float] | np.ndarray) -> dict[str, Stat]:
    """AD, IIC, improved and mean improvement from scores paired by item (see the module docstring)."""
    y, o = np.asarray(y, dtype=np.float64), np.asarray(o, dtype=np.float64)
    if y.shape != o.shape:
        raise ValueError(f"faithfulness needs y and o paired by item, got {y.shape} and {o.shape}")
    both = ~(np.isnan(y) | np.isnan(o))
    y, o = y[both], o[both]
    positive = y > 0
    drop = np.maximum(0.0, y[positive] - o[positive]) / y[positive]
    increased = y < o
    gains = (o - y)[increased]
    return {
        "ad": Stat(100.0 * float(drop.mean()) if drop.size else math.nan, int(drop.size)),
        "iic": Stat(100.0 * float(increased.mean()) if y.size else math.nan, int(y.size)),
        "improved": Stat(float(increased.sum()), int(y.size)),
        "mean_improvement": Stat(float(gains.mean()) if gains.size else math.nan, int(gains.size)),
    }


def split_threshold(metric: str) -> tuple[str, float] | None:
    """`'val@0.05'` → `('val', 0.05)`; None for a metric without a numeric threshold."""
    scheme, at, threshold = metric.partition("@")
    if not at or not scheme or not _NUMBER.match(threshold):
        return None
    return scheme, float(threshold)


def weak_localisation(hits: Mapping[str, Sequence[float] | np.ndarray]) -> dict[str, Stat]:
    """Per scheme (`val`, `mean`, `eng`, ...): the % error at its best threshold, and that threshold as
    `<scheme>_threshold`; `hits` maps `scheme@threshold` to per-item hits 0/1 (`energy@...` counts as
    `eng`, the paper's name)."""
    best: dict[str, tuple[float, float, int]] = {}  # scheme -> (mean hit, threshold, n)
    for metric, values in sorted(hits.items(), key=lambda kv: split_threshold(kv[0]) or (kv[0], 0.0)):
        parsed = split_threshold(metric)
        if parsed is None:
            raise ValueError(f"weak-localisation metric {metric!r} is not SCHEME@THRESHOLD")
        scheme, threshold = parsed
        scheme = SCHEME_NAMES.get(scheme, scheme)
        stat = mean(values)
        current = best.get(scheme)
        if stat.n == 0:
            best.setdefault(scheme, (math.nan, math.nan, 0))
        elif current is None or current[2] == 0 or stat.value > current[0]:
            best[scheme] = (stat.value, threshold, stat.n)
    result = {}
    for scheme, (accuracy, threshold, n) in best.items():
        result[scheme] = Stat(100.0 * (1.0 - accuracy), n)
        result[f"{scheme}_threshold"] = Stat(threshold, n)
    return result


def pointing(targets: Sequence[int] | np.ndarray, hits: Sequence[float] | np.ndarray,
             num_classes: int) -> tuple[Stat, Stat, Stat]:
    """(the mean over classes of hits / trials, the overall accuracy), both in %, n = trials; and the
    number of classes that had a trial.

    TorchRay averages over all `num_classes` classes and counts a class with no trial as 0; on the full
    COCO or VOC sets every class has trials, so the mean over the classes that had one is the same number,
    and on a subset (`--limit`, the offline set with 8 of ImageNet's 1000 classes) it is still a mean of
    accuracies instead of being pulled towards 0 by the classes never asked about."""
    targets, hits = np.asarray(targets, dtype=np.int64), np.asarray(hits, dtype=np.float64)
    keep = ~np.isnan(hits)
    targets, hits = targets[keep], hits[keep]
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise JitterCamError(f"pointing game: a class index {int(targets.max())} outside 0..{num_classes - 1}; "
                             "the run's num_classes does not fit its rows")
    trials = np.bincount(targets, minlength=num_classes)
    hit = np.bincount(targets, weights=hits, minlength=num_classes)
    asked = trials > 0
    n = int(targets.size)
    per_class = 100.0 * float((hit[asked] / trials[asked]).mean()) if n else math.nan
    overall = 100.0 * float(hits.mean()) if n else math.nan
    return Stat(per_class, n), Stat(overall, n), Stat(float(asked.sum()), n)


def combined(deletion: Stat, insertion: Stat) -> Stat:
    """Fig. 2's deletion + (1 − insertion), from the two means."""
    return Stat(deletion.value + 1.0 - insertion.value, min(deletion.n, insertion.n))


class CurveMean:
    """The point-by-point mean of per-item curves, accumulated one curve at a time (memory: one running
    sum per curve length). Curves of another length (another image size) are resampled linearly onto the
    longest one's points over the fraction of pixels changed (0 → 1)."""

    def __init__(self) -> None:
        self._sums: dict[int, list] = {}  # length -> [sum, count]

    def add(self, curve: Sequence[float] | np.ndarray) -> None:
        curve = np.asarray(curve, dtype=np.float64)
        if curve.ndim != 1 or curve.size < 2:
            raise ValueError(f"a curve must have at least two points, got shape {curve.shape}")
        entry = self._sums.setdefault(curve.size, [np.zeros(curve.size), 0])
        entry[0] += curve
        entry[1] += 1

    @property
    def count(self) -> int:
        return sum(count for _, count in self._sums.values())

    def result(self) -> np.ndarray:
        if not self._sums:
            raise ValueError("no curves to average")
        length = max(self._sums)
        grid = np.linspace(0.0, 1.0, length)
        total = np.zeros(length)
        for size, (summed, _) in self._sums.items():
            total += np.interp(grid, np.linspace(0.0, 1.0, size), summed)  # linear: the sum resamples as one
        return total / self.count


def mean_curve(curves: Sequence[np.ndarray]) -> np.ndarray:
    """The point-by-point mean of per-item curves (see `CurveMean`)."""
    accumulator = CurveMean()
    for curve in curves:
        accumulator.add(curve)
    return accumulator.result()


def curve_auc(curve: np.ndarray) -> float:
    """RISE's AUC of a curve of n + 1 scores: (sum − first/2 − last/2) / n."""
    curve = np.asarray(curve, dtype=np.float64)
    steps = len(curve) - 1
    return float((curve.sum() - curve[0] / 2 - curve[-1] / 2) / steps) if steps > 0 else math.nan


def resolution_curve(separations: Sequence[float] | np.ndarray,
                     resolved: Sequence[float] | np.ndarray) -> dict[float, Stat]:
    """Separation -> the share of its pairs resolved (0-1) and how many pairs; NaN values left out."""
    s, r = _complete_pairs(separations, resolved)
    return {float(value): Stat(float(r[s == value].mean()), int((s == value).sum())) for value in np.unique(s)}


def resolving_power(separations: Sequence[float] | np.ndarray, resolved: Sequence[float] | np.ndarray,
                    fraction: float = RESOLVED_SHARE) -> Stat:
    """`jittercam.metrics.resolving_power` of the pairs (NaN values left out), with the number of pairs."""
    from ..metrics import resolving_power as measure

    s, r = _complete_pairs(separations, resolved)
    if not len(s):
        return Stat(math.nan, 0)
    return Stat(measure(s.tolist(), (r > 0.5).tolist(), fraction=fraction), len(s))


def _complete_pairs(first, second) -> tuple[np.ndarray, np.ndarray]:
    """Two per-item columns as float arrays, without the items where either is NaN (missing)."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def summarise(experiment: str, columns: Mapping[str, Column], num_classes: int | None = None) -> dict[str, Stat]:
    """Every statistic of one method (one variant) of `experiment` from its per-item columns.

    `y` and `o` (faithfulness) must be paired item by item; `scheme@threshold` columns are weak-localisation
    hits; the pointing game's `all` and `difficult` are per-class means (`num_classes` needed) with
    `<metric>_overall` beside them and `<metric>_classes` (classes with a trial); any other metric is a
    NaN-safe mean. Size-sweep adds `del+1-ins`; `separation` and `resolved` (paired by item) give
    `resolving_power`.
    """
    result: dict[str, Stat] = {}
    rest = dict(columns)
    if all(name in rest for name in FAITHFULNESS_PAIR):
        result.update(faithfulness(rest.pop("y").values, rest.pop("o").values))
    if all(name in rest for name in RESOLUTION_PAIR):  # ground truth: paired by item, as y and o
        result["resolving_power"] = resolving_power(rest.pop("separation").values, rest.pop("resolved").values)
        rest.pop("depth", None)  # a mean over the sweep says little; the curve and the power say it
    thresholds = {name: rest.pop(name).values for name in list(rest) if split_threshold(name)}
    if thresholds:
        result.update(weak_localisation(thresholds))
    if experiment == "pointing":
        for name in ("all", "difficult"):
            if name in rest:
                column = rest.pop(name)
                if num_classes is None:
                    raise JitterCamError("pointing game: the run's configuration has no num_classes")
                if column.targets is None:
                    raise ValueError("pointing columns need the class of each item")
                result[name], result[f"{name}_overall"], result[f"{name}_classes"] = pointing(
                    column.targets, column.values, num_classes)
    for name, column in rest.items():
        result[name] = mean(column.values)
    if experiment == "size-sweep" and "deletion" in result and "insertion" in result:
        result[COMBINED] = combined(result["deletion"], result["insertion"])
    return result


def variant_number(variant: str) -> tuple[str, float] | None:
    """`'size=9'` → `('size', 9.0)`, `'alpha=2.5'` → `('alpha', 2.5)`; None when the value is not a number
    (`'layer=_bn1'`) or there is no variant."""
    key, equals, value = variant.partition("=")
    if not equals or not key or not _NUMBER.match(value):
        return None
    return key, float(value)
