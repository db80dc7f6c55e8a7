"""Measures against known evidence (issue 14): detection AUC, and a Rayleigh-style two-peak criterion.

Conventions as `localisation`: maps are raw `(B, h, w)` of any size; masks are `(B, H, W)` at image
size; points are `(x, y)` = (column, row) in 0-based image pixel coordinates, pixel `x` centred at `x`.
The share of a map's mass on the evidence is `localisation.energy_in_mask`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..errors import JitterCamError
from ..maps import minmax, resize
from ._common import check_maps
from .localisation import _check_masks, _size

__all__ = ["Profile", "TwoPeaks", "evidence_auc", "profile", "resolves", "resolving_power", "two_peaks"]


class Profile(NamedTuple):
    """A map sampled along the line through two centres (`profile`)."""

    t: torch.Tensor  #: (n,) positions along the segment: 0 at c1, 1 at c2
    values: torch.Tensor  #: (B, n) the min–max scaled map sampled at those positions
    points: torch.Tensor  #: (B, n, 2) the sampled points, (x, y) image pixels


class TwoPeaks(NamedTuple):
    """The two-peak criterion's per-map results (`two_peaks`)."""

    resolved: torch.Tensor  #: (B,) bool
    peaks: torch.Tensor  #: (B, 2) p1, p2 (min–max scaled map)
    valley: torch.Tensor  #: (B,) v, the profile's minimum between the two peaks
    depth: torch.Tensor  #: (B,) 1 − v / min(p1, p2); 0 where min(p1, p2) = 0
    where: torch.Tensor  #: (B, 3) t of p1, p2 and v


