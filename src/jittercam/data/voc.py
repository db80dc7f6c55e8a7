"""PASCAL VOC 2007 test for the pointing game, as TorchRay evaluates it (`torchray/benchmark`).

* Layout: torchvision's `VOCDetection(root, year="2007", image_set="test", download=False)`, i.e.
  `root/VOCdevkit/VOC2007/{ImageSets/Main/test.txt, JPEGImages, Annotations}`; the path given may be
  that root, the VOCdevkit folder, or VOC2007 inside a VOCdevkit folder. Items in test.txt's order;
  the key is the image id (`000001`). XML is parsed by `VOCDetection.parse_voc_xml`.
* Classes: the 20 VOC classes in the standard (alphabetical) order, aeroplane = 0 ... tvmonitor = 19.
* `boxes[c]` / `masks[c]`: every box of class c, "difficult" ones included; VOC boxes are 1-based and
  inclusive, so a box covers the 0-based pixels `xmin - 1 .. xmax` (edges `[xmin - 1, xmax)`), as in
  TorchRay's `voc_as_mask`; the mask is their union at the annotated size.
* A class whose boxes are ALL marked difficult is a label whose pair TorchRay skips:
  `Sample.excluded[c]` says so.
* `difficult` (`difficult=PATH`: `pointing_game_ebp_voc07_difficult.txt` or the torchray sdist): a pair is
  in the difficult run unless its image is listed with flag 0 (`base.difficult_pairs`).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..card import ModelCard
from ..errors import JitterCamError
from .base import (
    Sample,
    class_tables,
    difficult_pairs,
    model_input,
    read_difficult_flags,
    read_picture,
)
from .registry import register_dataset

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
FLAGS = "pointing_game_ebp_voc07_difficult.txt"
_INDEX = {name: index for index, name in enumerate(VOC_CLASSES)}


def find_voc_root(path: Path) -> Path | None:
    """The folder holding VOCdevkit/VOC2007 for `path` (that folder, VOCdevkit, or VOCdevkit/VOC2007)."""
    path = path.resolve()
    if (path / "VOCdevkit" / "VOC2007").is_dir():
        return path
    if path.name == "VOCdevkit" and (path / "VOC2007").is_dir():
        return path.parent
    if path.name == "VOC2007" and path.parent.name == "VOCdevkit":
        return path.parent.parent
    return None


class VocDataset:
    """VOC 2007 test with box masks for the pointing game; see the module."""

    name = "voc07-test"
    num_classes = len(VOC_CLASSES)
    categories = VOC_CLASSES

    def __init__(self, root: str | Path, *, difficult: str | Path | None = None) -> None:
        from torchvision.datasets import VOCDetection

        self.root = Path(root)
        try:
            self.voc = VOCDetection(str(self.root), year="2007", image_set="test", download=False)
        except (RuntimeError, OSError) as exc:
            raise JitterCamError(f"not a VOC 2007 test set: {self.root} ({exc})") from None
        self._items = {Path(image).stem: (Path(image), Path(xml)) for image, xml in
                       zip(self.voc.images, self.voc.annotations)}
        if not self._items:
            raise JitterCamError(f"no images listed in {self.root}/VOCdevkit/VOC2007/ImageSets/Main/test.txt")
        self._difficult_source = str(difficult) if difficult else None
        self._flags = read_difficult_flags(difficult, FLAGS, self.num_classes) if difficult else None
        self.has = frozenset({"labels", "boxes", "masks"} | ({"difficult"} if self._flags else set()))

    def keys(self) -> list[str]:
        return list(self._items)

    def config(self) -> dict[str, Any]:
        return {"dataset": self.name, "root": str(self.root.resolve()), "difficult": self._difficult_source,
                "items": len(self._items)}

    def load(self, key: str, card: ModelCard) -> Sample:
        if key not in self._items:
            raise JitterCamError(f"no item {key!r} in {self.root}")
        image_path, xml_path = self._items[key]
        try:
            annotation = self.voc.parse_voc_xml(ET.parse(xml_path).getroot())["annotation"]
            size = annotation["size"]
            original = (int(size["height"]), int(size["width"]))
            objects = [(obj["name"], obj["bndbox"], obj.get("difficult", "0")) for obj in annotation["object"]]
            parsed = [(_INDEX[name], [float(box["xmin"]) - 1, float(box["ymin"]) - 1,
                                      float(box["xmax"]), float(box["ymax"])], flag.strip() == "1")
                      for name, box, flag in objects]
        except FileNotFoundError:
            return Sample.skipped(key, f"no annotation file {xml_path}")
        except (ET.ParseError, KeyError, TypeError, ValueError, AttributeError) as exc:
            return Sample.skipped(key, f"unreadable annotation {xml_path}: {type(exc).__name__} {exc}")
        if not parsed:
            return Sample.skipped(key, f"no objects in {xml_path}")
        picture = read_picture(image_path)
        if isinstance(picture, str):
            return Sample.skipped(key, picture)
        if (picture.height, picture.width) != original:
            return Sample.skipped(key, f"{image_path.name} is {picture.width}x{picture.height} pixels but "
                                       f"annotated as {original[1]}x{original[0]}")
        boxes, masks = class_tables([(c, e) for c, e, _ in parsed], original, original, card.input_size)
        labels = tuple(sorted(boxes))
        excluded = {c: f"every {VOC_CLASSES[c]} box in {key} is marked difficult (TorchRay skips the pair)"
                    for c in labels if all(d for cls, _, d in parsed if cls == c)}
        difficult = difficult_pairs(self._flags, key, labels) if self._flags is not None else {}
        return Sample(key=key, image=model_input(picture, card), labels=labels, boxes=boxes, masks=masks,
                      difficult=difficult, original_size=original, excluded=excluded)


def _recognises(root: Path, options: Mapping[str, Any]) -> bool:
    return find_voc_root(root) is not None


@register_dataset(VocDataset.name, title="VOC 2007", recognises=_recognises, num_classes=VocDataset.num_classes,
                  folder="a VOCdevkit root with VOC2007",
                  option_help={"difficult": "TorchRay's EBP difficult-pairs file (.txt or the sdist .tar.gz)"})
def _open(root: Path, seed: int, model: nn.Module | None, *, difficult: str | Path | None = None) -> VocDataset:
    found = find_voc_root(root)
    if found is None:  # the registry opens a folder that `_recognises` accepted
        raise JitterCamError(f"not a VOC 2007 test set: {root} (no VOCdevkit/VOC2007 in it)")
    return VocDataset(found, difficult=difficult)
