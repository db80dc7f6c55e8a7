"""Beyond the paper (issue 24): the model-randomisation sanity check (Adebayo et al., NeurIPS 2018) and
efficient MPRT (Hedström et al. 2024), by `jittercam.metrics.mprt` / `efficient_mprt` (= Quantus 0.6's)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ... import metrics
from ..stats import Stat, mean
from . import parse
from .base import Column, Experiment, Option, Scores, register_experiment, rows_of, targets_of

THRESHOLD = 0.5  # a method passes when its Spearman, averaged over the randomisation steps, is below this
SSIM_KEY = 10_000.0  # `series` keys: step k of the Spearman curve is k, of the SSIM curve SSIM_KEY + k
MEASURES = {"spearman": "Spearman |maps|", "ssim": "SSIM"}


@register_experiment
class Sanity(Experiment):
    """The model-randomisation sanity check: for each image (its top-1 class), the method's map on the model
    and on copies whose parameters are re-initialised layer after layer (cascading from the output by
    default, Adebayo et al.'s order; the user's model is never touched), compared with the original map at
    the input's size: Spearman's rho of the absolute, max-normalised maps, and SSIM
    (`jittercam.metrics.mprt`). The method is the run's own, copied onto each randomised model
    (`metrics.rebind`). Rows per image: `spearman` and `ssim` (the value after the last step; the curve over
    the steps, step 0 the original model), `average` (Spearman averaged over the steps 1..L) and `emprt`
    (efficient MPRT: the relative rise of the map's entropy, at the input's size, once every layer is
    randomised, `metrics.efficient_mprt`); with `smooth` > 0 also `smprt` (smooth MPRT's Spearman after the
    last step, over `smooth` noisy inputs per map).

    Granularity (`layers`): "blocks" (default) randomises the model's blocks, the modules just below its
    containers (EfficientNet-Lite0: stem, its BatchNorm, the 16 MBConv blocks, head, BatchNorm, classifier:
    21 steps; ResNet: conv1, bn1, the 8 basic blocks, fc); "modules" every module with parameters, as
    Quantus (99 steps for Lite0). `steps` stops after the first N steps (a quick run; eMPRT still
    randomises everything).

    Verdict: a method passes when its Spearman, averaged over the randomisation steps (Quantus's
    `return_average_correlation`, without the original model's 1), is below 0.5 (`THRESHOLD`), row `average`:
    its map loses most of its ranking as the weights go, from the first steps on. A map that does not depend on
    the weights (the baselines) or on the top layers (Guided Backprop, Adebayo et al. Fig. 2: it stays near 1
    until the early blocks are randomised) stays high and fails. The last step alone does not tell them apart:
    once the stem is randomised every map changes, and a Grad-CAM of a random network is a smooth blob that
    can correlate with the original again."""

    name = "sanity"
    paper = "beyond the paper (Adebayo et al. 2018; Hedström et al. 2024)"
    order = 20
    title = "Sanity check: model parameter randomisation (Adebayo et al. 2018; MPRT, eMPRT)"
    default_methods = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam",
                       "rise", "cameras", "guidedbackprop", "guided", "jittercam", "upscale", "centre", "random",
                       "constant")
    default_dataset = "offline"
    options = (
        Option("order", "top_down", "cascading from the output (top_down, default), from the input (bottom_up), "
               "or one layer at a time (independent)", "ORDER", choices=metrics.randomisation.ORDERS),
        Option("layers", "blocks", "randomise blocks (default) or every module with parameters (modules, as "
               "Quantus)", "GRANULARITY", choices=metrics.randomisation.GRANULARITIES),
        Option("steps", None, "stop after the first N randomisation steps (default: all)", "N",
               parse.number(int, minimum=1)),
        Option("randomisation_seed", 42, "seed of the re-initialisation (default: 42, Quantus's)", "N",
               parse.number(int)),
        Option("smooth", 0, "smooth MPRT's noisy inputs per map; 0 (default): no smooth MPRT", "N",
               parse.number(int, minimum=0)),
    )
    columns: ClassVar[dict[str, str]] = {"average": "Spearman (mean over steps)", "spearman": "Spearman (last)",
                                         "ssim": "SSIM (last)", "emprt": "eMPRT", "smprt": "sMPRT (last)",
                                         "passes": "Verdict (1: passes, 0: fails)"}

    def arms(self, names, build, setting):
        arms = super().arms(names, build, setting)
        # the layers each step randomises enter the configuration: the report labels the curve's steps
        layers = metrics.randomisable_layers(setting.model, self.settings["layers"])
        layers = layers[::-1] if self.settings["order"] == "top_down" else layers
        self.settings["randomised"] = layers[: self.settings["steps"]] if self.settings["steps"] else layers
        return arms

    def explanations_per_unit(self) -> int:
        """The map on each randomised copy after the original, one on the fully randomised model (eMPRT), and
        smooth MPRT's noisy inputs for the original and each copy."""
        steps = len(self.settings["randomised"])
        return 1 + steps + 1 + self.settings["smooth"] * (1 + steps)

    def score(self, setting, arm, images, units, maps, seconds, state) -> Scores:
        x = images[rows_of(units, images.device)]
        target = targets_of(units, x.device)
        explainer = metrics.rebind(arm.explainer, setting.model)
        common = {"seed": self.settings["randomisation_seed"], "layers": self.settings["layers"]}
        scores = Scores()
        result = metrics.mprt(setting.model, x, target, explainer, order=self.settings["order"],
                              steps=self.settings["steps"], original=maps, **common)
        efficient = metrics.efficient_mprt(setting.model, x, target, explainer, original=maps, **common)
        curves = {m: result.similarity[m].float().cpu() for m in MEASURES}
        if self.settings["smooth"]:
            smooth = metrics.smooth_mprt(setting.model, x, target, explainer, samples=self.settings["smooth"],
                                         order=self.settings["order"], steps=self.settings["steps"], **common)
            curves["smprt"] = smooth.similarity["spearman"].float().cpu()
        for index, unit in enumerate(units):
            for metric, curve in curves.items():
                scores.add(arm.variant, unit, metric, _value(curve[index, -1]), curve[index])
            scores.add(arm.variant, unit, "average", _value(curves["spearman"][index, 1:].nanmean()))
            scores.add(arm.variant, unit, "emprt", _value(efficient.score[index]))
        return scores

    @classmethod
    def summarise(cls, columns: Mapping[str, Column], config: Mapping[str, Any]) -> dict[str, Stat]:
        """The means, and `passes`: 1 when the Spearman averaged over the steps is below `THRESHOLD`."""
        result = {name: mean(column.values) for name, column in columns.items()}
        if "average" in result:
            average = result["average"]
            result["passes"] = Stat(math.nan if math.isnan(average.value) else float(average.value < THRESHOLD),
                                    average.n)
        return result

    @classmethod
    def series(cls, columns: Mapping[str, Column]) -> dict[float, Stat] | None:
        """The mean curves: step k of Spearman at k, of SSIM at `SSIM_KEY` + k (NaN items left out)."""
        curves: dict[float, Stat] = {}
        for offset, metric in ((0.0, "spearman"), (SSIM_KEY, "ssim")):
            column = columns.get(metric)
            if column is None or column.curves is None:
                continue
            for step in range(column.curves.shape[1]):
                curves[offset + step] = mean(column.curves[:, step])
        return curves or None

    @classmethod
    def notes(cls, label, stats, items, config) -> list[str]:
        """The verdict per method, in one line each."""
        lines = []
        for arm, values in stats.items():
            if "average" not in values:
                continue
            average, passed = values["average"], values.get("passes")
            if passed is None or math.isnan(passed.value):
                lines.append(f"{label}: {arm}: no verdict (its maps have no ranking: a constant map)")
                continue
            verdict = "passes" if passed.value else "FAILS"
            last = values.get("spearman")
            after = f"; {last.value:.2f} after the last" if last is not None and not math.isnan(last.value) else ""
            lines.append(f"{label}: {arm} {verdict}: Spearman {average.value:.2f} on average over the randomisation "
                         f"steps ({'<' if passed.value else '≥'} {THRESHOLD}){after}; n = {average.n}")
        return lines

    @classmethod
    def extra_report(cls, group, writer) -> None:
        """The similarity curves (Spearman and SSIM against the steps) and the layers of each step."""
        keys = writer.sorted_keys(group.series)
        if not keys:
            return
        layers = list(group.config.get("options", {}).get("randomised") or [])
        order = group.config.get("options", {}).get("order", "top_down")
        panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
        for offset, metric in ((0.0, "spearman"), (SSIM_KEY, "ssim")):
            lines = {}
            for key in keys:
                curve = sorted((k - offset, s.value) for k, s in group.series[key].items()
                               if offset <= k < offset + SSIM_KEY and not math.isnan(s.value))
                if curve:
                    lines[writer.label(key)] = ([k for k, _ in curve], [v for _, v in curve])
            if lines:
                panels[MEASURES[metric]] = lines
        direction = {"top_down": "from the output", "bottom_up": "from the input"}.get(order, "one at a time")
        unit = {"blocks": "blocks", "modules": "modules"}.get(group.config.get("options", {}).get("layers"), "layers")
        xlabel = f"{unit} randomised, {direction}"
        spearman = panels.get(MEASURES["spearman"])
        if spearman:  # a panel per method, its verdict in the title: 30 coloured lines in one panel do not read
            verdicts = {writer.label(key): _verdict(group.stats.get(key, {})) for key in keys}
            writer.verdict_figure("curves", f"Sanity check: Spearman |maps| to the original map, {group.label} "
                                  f"on {group.dataset}", xlabel, spearman, verdicts, THRESHOLD,
                                  f"Spearman of each randomised map to the original ({order}; step 0: the "
                                  f"original model), mean over items, each method over the others in grey: a map "
                                  f"that depends on the weights falls (pass: below {THRESHOLD}, dashed, on average "
                                  f"over the steps)")
        ssim = panels.get(MEASURES["ssim"])
        if ssim:
            writer.sweep_figure("ssim", f"Sanity check: SSIM to the original map, {group.label} on "
                                f"{group.dataset}", xlabel, {MEASURES["ssim"]: ssim},
                                f"SSIM of each randomised map to the original ({order}; step 0: the original "
                                f"model), mean over items")
        steps = max((int(k) for key in keys for k in group.series[key] if k < SSIM_KEY), default=0)
        rows = []
        for step in range(steps + 1):
            name = "original" if step == 0 else (layers[step - 1] if step - 1 < len(layers) else "?")
            cells = []
            for key in keys:
                stat = group.series[key].get(float(step))
                cells.append((f"{stat.value:.2f}" if stat is not None and not math.isnan(stat.value) else "—", None))
            rows.append((f"{step} {name}", cells))
        writer.table(f"sanity on {group.dataset}, {group.label}: mean Spearman per step", "step (layer)",
                     [writer.label(key) for key in keys], rows,
                     [f"{group.label}: Spearman's rho of the absolute, max-normalised maps at the input's size, "
                      f"mean over items; order {order}"])


def _verdict(stats: Mapping[str, Stat]) -> tuple[bool | None, float]:
    """(passed, Spearman averaged over the steps); passed None where there is no verdict."""
    average, passed = stats.get("average"), stats.get("passes")
    if average is None or passed is None or math.isnan(passed.value):
        return None, math.nan
    return bool(passed.value), float(average.value)


def _value(value: Any) -> float | None:
    number = float(value)
    return None if not np.isfinite(number) else number
