"""Input checks and the chunked forward pass shared by the metrics."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import JitterCamError
from ..inputs import Target
from ..models import attached_card

__all__ = ["Target", "card_stats", "check_images", "check_maps", "pixel_space", "scores"]


def check_images(images: torch.Tensor, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise JitterCamError(f"{name} must be a (B, C, H, W) tensor, got {shape}")
    if images.shape[0] == 0:
        raise JitterCamError(f"{name} is an empty batch")
    if not images.is_floating_point():
        raise JitterCamError(f"{name} must be a floating-point tensor, got {images.dtype}")


def check_maps(maps: torch.Tensor, batch: int | None = None, name: str = "maps") -> torch.Tensor:
    """Validate raw `(B, h, w)` maps and return them as floating point."""
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise JitterCamError(f"{name} must be a (B, h, w) tensor, got {shape}")
    if batch is not None and maps.shape[0] != batch:
        raise JitterCamError(f"{name} has {maps.shape[0]} maps for {batch} images")
    if maps.shape[0] == 0 or maps.shape[1] == 0 or maps.shape[2] == 0:
        raise JitterCamError(f"{name} is empty: shape {tuple(maps.shape)}")
    maps = maps if maps.is_floating_point() else maps.float()
    if not torch.isfinite(maps).all():
        raise JitterCamError(f"{name} contains NaN or infinite values")
    return maps


def scores(model: nn.Module, batch: torch.Tensor, softmax: bool) -> torch.Tensor:
    """The model's class scores `(N, K)`: softmax probabilities (default) or its raw outputs."""
    out = model(batch)
    if out.dim() != 2:
        raise JitterCamError(f"the model must return (N, classes) scores, got shape {tuple(out.shape)}")
    return out.softmax(dim=1) if softmax else out


def card_stats(
    model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[Sequence[float], Sequence[float]]:
    """`mean`/`std` as given; each one that is None comes from the model's attached card."""
    if mean is None or std is None:
        card = attached_card(model)
        if card is None:
            raise JitterCamError(
                "pixel-space multiplication needs the model's normalisation: pass mean= and std= "
                "(the model has no jittercam card)"
            )
        mean = card.mean if mean is None else mean
        std = card.std if std is None else std
    return mean, std


def pixel_space(mean: Sequence[float], std: Sequence[float], like: torch.Tensor):
    """`(to_pixels, to_input)`: `x -> x·std + mean` and `p -> (p − mean) / std` for `(B, C, H, W)`
    batches on `like`'s device and dtype."""
    m = torch.as_tensor(mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    if m.shape[1] not in (1, like.shape[1]) or s.shape[1] not in (1, like.shape[1]):
        raise JitterCamError(f"mean/std must have 1 or {like.shape[1]} values, got {m.shape[1]} and {s.shape[1]}")
    if (s == 0).any():
        raise JitterCamError("std must not contain zeros")
    return (lambda x: x * s + m), (lambda p: (p - m) / s)