def evidence_auc(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """`(B,)` ROC AUC of the map's values as a detector of the mask's pixels.

    The map is resized (bilinear, `jittercam.maps.resize`) to the mask's size; with `n1` pixels inside
    the mask and `n0` outside, AUC = U / (n1·n0), where U = R1 − n1(n1 + 1)/2 is the Mann–Whitney
    statistic and R1 the sum of the mask pixels' ranks among all pixels, ties given their average rank.
    That is the probability that an evidence pixel scores above a background pixel, ties counting
    one half (equal to sklearn's `roc_auc_score`). It is invariant to any increasing rescaling of the
    map, so min–max scaling or not does not matter.

    Args:
        maps: raw `(B, h, w)` maps.
        masks: `(B, H, W)` evidence masks at image size.

    Returns:
        `(B,)` AUCs in the maps' dtype; NaN where the mask is empty or full.

    Raises:
        JitterCamError: `maps` or `masks` is not a valid batch of one per map.
    """
    maps = check_maps(maps)
    masks = _check_masks(masks, maps.shape[0]).to(maps.device)
    values = resize(maps, tuple(masks.shape[-2:])).flatten(1).to(torch.float64)
    ordered, order = values.sort(dim=1)
    positive = masks.flatten(1).gather(1, order)  # in sorted order, as everything below
    n = ordered.shape[1]
    place = torch.arange(n, device=maps.device).expand_as(order)
    starts = torch.ones_like(positive)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(positive)
    ends[:, :-1] = starts[:, 1:]
    # each tie group spans sorted places [first, last]; all its members get the average 1-based rank
    first = torch.where(starts, place, 0).cummax(dim=1).values
    last = torch.where(ends, place, n - 1).flip(1).cummin(dim=1).values.flip(1)
    rank = (first + last).to(torch.float64) / 2 + 1
    n1 = positive.sum(dim=1).to(torch.float64)
    n0 = n - n1
    u = (rank * positive).sum(dim=1) - n1 * (n1 + 1) / 2
    auc = u / (n1 * n0).clamp_min(1)
    return torch.where((n1 > 0) & (n0 > 0), auc, torch.full_like(auc, math.nan)).to(maps.dtype)


def _centres(centres: torch.Tensor | Sequence, batch: int, device: torch.device) -> torch.Tensor:
    c = torch.as_tensor(centres, dtype=torch.float64, device=device)
    if c.shape != (batch, 2, 2):
        raise JitterCamError(f"centres must be ({batch}, 2, 2): two (x, y) points per map, got {tuple(c.shape)}")
    if not torch.isfinite(c).all():
        raise JitterCamError("centres contain NaN or infinite values")
    return c


def profile(
    maps: torch.Tensor,
    centres: torch.Tensor | Sequence,
    size: int | Sequence[int],
    *,
    samples: int = 256,
    extend: float = 0.25,
) -> Profile:
    """The min–max scaled map sampled along the line through two evidence centres.

    The map is min–max scaled over all its values (`jittercam.maps.minmax`, as the library displays it; this
    makes the criterion independent of a map's offset, e.g. RISE's baseline) and read as the bilinear
    surface that `resize(maps, size)` samples at pixel centres (grid_sample, align_corners=False,
    border clamping): at whole pixels the profile equals the resized map, in between it interpolates
    the raw map directly. It is sampled at `samples` evenly spaced points c1 + t·(c2 − c1),
    t ∈ [−extend, 1 + extend], so that a peak lying a little beyond a centre is still seen; the spacing
    is (1 + 2·extend)·|c2 − c1| / (samples − 1) pixels.

    Args:
        maps: raw `(B, h, w)` maps.
        centres: `(B, 2, 2)`: c1, c2 per map as (x, y) pixels of an image of `size`.
        size: `(H, W)` of the image, or an int for a square.
        samples: n, the number of points sampled (256), at least 3.
        extend: how far beyond each centre the line goes, as a fraction of |c2 − c1| (0.25), at least 0.

    Returns:
        The positions t `(n,)`, the values `(B, n)` and the points `(B, n, 2)`, as `Profile`.

    Raises:
        JitterCamError: `maps` is not a valid batch; `centres` is not `(B, 2, 2)` of finite values;
            `samples` below 3, `extend` below 0, or a size below 1.
    """
    maps = check_maps(maps)
    h, w = _size(size)
    if samples < 3:
        raise JitterCamError(f"samples must be >= 3, got {samples}")
    if not extend >= 0:
        raise JitterCamError(f"extend must be >= 0, got {extend}")
    c = _centres(centres, maps.shape[0], maps.device)
    t = torch.linspace(-extend, 1 + extend, samples, dtype=torch.float64, device=maps.device)
    points = c[:, :1] + t.view(1, -1, 1) * (c[:, 1:] - c[:, :1])  # (B, n, 2)
    scale = torch.tensor([w, h], dtype=torch.float64, device=maps.device)
    grid = ((2 * points + 1) / scale - 1).to(maps.dtype).unsqueeze(1)  # (B, 1, n, 2) in [-1, 1]
    scaled = minmax(maps).unsqueeze(1)
    values = F.grid_sample(scaled, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return Profile(t.to(maps.dtype), values[:, 0, 0], points.to(maps.dtype))


def two_peaks(
    maps: torch.Tensor,
    centres: torch.Tensor | Sequence,
    size: int | Sequence[int],
    *,
    dip: float = 0.2,
    floor: float = 0.5,
    window: float = 0.5,
    samples: int = 256,
    extend: float = 0.25,
) -> TwoPeaks:
    """A Rayleigh-style criterion: does the map show two peaks, with a dip between them, at c1 and c2?

    On the `profile` f(t) (min–max scaled map along c1 → c2, t ∈ [−extend, 1 + extend]):

    - p1 = max f over t ∈ [−extend, window], p2 = max f over t ∈ [1 − window, 1 + extend], at t1, t2
      (the sample nearest its own centre on ties); the default window 0.5 gives each centre its own
      half of the line, so the peaks need not sit exactly on the centres;
    - v = min f over t ∈ [t1, t2], the valley between the two peaks;
    - resolved when v <= (1 − dip)·min(p1, p2), i.e. depth = 1 − v / min(p1, p2) >= dip, and
      min(p1, p2) >= floor (both peaks reach `floor` of the map's range, so that noise or a faint
      shoulder does not count).

    A single blob over both centres gives v = min(p1, p2) (depth 0), coincident centres too. The
    default dip of 0.2 lies between the dip that Rayleigh's limit leaves between two equal images of a
    slit (1 − 8/π² ≈ 19 %) and of a circular aperture (≈ 26.5 %), so a pair counts as resolved about
    where Rayleigh would call two point sources resolved.

    Args:
        maps: raw `(B, h, w)` maps.
        centres: `(B, 2, 2)`: c1, c2 per map as (x, y) pixels of an image of `size`.
        size: `(H, W)` of the image, or an int for a square.
        dip: the relative depth the valley needs, in [0, 1] (0.2).
        floor: the height both peaks need, in [0, 1] of the map's range (0.5).
        window: how far along the line each peak is looked for, in (0, 1] (0.5).
        samples: points sampled along the line, as `profile` takes it (256).
        extend: as `profile` takes it (0.25).

    Returns:
        Per map whether it resolves the pair, the peaks, valley, depth and their positions, as `TwoPeaks`.

    Raises:
        JitterCamError: `dip`, `floor` or `window` out of range, or as `profile` raises it.
    """
    if not 0 <= dip <= 1:
        raise JitterCamError(f"dip must be in [0, 1], got {dip}")
    if not 0 <= floor <= 1:
        raise JitterCamError(f"floor must be in [0, 1], got {floor}")
    if not 0 < window <= 1:
        raise JitterCamError(f"window must be in (0, 1], got {window}")
    prof = profile(maps, centres, size, samples=samples, extend=extend)
    t, f = prof.t, prof.values
    n = t.shape[0]
    index = torch.arange(n, device=f.device)
    i1 = _nearest(f, t <= window, t, 0.0)
    i2 = _nearest(f, t >= 1 - window, t, 1.0)
    p1, p2 = f.gather(1, i1[:, None])[:, 0], f.gather(1, i2[:, None])[:, 0]
    lo, hi = torch.minimum(i1, i2), torch.maximum(i1, i2)
    between = (index >= lo[:, None]) & (index <= hi[:, None])
    iv = f.masked_fill(~between, torch.finfo(f.dtype).max).argmin(dim=1)
    v = f.gather(1, iv[:, None])[:, 0]
    weaker = torch.minimum(p1, p2)
    depth = torch.where(weaker > 0, 1 - v / weaker.clamp_min(torch.finfo(f.dtype).tiny), torch.zeros_like(v))
    resolved = (depth >= dip) & (weaker >= floor)
    return TwoPeaks(resolved, torch.stack([p1, p2], 1), v, depth, t[torch.stack([i1, i2, iv], 1)])


def _nearest(f: torch.Tensor, window: torch.Tensor, t: torch.Tensor, centre: float) -> torch.Tensor:
    """Index of the maximum of f inside `window`, the one nearest to t = `centre` on ties."""
    top = f.masked_fill(~window, torch.finfo(f.dtype).min)
    best = top == top.max(dim=1, keepdim=True).values
    distance = (t - centre).abs().expand_as(f).masked_fill(~best, math.inf)
    return distance.argmin(dim=1)


def resolves(
    maps: torch.Tensor, centres: torch.Tensor | Sequence, size: int | Sequence[int], **options
) -> torch.Tensor:
    """Whether each map resolves its pair: `two_peaks(maps, centres, size, **options).resolved`, the
    criterion defined there.

    Args:
        maps: raw `(B, h, w)` maps.
        centres: `(B, 2, 2)`: c1, c2 per map as (x, y) pixels of an image of `size`.
        size: `(H, W)` of the image, or an int for a square.
        **options (Any): `dip`, `floor`, `window`, `samples` and `extend`, as `two_peaks` takes them.

    Returns:
        `(B,)` bool.

    Raises:
        JitterCamError: as `two_peaks` raises it.
    """
    return two_peaks(maps, centres, size, **options).resolved


def resolving_power(
    separations: torch.Tensor | Sequence[float],
    resolved: torch.Tensor | Sequence[bool],
    *,
    fraction: float = 1.0,
) -> float:
    """The smallest tested separation from which on every larger tested separation is resolved.

    Pairs may repeat a separation (several images each): a separation counts as resolved when at
    least `fraction` of its pairs are (default all of them). Going down from the largest separation,
    the answer is the last one before the first unresolved one, so a lucky small separation below a
    failure does not count. Lower is better.

    Args:
        separations: the separation of each pair.
        resolved: whether each pair is resolved (`resolves`), one per separation.
        fraction: the share of a separation's pairs that must be resolved, in (0, 1] (1: all of them).

    Returns:
        The separation; NaN when the largest separation is not resolved.

    Raises:
        JitterCamError: `separations` and `resolved` are empty or of different lengths, or `fraction` is
            out of range.
    """
    s = torch.as_tensor(separations, dtype=torch.float64).flatten().cpu()
    r = torch.as_tensor(resolved).flatten().cpu().to(torch.float64)
    if s.numel() == 0 or s.shape != r.shape:
        raise JitterCamError(
            f"separations and resolved must be non-empty and of one length, got {s.numel()} and {r.numel()}"
        )
    if not 0 < fraction <= 1:
        raise JitterCamError(f"fraction must be in (0, 1], got {fraction}")
    values, group = torch.unique(s, return_inverse=True)  # ascending
    share = torch.zeros_like(values).index_add_(0, group, r) / torch.bincount(group, minlength=len(values))
    ok = (share >= fraction).flip(0)  # from the largest separation down
    run = int(ok.to(torch.int64).cumprod(0).sum())
    return math.nan if run == 0 else float(values[len(values) - run])
