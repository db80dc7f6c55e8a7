"""Faithfulness: Average Drop and Increase in Confidence (Jitter-CAM paper §4.3, Table 1, Fig. 5).

Definitions of Chattopadhay et al. (Grad-CAM++), eqs. 3–4 of the paper, with softmax scores:
AD = 100/N · Σ max(0, Y − O) / Y and IIC = 100/N · Σ 1[Y < O], where Y is the score of class c on the
image and O its score on the image multiplied by the explanation L scaled to [0, 1].

Images are the model's input tensors x (normalised with its card), as for every metric. The paper's
E = L ∘ I multiplies the *pixels*: by default (`multiply="pixel"`) x is brought back to [0, 1] pixels
with the model's mean/std, multiplied, and normalised again: O = f((L·(x·std + mean) − mean) / std),
which blackens the pixels the map rejects. pytorch-grad-cam multiplies the input tensor itself,
O = f(L·x), darkening towards the mean colour instead (`multiply="input"`); it also reports
max(Y − O, 0) without dividing by Y, which is not the paper's AD and is not offered.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..errors import JitterCamError
from ..inputs import as_target, check_target_range
from ..maps import minmax, upsample
from ..tuning import forward_batch
from ._common import Target, card_stats, check_images, check_maps, pixel_space, scores

#: Where the map multiplies the image: the paper's [0, 1] pixels, or the input tensor (pytorch-grad-cam).
MULTIPLY: tuple[str, ...] = ("pixel", "input")
#: Fig. 5's expansion factors: 0, 0.5, ..., 10.
EXPANSION_ALPHAS: tuple[float, ...] = tuple(i / 2 for i in range(21))


class Faithfulness(NamedTuple):
    """Per-image scores on the input's device."""

    original: torch.Tensor  #: (B,) Y: score of the target on the image
    masked: torch.Tensor  #: (B,) O, or (B, A) for `expansion_faithfulness`: score on the masked image
    target: torch.Tensor  #: (B,) the class scored


class Improvement(NamedTuple):
    """§4.3's extra figures (`improvement`)."""

    # a field named like tuple.count shadows it, as NamedTuple allows; mypy flags the override
    count: int  # type: ignore[assignment]  #: images whose score rose (O > Y)
    mean: float  #: mean O − Y over those images (0 when none)


def expand_explanation(maps: torch.Tensor, alpha: float, margin: float = 1e-4) -> torch.Tensor:
    """Fig. 4–5's expansion: the map scaled to [0, 1], × alpha, clipped at its maximum − `margin`.

    The paper clips at "the maximum value of the original explanation minus 1e-4" of pytorch-grad-cam's
    [0, 1] maps; min–max scaling the raw map first makes the margin independent of the map's units.

    Args:
        maps: raw `(B, h, w)` explanations.
        alpha: the expansion factor.
        margin: how far below the scaled map's maximum the result is clipped (1e-4, the paper's).

    Returns:
        `(B, h, w)` expanded maps.

    Raises:
        JitterCamError: `maps` is not a non-empty `(B, h, w)` tensor of finite values.
    """
    maps = minmax(check_maps(maps))
    ceiling = maps.flatten(1).max(dim=1).values.view(-1, 1, 1) - margin
    return torch.minimum(maps * alpha, ceiling)


