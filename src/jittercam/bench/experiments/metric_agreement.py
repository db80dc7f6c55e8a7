"""Beyond every peer (issue 24): which evaluation metric ranks CAM methods the way the ground truth does.

On the ground-truth model and its held-out images (evidence known by construction), every method is scored
by the metrics a researcher uses on real data, which see only the images, the model and the class's BOXES,
and by the ground truth itself, which sees the exact evidence. Then, per metric, the methods' ranking by it
is compared with their ranking by each ground-truth reference with Kendall's tau (`scipy.stats.kendalltau`,
tau-b: ties allowed), with a bias-corrected percentile bootstrap interval over items (the same resampled
items for every method: a paired bootstrap; the singles, and the pairs of each separation, resampled apart).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np
import torch

from ... import metrics
from ...errors import JitterCamError
from ...groundtruth.dataset import NAME as GROUND_TRUTH
from ...methods.registry import default_names
from ..stats import Stat, mean
from . import parse
from .base import Column, Experiment, Option, Scores, deletion_insertion_scores, register_experiment, rows_of
from .groundtruth import RESOLVED_SHARE, GroundTruth

#: The metrics a researcher would use, computed from boxes, model and image only -> +1 higher is better, −1 lower.
PROXIES: dict[str, int] = {
    "deletion": -1, "insertion": 1, "ad": -1, "iic": 1, "pointing": 1, "energy_boxes": 1, "mass": 1, "rank": 1,
    # ROAD: most-relevant-first lower is better, least-relevant-first higher (`metrics.road`)
    "road_morf": -1, "road_lerf": 1,
}
#: The ground truth's own references -> direction. `resolving_power` (px, lower is better) comes from the pairs.
TRUTHS: dict[str, int] = {"energy": 1, "auc": 1, "resolving_power": -1}
LABELS = {"deletion": "Deletion", "insertion": "Insertion", "ad": "AD", "iic": "IIC", "pointing": "Pointing",
          "energy_boxes": "Energy in boxes", "mass": "Relevance mass", "rank": "Relevance rank",
          "road_morf": "ROAD MoRF", "road_lerf": "ROAD LeRF", "energy": "energy on evidence",
          "auc": "evidence AUC", "resolving_power": "resolving power"}


def _road(setting, images, maps, targets) -> dict[str, list[float]]:
    """ROAD (`metrics.road`, its default percentages, noise and seed): per image the MoRF and LeRF
    probabilities, each the mean over the removal percentages."""
    found = metrics.road(setting.model, images, maps, targets, batch_size=setting.batch_size)
    return {"road_morf": found.morf.tolist(), "road_lerf": found.lerf.tolist()}


def _item_scores(columns: Mapping[str, Column], metric: str) -> tuple[tuple[str, ...], np.ndarray]:
    column = columns.get(metric)
    if column is None:
        return (), np.zeros(0)
    return column.items, column.values


def kendall(scores: Mapping[str, float], truth: Mapping[str, float], direction: int, truth_direction: int) -> float:
    """Kendall's tau-b between the methods' order by a metric and by a reference, both turned so that higher
    is better; a NaN score ranks last (a resolving power never reached).

    Args:
        scores: method -> its score by the metric.
        truth: method -> its score by the reference.
        direction: +1 when the metric's higher is better, −1 when lower.
        truth_direction: likewise for the reference.

    Returns:
        tau in [−1, 1] (1: the same order); NaN with fewer than two methods or a constant side.
    """
    methods = sorted(set(scores) & set(truth))
    if len(methods) < 2:
        return math.nan
    sides = []
    for values, sign in ((scores, direction), (truth, truth_direction)):
        side = np.array([sign * values[m] for m in methods], dtype=np.float64)
        if np.isnan(side).all():
            return math.nan
        side[np.isnan(side)] = np.nanmin(side) - 1  # missing: below every method that has a score
        if np.all(side == side[0]):
            return math.nan
        sides.append(side)
    from scipy.stats import kendalltau  # here, not at import: every `jittercam` command would pay a second

    return float(kendalltau(*sides).statistic)


def bias_corrected_interval(samples: np.ndarray, point: float, level: float = 0.95) -> tuple[float, float]:
    """The bias-corrected percentile interval of a bootstrap (Efron 1987, "BC"): the percentiles
    Φ(2 z0 ± z_(1+level)/2) of `samples`, z0 = Φ⁻¹(share of the samples below `point`, ties counted half).
    Where the resamples are centred on the estimate (z0 = 0) it is the plain percentile interval; where they
    are shifted — Kendall's tau against resolving power, a threshold over pairs that resampling moves for many
    methods at once — the plain interval can leave out the estimate itself, this one follows the shift.

    Args:
        samples: the bootstrap values (no NaN).
        point: the estimate on the data.
        level: the coverage (default 0.95).

    Returns:
        (low, high); NaN without samples.
    """
    if samples.size == 0:
        return math.nan, math.nan
    share = (np.sum(samples < point) + 0.5 * np.sum(samples == point)) / samples.size
    share = min(max(share, 0.5 / samples.size), 1 - 0.5 / samples.size)  # a finite z0 when every sample is on one side
    normal = NormalDist()
    z0 = normal.inv_cdf(share)
    edge = normal.inv_cdf((1 + level) / 2)
    low, high = (normal.cdf(2 * z0 + sign * edge) for sign in (-1, 1))
    return float(np.quantile(samples, low)), float(np.quantile(samples, high))


def agreement(per_item: Mapping[str, Mapping[str, dict[str, float]]], truth: Callable[[Mapping[str, list[str]]],
              Mapping[str, Mapping[str, float]]], strata: Mapping[str, list[str]], *, boots: int = 1000,
              seed: int = 0, interval: str = "bc") -> dict[tuple[str, str], tuple[float, float, float]]:
    """Kendall's tau of every proxy metric against every reference, with a paired bootstrap interval.

    Args:
        per_item: metric -> method -> item -> value (NaN: missing).
        truth: `truth(items_by_stratum)` -> reference -> method -> score on those items (a resample).
        strata: stratum -> its items (resampled apart: the singles, the pairs).
        boots: bootstrap resamples.
        seed: the resampling's seed.
        interval: "bc" (default: `bias_corrected_interval`, 95 %) or "percentile" (the 2.5 % and 97.5 %
            percentiles of the bootstrap taus).

    Returns:
        (metric, reference) -> (tau, low, high).
    """
    def means(items: Mapping[str, list[str]]) -> dict[str, dict[str, float]]:
        chosen = [item for group in items.values() for item in group]
        result: dict[str, dict[str, float]] = {}
        for metric, methods in per_item.items():
            result[metric] = {}
            for method, values in methods.items():
                found = [values[i] for i in chosen if i in values]
                result[metric][method] = mean(found).value if found else math.nan
        return result

    def taus(items) -> dict[tuple[str, str], float]:
        proxy, reference = means(items), truth(items)
        return {(m, r): kendall(proxy[m], reference[r], PROXIES[m], TRUTHS[r])
                for m in proxy for r in reference}

    point = taus(strata)
    rng = np.random.default_rng(seed)
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in point}
    for _ in range(boots):
        resampled = {name: [group[i] for i in rng.integers(0, len(group), len(group))] if group else []
                     for name, group in strata.items()}
        for key, tau in taus(resampled).items():
            samples[key].append(tau)
    result = {}
    for key, tau in point.items():
        kept = np.array([t for t in samples[key] if not math.isnan(t)])
        if math.isnan(tau):
            result[key] = (tau, math.nan, math.nan)
        elif interval == "percentile":
            low, high = np.percentile(kept, [2.5, 97.5]) if kept.size else (math.nan, math.nan)
            result[key] = (tau, float(low), float(high))
        else:
            result[key] = (tau, *bias_corrected_interval(kept, tau))
    return result


@register_experiment
class MetricAgreement(Experiment):
    """On the ground-truth model (`--model groundtruth`, its own images): per method and item, the proxy
    metrics from the class's boxes, the model and the image: `deletion`, `insertion` (RISE's AUCs), `ad`,
    `iic` (per item 100·max(0, Y − O)/Y and 100·1[Y < O], Y, O as `metrics.faithfulness`), `pointing` (hit
    on the boxes' mask), `energy_boxes`, `mass`, `rank` (on the boxes' mask), ROAD's `road_morf`/`road_lerf`
    (`metrics.road`); and the references on the exact evidence: `energy`
    (`metrics.energy_in_mask`) and `auc` (`metrics.evidence_auc`) on single-patch items, `separation` and
    `resolved` on pairs (the resolving power, as the `groundtruth` experiment). The report ranks the methods
    by every metric and gives Kendall's tau against each reference with a bootstrap interval over items."""

    name = "metric-agreement"
    paper = "beyond every peer: which metric agrees with the ground truth"
    order = 11
    title = "Metric agreement with the ground truth: Kendall's tau of each metric's ranking (beyond every peer)"
    default_methods = tuple(default_names())
    truth_targets = True
    needs = frozenset({"labels", "boxes", "masks", "evidence"})
    default_dataset = GROUND_TRUTH
    default_model = GROUND_TRUTH
    options = (
        Option("boots", 1000, "bootstrap resamples of the agreement's interval (default: 1000)", "N",
               parse.number(int, minimum=10)),
    )
    columns: ClassVar[dict[str, str]] = {
        **{name: LABELS[name] for name in PROXIES}, "energy": "Energy (evidence)", "auc": "AUC (evidence)",
        "resolving_power": "Resolving power (px)"}
    paired = (("separation", "resolved"),)
    sweeps = False

    def config(self) -> dict[str, Any]:
        return {"boots": int(self.settings["boots"]), "proxies": "boxes", "truth": "evidence masks",
                "resolved_share": RESOLVED_SHARE}

    def check_dataset(self, spec: str | None) -> None:
        if spec is not None and not spec.startswith(GROUND_TRUTH):
            raise JitterCamError(f"{self.name} needs the evidence of the ground truth (dataset {GROUND_TRUTH!r}, "
                                 f"the default), not {spec}")

    units = GroundTruth.units  # one unit per image, its ground-truth class

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        scores = deletion_insertion_scores(setting, arm.variant, images, units, maps)
        x = images[rows_of(units, images.device)]
        targets = torch.tensor([u.target for u in units], device=x.device)
        found = metrics.faithfulness(setting.model, x, maps, targets, batch_size=setting.batch_size)
        size = setting.input_size
        boxes = [unit.sample.boxes[unit.target] for unit in units]
        box_masks = metrics.boxes_to_mask(boxes, size).to(maps.device)
        evidence = torch.stack([unit.sample.masks[unit.target] for unit in units]).to(maps.device)
        pointing = metrics.pointing_game(maps, box_masks).hit.float().tolist()
        energy_boxes = metrics.energy_in_mask(maps, box_masks).tolist()
        mass = metrics.relevance_mass(maps, box_masks).tolist()
        rank = metrics.relevance_rank(maps, box_masks).tolist()
        energy = metrics.energy_in_mask(maps, evidence).tolist()
        auc = metrics.evidence_auc(maps, evidence).tolist()
        road = _road(setting, x, maps, targets)
        for index, unit in enumerate(units):
            y, o = float(found.original[index]), float(found.masked[index])
            scores.add(arm.variant, unit, "ad", 100 * max(0.0, y - o) / y if y > 0 else None)
            scores.add(arm.variant, unit, "iic", 100.0 * (y < o))
            for name, values in (("pointing", pointing), ("energy_boxes", energy_boxes), ("mass", mass),
                                 ("rank", rank), *road.items()):
                scores.add(arm.variant, unit, name, values[index])
            if unit.sample.meta.get("kind") == "single":
                scores.add(arm.variant, unit, "energy", energy[index])
                scores.add(arm.variant, unit, "auc", auc[index])
        pairs = [i for i, unit in enumerate(units) if unit.sample.meta.get("kind") == "pair"]
        if pairs:
            chosen = [units[i] for i in pairs]
            centres = torch.tensor([unit.sample.meta["centres"] for unit in chosen], dtype=torch.float64)
            resolved = metrics.two_peaks(maps[pairs], centres, size).resolved.tolist()
            for unit, hit in zip(chosen, resolved, strict=True):
                scores.add(arm.variant, unit, "separation", float(unit.sample.meta["separation"]))
                scores.add(arm.variant, unit, "resolved", float(hit))
        return scores

    @classmethod
    def summarise(cls, columns, config) -> dict[str, Stat]:
        """The mean of every metric over its items; the resolving power of the pairs."""
        from .groundtruth import resolving_power

        result = {name: mean(column.values) for name, column in columns.items()
                  if name not in ("separation", "resolved")}
        if "separation" in columns and "resolved" in columns:
            result["resolving_power"] = resolving_power(columns["separation"].values, columns["resolved"].values)
        return result

    @classmethod
    def extra_report(cls, group, writer) -> None:
        """Kendall's tau of each metric's ranking of the methods against each reference's, with its interval."""
        arms = writer.sorted_keys(getattr(group, "columns", {}))
        if len(arms) < 3:
            writer.section.notes.append(f"{group.label}: metric agreement needs at least 3 methods")
            return
        labels = {key: writer.label(key) for key in arms}
        per_item: dict[str, dict[str, dict[str, float]]] = {}
        for key in arms:
            columns = group.columns[key]
            for metric in [*PROXIES, "energy", "auc"]:
                items, values = _item_scores(columns, metric)
                if len(items):
                    per_item.setdefault(metric, {})[labels[key]] = dict(zip(items, values.tolist(), strict=True))
        pairs_of = {labels[key]: dict(zip(group.columns[key]["separation"].items,
                                          zip(group.columns[key]["separation"].values,
                                              group.columns[key]["resolved"].values, strict=True), strict=True))
                    for key in arms if "separation" in group.columns[key] and "resolved" in group.columns[key]}
        references = {name: per_item.pop(name) for name in ("energy", "auc") if name in per_item}
        singles = sorted({i for methods in references.values() for values in methods.values() for i in values})
        pairs = sorted({i for values in pairs_of.values() for i in values})
        separation = {i: d[0] for values in pairs_of.values() for i, d in values.items() if not math.isnan(d[0])}
        # the pairs resampled within their separation: each keeps its count, so that a resample moves the
        # share resolved at a separation, not how many pairs it has (resolving power is a threshold over them)
        strata: dict[str, list[str]] = {"singles": singles}
        for item in pairs:
            strata.setdefault(f"pairs at {separation.get(item, math.nan):g}", []).append(item)

        def truth(items):
            found: dict[str, dict[str, float]] = {
                name: {m: mean([v[i] for i in items["singles"] if i in v]).value for m, v in methods.items()}
                for name, methods in references.items()}
            chosen_pairs = [i for name, group in items.items() if name.startswith("pairs") for i in group]
            if pairs_of and chosen_pairs:
                power = {}
                for method, by_item in pairs_of.items():
                    drawn = [by_item[i] for i in chosen_pairs if i in by_item]
                    s = [d[0] for d in drawn if not (math.isnan(d[0]) or math.isnan(d[1]))]
                    r = [d[1] > 0.5 for d in drawn if not (math.isnan(d[0]) or math.isnan(d[1]))]
                    power[method] = (metrics.resolving_power(s, r, fraction=RESOLVED_SHARE) if s else math.nan)
                found["resolving_power"] = power
            return found

        boots = int(group.config.get("options", {}).get("boots", 1000)) if isinstance(
            group.config.get("options"), dict) else 1000
        result = agreement(per_item, truth, strata, boots=boots)
        shown_refs = [r for r in TRUTHS if any(key[1] == r for key in result)]
        rows = []
        for metric in PROXIES:
            if not any(key[0] == metric for key in result):
                continue
            cells = []
            for reference in shown_refs:
                tau, low, high = result.get((metric, reference), (math.nan,) * 3)
                text = "—" if math.isnan(tau) else f"{tau:+.2f} [{low:+.2f}, {high:+.2f}]"
                cells.append((text, None))
            rows.append((LABELS[metric], cells))
        notes = [f"{group.label}: Kendall's tau-b between the {len(arms)} methods' ranking by each metric (rows, "
                 "from boxes, model and image) and by the ground truth (columns, from the exact evidence); 1: the same "
                 f"order, 0: unrelated, −1: reversed; [95 % interval], bias-corrected percentiles (BC, Efron 1987) of "
                 f"{boots} paired bootstrap resamples of the items ({len(singles)} single-patch images, "
                 f"{len(pairs)} pairs, resampled within their separation)",
                 "ROAD MoRF / LeRF: `jittercam.metrics.road` with its defaults (10 … 90 % removed)"]
        writer.table(f"{cls.name} on {group.dataset}, {group.label}: agreement with the ground truth", "Metric",
                     [f"τ vs {LABELS[r]}" for r in shown_refs], rows, notes)
