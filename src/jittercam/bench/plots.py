"""The report's figures as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot state).

- `sweep_figure`: one panel per metric against a swept value (Fig. 2: deletion, insertion and
  deletion + (1 − insertion) against the Jitter-CAM size; Fig. 5: AD and IIC against the expansion factor),
  a line per method, and optionally a dashed red reference line per panel (Fig. 5's plain Grad-CAM).
- `curves_figure`: mean deletion and insertion curves against the fraction of pixels changed.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]  # line label -> (x, y)


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def sweep_figure(title: str, xlabel: str, panels: Mapping[str, Series],
                 references: Mapping[str, tuple[str, float]] | None = None) -> bytes:
    """A row of panels, one per metric (`panels`: panel title -> lines); `references`: panel title ->
    (label, value) drawn as a dashed red horizontal line."""
    figure = Figure(figsize=(4.6 * len(panels), 3.8))
    figure.subplots_adjust(left=0.25 / len(panels), right=1 - 0.08 / len(panels), bottom=0.14, top=0.84, wspace=0.3)
    figure.suptitle(title)
    for index, (name, lines) in enumerate(panels.items()):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for label, (x, y) in lines.items():
            axes.plot(x, y, marker="o", markersize=3, label=label)
        if references and name in references:
            label, value = references[name]
            axes.axhline(value, color="red", linestyle="--", linewidth=1.2, label=label)
        axes.set_title(name)
        axes.set_xlabel(xlabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small")
    return _png(figure)


def curves_figure(title: str, curves: Mapping[str, Mapping[str, np.ndarray]],
                  aucs: Mapping[str, Mapping[str, float]]) -> bytes:
    """Panels `deletion` and `insertion` (`curves`: kind -> line label -> mean curve), each line labelled
    with the AUC of its mean curve."""
    kinds = [kind for kind in ("deletion", "insertion") if kind in curves]
    figure = Figure(figsize=(5.2 * len(kinds), 4.0))
    figure.subplots_adjust(left=0.2 / len(kinds), right=1 - 0.06 / len(kinds), bottom=0.13, top=0.85, wspace=0.25)
    figure.suptitle(title)
    for index, kind in enumerate(kinds):
        axes = figure.add_subplot(1, len(kinds), index + 1)
        for label, curve in curves[kind].items():
            x = np.linspace(0.0, 1.0, len(curve))
            axes.plot(x, curve, label=f"{label} ({aucs[kind][label]:.3f})")
        axes.set_title(f"mean {kind} curve (AUC)")
        axes.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "inserted"))
        axes.set_ylabel("score of the class")
        axes.set_xlim(0, 1)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small")
    return _png(figure)
