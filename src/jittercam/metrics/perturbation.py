"""Deletion and insertion (RISE, Petsiuk et al. 2018; Jitter-CAM paper §4.4, Table 2).

Follows eclique/RISE `evaluation.py` (`CausalMetric`, `gkern`, `auc`) and its notebook:

- the saliency map is resized to the input size (bilinear, align_corners=False) and its pixels are
  taken in descending order; `step` pixels change per iteration, n = ceil(HW / step) iterations,
  n + 1 scores (the unchanged and the fully changed image included);
- both games act on the model's input tensor (normalised with its card, the metrics' convention):
  deletion starts from the image and moves to zeros of that tensor (the card's mean colour, as RISE's
  zeros of the ImageNet-normalised tensor); insertion starts from a blurred copy of it (RISE's kernel:
  `scipy.ndimage.gaussian_filter` on an 11×11 delta, sigma 5, its default mode='reflect'; zero-padded
  depthwise convolution) and restores the image's pixels;
- the score is the softmax probability of the target class, by default the model's top-1 class on
  the original image (not the ground-truth label);
- AUC = (sum - first/2 - last/2) / n, the trapezoid rule over [0, 1].

Departures: RISE orders tied saliency values by numpy's unstable argsort; here ties are broken in
row-major order (the first pixel of a tie is changed first), so the result is deterministic. The
default `step` is 8 × the image width (1792 at 224, 28 iterations, the paper's setting); RISE has no
default. RISE spends one extra forward pass to find the top-1 class; here it is read from the pass
on the unchanged image, which the curve needs anyway (29 passes per image and game at 224).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from numbers import Integral
from typing import NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

from .. import compiled as compiled_pieces
from ..errors import JitterCamError
from ..inputs import as_target, check_target_range
from ..maps import resize
from ..tuning import buffer_layout, forward_batch
from ._common import (
    Target,
    check_images,
    check_maps,
    scores,
)

Substrate = Callable[[torch.Tensor], torch.Tensor] | torch.Tensor | None


class PerturbationCurves(NamedTuple):
    """Per-image results of one game; all tensors on the images' device."""

    auc: torch.Tensor  #: (B,) area under the curve, in [0, 1] for probabilities
    scores: torch.Tensor  #: (B, n + 1) score of the target after 0, step, 2·step, ... changed pixels
    fractions: torch.Tensor  #: (n + 1,) fraction of the pixels changed at each point (0 ... 1)
    target: torch.Tensor  #: (B,) the class whose score was tracked


class DeletionInsertion(NamedTuple):
    """Both games' per-image results (`deletion_insertion`)."""

    deletion: PerturbationCurves  #: deletion's curves and AUCs
    insertion: PerturbationCurves  #: insertion's curves and AUCs


@lru_cache(maxsize=8)
def _kernel_2d(size: int, sigma: float) -> np.ndarray:
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    return gaussian_filter(delta, sigma)  # mode='reflect', as RISE's gkern


