"""What every benchmark dataset shares: one `Sample` per item, the `BenchmarkDataset` protocol, and the
helpers that read pictures and annotations into a sample. (Datasets are found and opened by name or path
in `jittercam.data.registry`, which this module knows nothing of.)

Every dataset hands out model inputs made the same way as `jittercam explain` makes them
(`jittercam.data.images.to_input`: the WHOLE picture resized to S x S, no crop, then the model card's
mean/std), and its ground truth in two frames:

* `boxes`: class -> `(N, 4)` float32 `(x0, y0, x1, y1)` in the S x S input's pixels, 0-based and
  inclusive (the convention of `jittercam.metrics.localisation`: a box covers x1 - x0 + 1 columns).
  A box that covers the pixels `[e0, e1)` of a `W`-wide frame (continuous edges) maps to
  `x0 = e0 * S / W`, `x1 = e1 * S / W - 1`, so a full-image box stays a full-image box at any size.
  An inclusive integer box `(a, b)` has edges `[a, b + 1)`. Boxes are clipped to the input, and a box
  thinner than one input pixel keeps `x1 = x0`.
* `masks`: class -> `(H0, W0)` bool at the ORIGINAL picture size, where TorchRay's pointing game resizes
  the map: a pixel belongs to a box when its centre lies inside the box's edges.

Annotated datasets (ImageNet with boxes, COCO, VOC) are read in the pixel layout the files store, WITHOUT
the EXIF orientation that `load_image` applies for `explain`: their annotations were drawn on, and every
evaluation tool (pycocotools, torchvision, TorchRay) reads, the stored layout.

A `Sample` is never an exception: an unusable picture is `Sample.skip` (a one-line reason, `image` None);
an annotation the dataset has but this item lacks (a missing box file, no box for the labelled class) is
`Sample.missing[kind]`, and the picture is still usable for experiments that do not need it; an (image,
class) pair the reference protocol leaves out (VOC: every box of the class "difficult") is
`Sample.excluded[class]`. `Sample.reason_to_skip(needs, target)` folds the three into one answer.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from ..card import ModelCard
from ..errors import JitterCamError
from .images import as_rgb, load_image, to_input

KINDS = frozenset({"labels", "boxes", "masks", "difficult"})
# beyond KINDS: "evidence" (the ground-truth benchmark: masks of exactly what the model uses, `meta` per item)
_ORIENTATION = 0x0112  # EXIF tag


@dataclass
class Sample:
    """One benchmark item (see the module's docstring for the frames and conventions).

    Attributes:
        key: unique, stable id in the dataset (a file stem, "single-003", ...).
        image: `(3, S, S)` float32 model input; None when skipped.
        labels: ground-truth classes present (ImageNet: one).
        boxes: class -> `(N, 4)` float32 boxes in input pixels.
        masks: class -> `(H0, W0)` bool mask at the original picture size.
        difficult: class -> whether the pair is in the difficult subset.
        original_size: `(H0, W0)` of the picture.
        skip: why the item cannot be used at all; None when it can.
        missing: annotation kind ("labels", "boxes") -> why it is absent for this item.
        excluded: class -> why the pair is not evaluated.
        meta: what else a dataset knows of the item (ground truth).
    """

    key: str  #: unique, stable id in the dataset (a file stem, "single-003", ...)
    image: torch.Tensor | None  #: (3, S, S) float32 model input; None when skipped
    labels: tuple[int, ...] = ()  #: ground-truth classes present (ImageNet: one)
    boxes: dict[int, torch.Tensor] = field(default_factory=dict)  #: class -> (N, 4) in input pixels
    masks: dict[int, torch.Tensor] = field(default_factory=dict)  #: class -> (H0, W0) bool
    difficult: dict[int, bool] = field(default_factory=dict)  #: class -> in the difficult subset
    original_size: tuple[int, int] = (0, 0)  #: (H0, W0)
    skip: str | None = None  #: why the item cannot be used at all
    missing: dict[str, str] = field(default_factory=dict)  #: kind ("labels", "boxes") -> why absent here
    excluded: dict[int, str] = field(default_factory=dict)  #: class -> why the pair is not evaluated
    meta: dict[str, Any] = field(default_factory=dict)  #: what else a dataset knows of the item (ground truth)

    @classmethod
    def skipped(cls, key: str, reason: str) -> Sample:
        """An unusable item.

        Args:
            key: the item's key.
            reason: why it cannot be used, on one line.

        Returns:
            A sample with `skip` set and no image.
        """
        return cls(key=key, image=None, skip=reason)

    def reason_to_skip(self, needs: Iterable[str] = (), target: int | None = None) -> str | None:
        """Why this item (or its pair with class `target`) cannot serve an experiment.

        Args:
            needs: the annotation kinds the experiment needs ("labels", "boxes", "masks", "difficult").
            target: the class of the pair; None: the item alone.

        Returns:
            A one-line reason (`skip`, a `missing` or `excluded` entry, or the class lacking what is
                needed); None when it can serve.
        """
        if self.skip:
            return self.skip
        needs = set(needs)
        for kind in sorted(needs):
            if kind in self.missing:
                return self.missing[kind]
        if target is None:
            return None
        if target in self.excluded:
            return self.excluded[target]
        if "labels" in needs and target not in self.labels:
            return f"class {target} is not a ground-truth class of {self.key}"
        for kind, table, what in (("boxes", self.boxes, "box"), ("masks", self.masks, "mask"),
                                  ("difficult", self.difficult, "difficult flag")):
            if kind in needs and target not in table:
                return f"no {what} for class {target} in {self.key}"
        return None


@runtime_checkable
class BenchmarkDataset(Protocol):
    """What the benchmark reads from a dataset (each dataset module registers one in `registry`).

    The attributes are read-only here (properties), so that a dataset may define them as class attributes,
    instance attributes or properties.

    Attributes:
        name: the name results are stored under.
        num_classes: the number of classes its labels index.
        categories: the class names, by index.
        has: the annotation kinds it has, a subset of `KINDS`.
    """

    @property
    def name(self) -> str:
        """The name results are stored under."""
        ...

    @property
    def num_classes(self) -> int:
        """The number of classes its labels index."""
        ...

    @property
    def categories(self) -> tuple[str, ...]:
        """The class names, by index."""
        ...

    @property
    def has(self) -> frozenset[str]:
        """A subset of KINDS."""
        ...

    def keys(self) -> list[str]:
        """The items' keys, in the order the benchmark reads them.

        Returns:
            The keys.
        """
        ...

    def load(self, key: str, card: ModelCard) -> Sample:
        """One item, its input made for a model.

        Args:
            key: one of `keys()`.
            card: the model's card (input size, mean and std).

        Returns:
            The sample; an unusable picture is a skipped sample, never an exception.
        """
        ...

    def config(self) -> dict[str, Any]:
        """What the dataset is, as it enters a run's configuration.

        Returns:
            A JSON-serialisable dict.
        """
        ...


# ------------------------------------------------------------------------------------------ helpers
def read_picture(path: str | Path, *, stored_layout: bool = True) -> Image.Image | str:
    """The picture at `path` as 8-bit RGB, or a one-line reason it cannot be used. `load_image` checks
    and decodes it.

    Args:
        path: the picture's file.
        stored_layout: True (default) does not apply an EXIF orientation (see the module docstring).

    Returns:
        The RGB picture, or the reason as a string.
    """
    try:
        picture = load_image(path)
        if stored_layout:
            with Image.open(path) as raw:
                if raw.getexif().get(_ORIENTATION, 1) not in (None, 1):
                    raw.load()
                    picture = as_rgb(raw)
    except JitterCamError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a second decode that fails is a bad file, not a crash
        return f"not an image: {path} ({exc or type(exc).__name__})"
    return picture


def model_input(picture: Image.Image, card: ModelCard) -> torch.Tensor:
    """`to_input` without its batch dimension.

    Args:
        picture: an RGB picture.
        card: the model's card (input size S, mean and std).

    Returns:
        `(3, S, S)` float32 model input.
    """
    return to_input(picture, card)[0].to(torch.float32)


def input_boxes(edges: np.ndarray | Sequence[Sequence[float]], frame: tuple[int, int], size: int) -> torch.Tensor:
    """Boxes given by continuous edges as inclusive pixel boxes of the input (module docstring).

    Args:
        edges: `(N, 4)` continuous edges `(e0x, e0y, e1x, e1y)` in the frame.
        frame: `(H, W)` of the frame, in pixels.
        size: S, the input's side.

    Returns:
        `(N, 4)` float32 inclusive boxes of the `size` x `size` input, clipped to it.
    """
    box = np.asarray(edges, dtype=np.float64).reshape(-1, 4)
    h, w = frame
    scale = np.array([size / w, size / h, size / w, size / h])
    out = box * scale - np.array([0.0, 0.0, 1.0, 1.0])
    out = np.clip(out, 0.0, size - 1.0)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0])
    out[:, 3] = np.maximum(out[:, 3], out[:, 1])
    return torch.from_numpy(out.astype(np.float32))


def box_mask(edges: np.ndarray | Sequence[Sequence[float]], frame: tuple[int, int],
             size: tuple[int, int]) -> torch.Tensor:
    """Pixels of a `size` picture whose centre lies inside any of the boxes. With `frame == size` and
    integer edges this is exact slicing.

    Args:
        edges: `(N, 4)` continuous edges `(e0x, e0y, e1x, e1y)` in the frame.
        frame: `(H, W)` of the frame, in pixels.
        size: `(H0, W0)` of the picture.

    Returns:
        `(H0, W0)` bool mask.
    """
    box = np.asarray(edges, dtype=np.float64).reshape(-1, 4)
    h0, w0 = size
    ys = (np.arange(h0) + 0.5) * (frame[0] / h0)
    xs = (np.arange(w0) + 0.5) * (frame[1] / w0)
    rows = (ys[None, :] >= box[:, 1:2]) & (ys[None, :] < box[:, 3:4])  # (N, H0)
    cols = (xs[None, :] >= box[:, 0:1]) & (xs[None, :] < box[:, 2:3])  # (N, W0)
    inside = np.einsum("nh,nw->hw", rows.astype(np.int32), cols.astype(np.int32)) > 0
    return torch.from_numpy(inside)


def class_tables(
    objects: Iterable[tuple[int, Sequence[float]]], frame: tuple[int, int], original: tuple[int, int], size: int
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """`boxes` and box-union `masks` per class from `(class, edges)` pairs in a `frame` of pixels.

    Args:
        objects: `(class, edges)` pairs, edges `(e0x, e0y, e1x, e1y)` in the frame.
        frame: `(H, W)` of the frame, in pixels.
        original: `(H0, W0)` of the picture (the masks' size).
        size: S, the input's side (the boxes' frame).

    Returns:
        `(boxes, masks)`: class -> `(N, 4)` float32 input boxes, and class -> `(H0, W0)` bool mask, by
            class.
    """
    grouped: dict[int, list[Sequence[float]]] = {}
    for cls, edges in objects:
        grouped.setdefault(int(cls), []).append(edges)
    boxes = {cls: input_boxes(e, frame, size) for cls, e in sorted(grouped.items())}
    masks = {cls: box_mask(e, frame, original) for cls, e in sorted(grouped.items())}
    return boxes, masks


# --------------------------------------------------------------------------- EBP "difficult" flags
def read_difficult_flags(path: str | Path, member: str, num_classes: int) -> dict[str, np.ndarray]:
    """TorchRay's EBP flag file (`member`, e.g. pointing_game_ebp_coco_difficult.txt), given as the text
    file itself or as the torchray sdist (.tar.gz / .tgz / .tar) that contains it: one line per image,
    tab-separated, the image name then one 0/1 flag per class.

    Args:
        path: the text file, or the sdist.
        member: the flag file's name inside the sdist.
        num_classes: the number of flags per line.

    Returns:
        image name -> `(num_classes,)` bool flags.

    Raises:
        JitterCamError: the file is missing, unreadable, lacks `member`, has a malformed line, or holds
            no flags.
    """
    import tarfile

    path = Path(path).expanduser()
    if not path.is_file():
        raise JitterCamError(f"no such difficult-flags file: {path}")
    try:
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as archive:
                names = [m for m in archive.getmembers() if m.isfile() and m.name.endswith("/" + member)]
                if not names:
                    raise JitterCamError(f"{path} does not contain {member}")
                handle = archive.extractfile(names[0])
                if handle is None:  # cannot happen: `names` holds regular files only
                    raise JitterCamError(f"{path} does not contain {member}")
                text = handle.read().decode("utf-8")
        else:
            text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, tarfile.TarError) as exc:
        raise JitterCamError(f"cannot read difficult flags from {path}: {exc}") from None
    flags: dict[str, np.ndarray] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != num_classes + 1 or any(value not in ("0", "1") for value in fields[1:]):
            raise JitterCamError(
                f"{path} ({member}), line {number}: expected a name and {num_classes} 0/1 flags, "
                f"got {len(fields) - 1} fields"
            )
        flags[fields[0]] = np.array([value == "1" for value in fields[1:]])
    if not flags:
        raise JitterCamError(f"{path} has no difficult flags")
    return flags


def difficult_pairs(flags: dict[str, np.ndarray], name: str, classes: Iterable[int]) -> dict[int, bool]:
    """Whether each (image, class) pair is in TorchRay's difficult run: every pair except those of a
    LISTED image whose flag is 0 (`PointingGameBenchmark.evaluate`: an unlisted image is evaluated).

    Args:
        flags: `read_difficult_flags`'s table.
        name: the image's name in it.
        classes: the classes of the image's pairs.

    Returns:
        class -> whether the pair is in the difficult run.
    """
    row = flags.get(name)
    return {int(c): True if row is None else bool(row[c]) for c in classes}
