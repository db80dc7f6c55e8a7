"""ROAD: RemOve And Debias (Rong, Leemann et al., ICML 2022, "A Consistent and Efficient Evaluation Strategy
for Attribution Methods").

Pixels are removed most-relevant-first (MoRF) or least-relevant-first (LeRF) at given percentages, and the
removed pixels are filled by *noisy linear imputation*: each removed pixel is the weighted mean of its 8
neighbours (weight 1/6 for the 4 edge neighbours, 1/12 for the 4 diagonal ones, neighbours outside the image
left out and the weights of each equation renormalised), which couples the removed pixels into one sparse
linear system per image and percentage, solved exactly; then Gaussian noise is added to the removed pixels.
The model's softmax probability of the target (and whether its top-1 class is the target: the accuracy) is
read on every imputed image.

Checked against the authors' code, tleemann/road_evaluation (`road/imputations.py` `NoisyLinearImputer`,
`road/imputed_dataset.py` `ImputedDataset.__getitem__`, `road/road.py` `run_road`), pytorch-grad-cam 1.5.7
(`pytorch_grad_cam/metrics/road.py`: `NoisyLinearImputer`, `ROADMostRelevantFirst`, `ROADLeastRelevantFirst`,
`ROADCombined`; `perturbation_confidence.py`) and Quantus 0.6 (`quantus.ROAD`,
`functions/perturb_func.py` `noisy_linear_imputation`):

- weights and system: as all three (the same 8 offsets and weights); solved by SuperLU
  (`scipy.sparse.linalg.spsolve`, the fastest exact solver measured on CPU for these systems, see
  `noisy_linear_imputation`; torch has no sparse direct solver on CPU), float64, on the CPU, as many
  images at once as torch has CPU threads (SuperLU releases the GIL); the imputed images go back to the
  input's device;
- percentage p is the share of pixels *removed*, in both orders, k = int(H·W·p/100) pixels (the authors'
  MoRF count and Quantus's). pytorch-grad-cam's `percentile` q is the share *kept*: its ROAD…(q) removes the
  pixels at or above `np.percentile(map, q)` (MoRF) or at or below the (100 − q)th (LeRF), i.e. p = 100 − q,
  with a count that can differ by one pixel from int(H·W·p/100) (equal when H·W = 400, for instance, at
  multiples of 10); its average over 10…90 is symmetric, so its combined score is ours over the same
  percentages. The authors' LeRF at `th_p` keeps the int(H·W·th_p) most relevant pixels (removes 1 − th_p);
- ranking: the map is resized to the input (bilinear, align_corners=False, `jittercam.maps.resize`, as
  deletion; pytorch-grad-cam's own CAMs come resized by cv2's INTER_LINEAR, the same for upsampling) and
  ordered by value. Ties (the zeros of a ReLU'd CAM, a constant map) matter: removing a tied block in
  row-major order takes out contiguous rows, which imputation fills much worse than scattered pixels. The
  default (`ties="jitter"`, the authors' `ImputedDataset`) min–max scales the map, (m − min)/(max − min +
  1e-5), and adds 1e-4·N(0, 1), one `(H, W)` draw shared by the batch (the authors draw one per data set),
  the first draw of the seeded generator; `ties="stable"` keeps the values and orders ties row-major (MoRF
  removes the first of a tie first, LeRF the last): the peers' order on maps without ties (Quantus sorts
  with numpy's unstable argsort, pytorch-grad-cam removes every pixel tied at its threshold);
- noise: std 0.01 (all three). The authors impute [0, 1] pixels before normalisation (`run_road`'s
  `transform_test` comes after), so the default (`noise_space="pixels"`, the paper's) is 0.01 in pixel units,
  0.01/std_c in the input tensor; the imputation itself commutes with the per-channel normalisation (each
  removed pixel is an affine combination of others). pytorch-grad-cam and Quantus impute the tensor they are
  given: `noise_space="input"`. The noise is drawn from a CPU `torch.Generator` seeded by `seed`, one
  `(C, k)` draw per (order, percentage, image) in that loop order: `orders=("lerf", "morf")` with percentages
  90, 80, …, 10 draws it as pytorch-grad-cam's `ROADCombined` does under `torch.manual_seed(seed)` (its
  percentiles 10…90 remove 90…10%); Quantus draws with `np.random`;
- scores: the softmax probability of the target (pytorch-grad-cam's with `ClassifierOutputSoftmaxTarget`;
  it reports it minus the probability on the unchanged image), and the accuracy, top-1 == target (Quantus's,
  averaged over the batch per percentage; the authors' `road_eval` gives both, against the label). The
  target defaults to the top-1 class on the unchanged image, read from a first pass;
- per image: `morf` and `lerf` are the means over the percentages of the probability (pytorch-grad-cam's
  `ROAD…Average`), `combined` = (lerf − morf)/2 (its `ROADCombined`: higher is better).

Quantus 0.6's `ROAD` indexes an `(H·W)` mask with positions in the flattened `(C, H, W)` attribution, so it
runs only on one-channel images (an IndexError on RGB).
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from numbers import Real
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import spsolve
from torch import nn

from ..errors import JitterCamError
from ..inputs import as_target, check_target_range
from ..maps import resize
from ..tuning import buffer_layout, forward_batch
from ._common import Target, card_stats, check_images, check_maps, scores

PERCENTAGES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
ORDERS = ("morf", "lerf")
NOISE = 0.01
# (row offset, column offset, weight): the 4 edge neighbours 1/6, the 4 diagonal ones 1/12 (sum 1)
NEIGHBOURS: tuple[tuple[int, int, float], ...] = (
    (0, 1, 1 / 6), (0, -1, 1 / 6), (1, 0, 1 / 6), (-1, 0, 1 / 6),
    (1, 1, 1 / 12), (1, -1, 1 / 12), (-1, 1, 1 / 12), (-1, -1, 1 / 12),
)


class ROADResult(NamedTuple):
    """Per-image ROAD results; all tensors on the images' device (NaN for an order not computed)."""

    morf: torch.Tensor  #: (B,) mean over percentages of the MoRF probability (lower is better)
    lerf: torch.Tensor  #: (B,) mean over percentages of the LeRF probability (higher is better)
    combined: torch.Tensor  #: (B,) (lerf − morf) / 2 (higher is better)
    morf_scores: torch.Tensor  #: (B, P) probability of the target after removing p% most relevant first
    lerf_scores: torch.Tensor  #: (B, P) the same, least relevant first
    morf_accuracy: torch.Tensor  #: (B, P) 1.0 where the top-1 class is still the target (MoRF)
    lerf_accuracy: torch.Tensor  #: (B, P) the same for LeRF
    percentages: torch.Tensor  #: (P,) percentages of pixels removed
    original: torch.Tensor  #: (B,) probability of the target on the unchanged image
    target: torch.Tensor  #: (B,) the class whose probability was read


