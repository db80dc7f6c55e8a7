"""Localisation: weak localisation (§4.5, Table 3), the pointing game (§4.5.1, Table 4), box energy.

Conventions: maps are raw `(B, h, w)` and are resized (bilinear, align_corners=False) to the image
size where the ground truth lives. Boxes are `(x0, y0, x1, y1)` pixel indices, 0-based and inclusive
(a box covers x1 − x0 + 1 columns; VOC's 1-based boxes need − 1), given per image as a `(K, 4)`
tensor or list, or for the whole batch as a `(B, K, 4)` tensor. Set-level figures are percentages.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage

from ..errors import JitterCamError
from ..maps import minmax as _minmax  # `minmax` is also energy_in_mask's keyword
from ..maps import resize
from ._common import check_maps

#: The paper's threshold grid for all three schemes: 0, 0.05, ..., 0.95.
THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20))
SCHEMES: tuple[str, ...] = ("val", "mean", "energy")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

Boxes = torch.Tensor | Sequence[torch.Tensor | Sequence[Sequence[float]]]


class Localisation(NamedTuple):
    """One thresholding scheme's per-image results, for every threshold `a`."""

    hit: torch.Tensor  #: (B, A) bool: best IoU with a ground-truth box >= the IoU threshold
    iou: torch.Tensor  #: (B, A) best IoU with any ground-truth box
    box: torch.Tensor  #: (B, A, 4) predicted box (x0, y0, x1, y1), inclusive


class LocalisationError(NamedTuple):
    """Table 3's figure over a set (`localisation_error`)."""

    error: float  #: % of images not localised at the best threshold
    # a field named like tuple.index shadows it, as NamedTuple allows; mypy flags the override
    index: int  # type: ignore[assignment]  #: index of the best threshold (the first one on ties)
    errors: torch.Tensor  #: (A,) % error at every threshold


class Pointing(NamedTuple):
    """Per-image pointing-game results (`pointing_game`)."""

    hit: torch.Tensor  #: (B,) bool
    point: torch.Tensor  #: (B, 2) the maximum as (x, y) = (column, row)


class PointingAccuracy(NamedTuple):
    """Set-level pointing-game accuracies (`pointing_accuracy`)."""

    overall: float  #: % hits / (hits + misses) over all pairs
    class_mean: float  #: % mean of the per-class accuracies (TorchRay's reported figure)
    per_class: torch.Tensor  #: (C,) % per class
    seen_mean: float  #: % mean over the classes that had a trial (the benchmark's figure)
    seen: int  #: how many classes had a trial


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise JitterCamError(f"size must be positive, got {size!r}")
    return int(h), int(w)


