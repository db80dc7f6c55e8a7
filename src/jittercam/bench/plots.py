"""The report's figures as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot state).

- `sweep_figure`: one panel per metric against a swept value (Fig. 2: deletion, insertion and
  deletion + (1 − insertion) against the Jitter-CAM size; Fig. 5: AD and IIC against the expansion factor),
  a line per method, and optionally a dashed red reference line per panel (Fig. 5's plain Grad-CAM).
- `curves_figure`: mean deletion and insertion curves against the fraction of pixels changed.
- `cost_figure` (`cost_plot` as PNG): a value against the cost in passes (log scale), e.g. the ground
  truth's resolving power, with flagged points marked (a power that holds only below failed separations).
"""
from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]  # line label -> (x, y)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
CROWDED = 8  # lines in a panel above which its legend would cover the data
LEGEND_ROWS = 40  # methods a shared legend lists in one column; more take two
_DASHES: tuple[Literal["-", "--", ":"], ...] = ("-", "--", ":")  # after tab20's twenty colours, the next dash


def _new_figure(**options) -> Figure:
    # matplotlib's figure machinery imported here, not with the module: every `jittercam` command imports the
    # report (for its command line), few draw
    from matplotlib.figure import Figure

    return Figure(**options)


def _png(figure: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _title_lines(title: str, width: float) -> list[str]:
    """`title` wrapped to a figure `width` inches wide (about 10 characters an inch), so that a narrow figure
    crops none of it."""
    return textwrap.wrap(title, int(width * 10))


def sweep_figure(title: str, xlabel: str, panels: Mapping[str, Series],
                 references: Mapping[str, tuple[str, float]] | None = None) -> bytes:
    """A row of panels, one per metric (`panels`: panel title -> lines); `references`: panel title ->
    (label, value) drawn as a dashed red horizontal line."""
    crowded = len(panels) == 1 and max((len(lines) for lines in panels.values()), default=0) > 8
    width = 10.0 if crowded else 4.6 * len(panels)
    heading = _title_lines(title, width)
    extra = 0.25 * (len(heading) - 1)  # inches for the title's further lines
    if crowded:  # one panel of many lines: the legend goes to the right of the axes, not over the data
        figure = _new_figure(figsize=(width, 5.0 + extra))
        figure.subplots_adjust(left=0.07, right=0.72, bottom=0.6 / (5.0 + extra), top=1 - (0.7 + extra) / (5.0 + extra))
    else:
        figure = _new_figure(figsize=(width, 3.8 + extra))
        figure.subplots_adjust(left=0.25 / len(panels), right=1 - 0.08 / len(panels), bottom=0.53 / (3.8 + extra),
                               top=1 - (0.61 + extra) / (3.8 + extra), wspace=0.3)
    figure.suptitle("\n".join(heading))
    for index, (name, lines) in enumerate(panels.items()):
        axes = figure.add_subplot(1, len(panels), index + 1)
        colours = _colours(len(lines))
        for number, (label, (x, y)) in enumerate(lines.items()):
            axes.plot(x, y, marker=_MARKERS[number % len(_MARKERS)] if crowded else "o", markersize=3,
                      color=colours[number], label=label)
        if references and name in references:
            label, value = references[name]
            axes.axhline(value, color="red", linestyle="--", linewidth=1.2, label=label)
        axes.set_title(name)
        axes.set_xlabel(xlabel)
        axes.grid(alpha=0.3)
        if crowded:
            axes.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
        else:
            axes.legend(fontsize="x-small")
    return _png(figure)


def _colours(count: int) -> list:
    """Matplotlib's default cycle, or tab20's twenty colours when there are more than ten lines."""
    from matplotlib import colormaps

    if count <= 10:
        return [f"C{i}" for i in range(count)]
    return [colormaps["tab20"](i % 20) for i in range(count)]


def curves_figure(title: str, curves: Mapping[str, Mapping[str, np.ndarray]],
                  aucs: Mapping[str, Mapping[str, float]]) -> bytes:
    """Panels `deletion` and `insertion` (`curves`: kind -> line label -> mean curve), each line labelled
    with the AUC of its mean curve. Over `CROWDED` lines the panels share one legend to their right (both
    AUCs in it), lines told apart by colour and dash, so that no legend covers the curves."""
    kinds = [kind for kind in ("deletion", "insertion") if kind in curves]
    labels = list(dict.fromkeys(label for kind in kinds for label in curves[kind]))
    crowded = len(labels) > CROWDED
    columns = 1 if len(labels) <= LEGEND_ROWS else 2
    rows = -(-len(labels) // columns)
    panels_width = 5.2 * len(kinds)
    width = panels_width + (2.3 * columns if crowded else 0.0)
    height = max(4.0, 0.17 * rows + 1.1) if crowded else 4.0
    figure = _new_figure(figsize=(width, height))
    figure.subplots_adjust(left=0.2 * 5.2 / width, right=(panels_width - 0.3) / width, bottom=0.55 / height,
                           top=1 - 0.6 / height, wspace=0.25)
    figure.suptitle("\n".join(_title_lines(title, width)))
    colours = _colours(len(labels))
    styles = {label: (colours[i], _DASHES[(i // 20) % len(_DASHES)]) for i, label in enumerate(labels)}
    for index, kind in enumerate(kinds):
        axes = figure.add_subplot(1, len(kinds), index + 1)
        for label, curve in curves[kind].items():
            x = np.linspace(0.0, 1.0, len(curve))
            colour, dash = styles[label]
            axes.plot(x, curve, color=colour, linestyle=dash, label=f"{label} ({aucs[kind][label]:.3f})")
        axes.set_title(f"mean {kind} curve (AUC)")
        axes.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "inserted"))
        axes.set_ylabel("score of the class")
        axes.set_xlim(0, 1)
        axes.grid(alpha=0.3)
        if not crowded:
            axes.legend(fontsize="x-small")
    if crowded:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=styles[label][0], linestyle=styles[label][1]) for label in labels]
        names = [f"{label} ({' / '.join(f'{aucs[kind][label]:.3f}' for kind in kinds if label in aucs[kind])})"
                 for label in labels]
        figure.legend(handles, names, loc="upper left", bbox_to_anchor=(panels_width / width, 1 - 0.6 / height),
                      fontsize="x-small", ncol=columns, title=f"AUC: {' / '.join(kinds)}",
                      title_fontsize="x-small", frameon=False)
    return _png(figure)


CostPoints = Mapping[str, Sequence[tuple[float, float, str] | tuple[float, float, str, bool]]]


def cost_figure(title: str, xlabel: str, ylabel: str, methods: CostPoints) -> bytes:
    """`cost_plot` as PNG bytes."""
    return _png(cost_plot(title, xlabel, ylabel, methods))


def cost_plot(title: str, xlabel: str, ylabel: str, methods: CostPoints) -> Figure:
    """One marker per arm at (cost, value) on a logarithmic cost axis; the arms of one method (its sizes)
    joined by a line and each marker labelled (`methods`: method -> [(x, y, point label[, flagged])]).

    A flagged point (e.g. a resolving power that holds only below the widest separations) is drawn with a
    black ring, its label ends in "†", and a line under the axes says what the mark means."""
    figure = _new_figure(figsize=(10.0, 5.5))
    figure.subplots_adjust(left=0.08, right=0.76, bottom=0.11, top=0.9)
    figure.suptitle(title)
    axes = figure.add_subplot(1, 1, 1)
    colours = _colours(len(methods))
    any_flagged = False
    for index, (method, given) in enumerate(methods.items()):
        points = sorted((float(p[0]), float(p[1]), str(p[2]), bool(p[3]) if len(p) > 3 else False) for p in given
                        if np.isfinite(p[0]) and np.isfinite(p[1]))
        if not points:
            continue
        x, y = [p[0] for p in points], [p[1] for p in points]
        flagged = any(p[3] for p in points)
        any_flagged |= flagged
        # hollow markers of different shapes: arms with equal numbers stay visible on top of each other
        axes.plot(x, y, marker=_MARKERS[index % len(_MARKERS)], markersize=8, markerfacecolor="none",
                  markeredgewidth=1.5, color=colours[index], linestyle="-" if len(points) > 1 else "none",
                  label=method + (" †" if flagged else ""))
        marked = [p for p in points if p[3]]
        if marked:
            axes.plot([p[0] for p in marked], [p[1] for p in marked], marker="o", markersize=15, linestyle="none",
                      markerfacecolor="none", markeredgecolor="black", markeredgewidth=1.0)
        labels: dict[tuple[float, float], list[str]] = {}
        for px, py, text, mark in points:
            text = f"{text}†" if mark else text
            if text:
                labels.setdefault((px, py), []).append(text)
        for (px, py), texts in labels.items():  # coincident points share one label: "18, 20"
            axes.annotate(", ".join(texts), (px, py), textcoords="offset points", xytext=(5, 4), fontsize="small",
                          color=colours[index])
    axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if any_flagged:
        figure.text(0.78, 0.11, "† ringed: not resolved at every\nlarger separation (— in the table);\n"
                    "plotted where it resolves below\nthe separations that failed", fontsize="small",
                    va="bottom")
    return figure


def verdict_figure(title: str, xlabel: str, lines: Series, verdicts: Mapping[str, tuple[bool | None, float]],
                   threshold: float, columns: int = 6) -> bytes:
    """Small multiples: one panel per line (a method's curve) drawn over the other lines in light grey,
    with a dashed line at `threshold` and the verdict in the panel's title (`verdicts`: label -> (passed,
    value), None: no verdict), green for a pass and red for a failure. One figure reads 30 methods where one
    panel of 30 coloured lines does not."""
    labels = list(lines)
    columns = max(1, min(columns, len(labels)))
    rows = max(1, -(-len(labels) // columns))
    width = 2.3 * max(columns, 2)
    heading = _title_lines(title, width)
    figure = _new_figure(figsize=(width, 1.9 * rows + 0.65 + 0.25 * len(heading)), layout="constrained")
    figure.suptitle("\n".join(heading))
    low = min([min(y, default=0.0) for _, y in lines.values()] + [0.0])
    for index, label in enumerate(labels):
        axes = figure.add_subplot(rows, columns, index + 1)
        for other, (x, y) in lines.items():
            if other != label:
                axes.plot(x, y, color="0.85", linewidth=0.8)
        passed, value = verdicts.get(label, (None, float("nan")))
        colour = "0.3" if passed is None else ("tab:green" if passed else "tab:red")
        x, y = lines[label]
        axes.plot(x, y, color=colour, linewidth=1.8, marker="o", markersize=2)
        axes.axhline(threshold, color="0.4", linestyle="--", linewidth=0.8)
        verdict = "no verdict" if passed is None else f"{'passes' if passed else 'fails'} {value:.2f}"
        axes.set_title(f"{label}: {verdict}", fontsize="small", color=colour)
        axes.set_ylim(low - 0.05, 1.05)
        axes.tick_params(labelsize="x-small")
        axes.grid(alpha=0.3)
        if index % columns:
            axes.set_yticklabels([])
        if index >= len(labels) - columns:
            axes.set_xlabel(xlabel, fontsize="x-small")
    return _png(figure)