def _system(removed: np.ndarray, pixels: np.ndarray) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
    """The SPD system L y = r of the removed pixels of one image: L = diag(Σ valid weights) − W_removed,
    r = Σ weight · known neighbour; returns (L, r (k, C), flat indices of the removed pixels)."""
    H, W = removed.shape
    flat = removed.ravel()
    index = np.flatnonzero(flat)
    k = index.size
    variable = np.full(H * W, -1, dtype=np.int64)
    variable[index] = np.arange(k)
    rows, cols = index // W, index % W
    values = pixels.reshape(pixels.shape[0], -1)
    diagonal = np.zeros(k)
    rhs = np.zeros((k, values.shape[0]))
    entries_i, entries_j, entries_w = [], [], []
    for dy, dx, weight in NEIGHBOURS:
        r, c = rows + dy, cols + dx
        valid = (r >= 0) & (r < H) & (c >= 0) & (c < W)
        eq = np.flatnonzero(valid)
        neighbour = r[valid] * W + c[valid]
        diagonal[eq] += weight
        unknown = flat[neighbour]
        entries_i.append(eq[unknown])
        entries_j.append(variable[neighbour[unknown]])
        entries_w.append(np.full(int(unknown.sum()), -weight))
        known = ~unknown
        np.add.at(rhs, eq[known], weight * values[:, neighbour[known]].T)
    i = np.concatenate([np.arange(k), *entries_i])
    j = np.concatenate([np.arange(k), *entries_j])
    w = np.concatenate([diagonal, *entries_w])
    return sp.csc_matrix((w, (i, j)), shape=(k, k)), rhs, index