def constant_baseline(
    batch: int, size: int | tuple[int, int], value: float = 0.9, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Table 1's 'Constant' explanation: every pixel `value`, one random pixel 1 and another 0.

    Args:
        batch: B, the number of maps.
        size: `(h, w)` of the maps, or an int for a square.
        value: the value of every other pixel (0.9).
        generator: where the two pixels are drawn from; None: torch's default generator.

    Returns:
        `(B, h, w)` float32 maps.

    Raises:
        JitterCamError: the maps would have fewer than two pixels.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if h * w < 2:
        raise JitterCamError("the constant baseline needs at least two pixels")
    maps = torch.full((batch, h * w), float(value))
    picks = torch.stack([torch.randperm(h * w, generator=generator)[:2] for _ in range(batch)])
    maps.scatter_(1, picks[:, :1], 1.0).scatter_(1, picks[:, 1:], 0.0)
    return maps.view(batch, h, w)


def _masker(model, images, mean, std, multiply):
    """`(x, mask) -> masked input tensor` for the `multiply` convention."""
    if multiply not in MULTIPLY:
        raise JitterCamError(f"multiply must be 'pixel' or 'input', got {multiply!r}")
    if multiply == "input":
        return torch.mul
    to_pixels, to_input = pixel_space(*card_stats(model, mean, std), images)
    return lambda x, mask: to_input(to_pixels(x) * mask)


def _faithfulness(model, images, map_sets, target, mean, std, batch_size, softmax, multiply):
    check_images(images)
    batch_size = forward_batch(model, images, batch_size)
    apply = _masker(model, images, mean, std, multiply)
    B, _, H, W = images.shape
    tgt = as_target(target, B, images.device)
    original = torch.empty(B, device=images.device, dtype=images.dtype)
    masked = torch.empty(B, len(map_sets), device=images.device, dtype=images.dtype)
    masks = [upsample(m.to(images.device), (H, W)).unsqueeze(1).to(images.dtype) for m in map_sets]
    if tgt is None:
        tgt = torch.empty(B, dtype=torch.long, device=images.device)
        known = False
    else:
        known = True
    with torch.no_grad():
        for begin in range(0, B, batch_size):
            part = slice(begin, begin + batch_size)
            x = images[part]
            probs = scores(model, x, softmax)
            if known:
                check_target_range(tgt[part], probs.shape[1])
            else:
                tgt[part] = probs.argmax(dim=1)
            pick = tgt[part].unsqueeze(1)
            original[part] = probs.gather(1, pick).squeeze(1)
            for a, mask in enumerate(masks):
                masked[part, a] = scores(model, apply(x, mask[part]), softmax).gather(1, pick).squeeze(1)
    return original, masked, tgt


def faithfulness(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: Target = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int | None = None,
    softmax: bool = True,
    multiply: str = "pixel",
) -> Faithfulness:
    """Y and O per image, from which `average_drop` and `increase_in_confidence` follow.

    Args:
        model: the classifier, used as given; it is not modified.
        images: `(B, C, H, W)` tensors exactly as the model takes them (normalised with its card),
            the same as for `deletion`/`insertion`.
        maps: raw `(B, h, w)` explanations; resized to `(H, W)` and min–max scaled to [0, 1].
        target: None (the model's top-1 on the image), an int, or one class per image.
        batch_size: images per forward pass (each chunk costs two passes); None: the measured plan's
            (`jittercam.tuning`) where one was made, else the device's default.
        softmax: score softmax probabilities (default, as the paper) or raw outputs.
        multiply: 'pixel' (default, the paper: de-normalise to [0, 1] pixels, mask, normalise again)
            or 'input' (mask the input tensor itself, as pytorch-grad-cam).
        mean: the per-channel mean the images are normalised with, used by 'pixel' only; None (default)
            takes it from the model's attached card (`jittercam.models.attached_card`). A model without a
            card needs `mean` and `std` passed: there is no ImageNet default (EfficientNet-Lite0's is 0.5).
        std: the per-channel standard deviation, likewise.

    Returns:
        Y (`original`), O (`masked`) and the class scored (`target`), each `(B,)` on the images' device.

    Raises:
        JitterCamError: `images` or `maps` is not a valid batch (one finite `(h, w)` map per image); an
            unknown `multiply`; 'pixel' with neither `mean`/`std` nor a card on the model, or a `std` with
            zeros; `target` is not a valid class index (or one per image).
    """
    maps = check_maps(maps, images.shape[0] if isinstance(images, torch.Tensor) else None)
    y, o, t = _faithfulness(model, images, [maps], target, mean, std, batch_size, softmax, multiply)
    return Faithfulness(y, o[:, 0], t)


def expansion_faithfulness(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: Target = None,
    alphas: Sequence[float] = EXPANSION_ALPHAS,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int | None = None,
    softmax: bool = True,
    multiply: str = "pixel",
) -> Faithfulness:
    """Fig. 5: faithfulness of `expand_explanation(maps, alpha)` for each alpha.

    Y is computed once per image.

    Args:
        model: the classifier, used as given; it is not modified.
        images: `(B, C, H, W)` tensors exactly as the model takes them (normalised with its card).
        maps: raw `(B, h, w)` explanations, expanded by each alpha (`expand_explanation`), then resized to
            `(H, W)`.
        target: None (the model's top-1 on the image), an int, or one class per image.
        alphas: the A expansion factors (Fig. 5's 0, 0.5, ..., 10 by default: `EXPANSION_ALPHAS`).
        mean: the per-channel mean the images are normalised with, as `faithfulness` takes it.
        std: the per-channel standard deviation, likewise.
        batch_size: images per forward pass (each chunk costs two passes); None: the measured plan's
            (`jittercam.tuning`) where one was made, else the device's default.
        softmax: score softmax probabilities (default, as the paper) or raw outputs.
        multiply: 'pixel' (default, the paper: de-normalise to [0, 1] pixels, mask, normalise again)
            or 'input' (mask the input tensor itself, as pytorch-grad-cam).

    Returns:
        Y (`original`, `(B,)`), O (`masked`, `(B, A)`: one column per alpha) and the class scored
            (`target`, `(B,)`), on the images' device.

    Raises:
        JitterCamError: `images` or `maps` is not a valid batch (one finite `(h, w)` map per image); an
            unknown `multiply`; 'pixel' with neither `mean`/`std` nor a card on the model, or a `std` with
            zeros; `alphas` is empty; `target` is not a valid class index (or one per image).
    """
    maps = check_maps(maps, images.shape[0] if isinstance(images, torch.Tensor) else None)
    expanded = [expand_explanation(maps, float(a)) for a in alphas]
    if not expanded:
        raise JitterCamError("alphas is empty")
    y, o, t = _faithfulness(model, images, expanded, target, mean, std, batch_size, softmax, multiply)
    return Faithfulness(y, o, t)


def _pair(original: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    original = torch.as_tensor(original)
    masked = torch.as_tensor(masked)
    if original.dim() != 1 or masked.shape[0] != original.shape[0] or masked.dim() > 2:
        raise JitterCamError(
            "expected Y of shape (N,) and O of shape (N,) or (N, A), "
            f"got {tuple(original.shape)} and {tuple(masked.shape)}"
        )
    if original.shape[0] == 0:
        raise JitterCamError("no images to aggregate")
    if masked.dim() == 2:
        original = original.unsqueeze(1)
    return original, masked


def _complete(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """Where both scores are there: a NaN (a missing score) leaves the pair out of every figure."""
    return ~(torch.isnan(y) | torch.isnan(o)) if y.is_floating_point() or o.is_floating_point() else \
        torch.ones(torch.broadcast_shapes(y.shape, o.shape), dtype=torch.bool, device=y.device)


def average_drop(original: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """AD (%) = 100 · mean(max(0, Y − O) / Y). Lower is 'better'.

    Pairs with a NaN score or Y ≤ 0 (no confidence to drop) are left out; none left gives NaN.

    Args:
        original: `(N,)` Y, the scores on the images (`Faithfulness.original`).
        masked: `(N,)` O, or `(N, A)` for an expansion sweep (`Faithfulness.masked`).

    Returns:
        A 0-d float64 tensor, or `(A,)` for `(N, A)` O.

    Raises:
        JitterCamError: the shapes do not pair up, or there are no images.
    """
    y, o = _pair(original, masked)
    y, o = torch.broadcast_tensors(y.double(), o.double())
    keep = _complete(y, o) & (y > 0)
    drop = torch.where(keep, (y - o).clamp_min(0) / y.where(keep, torch.ones_like(y)), torch.nan)
    return 100 * drop.nanmean(dim=0)


def increase_in_confidence(original: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """IIC (%) = 100 · mean(1[Y < O]). Higher is 'better'.

    Pairs with a NaN score are left out; none left gives NaN.

    Args:
        original: `(N,)` Y, the scores on the images (`Faithfulness.original`).
        masked: `(N,)` O, or `(N, A)` for an expansion sweep (`Faithfulness.masked`).

    Returns:
        A 0-d float64 tensor, or `(A,)` for `(N, A)` O.

    Raises:
        JitterCamError: the shapes do not pair up, or there are no images.
    """
    y, o = _pair(original, masked)
    y, o = torch.broadcast_tensors(y.double(), o.double())
    return 100 * torch.where(_complete(y, o), (y < o).double(), torch.nan).nanmean(dim=0)


def improvement(original: torch.Tensor, masked: torch.Tensor) -> Improvement:
    """§4.3's extra figures: how many images gained confidence (O > Y) and their mean gain O − Y (0 when
    none did). Pairs with a NaN score are left out.

    Args:
        original: `(N,)` Y, the scores on the images.
        masked: `(N,)` O, one per image.

    Returns:
        The count and the mean gain, as `Improvement`.

    Raises:
        JitterCamError: the shapes do not pair up, there are no images, or O is `(N, A)`.
    """
    y, o = _pair(original, masked)
    if o.dim() != 1:
        raise JitterCamError("improvement takes one O per image")
    keep = _complete(y, o)
    y, o = y[keep], o[keep]
    gained = o > y
    count = int(gained.sum())
    return Improvement(count, float((o - y)[gained].mean()) if count else 0.0)
