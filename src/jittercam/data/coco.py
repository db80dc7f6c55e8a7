"""COCO 2014 val for the pointing game, as TorchRay evaluates it (`torchray/benchmark/datasets.py`).

* Annotations: `instances_val2014.json` through `pycocotools` (`annotations=FILE`, or
  `ROOT/annotations/instances_val2014.json`), read once per dataset object. Pictures are looked up in
  `ROOT/val2014`, `ROOT/images/val2014`, `ROOT` (the first that holds the first picture).
* Items: the images with at least one annotation (TorchRay evaluates no others), in image-id order
  (torchvision's `CocoDetection` order); the key is the file stem, `COCO_val2014_000000000042`.
* Classes: 0..79 in category-id order (TorchRay's `_COCO_CLASS_TO_INDEX`); names from the file.
* `masks[c]`: the union of `annToMask` over every instance of class c, crowd included (`coco_as_mask`),
  at the annotated size. `boxes[c]`: each instance's `bbox` `[x, y, w, h]` (continuous edges
  `[x, x + w)`), crowd included, scaled to the input (`base.input_boxes`).
* `difficult` (`difficult=PATH`: the EBP flag file `pointing_game_ebp_coco_difficult.txt` or the torchray
  sdist holding it): a pair is in the difficult run unless its image is listed with flag 0
  (`base.difficult_pairs`). Without flags the dataset has no "difficult".
* A picture whose decoded size differs from the annotated one is skipped (the masks would not fit).
"""
from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..card import ModelCard
from ..errors import JitterCamError
from .base import (
    Sample,
    difficult_pairs,
    input_boxes,
    model_input,
    read_difficult_flags,
    read_picture,
)
from .registry import register_dataset

ANNOTATIONS = "instances_val2014.json"
FLAGS = "pointing_game_ebp_coco_difficult.txt"
VAL2014_CLASSES = 80


def find_coco_annotations(root: Path, annotations: str | Path | None) -> Path | None:
    """The annotation file: `annotations` when given (it must exist), else the standard one under root."""
    if annotations is not None:
        path = Path(annotations).expanduser()
        if not path.is_file():
            raise JitterCamError(f"no such COCO annotation file: {annotations}")
        return path
    path = root / "annotations" / ANNOTATIONS
    return path if path.is_file() else None


class CocoDataset:
    """COCO 2014 val (or any COCO instances file) with class masks; see the module."""

    name = "coco-val2014"

    def __init__(self, root: str | Path, annotations: str | Path, *, difficult: str | Path | None = None) -> None:
        from pycocotools.coco import COCO

        self.root, self.annotations = Path(root), Path(annotations)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
                self.coco = COCO(str(self.annotations))
        except Exception as exc:  # noqa: BLE001 - json, key and assertion errors alike
            raise JitterCamError(f"cannot read COCO annotations {self.annotations}: {exc}") from None
        self._cat_index = {cat_id: index for index, cat_id in enumerate(sorted(self.coco.cats))}
        self.categories = tuple(self.coco.cats[c]["name"] for c in sorted(self.coco.cats))
        self.num_classes = len(self.categories)
        self._ids = {Path(self.coco.imgs[i]["file_name"]).stem: i
                     for i in sorted(self.coco.imgs) if self.coco.imgToAnns.get(i)}
        if not self._ids:
            raise JitterCamError(f"no annotated images in {self.annotations}")
        self.images = self._find_images()
        self._difficult_source = str(difficult) if difficult else None
        self._flags = read_difficult_flags(difficult, FLAGS, self.num_classes) if difficult else None
        self.has = frozenset({"labels", "boxes", "masks"} | ({"difficult"} if self._flags else set()))

    def _find_images(self) -> Path:
        first = self.coco.imgs[next(iter(self._ids.values()))]["file_name"]
        candidates = [self.root / "val2014", self.root / "images" / "val2014", self.root,
                      self.annotations.parent.parent / "val2014"]
        for folder in candidates:
            if (folder / first).is_file():
                return folder
        raise JitterCamError(f"COCO pictures not found: no {first} in {', '.join(map(str, candidates))}")

    def keys(self) -> list[str]:
        return list(self._ids)

    def config(self) -> dict[str, Any]:
        return {"dataset": self.name, "annotations": str(self.annotations.resolve()),
                "images": str(self.images.resolve()), "difficult": self._difficult_source,
                "items": len(self._ids)}

    def load(self, key: str, card: ModelCard) -> Sample:
        if key not in self._ids:
            raise JitterCamError(f"no item {key!r} in {self.annotations}")
        info = self.coco.imgs[self._ids[key]]
        picture = read_picture(self.images / info["file_name"])
        if isinstance(picture, str):
            return Sample.skipped(key, picture)
        original = (int(info["height"]), int(info["width"]))
        if (picture.height, picture.width) != original:
            return Sample.skipped(key, f"{info['file_name']} is {picture.width}x{picture.height} pixels but "
                                       f"annotated as {original[1]}x{original[0]}")
        try:
            boxes, masks = self._tables(info["id"], original, card.input_size)
        except Exception as exc:  # noqa: BLE001 - a malformed annotation spoils this item only
            return Sample.skipped(key, f"bad annotation for {key}: {exc}")
        labels = tuple(sorted(masks))
        difficult = difficult_pairs(self._flags, key, labels) if self._flags is not None else {}
        return Sample(key=key, image=model_input(picture, card), labels=labels, boxes=boxes, masks=masks,
                      difficult=difficult, original_size=original)

    def _tables(self, image_id: int, original: tuple[int, int], size: int
                ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        edges: dict[int, list[list[float]]] = {}
        union: dict[int, np.ndarray] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools' decode under numpy 2
            for ann in self.coco.imgToAnns[image_id]:
                cls = self._cat_index[ann["category_id"]]
                x, y, w, h = (float(v) for v in ann["bbox"])
                edges.setdefault(cls, []).append([x, y, x + w, y + h])
                mask = self.coco.annToMask(ann).astype(bool)
                union[cls] = union[cls] | mask if cls in union else mask
        boxes = {c: input_boxes(edges[c], original, size) for c in sorted(edges)}
        masks = {c: torch.from_numpy(union[c]) for c in sorted(union)}
        return boxes, masks


def _recognises(root: Path, options: Mapping[str, Any]) -> bool:
    return find_coco_annotations(root, options.get("annotations")) is not None


@register_dataset(CocoDataset.name, title="COCO", recognises=_recognises, num_classes=VAL2014_CLASSES,
                  folder=f"a COCO root with annotations/{ANNOTATIONS} (or that file named by the annotations option)",
                  option_help={"annotations": "instances_val2014.json",
                               "difficult": "TorchRay's EBP difficult-pairs file (.txt or the sdist .tar.gz)"})
def _open(root: Path, seed: int, model: nn.Module | None, *, annotations: str | Path | None = None,
          difficult: str | Path | None = None) -> CocoDataset:
    found = find_coco_annotations(root, annotations)
    if found is None:  # the registry opens a folder that `_recognises` accepted
        raise JitterCamError(f"no {ANNOTATIONS} in {root / 'annotations'}: name the file with annotations",
                             option="annotations")
    return CocoDataset(root, found, difficult=difficult)
