"""Bringing raw low-resolution maps to image size.

Vocabulary: `minmax` scales a map to [0, 1]; "normalise" in this library means only the model's
mean/std normalisation of images (`jittercam.data.to_input`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def minmax(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min–max scale each map of a batch to [0, 1]; a constant map becomes all zeros.

    Args:
        maps: `(B, H, W)` maps (or `(B, K, H, W)`: each map scaled on its own).
        eps: the smallest range still scaled; a map whose max − min is at most this is constant.

    Returns:
        Maps of `maps`' shape in [0, 1].
    """
    flat = maps.flatten(-2).flatten(0, -2)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > eps, (flat - low) / span.clamp_min(eps), torch.zeros_like(flat))
    return scaled.view_as(maps)


def resize(maps: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of maps, values not rescaled.

    Args:
        maps: `(B, h, w)` maps (or `(B, K, h, w)`, K maps per image).
        size: `(H, W)`, or an int for a square.

    Returns:
        `(B, H, W)` (or `(B, K, H, W)`) maps (`maps` itself when already of that size).
    """
    if isinstance(size, int):
        size = (size, size)
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return resized.reshape(*maps.shape[:-2], *size)


def upsample(maps: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Raw maps to image size in [0, 1]: bilinear resize, then min–max per map.

    An all-zero (or constant) map gives all zeros, never NaN.

    Args:
        maps: raw `(B, h, w)` maps, or `(B, K, h, w)` for K classes per image.
        size: `(H, W)`, or an int for a square.

    Returns:
        `(B, H, W)` (or `(B, K, H, W)`) float32 maps in [0, 1].

    Raises:
        ValueError: `maps` is neither 3-D nor 4-D.
    """
    if maps.dim() not in (3, 4):
        raise ValueError(f"maps must be (B, h, w) or (B, K, h, w), got shape {tuple(maps.shape)}")
    return minmax(resize(maps.float(), size))
