"""Set-level numbers as the report shows them: a value and how many items it rests on.

The statistics themselves are the metrics' own set-level functions (`jittercam.metrics`), called by each
experiment's `summarise`; this module only carries their results (`Stat`), the NaN-safe mean of a
per-item metric, and the point-by-point mean of per-item curves. A missing value (SQLite stores NaN as
NULL; the report reads both as NaN) is left out of every figure and of its `n`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stat:
    """A set-level number and how many items it rests on.

    Attributes:
        value: the figure (NaN when no item has a value).
        n: the number of items it rests on.
    """

    value: float
    n: int


def finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """The values that are not NaN (missing).

    Args:
        values: per-item values.

    Returns:
        A 1-D float64 array of the values present, in order.
    """
    array = np.asarray(values, dtype=np.float64)
    return array[~np.isnan(array)]


def mean(values: Sequence[float] | np.ndarray) -> Stat:
    """NaN-safe mean: NaN (a missing value) is left out of the mean and of n.

    Args:
        values: per-item values.

    Returns:
        The mean and the count of values present; no value gives NaN, 0.
    """
    kept = finite(values)
    return Stat(float(kept.mean()) if kept.size else math.nan, int(kept.size))


class CurveMean:
    """The point-by-point mean of per-item curves, accumulated one curve at a time (memory: one running
    sum per curve length). Curves of another length (another image size) are resampled linearly onto the
    longest one's points over the fraction of pixels changed (0 → 1)."""

    def __init__(self) -> None:
        self._sums: dict[int, list] = {}  # length -> [sum, count]

    def add(self, curve: Sequence[float] | np.ndarray) -> None:
        """Add one item's curve.

        Args:
            curve: its points, at least two, over the fraction of pixels changed (0 → 1).

        Raises:
            ValueError: the curve is not 1-D or has fewer than two points.
        """
        curve = np.asarray(curve, dtype=np.float64)
        if curve.ndim != 1 or curve.size < 2:
            raise ValueError(f"a curve must have at least two points, got shape {curve.shape}")
        entry = self._sums.setdefault(curve.size, [np.zeros(curve.size), 0])
        entry[0] += curve
        entry[1] += 1

    @property
    def count(self) -> int:
        """The number of curves added."""
        return sum(count for _, count in self._sums.values())

    def result(self) -> np.ndarray:
        """The mean curve.

        Returns:
            The point-by-point mean, on the longest curve's points.

        Raises:
            ValueError: no curve was added.
        """
        if not self._sums:
            raise ValueError("no curves to average")
        length = max(self._sums)
        grid = np.linspace(0.0, 1.0, length)
        total = np.zeros(length)
        for size, (summed, _) in self._sums.items():
            total += np.interp(grid, np.linspace(0.0, 1.0, size), summed)  # linear: the sum resamples as one
        return total / self.count


def mean_curve(curves: Sequence[np.ndarray]) -> np.ndarray:
    """The point-by-point mean of per-item curves (see `CurveMean`).

    Args:
        curves: the items' curves.

    Returns:
        The mean curve, on the longest curve's points.

    Raises:
        ValueError: there is no curve, or one is not 1-D with at least two points.
    """
    accumulator = CurveMean()
    for curve in curves:
        accumulator.add(curve)
    return accumulator.result()
