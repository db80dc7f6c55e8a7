"""A synthetic classification dataset whose class evidence is known exactly (issue 14).

Each image is `size` x `size` RGB, deterministic from `(seed, index)` (a numpy Generator seeded with
`[seed, index]`, so items can be drawn in any order):

* Background: a random square crop (side 35-100 % of the photo's shorter side, uniform position, mirrored
  left-right with probability 1/2) of one of the package's 8 offline photos
  (`jittercam/data/offline/photos`, read with `jittercam.data.load_image` and first downscaled,
  Lanczos, so that the shorter side is at most `2 * size`), resized to `size` x `size` (bilinear).
  The photos contain real objects; the classes here have nothing to do with them.
* Scale: a factor `f`, uniform real in `scale` (default 1-2), multiplies the evidence's side and period,
  and the distractor's side and noise cells: the same evidence at 1-2x, as the random-resized crops of
  ImageNet training show real models their objects at many scales. Jitter-CAM and Upscale-CAM enlarge
  the input (2x at their default size), so a model that only knows one scale loses the evidence there
  (measured in the ground-truth guide); `scale=(1, 1)` gives that single-scale setting.
* Evidence: ONE opaque square patch of side `round(f * s0)` (`s0` uniform integer in `patch`, default
  11-14 % of `size`: 14-18 px at 128 px) at a uniform integer position fully inside the image, carrying
  the binary pattern of the item's class (`PATTERNS[label]`) with period `f * P` pixels (`P` uniform
  real in `period`, default 4-6 px) and a random phase, painted with two random colours at least
  `MIN_CONTRAST` apart (Euclidean RGB distance in [0, 1] units). Colour and contrast are random so that
  only the pattern's shape identifies the class.
* Distractor (with probability `distractor`): one more patch of the same kind of size and colours, not
  overlapping the evidence (not even touching it), with a pattern of NO class: random binary noise in
  cells of `max(2, round(2 f))` pixels. So "a coloured square" is not evidence by itself.
* Labels are balanced: item `i` has label `i % classes`.

The evidence mask is exactly the evidence square (bool, H x W): every pixel outside it (the distractor
included) is the background or the distractor, every pixel inside was painted by the pattern.
Pixel values are computed in float32 in [0, 1] and normalised with the fixed `MEAN` / `STD` (ImageNet's,
so the library's usual cards apply): `image = (pixels - MEAN) / STD`.

Two-object images (`pair`) hold two IDENTICAL evidence patches of one class at scale 1 (one side `s`,
period, phase
and pair of colours drawn once and painted twice, like the two equal point sources of Rayleigh's
criterion: neither is stronger evidence than the other), whose CENTRES are
`separation` pixels apart (centre of a square with top-left pixel `(x, y)` is `(x + s/2, y + s/2)` in
continuous pixel coordinates where pixel `i` covers `[i, i + 1)`), on a line at `angle` degrees (0:
horizontal). The edge-to-edge gap along the line is `separation - s` for a horizontal line; `separation ==
s` is touching. Patches never overlap.

What it cannot tell: anything about natural objects (the evidence is a small texture with hard edges;
held-out images reuse the same 8 background photos, in other crops).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..card import IMAGENET_MEAN, IMAGENET_STD
from ..data import load_image
from ..data.offline import read_photos
from ..errors import JitterCamError

NAME = "groundtruth"  # the name of the ground-truth model, of its benchmark dataset and of its cache folder
HELDOUT_OFFSET = 1_000_003  # a model trained with seed s is evaluated on the images of seed s + HELDOUT_OFFSET
MEAN = IMAGENET_MEAN
STD = IMAGENET_STD
PATTERNS = ("hgrating", "vgrating", "diagonal", "antidiagonal", "checker", "rings")
MIN_CONTRAST = 0.45
CROP_SIDE = (0.35, 1.0)  # background crop side, fraction of the photo's shorter side
PATCH_FRACTION = (0.11, 0.14)  # default base patch side, fraction of the image side (14-18 px at 128)
SCALE = (1.0, 2.0)  # default range of the scale factor


@dataclass(frozen=True)
class Item:
    """One rendered image: `image` normalised `(3, H, W)` float32, `pixels` / `background` `(H, W, 3)`
    float32 in [0, 1], `mask` `(H, W)` bool (the evidence square), `box` / `distractor` `(x, y, side)`."""

    image: torch.Tensor
    label: int
    mask: torch.Tensor
    pixels: np.ndarray
    background: np.ndarray
    box: tuple[int, int, int]
    distractor: tuple[int, int, int] | None


@dataclass(frozen=True)
class Pair:
    """Two evidence patches of class `label`: `masks` `(2, H, W)` bool, `centres` `((x, y), (x, y))` in
    continuous pixel coordinates, `separation` the realised centre distance in pixels, `side` the patch side."""

    image: torch.Tensor
    label: int
    masks: torch.Tensor
    centres: tuple[tuple[float, float], tuple[float, float]]
    separation: float
    side: int
    pixels: np.ndarray
    background: np.ndarray


@functools.lru_cache(maxsize=4)
def _photos(size: int) -> tuple[Image.Image, ...]:
    """The offline photos, downscaled (Lanczos) so that the shorter side is at most `2 * size`."""
    out = []
    for photo in read_photos():
        picture = load_image(photo.file)
        scale = 2 * size / min(picture.size)
        if scale < 1:
            picture = picture.resize((round(picture.width * scale), round(picture.height * scale)),
                                     Image.Resampling.LANCZOS)
        out.append(picture)
    return tuple(out)


def pattern(name: str, side: int, period: float, phase: np.ndarray) -> np.ndarray:
    """The binary pattern `(side, side)` float32 in {0, 1}: a square wave of `period` pixels, `phase` two
    angles in radians. Coordinates are pixel centres relative to the patch centre."""
    c = np.arange(side, dtype=np.float64) + 0.5 - side / 2
    v, u = np.meshgrid(c, c, indexing="ij")  # v: row (y), u: column (x)
    w = 2 * math.pi / period
    if name == "hgrating":
        wave = np.cos(w * v + phase[0])
    elif name == "vgrating":
        wave = np.cos(w * u + phase[0])
    elif name == "checker":
        wave = np.cos(w * u + phase[0]) * np.cos(w * v + phase[1])
    elif name == "rings":
        wave = np.cos(w * np.hypot(u, v) + phase[0])
    elif name == "diagonal":
        wave = np.cos(w * (u + v) / math.sqrt(2) + phase[0])
    elif name == "antidiagonal":
        wave = np.cos(w * (u - v) / math.sqrt(2) + phase[0])
    else:
        raise JitterCamError(f"unknown pattern {name!r}; choose from {', '.join(PATTERNS)}")
    return (wave >= 0).astype(np.float32)


class GroundTruthDataset:
    """`count` synthetic images of `classes` pattern classes (see the module). Indexing gives
    `(image, label, mask)`; `item(i)` the full record; `batch(indices)` stacked tensors."""

    def __init__(self, seed: int = 0, size: int = 128, count: int = 4096, classes: int = 4, *,
                 patch: tuple[int, int] | None = None, period: tuple[float, float] = (4.0, 6.0),
                 scale: tuple[float, float] = SCALE, distractor: float = 0.5) -> None:
        if not 2 <= classes <= len(PATTERNS):
            raise JitterCamError(f"classes must be 2-{len(PATTERNS)} (one pattern each), not {classes}")
        if patch is None:
            patch = (max(4, round(PATCH_FRACTION[0] * size)), max(5, round(PATCH_FRACTION[1] * size)))
        if not 1 <= scale[0] <= scale[1]:
            raise JitterCamError(f"scale must be a range 1 <= low <= high, not {tuple(scale)}")
        if size < 32 or count < 1 or not 4 <= patch[0] <= patch[1] or round(patch[1] * scale[1]) > size // 3:
            raise JitterCamError("need size >= 32, count >= 1 and 4 <= patch[0] <= patch[1], patch[1] * scale[1] "
                                 "<= size / 3")
        if not 0 <= distractor <= 1 or not 2 <= period[0] <= period[1]:
            raise JitterCamError("distractor must be a probability and the period at least 2 pixels")
        self.seed, self.size, self.count, self.classes = int(seed), int(size), int(count), int(classes)
        self.patch, self.period, self.distractor = (int(patch[0]), int(patch[1])), (period[0], period[1]), distractor
        self.scale = (float(scale[0]), float(scale[1]))

    def config(self) -> dict:
        return {"seed": self.seed, "size": self.size, "count": self.count, "classes": self.classes,
                "patch": list(self.patch), "period": list(self.period), "scale": list(self.scale),
                "distractor": self.distractor}

    @property
    def class_names(self) -> tuple[str, ...]:
        return PATTERNS[: self.classes]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        item = self.item(index)
        return item.image, item.label, item.mask

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(B, 3, H, W)` images, `(B,)` long labels, `(B, H, W)` bool masks."""
        items = [self.item(int(i)) for i in indices]
        return (torch.stack([it.image for it in items]), torch.tensor([it.label for it in items]),
                torch.stack([it.mask for it in items]))

    # ------------------------------------------------------------------------------ rendering
    def item(self, index: int) -> Item:
        if not 0 <= index < self.count:
            raise IndexError(f"item {index} out of range for {self.count} items")
        rng = np.random.default_rng([self.seed, index])
        label = index % self.classes
        background = self._background(rng)
        f = float(rng.uniform(*self.scale))
        side = round(f * int(rng.integers(self.patch[0], self.patch[1] + 1)))
        x, y = (int(v) for v in rng.integers(0, self.size - side + 1, size=2))
        pixels = background.copy()
        self._paint(rng, pixels, (x, y, side), PATTERNS[label], f)
        extra = None
        if rng.random() < self.distractor:
            dside = round(f * int(rng.integers(self.patch[0], self.patch[1] + 1)))
            for _ in range(100):  # an image side >= 3 patches leaves room; give up silently otherwise
                dx, dy = (int(v) for v in rng.integers(0, self.size - dside + 1, size=2))
                if dx > x + side or dx + dside < x or dy > y + side or dy + dside < y:
                    extra = (dx, dy, dside)
                    self._paint(rng, pixels, extra, None, f)
                    break
        mask = np.zeros((self.size, self.size), dtype=bool)
        mask[y:y + side, x:x + side] = True
        return Item(normalise(pixels), label, torch.from_numpy(mask), pixels, background, (x, y, side), extra)

    def pair(self, separation: float, cls: int = 0, seed: int = 0, *, angle: float = 0.0) -> Pair:
        """Two patches of class `cls`, centres `separation` px apart on a line at `angle` degrees (module
        docstring). At scale 1, the side is the middle of `patch`; the midpoint is uniform where both patches fit.
        Offsets are rounded to whole pixels, so `separation` is realised within 1 px off the axes."""
        if not 0 <= cls < self.classes:
            raise JitterCamError(f"class {cls} out of range for {self.classes} classes")
        side = (self.patch[0] + self.patch[1]) // 2
        theta = math.radians(angle)
        dx, dy = round(separation * math.cos(theta)), round(separation * math.sin(theta))
        if max(abs(dx), abs(dy)) < side:
            raise JitterCamError(f"patches of {side} px at separation {separation} (angle {angle}) overlap; "
                                 f"the least separation is {side} px (touching) on a horizontal line")
        if abs(dx) + side > self.size or abs(dy) + side > self.size:
            raise JitterCamError(f"separation {separation} px does not fit a {self.size} px image")
        rng = np.random.default_rng([self.seed, 1 << 40, int(seed)])
        background = self._background(rng)
        x0 = int(rng.integers(max(0, -dx), self.size - side - max(0, dx) + 1))
        y0 = int(rng.integers(max(0, -dy), self.size - side - max(0, dy) + 1))
        pixels = background.copy()
        masks = np.zeros((2, self.size, self.size), dtype=bool)
        corners = ((x0, y0), (x0 + dx, y0 + dy))
        painted = self._patch(rng, side, PATTERNS[cls], 1.0)
        for k, (x, y) in enumerate(corners):
            pixels[y:y + side, x:x + side] = painted
            masks[k, y:y + side, x:x + side] = True
        first, second = ((x + side / 2, y + side / 2) for x, y in corners)
        return Pair(normalise(pixels), cls, torch.from_numpy(masks), (first, second), math.hypot(dx, dy), side,
                    pixels, background)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        photos = _photos(self.size)
        photo = photos[int(rng.integers(len(photos)))]
        w, h = photo.size
        side = max(8, round(min(w, h) * rng.uniform(*CROP_SIDE)))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = photo.crop((x, y, x + side, y + side)).resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = np.asarray(crop, dtype=np.float32) / 255.0
        return np.ascontiguousarray(pixels[:, ::-1]) if rng.random() < 0.5 else pixels

    def _paint(self, rng: np.random.Generator, pixels: np.ndarray, box: tuple[int, int, int],
               name: str | None, f: float) -> None:
        x, y, side = box
        pixels[y:y + side, x:x + side] = self._patch(rng, side, name, f)

    def _patch(self, rng: np.random.Generator, side: int, name: str | None, f: float) -> np.ndarray:
        """`(side, side, 3)` float32: the pattern `name` at scale `f` (None: the distractor's noise) in two
        colours."""
        if name is None:  # the distractor: binary noise in square cells, no orientation, no period
            cell = max(2, round(2 * f))
            cells = rng.integers(0, 2, size=(-(-side // cell), -(-side // cell))).astype(np.float32)
            shape = np.kron(cells, np.ones((cell, cell), np.float32))[:side, :side]
        else:
            period = f * rng.uniform(*self.period)
            shape = pattern(name, side, period, rng.uniform(0, 2 * math.pi, size=2))
        while True:
            low, high = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
            if np.linalg.norm(high - low) >= MIN_CONTRAST:
                break
        low, high = low.astype(np.float32), high.astype(np.float32)
        return low + (high - low) * shape[..., None]


def heldout_config(seed: int, size: int, classes: int, patch: tuple[int, int] | None = None,
                   scale: tuple[float, float] = SCALE, distractor: float = 0.5, count: int = 512) -> dict:
    """The configuration of the held-out dataset of a model trained with these settings."""
    return GroundTruthDataset(seed + HELDOUT_OFFSET, size, count, classes, patch=patch, scale=scale,
                              distractor=distractor).config()


def normalise(pixels: np.ndarray) -> torch.Tensor:
    """`(H, W, 3)` float32 in [0, 1] -> `(3, H, W)` float32 normalised with `MEAN` / `STD`."""
    mean = torch.tensor(MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(STD, dtype=torch.float32)[:, None, None]
    return (torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1) - mean) / std
