"""The ground-truth images as a benchmark dataset: `jittercam bench groundtruth` (and `--dataset groundtruth`
for any other experiment, with `--model groundtruth`).

Items are drawn from the model's own held-out configuration (its card's `heldout`: other crops,
positions, colours and scales than its training images), so the data always matches the model:

* `single-0000` ... : the first `singles` held-out images, one evidence patch each (scale 1-2), its
  exact mask and box for the true class;
* `pair-s016-r00` ... : for each replicate r and each centre separation s (pixels) in `separations`, a
  pair of identical evidence patches at scale 1 on a line at `angle` degrees (0, the default:
  horizontal; `GroundTruthDataset.pair`, class r mod classes, pair seed `seed * 1_000_000 + r`), the
  union of both masks and both boxes. The default separations run from the closest pair that does not
  overlap (touching, the patch side: 16 px at 128 px, on a horizontal line) to four sides, every 2 px
  (16-64 px at 128 px; as far as two patches fit in smaller images). Off the axes the offsets are
  whole pixels, so the realised separation (stored with the results) is within 1 px of the nominal one.

The dataset is called "groundtruth", or "groundtruth-<angle>deg" for another angle, so that the report
keeps each orientation's resolution curve apart.

Keys are ordered so that the first N of them (`--limit N`) are a small run of the whole benchmark: the
singles and the pairs are interleaved in proportion to their numbers, the pairs replicate by replicate,
and within a replicate the separations go from coarse to fine (`spread`: the widest, the closest, then
the middle of the widest gaps left), so any prefix covers the sweep's range evenly.

A sample's `meta` carries what the experiment needs: `kind` ('single' or 'pair'), and for a pair
`centres` ((x, y), (x, y)) in continuous pixel coordinates (pixel i covers [i, i + 1)), `separation`,
`side` and `replicate`.
"""
from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from ..card import ModelCard, model_card
from ..data.base import Sample
from ..data.registry import register_dataset
from ..errors import JitterCamError
from .dataset import NAME, PATTERNS, GroundTruthDataset

SINGLES = 64
REPLICATES = 8
T = TypeVar("T")
_KEY = re.compile(r"^(?:single-(\d+)|pair-s(\d+)-r(\d+))$")


def fits(separation: float, side: int, size: int, angle: float = 0.0) -> bool:
    """Whether `GroundTruthDataset.pair` can place two `side` px patches `separation` px apart at `angle`
    degrees in a `size` px image: they must not overlap, and both must lie inside."""
    theta = math.radians(angle)
    dx, dy = abs(round(separation * math.cos(theta))), abs(round(separation * math.sin(theta)))
    return max(dx, dy) >= side and dx + side <= size and dy + side <= size


def default_separations(side: int, size: int, angle: float = 0.0) -> list[int]:
    """From the closest pair that does not overlap to four sides, every 2 pixels, as far as both fit."""
    start = next((s for s in range(side, 4 * side + 1) if fits(s, side, size, angle)), None)
    if start is None:
        return []
    return [s for s in range(start, 4 * side + 1, 2) if fits(s, side, size, angle)]


def spread(values: Sequence[T]) -> list[T]:
    """`values` (sorted) reordered from coarse to fine: the last, the first, then the middle of each gap,
    the widest gaps first, so that every prefix spreads over the whole range (e.g. 1..9 -> 9, 1, 5, 7, 3, 8,
    6, 4, 2)."""
    n = len(values)
    if n <= 1:
        return list(values)
    order, gaps = [n - 1, 0], deque([(0, n - 1)])
    while gaps:
        low, high = gaps.popleft()
        if high - low > 1:
            middle = (low + high + 1) // 2
            order.append(middle)
            gaps += [(middle, high), (low, middle)]
    return [values[i] for i in order]


def interleave(first: Sequence[T], second: Sequence[T]) -> list[T]:
    """Both sequences merged in proportion to their lengths, each in its own order: the next item comes from
    the one whose share so far is behind (Sainte-Laguë's rule; `first` on ties)."""
    merged: list[T] = []
    i = j = 0
    while i < len(first) or j < len(second):
        if j == len(second) or (i < len(first) and (i + 0.5) * len(second) <= (j + 0.5) * len(first)):
            merged.append(first[i])
            i += 1
        else:
            merged.append(second[j])
            j += 1
    return merged