def _impute_one(pixels: np.ndarray, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The linear imputation (no noise) of one image's removed pixels: ((C, k) values, their flat indices)."""
    if not removed.any():
        return np.zeros((pixels.shape[0], 0)), np.zeros(0, dtype=np.int64)
    if removed.all():
        raise JitterCamError("every pixel is removed: nothing to impute from", option="removed")
    matrix, rhs, index = _system(removed, pixels)
    solved = np.asarray(spsolve(matrix, rhs)).reshape(index.size, pixels.shape[0])
    return solved.T, index


def _noise_scale(noise: float | Sequence[float] | torch.Tensor, channels: int) -> torch.Tensor:
    scale = torch.as_tensor(noise, dtype=torch.float32).flatten().cpu()
    if scale.numel() not in (1, channels) or not torch.isfinite(scale).all() or (scale < 0).any():
        raise JitterCamError(f"noise must be one non-negative std or one per channel ({channels}), got {noise!r}",
                             option="noise")
    return scale.expand(channels).clone()


def noisy_linear_imputation(
    images: torch.Tensor,
    removed: torch.Tensor,
    noise: float | Sequence[float] | torch.Tensor = NOISE,
    *,
    generator: torch.Generator | None = None,
    threads: int | None = None,
) -> torch.Tensor:
    """ROAD's imputation: every removed pixel becomes the weighted mean of its 8 neighbours (1/6 edge, 1/12
    diagonal, renormalised at the border), removed neighbours included, plus Gaussian noise.

    One sparse symmetric positive definite system per image (L = diag(Σ w) − W over the removed pixels, one
    right-hand side per channel), solved by SuperLU (`scipy.sparse.linalg.spsolve`, its default COLAMD
    ordering, float64, CPU), as the peers. Measured on a 224 × 224 image and a bilinear 7 × 7 map, one core:
    0.02 s (10% removed), 0.2 s (50%), 0.56 s (90%); `splu` with the minimum-degree ordering of Lᵀ + L was no
    faster, and conjugate gradients (scipy `cg`, rtol 1e-10, one channel at a time) were 3–4× slower and not
    exact (1e-9). The system is built vectorised (COO), not with the peers' `lil_matrix`. The authors'
    `NoisyLinearImputer` (tleemann/road_evaluation) builds the same system with opposite sign.

    Args:
        images: `(B, C, H, W)` floating-point images, any device.
        removed: `(B, H, W)` boolean masks, True where a pixel is removed.
        noise: the noise std, one value or one per channel (0 for none).
        generator: the CPU generator the noise is drawn from, `(C, k)` per image in batch order (None: torch's
            default generator, as pytorch-grad-cam's `torch.randn_like`).
        threads: images solved at once (None: torch's CPU thread count, `torch.get_num_threads()`); the
            result does not depend on it.

    Returns:
        `(B, C, H, W)` images on the input's device and dtype, the kept pixels unchanged.

    Raises:
        JitterCamError: `images` is not a floating-point `(B, C, H, W)` batch, `removed` is not one `(H, W)`
            mask per image or removes every pixel of one, `noise` is negative or has the wrong length, or
            `threads` is not a positive integer.
    """
    check_images(images)
    B, C, H, W = images.shape
    if not isinstance(removed, torch.Tensor) or tuple(removed.shape) != (B, H, W):
        shape = tuple(removed.shape) if isinstance(removed, torch.Tensor) else type(removed).__name__
        raise JitterCamError(f"removed must be one (H, W) mask per image, shape {(B, H, W)}, got {shape}",
                             option="removed")
    scale = _noise_scale(noise, C)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise JitterCamError(f"threads must be a positive integer, got {threads!r}", option="threads")
    masks = removed.detach().bool().cpu().numpy()
    pixels = images.detach().cpu().double().numpy()
    out = images.detach().clone()
    solved = _impute_all(list(pixels), list(masks), torch.get_num_threads() if threads is None else threads)
    for b in range(B):  # the noise in image order, whatever order the solves finished in
        _place(out, b, solved[b], scale, generator)
    return out


def _impute_all(pixels: Sequence[np.ndarray], removed: Sequence[np.ndarray],
                threads: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`_impute_one` of each (image, mask) pair, in order, up to `threads` at once: SuperLU releases the GIL
    while it factorises and solves, which is most of the time."""
    if threads <= 1 or len(removed) <= 1:
        return [_impute_one(p, r) for p, r in zip(pixels, removed, strict=True)]
    with ThreadPoolExecutor(min(threads, len(removed))) as pool:
        return list(pool.map(_impute_one, pixels, removed))


def _place(out: torch.Tensor, b: int, solved: tuple[np.ndarray, np.ndarray], scale: torch.Tensor,
           generator: torch.Generator | None) -> None:
    """Write one image's imputed pixels into `out[b]`, with noise `scale · N(0, 1)` drawn as (C, k)."""
    values, index = solved
    if index.size == 0:
        return
    filled = torch.from_numpy(values).float()
    filled += scale.view(-1, 1) * torch.randn(filled.shape, generator=generator)
    position = torch.from_numpy(index).to(out.device)
    out[b][:, position // out.shape[3], position % out.shape[3]] = filled.to(out.device, out.dtype)


def _removed(rank: np.ndarray, order: str, k: int) -> np.ndarray:
    """The `k` pixels of highest rank (0 = most relevant) for MoRF, of lowest for LeRF."""
    return rank < k if order == "morf" else rank >= rank.size - k


def _check_percentages(percentages: Sequence[float]) -> list[float]:
    try:
        values = [float(p) for p in percentages]
    except (TypeError, ValueError):
        raise JitterCamError(f"percentages must be numbers in [0, 100), got {percentages!r}",
                             option="percentages") from None
    if not values or any(not (0 <= p < 100) for p in values):  # 100%: nothing left to impute from
        raise JitterCamError(f"percentages must be numbers in [0, 100), got {list(percentages)!r}",
                             option="percentages")
    return values


def _check_orders(orders: Sequence[str]) -> list[str]:
    if isinstance(orders, str):
        orders = (orders,)
    chosen = list(orders)
    if not chosen or any(o not in ORDERS for o in chosen) or len(set(chosen)) != len(chosen):
        raise JitterCamError(f"orders must name 'morf' and/or 'lerf' once each, got {orders!r}", option="orders")
    return chosen


def road(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: Target = None,
    percentages: Sequence[float] = PERCENTAGES,
    *,
    orders: Sequence[str] = ORDERS,
    noise: float = NOISE,
    noise_space: str = "pixels",
    std: Sequence[float] | None = None,
    seed: int = 0,
    ties: str = "jitter",
    batch_size: int | None = None,
) -> ROADResult:
    """ROAD (Rong et al. 2022) per image: MoRF and LeRF probabilities and accuracies at each percentage of
    removed pixels, noisy linear imputation in between, and the combined score.

    The imputed images are made on the CPU (one sparse solve per image, order and percentage, as many at once
    as torch has CPU threads) and go through the model in chunks of `batch_size`, as `deletion`; the first
    pass reads the unchanged images.

    Args:
        model: the classifier, used as given (put it in eval mode yourself); it is not modified.
        images: `(B, C, H, W)` tensors exactly as the model takes them (already normalised).
        maps: raw `(B, h, w)` maps of any size; resized to `(H, W)` (bilinear), only their order matters.
        target: None (the model's top-1 on the unchanged image), an int, or one class per image.
        percentages: percentages of pixels removed, in [0, 100) (default 10, 20, …, 90: pytorch-grad-cam's).
        orders: which of "morf" and "lerf" to compute, in the order their noise is drawn (the other's
            results are NaN).
        noise: the std of the noise added to imputed pixels (0.01, all peers').
        noise_space: "pixels" (default, the authors': `noise` in [0, 1] pixel units, i.e. noise/std_c in the
            input tensor) or "input" (pytorch-grad-cam's and Quantus's: in the input tensor's units).
        std: the per-channel std of the input normalisation for `noise_space="pixels"`; None: the model's card.
        seed: seed of the CPU generator the noise (and the tie-breaking jitter) is drawn from.
        ties: "jitter" (default, the authors': 1e-4·N(0, 1) added to the min–max scaled map, ties broken at
            random) or "stable" (the map as it is, ties in row-major order; pytorch-grad-cam's and Quantus's
            order where the map has no ties).
        batch_size: imputed images per forward pass. None: the measured plan's (`jittercam.tuning`) where one
            was made, else the device's default.

    Returns:
        `ROADResult`: per-image means, combined score and curves, on the images' device.

    Raises:
        JitterCamError: bad `images` or `maps`; `percentages` not numbers in [0, 100); `orders` not "morf"
            and/or "lerf"; `noise` negative; `noise_space` unknown; `std` missing (no card) for pixel-space
            noise; `ties` unknown; `target` not a valid class index; `model` not returning `(N, classes)` scores.
    """
    check_images(images)
    maps = check_maps(maps, images.shape[0], "maps")
    if not callable(model):
        raise JitterCamError("model must be a callable torch module", option="model")
    values = _check_percentages(percentages)
    chosen = _check_orders(orders)
    if noise_space not in ("pixels", "input"):
        raise JitterCamError(f"noise_space must be 'pixels' or 'input', got {noise_space!r}", option="noise_space")
    if ties not in ("jitter", "stable"):
        raise JitterCamError(f"ties must be 'jitter' or 'stable', got {ties!r}", option="ties")
    if isinstance(noise, bool) or not isinstance(noise, Real) or not noise >= 0:
        raise JitterCamError(f"noise must be a non-negative std, got {noise!r}", option="noise")
    B, C, H, W = images.shape
    scale = torch.full((C,), float(noise))
    if noise_space == "pixels" and noise > 0:
        _, std = card_stats(model, (0.0,) * C, std)
        deviation = _noise_scale(std, C)
        if (deviation == 0).any():
            raise JitterCamError("std must not contain zeros", option="std")
        scale = scale / deviation
    device = images.device
    batch_size = forward_batch(model, images, batch_size)
    generator = torch.Generator().manual_seed(int(seed))

    with torch.no_grad():
        flat = resize(maps.to(device), (H, W)).flatten(1).float()
        if ties == "jitter":
            low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
            jitter = 1e-4 * torch.randn(H * W, generator=generator)
            flat = (flat - low) / (high - low + 1e-5) + jitter.to(device)
        order = torch.argsort(flat, dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(H * W, device=device).expand_as(order))
        rank_np = rank.cpu().numpy().reshape(B, H, W)
        first = torch.cat([scores(model, images[i:i + batch_size], True) for i in range(0, B, batch_size)])
        tgt = as_target(target, B, device)
        if tgt is None:
            tgt = first.argmax(1)
        check_target_range(tgt, first.shape[1])
        original = first.gather(1, tgt[:, None]).squeeze(1).float()

        P = len(values)
        nan = torch.full((B, P), float("nan"), device=device)
        prob = {o: nan.clone() for o in ORDERS}
        hits = {o: nan.clone() for o in ORDERS}
        pixels = images.detach().cpu().double().numpy()
        jobs = [(o, p, b) for o in chosen for p in range(P) for b in range(B)]
        buffer = torch.empty((min(batch_size, len(jobs)), C, H, W), device=device, dtype=images.dtype,
                             memory_format=buffer_layout(model, images))
        for begin in range(0, len(jobs), batch_size):
            chunk = jobs[begin:begin + batch_size]
            batch = buffer[: len(chunk)]
            removed = [_removed(rank_np[b], o, int(H * W * values[p] / 100)) for o, p, b in chunk]
            solved = _impute_all([pixels[b] for _, _, b in chunk], removed, torch.get_num_threads())
            for row, (_, _, b) in enumerate(chunk):
                batch[row] = images[b]
                _place(batch, row, solved[row], scale, generator)
            probs = scores(model, batch, True)
            for row, (o, p, b) in enumerate(chunk):
                prob[o][b, p] = probs[row, tgt[b]].float()
                hits[o][b, p] = float(probs[row].argmax() == tgt[b])
    morf, lerf = prob["morf"].mean(1), prob["lerf"].mean(1)
    return ROADResult(morf, lerf, (lerf - morf) / 2, prob["morf"], prob["lerf"], hits["morf"], hits["lerf"],
                      torch.tensor(values, device=device), original, tgt.clone())
