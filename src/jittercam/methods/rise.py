"""RISE (Petsiuk et al., BMVC 2018): saliency as the mean of random masks weighted by the model's
confidence in the target class on the masked input. The masks follow eclique/RISE `explanations.py`
(`RISE.generate_masks`)."""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

from ..errors import JitterCamError
from ..inputs import check_flag, check_target_range
from .base import CAMMethod
from .registry import register_method

_MASK_ELEMENTS = 1 << 22  # full-size mask values made at once (16 MB in float32), unless a forward needs more


class MaskGrids(NamedTuple):
    """What the random draw decides about a set of RISE masks, before they are made full size: enough
    to make any of them again, in any order and on any device."""

    grids: torch.Tensor  #: (N, s, s) float 0/1, the kept cells
    shifts: torch.Tensor  #: (N, 2) long, the (row, column) offset of the crop into the upsampled grid
    size: tuple[int, int]  #: (H, W) of the masks


def _cell(grid: int, length: int) -> int:
    return math.ceil(length / grid)


def sample_grids(
    count: int, grid: int, keep: float, size: tuple[int, int], generator: torch.Generator | None = None
) -> MaskGrids:
    """Draw `count` binary s × s grids (each cell kept with probability `keep`) and their random shifts,
    on the CPU from `generator` (the same draws whatever device the masks are later made on).

    As the reference: a cell is kept where a uniform draw is < `keep`; the shift of each mask is drawn
    uniformly in [0, cell) for the rows, then for the columns, cell = ceil(H / s) (resp. W).

    Args:
        count: N, the number of masks.
        grid: s, the side of the grids.
        keep: the probability that a cell is kept.
        size: `(H, W)` of the full-size masks.
        generator: the CPU generator to draw from; None: torch's default generator.

    Returns:
        The grids `(N, s, s)`, shifts `(N, 2)` and size, as `MaskGrids`.
    """
    height, width = size
    grids = (torch.rand(count, grid, grid, generator=generator) < keep).float()
    rows = torch.randint(0, _cell(grid, height), (count,), generator=generator)
    columns = torch.randint(0, _cell(grid, width), (count,), generator=generator)
    return MaskGrids(grids, torch.stack([rows, columns], dim=1), (height, width))


def _mirror(index: torch.Tensor, length: int) -> torch.Tensor:
    """Index into [0, length) reflected about the edge pixels' centres, the edge not repeated
    (numpy's / skimage's 'reflect', scipy.ndimage's 'mirror'): -1 -> 1, length -> length - 2."""
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    index = index.remainder(period)
    return torch.where(index > length - 1, period - index, index)


def interpolation_matrix(grid: int, cell: int) -> torch.Tensor:
    """`(up, s)` float64 weights, up = (s + 1)·cell: row o is the linear interpolation of a length-s
    signal at output pixel o, as `skimage.transform.resize(order=1, mode='reflect',
    anti_aliasing=False)` computes it — half-pixel centres (x = (o + 0.5)·s/up − 0.5) and the
    neighbours outside the grid mirrored (x = −0.25 mixes cells 0 and 1, not cell 0 with itself)."""
    up = (grid + 1) * cell
    x = (torch.arange(up, dtype=torch.float64) + 0.5) * (grid / up) - 0.5
    left = x.floor()
    fraction = x - left
    left = left.long()
    matrix = torch.zeros(up, grid, dtype=torch.float64)
    rows = torch.arange(up)
    matrix.index_put_((rows, _mirror(left, grid)), 1 - fraction, accumulate=True)
    matrix.index_put_((rows, _mirror(left + 1, grid)), fraction, accumulate=True)
    return matrix