class GroundTruthBenchmark:
    """See the module. `heldout` is a `GroundTruthDataset.config()` (the model card's `heldout`)."""

    has = frozenset({"labels", "boxes", "masks", "evidence"})

    def __init__(self, heldout: Mapping[str, Any], *, seed: int = 0, singles: int = SINGLES,
                 separations: Sequence[int] | None = None, replicates: int = REPLICATES,
                 angle: float = 0.0) -> None:
        if singles < 0 or replicates < 0 or singles + replicates == 0:
            raise JitterCamError("the ground-truth benchmark needs singles >= 0 and replicates >= 0, not both 0")
        config = dict(heldout)
        self.data = GroundTruthDataset(
            seed=int(config["seed"]), size=int(config["size"]), count=max(1, singles, int(config["count"])),
            classes=int(config["classes"]), patch=tuple(config["patch"]), period=tuple(config["period"]),
            scale=tuple(config.get("scale", (1.0, 1.0))), distractor=float(config["distractor"]))
        self.heldout, self.seed, self.singles, self.replicates = config, int(seed), int(singles), int(replicates)
        self.side = (self.data.patch[0] + self.data.patch[1]) // 2
        self.angle = float(angle)
        if not math.isfinite(self.angle):
            raise JitterCamError(f"the angle of the pairs must be a number of degrees, not {angle}")
        chosen = (default_separations(self.side, self.data.size, self.angle) if separations is None
                  else sorted({int(s) for s in separations}))
        for separation in chosen:
            if not fits(separation, self.side, self.data.size, self.angle):
                possible = [s for s in range(2 * self.data.size) if fits(s, self.side, self.data.size, self.angle)]
                span = f"{possible[0]}-{possible[-1]} px" if possible else "more room than there is"
                raise JitterCamError(f"separation {separation} px: pairs of {self.side} px patches at {self.angle:g} "
                                     f"degrees in a {self.data.size} px image need {span}")
        if replicates and not chosen:
            raise JitterCamError("no separation to test")
        self.separations = chosen
        self.num_classes = self.data.classes
        self.categories = PATTERNS[: self.data.classes]

    @property
    def name(self) -> str:
        return NAME if self.angle == 0 else f"{NAME}-{self.angle:g}deg"

    @property
    def size(self) -> int:
        return self.data.size

    def keys(self) -> list[str]:
        """Every item, singles and pairs interleaved (see the module: any prefix is a small run of all)."""
        singles = [f"single-{i:04d}" for i in range(self.singles)]
        sweep = spread(self.separations)
        pairs = [f"pair-s{s:03d}-r{r:02d}" for r in range(self.replicates) for s in sweep]
        return interleave(pairs, singles)

    def config(self) -> dict[str, Any]:
        return {"dataset": self.name, "heldout": self.heldout, "singles": self.singles,
                "separations": self.separations, "replicates": self.replicates, "angle": self.angle, "seed": self.seed}

    def load(self, key: str, card: ModelCard) -> Sample:
        found = _KEY.match(key)
        if found is None:
            return Sample.skipped(key, f"not an item of the ground-truth benchmark: {key}")
        if card.input_size != self.size:
            return Sample.skipped(key, f"the ground-truth images are {self.size} px, the model takes "
                                       f"{card.input_size} px")
        single, separation, replicate = found.groups()
        if single is not None:
            item = self.data.item(int(single))
            x, y, side = item.box
            box = torch.tensor([[x, y, x + side - 1, y + side - 1]], dtype=torch.float32)
            return Sample(key, item.image, (item.label,), {item.label: box}, {item.label: item.mask},
                          original_size=(self.size, self.size), meta={"kind": "single", "side": side})
        r = int(replicate)
        pair = self.data.pair(int(separation), cls=r % self.num_classes, seed=self.seed * 1_000_000 + r,
                              angle=self.angle)
        boxes = torch.tensor([[cx - pair.side / 2, cy - pair.side / 2, cx + pair.side / 2 - 1, cy + pair.side / 2 - 1]
                              for cx, cy in pair.centres], dtype=torch.float32)
        return Sample(key, pair.image, (pair.label,), {pair.label: boxes}, {pair.label: pair.masks.any(0)},
                      original_size=(self.size, self.size),
                      meta={"kind": "pair", "centres": pair.centres, "separation": pair.separation,
                            "side": pair.side, "replicate": r})


def for_model(model: nn.Module, seed: int = 0, **options: Any) -> GroundTruthBenchmark:
    """The benchmark on the held-out configuration `model`'s card records (`options` go to
    `GroundTruthBenchmark`).

    Raises:
        JitterCamError: the model's card records no held-out configuration (not the ground-truth model).
    """
    card = model_card(model)
    if card.heldout is None:
        raise JitterCamError(f"use model {NAME}, not {card.name}: the ground-truth dataset is made for its "
                             "own model", option="model")
    return GroundTruthBenchmark(card.heldout, seed=seed, **options)


@register_dataset(NAME, title="the ground-truth dataset", from_model=True)
def _open(spec: str, seed: int, model: nn.Module, *, singles: int = SINGLES, separations: Sequence[int] | None = None,
          replicates: int = REPLICATES, angle: float = 0.0) -> GroundTruthBenchmark:
    return for_model(model, seed, singles=singles, separations=separations, replicates=replicates, angle=angle)
