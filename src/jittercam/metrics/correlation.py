"""Rank correlation between two explanations (Jitter-CAM paper §4.2)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import JitterCamError
from ..maps import resize
from ._common import check_maps


def rank_correlation(
    maps_a: torch.Tensor, maps_b: torch.Tensor, size: int | Sequence[int] | None = None
) -> torch.Tensor:
    """Spearman's rho between paired maps over their pixels (§4.2 reports its mean).

    Both maps are resized (bilinear) to `size`, so that a 7×7 Grad-CAM can be compared with a 7×7
    Jitter-CAM as in §4.2, or maps of different sizes at a common one. Ties get average ranks
    (scipy.stats.rankdata), which makes this equal to scipy.stats.spearmanr row by row; a constant map
    has no ranking and gives NaN.

    Args:
        maps_a: raw `(B, h, w)` maps.
        maps_b: raw `(B, h', w')` maps, one per map of `maps_a`.
        size: `(H, W)` both are compared at, or an int for a square; None (default): the size of `maps_a`.

    Returns:
        `(B,)` rho on `maps_a`'s device, in its dtype.

    Raises:
        JitterCamError: `maps_a` or `maps_b` is not a valid batch (one finite map per image of `maps_a`),
            or `size` has fewer than two pixels.
    """
    maps_a = check_maps(maps_a, name="maps_a")
    maps_b = check_maps(maps_b, maps_a.shape[0], name="maps_b")
    if size is None:
        size = tuple(maps_a.shape[-2:])
    a = resize(maps_a, size).flatten(1).double().cpu().numpy()
    b = resize(maps_b.to(maps_a.device), size).flatten(1).double().cpu().numpy()
    if a.shape[1] < 2:
        raise JitterCamError("rank correlation needs maps of at least two pixels")
    from scipy.stats import rankdata  # here: scipy.stats takes over a second to import, every CLI start paid it

    ra = rankdata(a, axis=1)
    rb = rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(1) / np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    return torch.from_numpy(rho).to(device=maps_a.device, dtype=maps_a.dtype)