class MaskMaker:
    """Makes the full-size masks of `grids` on `device`, any slice at a time: each is the s × s grid
    upsampled (bilinear, as skimage's resize with mode='reflect') to (s + 1)·cell pixels per side and
    cropped to H × W at its shift — computed as R_rows · G · R_colsᵀ with the crop's rows of the
    interpolation matrices, so the upsampled (s + 1)·cell image is never made. Agrees with the
    reference's skimage masks to float32 rounding (~3e-8)."""

    def __init__(
        self, grids: MaskGrids, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> None:
        height, width = grids.size
        grid = grids.grids.shape[-1]
        self.grids = grids
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.dtype = dtype
        self.rows = interpolation_matrix(grid, _cell(grid, height)).to(device=self.device, dtype=dtype)
        self.columns = interpolation_matrix(grid, _cell(grid, width)).to(device=self.device, dtype=dtype)
        self.row_range = torch.arange(height, device=self.device)
        self.column_range = torch.arange(width, device=self.device)

    def __len__(self) -> int:
        return self.grids.grids.shape[0]

    def __call__(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Masks `start:stop`, `(n, H, W)`."""
        shifts = self.grids.shifts[start:stop].to(self.device)
        row_weights = self.rows[shifts[:, :1] + self.row_range]  # (n, H, s)
        column_weights = self.columns[shifts[:, 1:] + self.column_range]  # (n, W, s)
        cells = self.grids.grids[start:stop].to(device=self.device, dtype=self.dtype)
        return row_weights @ cells @ column_weights.transpose(1, 2)


def grid_masks(
    grids: MaskGrids,
    start: int = 0,
    stop: int | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Masks `start:stop` of `grids` at full size (see `MaskMaker`).

    Args:
        grids: the drawn grids and shifts (`sample_grids`).
        start: the first mask made.
        stop: one past the last mask made; None: to the end.
        device: where the masks are made; None: the CPU.
        dtype: their dtype (float32 by default).

    Returns:
        `(n, H, W)` masks on `device`.
    """
    return MaskMaker(grids, device, dtype)(start, stop)


def rise_masks(
    size: int | tuple[int, int],
    masks: int = 8000,
    grid: int = 7,
    keep: float = 0.5,
    seed: int = 0,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """All `masks` RISE masks of `size` at once — the ones `RISE(masks=..., grid=..., keep=..., seed=...)`
    uses for inputs of that size. For inspection and tests: 8000 masks at 224 px take 1.6 GB in float32;
    the method itself makes them a chunk at a time.

    Args:
        size: `(H, W)` of the inputs, or an int for a square.
        masks: N, the number of masks (8000).
        grid: s, the side of the binary grids (7).
        keep: p, the probability that a cell is kept (0.5).
        seed: the seed of the draw (0).
        device: where the masks are made; None: the CPU.

    Returns:
        `(N, H, W)` float32 masks.
    """
    height, width = (size, size) if isinstance(size, int) else size
    generator = torch.Generator().manual_seed(seed)
    return grid_masks(sample_grids(masks, grid, keep, (height, width), generator), device=device)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise JitterCamError(f"{name} must be a positive integer, got {value!r}")
    return value


@register_method("rise")
class RISE(CAMMethod):
    """RISE (Petsiuk et al. 2018): saliency S = Σ_i P_c(I ⊙ M_i) · M_i / (N · p), where P_c is the
    softmax probability of the target class c and M_i are N random masks; the map has the input's
    resolution `(B, H, W)`.

    The masks are made as in eclique/RISE `generate_masks`: N binary s × s grids (`grid` = s), each cell
    kept with probability `keep` = p, upsampled bilinearly to (s + 1)·cell pixels per side,
    cell = ceil(H / s), and cropped to H × W at a random shift in [0, cell) per axis. The upsampling is
    skimage's `resize(order=1, mode='reflect', anti_aliasing=False)` written with torch matrices
    (`interpolation_matrix`: half-pixel centres, the neighbours beyond the edge mirrored). What remains
    different: the masks are computed in the input's dtype (float32: within 2e-7 of the reference's
    float64 masks, checked against scipy.ndimage.zoom, which skimage calls), and the random numbers come
    from torch, not numpy, so no seed reproduces the reference's own masks. The images are multiplied
    with the masks as given, i.e. the *normalised* tensor, so a masked-out pixel is 0 there (the mean
    colour), as in the reference.

    Determinism: the grids and shifts are drawn on the CPU from a `torch.Generator` seeded with `seed`
    on every call, so the same seed gives the same masks on every call, for every image of the batch
    and on any device; full-size masks are then made on the input's device, a chunk at a time (never
    all N at once). Maps on CPU and GPU agree to float32 rounding, not bit for bit.

    Unlike the reference (which returns the maps of all classes), the map of the target alone is
    returned. With `target=None` one more forward pass on the unmasked images finds their top-1 class;
    `passes()` counts the N masked passes only. The target is range-checked against the logits.

    Args:
        model: the classifier to explain.
        target_layer: must be None: RISE uses no layer.
        masks: N, the number of masks (8000).
        grid: s, the side of the binary grids (7).
        keep: p, the probability that a cell is kept, in (0, 1] (0.5).
        seed: the seed of the masks' draw (0); None draws fresh masks for every chunk of `batch_size`
            images.
        progress: a tqdm bar over the masks on stderr (off by default).
        batch_size: masked inputs per forward pass, images × masks; when None, the measured plan's, else
            the device's default.
        input_size: not used (no layer is probed); accepted as every method takes it.
        compile: False (default); True or a mode runs the masked passes through the compiled model, the
            last forward padded to a full one (see `CAMMethod`).

    Raises:
        JitterCamError: a `target_layer` is given; `masks` or `grid` is not a positive integer; `keep` is
            not a probability in (0, 1]; `seed` is neither an integer nor None; `batch_size` is not a
            positive integer; `compile` is not a valid value.
    """

    precisions = ("fp32",)  # bf16: 8.8 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    uses_layer = False
    layer_map = False
    compiles = True  # the masked passes (`compile=`)

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        masks: int = 8000,
        grid: int = 7,
        keep: float = 0.5,
        seed: int | None = 0,
        progress: bool = False,
        batch_size: int | None = None,
        input_size: int | None = None,
        compile: bool | str | None = False,
    ) -> None:
        super().__init__(model, target_layer, batch_size=batch_size, input_size=input_size, compile=compile)
        self.masks = _positive_int("masks", masks)
        self.grid = _positive_int("grid", grid)
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise JitterCamError(f"keep must be a probability in (0, 1], got {keep!r}")
        self.keep = float(keep)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise JitterCamError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self.progress = check_flag(progress, "progress")

    def passes(self, input_size: int | None = None) -> int:
        return self.masks

    def options(self) -> dict:
        return {
            "masks": self.masks,
            "grid": self.grid,
            "keep": self.keep,
            "seed": self.seed,
            "batch_size": self.batch_size,
            **self.precision_option(),
        }

    def grids(self, size: tuple[int, int]) -> MaskGrids:
        """The grids and shifts of this method's masks for inputs of `size` (H, W).

        Args:
            size: `(H, W)` of the inputs.

        Returns:
            The `MaskGrids` drawn from `seed` (fresh ones when `seed` is None).
        """
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return sample_grids(self.masks, self.grid, self.keep, size, generator)

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        count, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        make_masks = MaskMaker(self.grids((height, width)), images.device, images.dtype)
        per_forward = max(1, self.chunk_size(images) // count)
        # masks are made a few at a time (at least one forward's worth, about 16 MB otherwise)
        per_chunk = max(per_forward, min(self.masks, _MASK_ELEMENTS // (height * width)))
        saliency = torch.zeros(count, height * width, dtype=torch.float32, device=images.device)
        with torch.no_grad():
            if target is None:
                target = self.model(images).argmax(dim=1)
            checked = False
            for chunk_start, chunk_stop in self._chunks(per_chunk):
                masks = make_masks(chunk_start, chunk_stop)
                for start in range(0, masks.shape[0], per_forward):
                    some = masks[start : start + per_forward]
                    masked = (images[:, None] * some[None, :, None]).flatten(0, 1)  # image-major
                    logits = self.run_model(masked, per_forward * count)
                    if not checked:
                        check_target_range(target, logits.shape[1])
                        checked = True
                    probabilities = logits.float().softmax(dim=1).view(count, some.shape[0], -1)
                    weights = probabilities.gather(2, target.view(count, 1, 1).expand(-1, some.shape[0], 1))
                    saliency += weights.squeeze(2) @ some.flatten(1).float()
        saliency /= self.masks * self.keep
        return saliency.view(count, height, width).to(images.dtype)

    def _chunks(self, size: int) -> Iterator[tuple[int, int]]:
        bounds = [(start, min(start + size, self.masks)) for start in range(0, self.masks, size)]
        if not self.progress:
            return iter(bounds)
        from tqdm import tqdm

        return iter(tqdm(bounds, desc="RISE masks", unit="chunk"))