def blur_kernel(size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's blur kernel: an impulse filtered by `scipy.ndimage.gaussian_filter`.

    Its reflected tails make it nearly flat (1-D factor: edges 0.088, centre 0.094 for 11 and 5); it sums to 1.

    Args:
        size: the kernel's side, odd (11, RISE's).
        sigma: the Gaussian's standard deviation in pixels (5, RISE's).

    Returns:
        `(size, size)` float32 weights.

    Raises:
        JitterCamError: `size` is not odd and positive.
    """
    if size < 1 or size % 2 == 0:
        raise JitterCamError(f"blur kernel size must be odd and positive, got {size}")
    return torch.from_numpy(_kernel_2d(int(size), float(sigma)).astype(np.float32))


def gaussian_blur(images: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Insertion's substrate: each channel convolved with `blur_kernel`, zero padding, as RISE.

    Args:
        images: `(B, C, H, W)` floating-point images (model inputs).
        size: the kernel's side, odd (11).
        sigma: the Gaussian's standard deviation in pixels (5).

    Returns:
        `(B, C, H, W)` blurred images.

    Raises:
        JitterCamError: `images` is not a non-empty floating-point `(B, C, H, W)` batch, or `size` is not
            odd and positive.
    """
    check_images(images)
    channels = images.shape[1]
    kernel = blur_kernel(size, sigma).to(images.device, images.dtype)
    weight = kernel.expand(channels, 1, size, size)
    with torch.no_grad():
        return F.conv2d(images, weight, padding=size // 2, groups=channels)


def auc(scores: torch.Tensor) -> torch.Tensor:
    """RISE's normalised AUC: (sum - first/2 - last/2) / n, the trapezoid rule over [0, 1].

    Args:
        scores: curves `(..., n + 1)`, the last dimension the points.

    Returns:
        `(...)` areas.

    Raises:
        JitterCamError: a curve has fewer than two points.
    """
    if scores.shape[-1] < 2:
        raise JitterCamError("a curve needs at least two points")
    return (scores.sum(-1) - scores[..., 0] / 2 - scores[..., -1] / 2) / (scores.shape[-1] - 1)


def _saliency_rank(saliency: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`(B, H·W)` position of each pixel in descending saliency order (ties: row-major)."""
    flat = resize(saliency, size).flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return rank.scatter_(1, order, positions)


def _substrate(
    substrate: Substrate, images: torch.Tensor, default: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    if substrate is None:
        return default(images)
    out = substrate(images) if callable(substrate) else substrate
    if (
        not isinstance(out, torch.Tensor)
        or out.shape[-3:] != images.shape[-3:]
        or out.dim() not in (3, 4)
        or (out.dim() == 4 and out.shape[0] not in (1, images.shape[0]))
    ):
        raise JitterCamError(f"the substrate must be an image tensor of shape {tuple(images.shape)}")
    return out.to(images.device, images.dtype).expand_as(images)


def _check_step(step: int | None, width: int) -> int:
    if step is None:
        return 8 * width
    if isinstance(step, bool) or not isinstance(step, Integral) or step < 1:
        raise JitterCamError(f"step must be a positive number of pixels, got {step!r}")
    return int(step)


def _run(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    games: list[tuple[torch.Tensor, torch.Tensor, bool]],
    target: Target,
    step: int | None,
    batch_size: int,
    softmax: bool,
    compile: str | None = None,
) -> list[PerturbationCurves]:
    """Play several games (start, finish, starts_at_image) on each image in one stream of chunks.

    The (image, game, step) triples are streamed image by image, game by game; each game lists first
    the step that shows the unchanged image, so that when `target` is None the top-1 class is read
    from game 0's first pass before any other score of that image. A chunk is built run by run (one
    image and game per run): the step thresholds are compared with the image's rank map by
    broadcasting and `torch.where` writes straight into the chunk, with no gathered copies. Compiled
    (`compile` a mode), the whole buffer always runs, so that every chunk has one shape: the last one's
    rows past its end are the previous chunk's images, and their scores are dropped.
    """
    B, C, H, W = images.shape
    device = images.device
    step = _check_step(step, W)
    n = -(-H * W // step)
    thresholds = (torch.arange(n + 1, device=device) * step).clamp_max(H * W)
    rank = _saliency_rank(saliency.to(device), (H, W)).to(torch.int32)
    tgt = as_target(target, B, device)
    known = tgt is not None
    if tgt is None:
        tgt = torch.zeros(B, dtype=torch.long, device=device)

    G, points = len(games), n + 1
    steps = torch.arange(points, device=device)
    orders = [steps if at_image else steps.flip(0) for _, _, at_image in games]
    limits = [thresholds[order].to(torch.int32).view(-1, 1) for order in orders]
    out = torch.empty(G, B, points, device=device, dtype=images.dtype)

    forward = None
    if compile is not None:
        mode = compiled_pieces.resolve_mode(compile, device, False)
        forward = cast(nn.Module, partial(compiled_pieces.forward, model, mode=mode))  # called as a model

    total = B * G * points
    # one buffer for every chunk: fresh large allocations cost page faults on CPU
    buffer = torch.empty((min(batch_size, total), C, H, W), device=device, dtype=images.dtype,
                         memory_format=buffer_layout(model, images))
    for begin in range(0, total, batch_size):
        end = min(begin + batch_size, total)
        batch = buffer[: end - begin]
        runs = []
        for block in range(begin // points, (end - 1) // points + 1):  # block = (image, game)
            b, g = divmod(block, G)
            lo, hi = max(begin, block * points) - block * points, min(end, (block + 1) * points) - block * points
            rows = slice(block * points + lo - begin, block * points + hi - begin)
            start, finish, _ = games[g]
            changed = (rank[b] < limits[g][lo:hi]).view(hi - lo, 1, H, W)
            torch.where(changed, finish[b], start[b], out=batch[rows])
            runs.append((b, g, lo, hi, rows))
        # compiled: the whole buffer, one shape for every chunk
        probs = scores(model, batch, softmax) if forward is None else scores(forward, buffer, softmax)[: end - begin]
        if known and begin == 0:
            check_target_range(tgt, probs.shape[1])
        for b, g, lo, hi, rows in runs:
            if not known and g == 0 and lo == 0:
                tgt[b] = probs[rows.start].argmax()
            out[g, b, orders[g][lo:hi]] = probs[rows].index_select(1, tgt[b:b + 1]).squeeze(1).to(out.dtype)

    fractions = thresholds.float() / (H * W)
    return [PerturbationCurves(auc(out[g]), out[g], fractions, tgt.clone()) for g in range(G)]


def _prepare(model, images, saliency, batch_size, compile=False) -> tuple[torch.Tensor, int]:
    check_images(images)
    if compiled_pieces.check_compile(compile) is not None and not isinstance(model, nn.Module):
        raise JitterCamError("compile needs the model as a torch module", option="compile")
    saliency = check_maps(saliency, images.shape[0], "saliency")
    if not isinstance(model, nn.Module) and not callable(model):
        raise JitterCamError("model must be a callable torch module")
    return saliency, forward_batch(model, images, batch_size)


def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    target: Target = None,
    step: int | None = None,
    *,
    batch_size: int | None = None,
    softmax: bool = True,
    deletion_substrate: Substrate = None,
    insertion_substrate: Substrate = None,
    compile: bool | str = False,
) -> DeletionInsertion:
    """Both games on each image, streamed through the model together (2·(n+1) passes per image).

    Args:
        model: the classifier, used as given (put it in eval mode yourself); it is not modified.
        images: `(B, C, H, W)` tensors exactly as the model takes them (already normalised).
        saliency: raw `(B, h, w)` maps of any size; resized to `(H, W)`, only their order matters.
        target: None (the model's top-1 on the original image, as RISE), an int, or one class per image.
        step: pixels changed per iteration; default 8·W (1792 at 224: the paper's 28 iterations).
        batch_size: perturbed images per forward pass; only this many are materialised at once.
            None: the measured plan's (`jittercam.tuning`) where one was made, else the device's default
            (4 on CPU, the fastest measured on 2 cores; 64 on CUDA).
        softmax: score the softmax probability (RISE, default) or the raw output of the target.
        deletion_substrate: what deletion puts in place of removed pixels, instead of RISE's zeros: a
            tensor like `images` or a function of the images.
        insertion_substrate: what insertion starts from, instead of RISE's blur: the same kinds.
        compile: False (default); True (or a mode of `jittercam.compiled.MODES`) runs the perturbed
            batches through the compiled model (`jittercam.compiled.forward`), every forward at
            `batch_size` images.

    Returns:
        Deletion's and insertion's `PerturbationCurves`, all tensors on the images' device.

    Raises:
        JitterCamError: `images` is not a non-empty floating-point `(B, C, H, W)` batch; `saliency` is not
            `(B, h, w)` with one finite map per image; `step` is not a positive integer; a substrate has
            the wrong shape; `compile` is not a valid value; `target` is not a valid class index (or one
            per image); `model` is not callable or does not return `(N, classes)` scores.
    """
    saliency, batch_size = _prepare(model, images, saliency, batch_size, compile)
    mode = compiled_pieces.check_compile(compile)
    with torch.no_grad():
        zeros = _substrate(deletion_substrate, images, torch.zeros_like)
        blurred = _substrate(insertion_substrate, images, gaussian_blur)
        deletion_curves, insertion_curves = _run(
            model, images, saliency, [(images, zeros, True), (blurred, images, False)],
            target, step, batch_size, softmax, mode,
        )
    return DeletionInsertion(deletion_curves, insertion_curves)


def deletion(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    target: Target = None,
    step: int | None = None,
    *,
    batch_size: int | None = None,
    softmax: bool = True,
    substrate: Substrate = None,
    return_curves: bool = False,
    compile: bool | str = False,
) -> torch.Tensor | PerturbationCurves:
    """RISE deletion AUC per image (lower is better).

    The most salient pixels are set to zero in the normalised tensor, `step` at a time.

    Args:
        model: the classifier, used as given (put it in eval mode yourself); it is not modified.
        images: `(B, C, H, W)` tensors exactly as the model takes them (already normalised).
        saliency: raw `(B, h, w)` maps of any size; resized to `(H, W)`, only their order matters.
        target: None (the model's top-1 on the original image, as RISE), an int, or one class per image.
        step: pixels changed per iteration; default 8·W (1792 at 224: the paper's 28 iterations).
        batch_size: perturbed images per forward pass; only this many are materialised at once.
            None: the measured plan's (`jittercam.tuning`) where one was made, else the device's default
            (4 on CPU, the fastest measured on 2 cores; 64 on CUDA).
        softmax: score the softmax probability (RISE, default) or the raw output of the target.
        substrate: what is put in place of removed pixels, instead of RISE's zeros: a tensor like `images`
            or a function of the images.
        return_curves: return the whole `PerturbationCurves` instead of the AUCs.
        compile: False (default); True (or a mode of `jittercam.compiled.MODES`) runs the perturbed
            batches through the compiled model (`jittercam.compiled.forward`), every forward at
            `batch_size` images.

    Returns:
        `(B,)` AUCs on the images' device, or `PerturbationCurves` if `return_curves`.

    Raises:
        JitterCamError: `images` is not a non-empty floating-point `(B, C, H, W)` batch; `saliency` is not
            `(B, h, w)` with one finite map per image; `step` is not a positive integer; a substrate has
            the wrong shape; `compile` is not a valid value; `target` is not a valid class index (or one
            per image); `model` is not callable or does not return `(N, classes)` scores.
    """
    saliency, batch_size = _prepare(model, images, saliency, batch_size, compile)
    mode = compiled_pieces.check_compile(compile)
    with torch.no_grad():
        finish = _substrate(substrate, images, torch.zeros_like)
        (curves,) = _run(model, images, saliency, [(images, finish, True)], target, step, batch_size, softmax,
                         mode)
    return curves if return_curves else curves.auc


def insertion(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    target: Target = None,
    step: int | None = None,
    *,
    batch_size: int | None = None,
    softmax: bool = True,
    substrate: Substrate = None,
    return_curves: bool = False,
    compile: bool | str = False,
) -> torch.Tensor | PerturbationCurves:
    """RISE insertion AUC per image (higher is better).

    Starts from the blurred image and restores the most salient pixels, `step` at a time.

    Args:
        model: the classifier, used as given (put it in eval mode yourself); it is not modified.
        images: `(B, C, H, W)` tensors exactly as the model takes them (already normalised).
        saliency: raw `(B, h, w)` maps of any size; resized to `(H, W)`, only their order matters.
        target: None (the model's top-1 on the original image, as RISE), an int, or one class per image.
        step: pixels changed per iteration; default 8·W (1792 at 224: the paper's 28 iterations).
        batch_size: perturbed images per forward pass; only this many are materialised at once.
            None: the measured plan's (`jittercam.tuning`) where one was made, else the device's default
            (4 on CPU, the fastest measured on 2 cores; 64 on CUDA).
        softmax: score the softmax probability (RISE, default) or the raw output of the target.
        substrate: what insertion starts from, instead of RISE's blur: a tensor like `images` or a
            function of the images.
        return_curves: return the whole `PerturbationCurves` instead of the AUCs.
        compile: False (default); True (or a mode of `jittercam.compiled.MODES`) runs the perturbed
            batches through the compiled model (`jittercam.compiled.forward`), every forward at
            `batch_size` images.

    Returns:
        `(B,)` AUCs on the images' device, or `PerturbationCurves` if `return_curves`.

    Raises:
        JitterCamError: `images` is not a non-empty floating-point `(B, C, H, W)` batch; `saliency` is not
            `(B, h, w)` with one finite map per image; `step` is not a positive integer; a substrate has
            the wrong shape; `compile` is not a valid value; `target` is not a valid class index (or one
            per image); `model` is not callable or does not return `(N, classes)` scores.
    """
    saliency, batch_size = _prepare(model, images, saliency, batch_size, compile)
    mode = compiled_pieces.check_compile(compile)
    with torch.no_grad():
        start = _substrate(substrate, images, gaussian_blur)
        (curves,) = _run(model, images, saliency, [(start, images, False)], target, step, batch_size, softmax,
                         mode)
    return curves if return_curves else curves.auc