def _padded_boxes(boxes: Boxes, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`(B, K, 4)` float boxes and a `(B, K)` validity mask from per-image box lists."""
    if isinstance(boxes, torch.Tensor) and boxes.dim() == 3:
        per_image = list(boxes)
    else:
        per_image = [torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4) if len(b) else torch.zeros(0, 4)
                     for b in boxes]
    if len(per_image) != batch:
        raise JitterCamError(f"got boxes for {len(per_image)} images, expected {batch}")
    k = max(b.shape[0] for b in per_image)
    if k == 0 or any(b.shape[0] == 0 for b in per_image):
        raise JitterCamError("every image needs at least one ground-truth box")
    out = torch.zeros(batch, k, 4, dtype=torch.float64, device=device)
    valid = torch.zeros(batch, k, dtype=torch.bool, device=device)
    for i, b in enumerate(per_image):
        out[i, : b.shape[0]] = b.to(device, torch.float64)
        valid[i, : b.shape[0]] = True
    if ((out[..., 2] < out[..., 0]) | (out[..., 3] < out[..., 1]))[valid].any():
        raise JitterCamError("boxes must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
    return out, valid


def boxes_to_mask(boxes: Boxes, size: int | Sequence[int]) -> torch.Tensor:
    """The union of each image's boxes (inclusive pixel indices), clipped to the image.

    Args:
        boxes: per image a `(K, 4)` tensor or list of `(x0, y0, x1, y1)`, or a `(B, K, 4)` tensor.
        size: `(H, W)` of the image, or an int for a square.

    Returns:
        `(B, H, W)` bool masks, on the boxes' device (the CPU for lists).

    Raises:
        JitterCamError: an image without a box, a box with x1 < x0 or y1 < y0, or a size below 1.
    """
    h, w = _size(size)
    device = boxes.device if isinstance(boxes, torch.Tensor) else torch.device("cpu")
    gt, valid = _padded_boxes(boxes, len(boxes), device)
    ys = torch.arange(h, device=device, dtype=torch.float64).view(1, 1, h, 1)
    xs = torch.arange(w, device=device, dtype=torch.float64).view(1, 1, 1, w)
    x0, y0, x1, y1 = (gt[..., i].view(*gt.shape[:2], 1, 1) for i in range(4))
    inside = (ys >= y0) & (ys <= y1) & (xs >= x0) & (xs <= x1) & valid.view(*valid.shape, 1, 1)
    return inside.any(dim=1)


def _kept(maps: torch.Tensor, scheme: str, alpha: float, rank: torch.Tensor | None,
          cumulative: torch.Tensor | None) -> torch.Tensor:
    """Fong & Vedaldi's thresholds on image-size maps `(B, H, W)`; a kept pixel must also be > 0."""
    if scheme == "val":
        keep = _minmax(maps) >= alpha
    elif scheme == "mean":
        keep = maps >= alpha * maps.mean(dim=(1, 2), keepdim=True)
    else:
        # highest pixels until their cumulative energy reaches alpha·total, the crossing pixel excluded
        assert rank is not None and cumulative is not None  # computed by the caller for the energy scheme
        count = torch.searchsorted(cumulative, alpha * cumulative[:, -1:], side="left")
        keep = (rank < count).view_as(maps)
    return keep & (maps > 0)


def _box_all(keep: torch.Tensor) -> torch.Tensor:
    """Tight `(B, 4)` boxes around all kept pixels; the full image where none is kept."""
    _, H, W = keep.shape
    rows, cols = keep.any(dim=2).to(torch.uint8), keep.any(dim=1).to(torch.uint8)
    y0, y1 = rows.argmax(dim=1), H - 1 - rows.flip(1).argmax(dim=1)
    x0, x1 = cols.argmax(dim=1), W - 1 - cols.flip(1).argmax(dim=1)
    box = torch.stack([x0, y0, x1, y1], dim=1)
    full = torch.tensor([0, 0, W - 1, H - 1], device=keep.device)
    return torch.where(rows.any(dim=1, keepdim=True).bool(), box, full)


def _box_largest(keep: torch.Tensor) -> torch.Tensor:
    """Boxes around the largest 8-connected component (first in raster order on ties)."""
    B, H, W = keep.shape
    boxes = torch.tensor([[0, 0, W - 1, H - 1]] * B)
    for i, mask in enumerate(keep.cpu().numpy()):
        labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        if count:
            largest = int(np.bincount(labels.ravel())[1:].argmax())
            rows, cols = ndimage.find_objects(labels)[largest]
            boxes[i] = torch.tensor([cols.start, rows.start, cols.stop - 1, rows.stop - 1])
    return boxes.to(keep.device)


def _iou(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Best IoU `(B,)` of predicted `(B, 4)` boxes with `(B, K, 4)` ground truth (ILSVRC: +1 sizes)."""
    p = pred.to(torch.float64).unsqueeze(1)
    iw = (torch.minimum(p[..., 2], gt[..., 2]) - torch.maximum(p[..., 0], gt[..., 0]) + 1).clamp_min(0)
    ih = (torch.minimum(p[..., 3], gt[..., 3]) - torch.maximum(p[..., 1], gt[..., 1]) + 1).clamp_min(0)
    inter = iw * ih
    area_p = (p[..., 2] - p[..., 0] + 1) * (p[..., 3] - p[..., 1] + 1)
    area_g = (gt[..., 2] - gt[..., 0] + 1) * (gt[..., 3] - gt[..., 1] + 1)
    iou = inter / (area_p + area_g - inter)
    return iou.masked_fill(~valid, -1.0).max(dim=1).values


def weak_localisation(
    maps: torch.Tensor,
    boxes: Boxes,
    size: int | Sequence[int],
    *,
    schemes: Sequence[str] = SCHEMES,
    thresholds: Sequence[float] = THRESHOLDS,
    box: str = "all",
    iou_threshold: float = 0.5,
) -> dict[str, Localisation]:
    """Weak localisation with Fong & Vedaldi's thresholding schemes, per image and threshold.

    Follows ruthcfong/perturb_explanations `heatmaps.py` (`getbb_from_heatmap`), whose scheme names
    (Val, Mean, Eng) the paper uses, on the map resized to `size` (the image the boxes belong to):

    - 'val': keep pixels whose min–max scaled value is >= a;
    - 'mean': keep pixels >= a · mean(map);
    - 'energy': keep the highest pixels, in order, while their cumulative sum of the map (negatives
      clipped to 0) stays below a · total (the pixel that reaches it is excluded, as theirs);

    and, as their code zeroes the rejected pixels and boxes the non-zero ones, a kept pixel must also
    be > 0. `box='all'` (default, Fong & Vedaldi) boxes all kept pixels; `box='largest'` boxes the
    largest 8-connected component (scipy.ndimage; the issue's suggestion, close to wsolevaluation's
    largest contour). When no pixel is kept the box is the whole image. A hit is IoU >= 0.5 with any
    box of the class (ILSVRC convention, inclusive pixel sizes). Aggregate with `localisation_error`.

    Args:
        maps: raw `(B, h, w)` maps, resized to `size`.
        boxes: the ground-truth boxes of the evaluated class only, per image a `(K, 4)` tensor or list,
            or a `(B, K, 4)` tensor (module conventions).
        size: `(H, W)` of the image the boxes belong to, or an int for a square.
        schemes: which of 'val', 'mean' and 'energy' to run (all by default).
        thresholds: the thresholds a (`THRESHOLDS`, 0 to 0.95 by 0.05, by default).
        box: 'all' (default) or 'largest', as above.
        iou_threshold: the IoU a hit needs (0.5).

    Returns:
        `{scheme: Localisation}`: per scheme, `(B, A)` hits and IoUs and `(B, A, 4)` predicted boxes.

    Raises:
        JitterCamError: `maps` is not a valid batch; an unknown or empty `schemes`; an unknown `box`;
            empty `thresholds`; boxes that are not one non-empty, well-ordered set per image.
    """
    maps = check_maps(maps)
    h, w = _size(size)
    unknown = set(schemes) - set(SCHEMES)
    if unknown or not schemes:
        raise JitterCamError(f"schemes must be among {SCHEMES}, got {list(schemes)}")
    if box not in ("all", "largest"):
        raise JitterCamError(f"box must be 'all' or 'largest', got {box!r}")
    if len(thresholds) == 0:
        raise JitterCamError("thresholds is empty")
    gt, valid = _padded_boxes(boxes, maps.shape[0], maps.device)
    resized = resize(maps, (h, w))
    rank = cumulative = None
    if "energy" in schemes:
        energy = resized.clamp_min(0).flatten(1).to(torch.float64)
        order = torch.argsort(energy, dim=1, descending=True, stable=True)
        cumulative = energy.gather(1, order).cumsum(dim=1)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=maps.device).expand_as(order))
    boxer = _box_all if box == "all" else _box_largest
    results = {}
    for scheme in schemes:
        pred = torch.stack([boxer(_kept(resized, scheme, float(a), rank, cumulative)) for a in thresholds], dim=1)
        iou = torch.stack([_iou(pred[:, a], gt, valid) for a in range(pred.shape[1])], dim=1)
        results[scheme] = Localisation(iou >= iou_threshold, iou.to(maps.dtype), pred)
    return results


def localisation_error(hits: torch.Tensor | Localisation) -> LocalisationError:
    """Table 3's figure: % error over the set at the single best threshold (the first best threshold on
    a tie). Rows with a NaN (a missing item) are left out.

    Args:
        hits: `(N, A)` hits (rows: images, cols: thresholds), or one scheme's `Localisation`.

    Returns:
        The error at the best threshold, its index, and the `(A,)` errors at every threshold.

    Raises:
        JitterCamError: `hits` is not 2-D, or no row is left.
    """
    hits = hits.hit if isinstance(hits, Localisation) else torch.as_tensor(hits)
    if hits.dim() != 2:
        raise JitterCamError(f"hits must be (N images, A thresholds), got {tuple(hits.shape)}")
    hits = hits.to(torch.float64)
    hits = hits[~torch.isnan(hits).any(dim=1)]
    if hits.shape[0] == 0:
        raise JitterCamError("no items to aggregate")
    errors = 100 * (1 - hits.mean(dim=0))
    best = int(errors.argmin())
    return LocalisationError(float(errors[best]), best, errors)


def _check_masks(masks: torch.Tensor, batch: int) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        raise JitterCamError("masks must be a (B, H, W) tensor (see boxes_to_mask)")
    if masks.shape[0] != batch:
        raise JitterCamError(f"got {masks.shape[0]} masks for {batch} maps")
    return masks.bool()


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: float = 15) -> Pointing:
    """Pointing game as TorchRay (`PointingGame.evaluate`), for one class per image.

    The map is resized to the mask's size; the point is its **first** maximum in row-major order
    (torch.argmax on the flattened map, as TorchRay's `_saliency_to_point`). A hit when a ground-truth
    pixel lies strictly within `tolerance` pixels: du² + dv² < tolerance² (TorchRay's code; its docs
    say <=). Pairs without ground truth are not evaluated: leave them out.

    Args:
        maps: raw `(B, h, w)` maps, resized to the masks' size.
        masks: `(B, H, W)` the class's region (the union of its boxes: `boxes_to_mask`, or COCO's
            instance masks).
        tolerance: in pixels (15, TorchRay's).

    Returns:
        `(B,)` bool hits and the `(B, 2)` points, as `Pointing`.

    Raises:
        JitterCamError: `maps` or `masks` is not a valid batch of one per image, a mask is empty, or
            `tolerance` is negative.
    """
    maps = check_maps(maps)
    masks = _check_masks(masks, maps.shape[0]).to(maps.device)
    if not masks.flatten(1).any(dim=1).all():
        raise JitterCamError("a mask is empty: pairs without ground truth are skipped by the pointing game")
    if tolerance < 0:
        raise JitterCamError(f"tolerance must be >= 0, got {tolerance}")
    _, H, W = masks.shape
    index = resize(maps, (H, W)).flatten(1).argmax(dim=1)
    y, x = index // W, index % W
    dy2 = (torch.arange(H, device=maps.device) - y.unsqueeze(1)) ** 2
    dx2 = (torch.arange(W, device=maps.device) - x.unsqueeze(1)) ** 2
    accept = dy2.unsqueeze(2) + dx2.unsqueeze(1) < tolerance**2
    return Pointing((accept & masks).flatten(1).any(dim=1), torch.stack([x, y], dim=1))


def pointing_accuracy(
    hits: torch.Tensor, classes: torch.Tensor | Sequence[int] | None = None, num_classes: int | None = None
) -> PointingAccuracy:
    """Overall % hits/(hits+misses) and TorchRay's mean over classes of hits/max(hits+misses, 1).

    With `num_classes` (20 for VOC, 80 for COCO) a class with no trials counts 0 in `class_mean`, as
    TorchRay; without it the mean is over the classes that occur (absent classes are NaN in `per_class`).
    `seen_mean` is always the mean over the classes with a trial: on a whole COCO or VOC set every class
    has trials and the two agree; on a subset (`--limit`, 8 of ImageNet's 1000 classes) it stays a mean of
    accuracies instead of being pulled towards 0 by classes never asked about. The benchmark reports it.
    Trials whose hit is NaN (missing) are left out.

    Args:
        hits: one hit per trial (bool, or float with NaN for a missing one).
        classes: one non-negative class index per trial; None treats all trials as one class.
        num_classes: the number of classes (20 for VOC, 80 for COCO); None: the classes that occur.

    Returns:
        The percentages as `PointingAccuracy`.

    Raises:
        JitterCamError: no trial is left; `classes` is not one non-negative index per trial; a class is
            out of range for `num_classes`.
    """
    hits = torch.as_tensor(hits).flatten().cpu()
    kept = ~torch.isnan(hits) if hits.is_floating_point() else torch.ones_like(hits, dtype=torch.bool)
    hits = hits[kept].bool()
    if hits.numel() == 0:
        raise JitterCamError("no pointing-game trials to aggregate")
    overall = 100 * float(hits.double().mean())
    if classes is None:
        return PointingAccuracy(overall, overall, torch.tensor([overall], dtype=torch.float64), overall, 1)
    classes = torch.as_tensor(classes).long().flatten().cpu()
    if classes.shape != kept.shape:
        raise JitterCamError("classes must hold one non-negative class index per trial")
    classes = classes[kept]
    if (classes < 0).any():
        raise JitterCamError("classes must hold one non-negative class index per trial")
    size = int(classes.max()) + 1 if num_classes is None else num_classes
    if size <= int(classes.max()):
        raise JitterCamError(f"class {int(classes.max())} is out of range for num_classes={num_classes}")
    trials = torch.bincount(classes, minlength=size).double()
    wins = torch.bincount(classes, weights=hits.double(), minlength=size)
    per_class = 100 * wins / trials.clamp_min(1)
    seen = trials > 0
    seen_mean = float(per_class[seen].mean())
    if num_classes is None:
        per_class = per_class.masked_fill(~seen, float("nan"))
        return PointingAccuracy(overall, seen_mean, per_class, seen_mean, int(seen.sum()))
    return PointingAccuracy(overall, float(per_class.mean()), per_class, seen_mean, int(seen.sum()))


def energy_in_mask(maps: torch.Tensor, masks: torch.Tensor, *, minmax: bool = False) -> torch.Tensor:
    """`(B,)` fraction of each map's mass inside its ground-truth region (a box-based pointing game).

    The map is resized to the mask's size and negatives are clipped to 0; an all-zero map gives 0.

    Args:
        maps: raw `(B, h, w)` maps.
        masks: `(B, H, W)` ground-truth regions.
        minmax: min–max scale each map first (`jittercam.maps.minmax`), as Score-CAM's energy-based
            pointing game. False by default.

    Returns:
        `(B,)` fractions in [0, 1].

    Raises:
        JitterCamError: `maps` or `masks` is not a valid batch of one per image.
    """
    maps = check_maps(maps)
    masks = _check_masks(masks, maps.shape[0]).to(maps.device)
    m = resize(maps, tuple(masks.shape[-2:]))
    m = _minmax(m) if minmax else m.clamp_min(0)
    total = m.flatten(1).sum(dim=1)
    inside = (m * masks).flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(m.dtype).tiny), torch.zeros_like(total))


def energy_in_boxes(
    maps: torch.Tensor, boxes: Boxes, size: int | Sequence[int], *, minmax: bool = False
) -> torch.Tensor:
    """`energy_in_mask` with the union of each image's boxes at image `size`.

    Args:
        maps: raw `(B, h, w)` maps.
        boxes: per image a `(K, 4)` tensor or list of inclusive `(x0, y0, x1, y1)`, or a `(B, K, 4)` tensor.
        size: `(H, W)` of the image, or an int for a square.
        minmax: as `energy_in_mask` takes it.

    Returns:
        `(B,)` fractions in [0, 1].

    Raises:
        JitterCamError: as `boxes_to_mask` and `energy_in_mask` raise it.
    """
    return energy_in_mask(maps, boxes_to_mask(boxes, size).to(maps.device), minmax=minmax)
