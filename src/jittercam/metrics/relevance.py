"""Relevance mass accuracy and relevance rank accuracy (Arras, Osman & Samek, "CLEVR-XAI: A benchmark
dataset for the ground truth evaluation of neural network explanations", Information Fusion 81, 2022).

Both compare a map with a ground-truth mask `GT` (the union of a class's boxes, `boxes_to_mask`, a
segmentation, or the exact evidence of the ground-truth benchmark):

- relevance mass accuracy = R_within / R_total, the share of the map's relevance inside `GT`;
- relevance rank accuracy = |P_top-K ∩ GT| / |GT|, with K = |GT| and P_top-K the K most relevant pixels.

Conventions as `localisation`: maps are raw `(B, h, w)` of any size, resized (bilinear, align_corners=False,
`jittercam.maps.resize`) to the mask's size; masks are `(B, H, W)`. Reference code checked: the authors'
evaluation (Leila Arras's gist linked from ahmedmagdiosman/clevr-xai, `evaluate_single` and `pool_heatmap`)
and Quantus 0.6 (`quantus.metrics.localisation.RelevanceMassAccuracy.evaluate_batch`,
`RelevanceRankAccuracy.evaluate_batch`). Where they differ:

- which relevance counts (`relevance=`): the authors pool the relevance into a NON-NEGATIVE heatmap
  before both metrics; for a single-channel map their "sum,pos" pooling clips negatives to 0, which is
  the default here ('positive'; the same mass as `energy_in_mask`). Quantus by default takes the signed
  values as they are ('signed'; its `abs=False`), and the absolute values with `abs=True` ('abs', the
  authors' "sum,abs"). Quantus's default max-normalisation divides by a positive number and changes
  neither metric.
- ties in the rank (`ties=`): both references take the top K of `numpy.argsort`, whose order among
  equal values is not specified (it depends on the array's size and numpy's sorting kernel). A CAM has
  many equal values (zeros where its ReLU cut), so the default here is the expected value over a
  uniformly random order among the pixels tied at the K-th value ('average': every tied pixel counts
  (K − above) / tied); 'first' breaks ties in row-major order (a stable sort, what numpy's argsort gives on
  small arrays). Without a tie at the K-th value every order gives the same number.
- an empty mask gives NaN (Quantus's convention; the authors' code divides 0 by 0 too): the item is
  missing and the set-level means leave it out. A map whose total relevance is 0 (an all-zero map) has a
  mass accuracy of 0, as `energy_in_mask` (Quantus: NaN); its rank accuracy with 'average' ties is
  |GT| / (H·W), chance.
- resolution: Quantus requires maps at the input's resolution; here a raw map of any size is resized
  to the mask's size first, as every localisation metric of the package. At equal sizes the two agree.
"""
from __future__ import annotations

import torch

from ..errors import JitterCamError
from ..maps import resize
from ._common import check_maps
from .localisation import _check_masks, energy_in_mask

__all__ = ["RELEVANCE", "TIES", "relevance_mass", "relevance_rank"]

#: Which relevance counts: negatives clipped to 0 (the authors'), signed (Quantus's default), absolute.
RELEVANCE: tuple[str, ...] = ("positive", "signed", "abs")
#: How the rank accuracy breaks ties at the K-th value: the expectation over random orders, or row-major.
TIES: tuple[str, ...] = ("average", "first")


