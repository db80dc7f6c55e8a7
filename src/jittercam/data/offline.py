"""The offline benchmark shipped with the package: 8 real ImageNet validation photos, and composites
made from them with exactly known boxes. Deterministic from `seed` (a numpy Generator).

Assets (`jittercam/data/offline/`): the 8 ILSVRC2012 validation photos of `examples/images`, unchanged
(so a `photo-*` item is the real validation image), with their official labels (torchvision's class
indices) and boxes drawn BY HAND, by eye (`boxes.json`, 0-based inclusive pixel indices; NOT the official
ILSVRC boxes).

Items (keys interleave the four groups, so that the first few keys already hold one of each):

* `photo-<name>` (8): the photo, its label, its hand-drawn box(es). Not difficult. (`<name>` is the
  readable name of `examples/labels.csv`: `photo-kayak` is torchvision's class 472, "canoe".)
* `single-NNN` (24 by default): one object (the first hand-drawn box of a photo, cut out as a rectangle,
  so it carries a little of its own background) pasted, aspect kept, with its longer side 40-85 % of the
  448 x 448 canvas, at a uniform position, on a texture: a crop (aspect up to 2.5:1) of a background
  region of ANOTHER photo (`textures` in boxes.json, picked by eye to hold no labelled or other salient
  object) resized to fill the canvas, so it may be stretched and blurred. Every class appears equally
  often (one random permutation per round of 8). The pasted rectangle is the exact box and mask.
  Not difficult.
* `pair-NNN` (16 by default): two objects of different classes (the texture from a third photo), each in
  its own part of the canvas (split left/right or top/bottom), never overlapping. The first half are
  SMALL: each object 4-11 % of the canvas area, so together under 25 %. The second half are LARGE: each
  object fills 92-100 % of its part, and pairs, splits and split positions (35-65 %) are drawn until
  both objects cover at least 25 % of the canvas (up to 200 draws; a long thin object such as the
  canoe cannot, so such pairs are redrawn).
  `difficult[c]` is the EBP rule the paper quotes, computed from the pasted area: the class covers under
  25 % of the image and another class is present. Small pairs are difficult for both classes, large
  pairs for neither.

Composites are drawn at the canvas size and then go through `to_input` like any photo, so their boxes
scale like real ones; `original_size` and masks are at the canvas size.

What it can tell: whether a method points at / boxes an object whose extent is known exactly, on real
photographic objects, with a distractor class present (pairs). What it cannot: the paper's numbers (8
source photos, pasted rectangles with visible seams, stretched textures; the classifier may not
recognise a small or upscaled object, so report the model's accuracy on it beside any metric).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import nn

from ..card import ModelCard, imagenet_categories
from ..errors import JitterCamError
from .base import KINDS, Sample, box_mask, input_boxes, model_input, read_picture
from .registry import register_dataset

CANVAS = 448
SINGLE_SIDE = (0.40, 0.85)  # longer side of a single pasted object, fraction of the canvas side
SMALL_AREA = (0.04, 0.11)  # area of each object of a small pair, fraction of the canvas
DIFFICULT_AREA = 0.25  # EBP: a class under this fraction of the image, with another class present
_MAX_ASPECT = 2.5  # texture crops


@dataclass(frozen=True)
class Photo:
    file: Path
    label: int
    name: str
    size: tuple[int, int]  # (W, H)
    boxes: tuple[tuple[int, int, int, int], ...]  # inclusive pixel boxes
    textures: tuple[tuple[int, int, int, int], ...]  # inclusive pixel boxes of plain background

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


@dataclass(frozen=True)
class Paste:
    photo: int
    rect: tuple[int, int, int, int]  # x, y, w, h on the canvas


@dataclass(frozen=True)
class Composite:
    background: int  # photo index
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends) in that photo
    pastes: tuple[Paste, ...]


def assets() -> Path:
    return Path(str(resources.files("jittercam.data") / "offline"))


def read_photos() -> list[Photo]:
    folder = assets()
    try:
        document = json.loads((folder / "boxes.json").read_text(encoding="utf-8"))
        return [Photo(folder / "photos" / p["file"], int(p["class_index"]), p["name"], tuple(p["size"]),
                      tuple(tuple(b) for b in p["boxes"]), tuple(tuple(t) for t in p["textures"]))
                for p in document["photos"]]
    except (OSError, ValueError, KeyError) as exc:
        raise JitterCamError(f"the offline dataset's assets are missing or broken in {folder}: {exc}") from None


class OfflineDataset:
    """The shipped benchmark (see the module): photos, single-object and two-object composites."""

    name = "offline"
    num_classes = 1000
    has = KINDS

    def __init__(self, seed: int = 0, *, singles: int = 24, pairs: int = 16, canvas: int = CANVAS) -> None:
        if singles < 0 or pairs < 0 or canvas < 64:
            raise JitterCamError("singles and pairs must be >= 0 and the canvas at least 64 pixels")
        self.seed, self.canvas = int(seed), int(canvas)
        self.categories = imagenet_categories()
        self.photos = read_photos()
        self._pictures: dict[int, Image.Image] = {}
        rng = np.random.default_rng(self.seed)
        groups: list[list[tuple[str, int | Composite]]] = [
            [(f"photo-{photo.slug}", index) for index, photo in enumerate(self.photos)],
            [(f"single-{i:03d}", c) for i, c in enumerate(self._singles(rng, singles))],
        ]
        small, large = pairs // 2 + pairs % 2, pairs // 2
        made = self._pairs(rng, small, large)
        groups += [[(f"pair-{i:03d}", c) for i, c in enumerate(made[:small])],
                   [(f"pair-{i:03d}", c) for i, c in enumerate(made[small:], start=small)]]
        self._items: dict[str, int | Composite] = {}
        for position in range(max(len(g) for g in groups)):
            for group in groups:
                if position < len(group):
                    key, item = group[position]
                    self._items[key] = item

    # ---------------------------------------------------------------------------- generation
    def _singles(self, rng: np.random.Generator, count: int) -> list[Composite]:
        n = len(self.photos)
        made: list[Composite] = []
        order: list[int] = []
        while len(made) < count:
            if not order:
                order = list(rng.permutation(n))
            obj = int(order.pop(0))
            w, h = self._object_size(obj)
            side = rng.uniform(*SINGLE_SIDE) * self.canvas
            scale = side / max(w, h)
            pw, ph = max(8, round(w * scale)), max(8, round(h * scale))
            x, y = int(rng.integers(0, self.canvas - pw + 1)), int(rng.integers(0, self.canvas - ph + 1))
            made.append(Composite(*self._texture(rng, exclude={obj}), (Paste(obj, (x, y, pw, ph)),)))
        return made

    def _pairs(self, rng: np.random.Generator, small: int, large: int) -> list[Composite]:
        made: list[Composite] = []
        for big in [False] * small + [True] * large:
            best: tuple[float, tuple[Paste, ...]] | None = None
            for _ in range(200 if big else 1):
                a, b = (int(v) for v in rng.choice(len(self.photos), size=2, replace=False))
                regions = _split(self.canvas, int(rng.integers(2)), rng.uniform(0.35, 0.65) if big else 0.5)
                pastes = tuple(self._place(rng, obj, region, big) for obj, region in zip((a, b), regions))
                low = min(p.rect[2] * p.rect[3] for p in pastes) / self.canvas**2
                if best is None or low > best[0]:
                    best = (low, pastes)
                if not big or low >= DIFFICULT_AREA:
                    break
            if best is None:  # cannot happen: every pair makes at least one attempt
                raise RuntimeError("no placement was tried for a pair")
            pastes = best[1]
            made.append(Composite(*self._texture(rng, exclude={p.photo for p in pastes}), pastes))
        return made

    def _place(self, rng: np.random.Generator, obj: int, region: tuple[int, int, int, int], big: bool) -> Paste:
        rx, ry, rw, rh = region
        w, h = self._object_size(obj)
        fit = min(rw / w, rh / h)
        if big:
            scale = fit * rng.uniform(0.92, 1.0)
        else:
            scale = min(fit, float(np.sqrt(rng.uniform(*SMALL_AREA) * self.canvas**2 / (w * h))))
        pw, ph = max(8, min(rw, round(w * scale))), max(8, min(rh, round(h * scale)))
        x = rx + int(rng.integers(0, rw - pw + 1))
        y = ry + int(rng.integers(0, rh - ph + 1))
        return Paste(obj, (x, y, pw, ph))

    def _texture(self, rng: np.random.Generator, exclude: set[int]) -> tuple[int, tuple[int, int, int, int]]:
        """A background photo (not in `exclude`) and a crop `(x0, y0, x1, y1)`, exclusive ends, of one of
        its texture regions: as large as the aspect limit allows, times 0.7-1 per side, placed uniformly."""
        choices = [(i, t) for i, photo in enumerate(self.photos) if i not in exclude for t in photo.textures]
        background, (x0, y0, x1, y1) = choices[int(rng.integers(len(choices)))]
        w, h = x1 - x0 + 1, y1 - y0 + 1
        cw, ch = min(w, round(_MAX_ASPECT * h)), min(h, round(_MAX_ASPECT * w))
        cw, ch = max(1, round(cw * rng.uniform(0.7, 1.0))), max(1, round(ch * rng.uniform(0.7, 1.0)))
        cx, cy = x0 + int(rng.integers(0, w - cw + 1)), y0 + int(rng.integers(0, h - ch + 1))
        return background, (cx, cy, cx + cw, cy + ch)

    def _object_size(self, index: int) -> tuple[int, int]:
        x0, y0, x1, y1 = self.photos[index].boxes[0]
        return x1 - x0 + 1, y1 - y0 + 1

    # ------------------------------------------------------------------------------- dataset
    def keys(self) -> list[str]:
        return list(self._items)

    def config(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for path in [assets() / "boxes.json"] + [photo.file for photo in self.photos]:
            digest.update(path.read_bytes())
        return {"dataset": self.name, "seed": self.seed, "canvas": self.canvas, "items": len(self._items),
                "assets": digest.hexdigest()[:16]}

    def composite(self, key: str) -> Composite | None:
        """The recipe of a composite item (None for a photo)."""
        item = self._items[key]
        return item if isinstance(item, Composite) else None

    def picture(self, key: str) -> Image.Image:
        """The item as an RGB picture: the photo, or the composite rendered at the canvas size."""
        if key not in self._items:
            raise JitterCamError(f"no item {key!r} in the offline dataset")
        item = self._items[key]
        return self.render(item) if isinstance(item, Composite) else self._photo(item)

    def render(self, composite: Composite) -> Image.Image:
        """The texture crop resized to the canvas, then each object's first box cut out, resized to its
        rectangle (Lanczos) and pasted there, in order."""
        canvas = self._photo(composite.background).crop(composite.crop).resize(
            (self.canvas, self.canvas), Image.Resampling.LANCZOS)
        for paste in composite.pastes:
            x0, y0, x1, y1 = self.photos[paste.photo].boxes[0]
            x, y, w, h = paste.rect
            cut = self._photo(paste.photo).crop((x0, y0, x1 + 1, y1 + 1)).resize((w, h), Image.Resampling.LANCZOS)
            canvas.paste(cut, (x, y))
        return canvas

    def load(self, key: str, card: ModelCard) -> Sample:
        try:
            picture = self.picture(key)
        except JitterCamError as exc:
            if key not in self._items:
                raise
            return Sample.skipped(key, str(exc))
        item = self._items[key]
        frame = (picture.height, picture.width)
        if isinstance(item, Composite):
            objects = {self.photos[p.photo].label: [(p.rect[0], p.rect[1], p.rect[0] + p.rect[2],
                                                     p.rect[1] + p.rect[3])] for p in item.pastes}
        else:
            photo = self.photos[item]
            objects = {photo.label: [(x0, y0, x1 + 1, y1 + 1) for x0, y0, x1, y1 in photo.boxes]}
        labels = tuple(sorted(objects))
        masks = {c: box_mask(objects[c], frame, frame) for c in labels}
        return Sample(
            key=key, image=model_input(picture, card), labels=labels,
            boxes={c: input_boxes(objects[c], frame, card.input_size) for c in labels},
            masks=masks,
            # EBP: the class covers under a quarter of the image and another class is present
            difficult={c: len(labels) > 1 and float(masks[c].float().mean()) < DIFFICULT_AREA for c in labels},
            original_size=frame,
        )

    def _photo(self, index: int) -> Image.Image:
        if index not in self._pictures:
            picture = read_picture(self.photos[index].file, stored_layout=False)
            if isinstance(picture, str):
                raise JitterCamError(picture)
            self._pictures[index] = picture
        return self._pictures[index]


@register_dataset(OfflineDataset.name, title="the offline dataset", num_classes=OfflineDataset.num_classes)
def _open(spec: str, seed: int, model: nn.Module | None) -> OfflineDataset:
    return OfflineDataset(seed=seed)


def _split(canvas: int, vertical: int, fraction: float) -> tuple[tuple[int, int, int, int], ...]:
    """Two regions `(x, y, w, h)` of the canvas: left/right (`vertical`) or top/bottom at `fraction`."""
    cut = round(canvas * fraction)
    if vertical:
        return (0, 0, cut, canvas), (cut, 0, canvas - cut, canvas)
    return (0, 0, canvas, cut), (0, cut, canvas, canvas - cut)
