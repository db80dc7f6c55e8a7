"""Beyond the paper (issue 14): maps against evidence known by construction."""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from ... import metrics
from ...errors import JitterCamError
from ...groundtruth.dataset import NAME as GROUND_TRUTH
from ...methods import method_class, method_options
from ..stats import Stat, mean
from . import parse
from .base import Arm, Column, Experiment, Option, Scores, Unit, Variant, register_experiment

RESOLVED_SHARE = 0.75  # 6 of 8 pairs: one unlucky background does not undo a separation


def default_sizes(m: int) -> list[int]:
    """Jitter-CAM / Upscale-CAM sizes for the ground truth: m + 2, m + 4, 1.5 m and 2 m (the default)."""
    return sorted({m + 2, m + 4, m + m // 2, 2 * m})


def _pairs(columns: Mapping[str, Column]) -> tuple[np.ndarray, np.ndarray]:
    """Separation and resolved of the pairs where both are there."""
    s, r = columns["separation"].values, columns["resolved"].values
    keep = ~(np.isnan(s) | np.isnan(r))
    return s[keep], r[keep]


def resolution_curve(separations, resolved) -> dict[float, Stat]:
    """Separation -> the share of its pairs resolved (0-1) and how many pairs; NaN values left out."""
    s, r = _pairs({"separation": Column(np.asarray(separations, float)),
                   "resolved": Column(np.asarray(resolved, float))})
    return {float(value): Stat(float(r[s == value].mean()), int((s == value).sum())) for value in np.unique(s)}


def reach(curve: Mapping[float, Stat], fraction: float = RESOLVED_SHARE) -> tuple[float, list[float]]:
    """Where a resolution curve (separation -> share resolved) resolves when its widest separations fail:
    the resolving power over the separations up to the widest one with at least `fraction` resolved, and
    the wider ones (all failed). The power itself is NaN as soon as that list is not empty; both NaN and
    every separation when none reaches `fraction`.

    Returns:
        (power up to the failures, the failed separations above it, ascending).
    """
    ordered = sorted(curve)
    ok = [curve[s].value >= fraction for s in ordered]
    if not any(ok):
        return math.nan, ordered
    top = max(i for i, good in enumerate(ok) if good)
    low = top
    while low > 0 and ok[low - 1]:
        low -= 1
    return ordered[low], ordered[top + 1:]


def _px(values) -> str:
    """`50 px`, `46, 48 and 50 px`."""
    text = [format(round(v, 1), "g") for v in values]
    return (text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]) + " px"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _planned(group) -> tuple[int, list[float], int] | None:
    """(singles, separations, replicates) the group's runs asked for (their largest), None if unrecorded."""
    configs = [run.config.get("dataset_config") for run in group.runs]
    configs = [c for c in configs if isinstance(c, dict) and "separations" in c]
    if not configs:
        return None
    return (max(int(c.get("singles", 0)) for c in configs),
            sorted({float(s) for c in configs for s in c["separations"]}),
            max(int(c.get("replicates", 0)) for c in configs))


def resolving_power(separations, resolved, fraction: float = RESOLVED_SHARE) -> Stat:
    """`metrics.resolving_power` of the pairs (NaN values left out), with the number of pairs."""
    s, r = _pairs({"separation": Column(np.asarray(separations, float)),
                   "resolved": Column(np.asarray(resolved, float))})
    if not len(s):
        return Stat(math.nan, 0)
    return Stat(metrics.resolving_power(s.tolist(), (r > 0.5).tolist(), fraction=fraction), len(s))


@register_experiment
class GroundTruth(Experiment):
    """On the ground-truth model (`jittercam.groundtruth`: a small CNN trained here on patterns whose pixels
    are exactly known) and its held-out images (`jittercam.groundtruth.benchmark`), for the true class.

    Single-patch images (`single-*`): `energy`, the share of the map's mass (negatives clipped) on the
    evidence mask (`metrics.energy_in_mask`), and `auc`, the ROC AUC of the map's values as a detector of
    the evidence pixels (`metrics.evidence_auc`). Two-patch images (`pair-s<separation>-r<replicate>`):
    `separation` (centre distance, px), `resolved` (0/1: `metrics.two_peaks`, two peaks of at least
    `floor` of the map's range with a dip of at least `dip` between them along the line through the
    centres) and `depth`. Every item: `seconds` (the arm's batch time divided by its explanations) and
    `passes` (`method.passes()`). The report turns each arm's (separation, resolved) pairs into the
    resolving power (`metrics.resolving_power`, `RESOLVED_SHARE` of the pairs resolved at a separation and
    at every larger one) and the resolved share per separation.

    The pairs lie on a horizontal line unless `angle` says otherwise (the dataset is then named
    `groundtruth-<angle>deg`, a group of its own in the report).

    Arms: every method asked for; a method with a map size (jittercam, upscale) once per size of `sizes`
    (default m + 2, m + 4, 1.5 m, 2 m: the cost curve), variant `size=<n>`; LayerCAM also fused over the
    model's fusion layers (variant `fused`; `fused` names other layers, 'none' leaves it out)."""

    name = GROUND_TRUTH
    paper = "beyond the paper: evidence known by construction"
    order = 9
    title = "Ground truth: evidence energy, detection AUC and resolving power (beyond the paper)"
    default_methods = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam", "rise",
                       "cameras", "upscale", "jittercam")
    truth_targets = True
    needs = frozenset({"labels", "masks", "evidence"})
    default_dataset = GROUND_TRUTH  # its own synthetic images and the model trained on them
    default_model = GROUND_TRUTH
    options = (
        Option("sizes", None, "Jitter-CAM and Upscale-CAM sizes (default: m+2, m+4, 1.5m, 2m)", "N,N|A-B",
               parse.numbers(int, 1)),
        Option("fused", None, "the layers LayerCAM fuses (default: the model's stage outputs)", "A,B|none",
               parse.names()),
        Option("singles", None, "single-patch images (default: 64)", "N", parse.number(int, minimum=0), dataset=True),
        Option("separations", None, "centre separations of the pairs in pixels (default: touching to 4 sides, "
               "step 2: 16-64:2 at 128 px)", "N,N|A-B[:STEP]", parse.numbers(int, 1), dataset=True),
        Option("replicates", None, "pairs per separation (default: 8)", "N", parse.number(int, minimum=0),
               dataset=True),
        Option("angle", None, "the direction of the line through a pair's centres (default: 0, horizontal)",
               "DEGREES", parse.number(float), dataset=True),
        Option("dip", 0.2, "the dip two peaks need between them to count as resolved (default: 0.2)", "FRACTION",
               parse.number(float, 0, 1)),
        Option("floor", 0.5, "the height both peaks must reach, of the map's range (default: 0.5)", "FRACTION",
               parse.number(float, 0, 1)),
    )
    columns: ClassVar[dict[str, str]] = {
        "energy": "Energy", "auc": "AUC", "resolving_power": "Resolving power (px)", "passes": "Passes",
        "seconds": "Seconds"}
    paired = (("separation", "resolved"),)
    sweeps = False  # every arm in the main table: its sizes are points of the cost curve, not a sweep

    def config(self) -> dict[str, Any]:
        return {"dip": float(self.settings["dip"]), "floor": float(self.settings["floor"]),
                "energy": "negatives clipped", "auc": "Mann-Whitney, ties halved"}

    def check_dataset(self, spec: str | None) -> None:
        if spec not in (None, self.default_dataset):
            raise JitterCamError(f"{self.name} runs on its own synthetic images (dataset {self.default_dataset!r}, "
                                 f"the default), not {spec}")

    def showcase(self, keys, count):
        """Pairs of the first replicate at `count` separations, evenly spread from the closest to the widest."""
        first = sorted(key for key in keys if key.startswith("pair-") and key.endswith("-r00"))  # by separation
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
                arms += [Arm(name, build(name, size=int(n)), variant=Variant("size", float(n)),
                             gallery=n == max(sizes)) for n in sizes]
                continue
            arms.append(Arm(name, explainer))
            if "fusion" in inspect.signature(method_class(name)).parameters:  # it fuses several layers
                layers = self.settings["fused"]
                if layers is None:
                    layers = setting.fusion_layers
                if layers:
                    arms.append(Arm(name, build(name, target_layer=list(layers)), variant=Variant("fused")))
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
            scores.add(arm.variant, unit, "seconds", spent)
            scores.add(arm.variant, unit, "passes", passes)
        singles = [i for i, unit in enumerate(units) if unit.sample.meta.get("kind") == "single"]
        if singles:
            chosen = [units[i] for i in singles]
            masks = torch.stack([unit.sample.masks[unit.target] for unit in chosen]).to(maps.device)
            energy = metrics.energy_in_mask(maps[singles], masks).tolist()
            auc = metrics.evidence_auc(maps[singles], masks).tolist()
            for unit, e, a in zip(chosen, energy, auc, strict=True):
                scores.add(arm.variant, unit, "energy", e)
                scores.add(arm.variant, unit, "auc", a)
        pairs = [i for i, unit in enumerate(units) if unit.sample.meta.get("kind") == "pair"]
        if pairs:
            chosen = [units[i] for i in pairs]
            centres = torch.tensor([unit.sample.meta["centres"] for unit in chosen], dtype=torch.float64)
            found = metrics.two_peaks(maps[pairs], centres, setting.input_size, dip=float(self.settings["dip"]),
                                      floor=float(self.settings["floor"]))
            for unit, resolved, depth in zip(chosen, found.resolved.tolist(), found.depth.tolist(), strict=True):
                scores.add(arm.variant, unit, "separation", float(unit.sample.meta["separation"]))
                scores.add(arm.variant, unit, "resolved", float(resolved))
                scores.add(arm.variant, unit, "depth", depth)
        return scores

    @classmethod
    def summarise(cls, columns, config) -> dict[str, Stat]:
        """Means of energy, AUC, seconds and passes; the resolving power of the (separation, resolved) pairs
        (the depth's mean over the sweep says little: the curve and the power say it)."""
        result = {name: mean(column.values) for name, column in columns.items()
                  if name not in ("separation", "resolved", "depth")}
        if "separation" in columns and "resolved" in columns:
            result["resolving_power"] = resolving_power(columns["separation"].values, columns["resolved"].values)
        return result

    @classmethod
    def series(cls, columns) -> dict[float, Stat] | None:
        if "separation" not in columns or "resolved" not in columns:
            return None
        return resolution_curve(columns["separation"].values, columns["resolved"].values)

    @classmethod
    def notes(cls, label, stats, items, config) -> list[str]:
        """Why a resolving power is "—": the widest separation failed (the table by separation shows more)."""
        missing = [arm for arm, values in stats.items()
                   if (power := values.get("resolving_power")) is not None and power.n and math.isnan(power.value)]
        if not missing:
            return []
        return [f"{label}: resolving power — ({', '.join(missing)}): fewer than {RESOLVED_SHARE:.0%} of the pairs "
                "at the widest separation were resolved, so no separation is resolved at it and at every larger "
                "one; the table of pairs resolved by separation below says where each resolves"]

    @classmethod
    def extra_report(cls, group, writer) -> None:
        """The resolution curve (share of pairs resolved per separation) as a table and a figure, and the
        resolving power against the passes per explanation; a note when the run is partial."""
        keys = writer.sorted_keys(group.series)
        partial = cls._partial_note(group, keys)
        if not keys:
            writer.section.notes.append(partial or f"{group.label}: no pairs computed: no resolving power")
            return
        separations = sorted({s for key in keys for s in group.series[key]})
        rows = []
        for key in keys:
            curve = group.series[key]
            rows.append((writer.label(key), [(f"{100 * curve[s].value:.0f}" if s in curve else "—", None)
                                             for s in separations]))
        pairs = {group.series[k][s].n for k in keys for s in group.series[k]}
        each = f"{_count(pairs.pop(), 'pair')} per separation" if len(pairs) == 1 else "pairs per separation vary"
        notes = [f"{group.label}: % of the pairs resolved at each centre separation (px); {each}",
                 f"resolving power: the smallest separation from which on at least {RESOLVED_SHARE:.0%} of the "
                 "pairs are resolved at it and at every larger separation (`jittercam.metrics.resolving_power`)"]
        reached: dict[tuple[str, str], float] = {}  # arms whose power is "—" but that resolve below the failures
        reasons: dict[str, list[str]] = {}  # why the power is "—" -> the arms it is so for
        for key in keys:
            curve = group.series[key]
            power, failed = reach(curve)
            if not failed:
                continue
            if math.isnan(power):
                why = (f"resolved at least {RESOLVED_SHARE:.0%} of the pairs at no separation (absent from the "
                       "cost plot)")
            else:
                reached[key] = power
                share = f"{RESOLVED_SHARE:.0%}"
                broke = (f"{100 * curve[failed[0]].value:.0f}% of the pairs at {_px(failed)}, the widest separation "
                         f"({share} needed)" if len(failed) == 1
                         else f"under {share} of the pairs at {_px(failed)}, the widest separations")
                top = max(s for s in curve if s < failed[0])
                why = (f"resolved {broke}; below, at least {share} at every separation from "
                       f"{format(round(power, 1), 'g')} to {_px([top])} (plotted at {_px([power])} in the cost plot, "
                       "marked †)")
            reasons.setdefault(why, []).append(writer.label(key))
        notes += [f"resolving power — for {', '.join(arms)}: {why}" for why, arms in reasons.items()]
        if partial:
            notes.append(partial)
        writer.table(f"{cls.name} on {group.dataset}, {group.label}: pairs resolved (%) by separation", "Method",
                     [format(round(s, 1), "g") for s in separations], rows, notes)
        lines = {}
        for key in keys:
            curve = group.series[key]
            lines[writer.label(key)] = (sorted(curve), [100 * curve[s].value for s in sorted(curve)])
        writer.sweep_figure("resolution", f"Pairs resolved against their separation: {group.label} on "
                            f"{group.dataset}", "centre separation (px)", {"pairs resolved (%)": lines},
                            f"Pairs resolved (%) by separation: {group.label}")
        methods: dict[str, list[tuple[float, float, str, bool]]] = {}
        never = []
        for method, variant in keys:
            stats = group.stats.get((method, variant), {})
            if "passes" not in stats or "resolving_power" not in stats:
                continue
            sized = Variant.of(variant).number is not None
            label = f"{method} [{variant}]" if variant and not sized else method
            power = stats["resolving_power"].value
            flagged = math.isnan(power) and (method, variant) in reached
            if math.isnan(power) and not flagged:
                never.append(writer.label((method, variant)))
                continue
            methods.setdefault(label, []).append((stats["passes"].value, reached.get((method, variant), power),
                                                  variant.split("=")[-1] if sized else "", flagged))
        caption = (f"Resolving power against passes: {group.label} (labels: Jitter-CAM / Upscale-CAM sizes; † not "
                   "resolved at the widest separations, plotted where it resolves below them")
        caption += f"; never resolved, absent: {', '.join(never)})" if never else ")"
        writer.cost_figure("cost", f"Resolving power against cost: {group.label} on {group.dataset}",
                           "passes per explanation (log)", "resolving power (px, lower is better)", methods, caption)

    @classmethod
    def _partial_note(cls, group, keys) -> str | None:
        """A note when fewer items were computed than the runs asked for (a run with a limit, or stopped)."""
        planned = _planned(group)
        if planned is None:
            return None
        singles, separations, replicates = planned
        done_singles = max((stats[m].n for stats in group.stats.values() for m in ("auc", "energy") if m in stats),
                           default=0)
        tested = {s for key in keys for s in group.series[key]}
        per = [stat.n for key in keys for stat in group.series[key].values()]
        complete = (done_singles >= singles and len(tested) >= len(separations)
                    and (not per or min(per) >= replicates))
        if complete:
            return None
        if not keys:
            pairs = f"no pairs yet of {replicates} at each of {len(separations)} separations: no resolving power"
        else:
            most = max(per)
            pairs = (f"pairs at {len(tested)} of {len(separations)} separations, "
                     + (f"{most}" if min(per) == most else f"{min(per)}-{most}") + f" of {replicates} pairs at each")
        return (f"{group.label}: a partial run: {done_singles} of {singles} single-patch images, {pairs}; the numbers "
                "above come from these only (the same command without its limit completes the run in the same "
                "store)")