def _prepared(maps: torch.Tensor, masks: torch.Tensor, relevance: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The maps resized to the masks' size with `relevance` applied, and the bool masks, on the maps' device."""
    maps = check_maps(maps)
    masks = _check_masks(masks, maps.shape[0]).to(maps.device)
    if relevance not in RELEVANCE:
        raise JitterCamError(f"relevance must be one of {', '.join(RELEVANCE)}, got {relevance!r}",
                             option="relevance")
    resized = resize(maps, tuple(masks.shape[-2:]))
    if relevance == "positive":
        resized = resized.clamp_min(0)
    elif relevance == "abs":
        resized = resized.abs()
    return resized, masks


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor, *, relevance: str = "positive") -> torch.Tensor:
    """`(B,)` relevance mass accuracy (Arras et al. 2022): the map's relevance inside the mask over its total.

    With `relevance='positive'` (default, the authors' non-negative heatmap) it is `energy_in_mask`, in
    [0, 1]; 'signed' (Quantus's default) can leave [0, 1] when the map has negative values. See the module
    for the conventions and how they differ from Quantus's.

    Args:
        maps: raw `(B, h, w)` maps, resized to the masks' size.
        masks: `(B, H, W)` ground-truth regions (`boxes_to_mask` for boxes).
        relevance: 'positive' (negatives clipped to 0), 'signed' or 'abs'.

    Returns:
        `(B,)` in the maps' floating dtype, on their device; 0 where the map's total relevance is 0, NaN
            where the mask is empty.

    Raises:
        JitterCamError: `maps` or `masks` is not a valid batch of one per map; an unknown `relevance`.
    """
    resized, masks = _prepared(maps, masks, relevance)
    if relevance == "signed":
        total = resized.flatten(1).sum(dim=1)
        inside = (resized * masks).flatten(1).sum(dim=1)
        mass = torch.where(total != 0, inside / torch.where(total != 0, total, 1), torch.zeros_like(total))
    else:  # non-negative already: the share of the energy
        mass = energy_in_mask(resized, masks)
    empty = ~masks.flatten(1).any(dim=1)
    return mass.masked_fill(empty, float("nan"))


def relevance_rank(maps: torch.Tensor, masks: torch.Tensor, *, relevance: str = "positive",
                   ties: str = "average") -> torch.Tensor:
    """`(B,)` relevance rank accuracy (Arras et al. 2022): of the K = |mask| most relevant pixels, the share
    inside the mask.

    `ties='average'` (default) counts the pixels tied at the K-th value by their expected share under a
    random order among them; 'first' takes them in row-major order. See the module for the conventions and
    how they differ from Quantus's.

    Args:
        maps: raw `(B, h, w)` maps, resized to the masks' size.
        masks: `(B, H, W)` ground-truth regions (`boxes_to_mask` for boxes).
        relevance: 'positive' (negatives clipped to 0, so that they tie with 0), 'signed' or 'abs'.
        ties: 'average' or 'first'.

    Returns:
        `(B,)` in [0, 1], in the maps' floating dtype, on their device; NaN where the mask is empty.

    Raises:
        JitterCamError: `maps` or `masks` is not a valid batch of one per map; an unknown `relevance` or
            `ties`.
    """
    if ties not in TIES:
        raise JitterCamError(f"ties must be one of {', '.join(TIES)}, got {ties!r}", option="ties")
    resized, masks = _prepared(maps, masks, relevance)
    values, inside = resized.flatten(1), masks.flatten(1)
    k = inside.sum(dim=1)
    if ties == "first":
        order = torch.argsort(values, dim=1, descending=True, stable=True)
        position = torch.empty_like(order).scatter_(
            1, order, torch.arange(values.shape[1], device=values.device).expand_as(order))
        hits = ((position < k.unsqueeze(1)) & inside).sum(dim=1).to(resized.dtype)
    else:
        kth = values.sort(dim=1, descending=True).values.gather(1, (k - 1).clamp_min(0).unsqueeze(1))
        above, tied = values > kth, values == kth
        count_above = above.sum(dim=1)
        tied_inside, tied_all = (tied & inside).sum(dim=1), tied.sum(dim=1)  # tied_all >= 1: the K-th itself
        dtype = resized.dtype
        hits = ((above & inside).sum(dim=1).to(dtype)
                + (k - count_above).to(dtype) * tied_inside.to(dtype) / tied_all.to(dtype))
    rank = hits / k.clamp_min(1).to(resized.dtype)
    return rank.masked_fill(k == 0, float("nan"))
