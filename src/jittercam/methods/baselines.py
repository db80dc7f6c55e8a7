"""The paper's baselines (§4 and §4.3): maps that depend neither on what the image shows nor on the
model, and cost no forward pass.

* `centre` — a heat map radiating from the centre of the image;
* `random` — a heat map radiating from a random point, drawn per image;
* `constant` — 0.9 everywhere but one pixel at 1 and one at 0 (§4.3), so that min–max scaling leaves it
  a near-constant map instead of turning it into zeros.

The paper gives no formula for "radiating"; here it is a cone, falling linearly with the Euclidean
distance from the point (in pixels, so it is round on a non-square image):

    map(y, x) = 1 − d(y, x) / d_max,   d_max = max over the image's pixels of d,

with pixel (i, j) at coordinates (i, j), so the map is 1 at the point and 0 at the pixel farthest from
it: it already spans [0, 1], and `jittercam.upsample` at the same size returns it unchanged. Metrics
that only rank pixels (deletion/insertion) or look at the maximum (the pointing game) would give the
same result with any other decreasing function of the distance, a Gaussian included; those that use the
values (faithfulness, the weak-localisation thresholds) would not.

The random draws (`random`'s point, `constant`'s two pixels) come from a generator seeded with `seed`
and a hash of the image's values (`image_generators`): only so that an image's map does not depend on
the batch it comes in, its position there, `batch_size` or the device.
"""
from __future__ import annotations

import hashlib
import secrets

import torch
from torch import nn

from ..errors import JitterCamError
from .base import CAMMethod
from .registry import register_method


def radial_map(height: int, width: int, points: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Cones `1 − d / d_max` around `points`. Computed in float64 on the CPU, so every device gets the
    same values. A 1 × 1 image gives 1.

    Args:
        height: H, in pixels.
        width: W, in pixels.
        points: `(B, 2)` (row, column) of each cone's top, in pixel coordinates (may be fractional).
        dtype: the maps' dtype (float32 by default).

    Returns:
        `(B, H, W)` maps on `points`' device.
    """
    device = points.device
    points = points.to("cpu", torch.float64)
    rows = torch.arange(height, dtype=torch.float64)
    columns = torch.arange(width, dtype=torch.float64)
    dy = rows[None, :, None] - points[:, 0, None, None]
    dx = columns[None, None, :] - points[:, 1, None, None]
    distance = torch.sqrt(dy * dy + dx * dx)
    farthest = distance.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return (1 - distance / farthest[:, None, None]).to(device=device, dtype=dtype)


def image_generators(images: torch.Tensor, seed: int | None = 0) -> list[torch.Generator]:
    """One CPU `torch.Generator` per image, seeded from `seed` and a hash (BLAKE2b) of the image's
    values, dtype and shape: an image gets the same draws whichever batch, chunk or position it is in,
    and on any device; two images differ (unless they are identical).

    Args:
        images: `(B, 3, H, W)` images.
        seed: the seed (0 by default); None salts the hash with a fresh random number instead, so every
            call draws anew.

    Returns:
        B generators, in the images' order.
    """
    salt = secrets.randbits(64) if seed is None else seed
    generators = []
    for image in images.detach():
        digest = hashlib.blake2b(digest_size=8)
        digest.update(f"{salt}/{image.dtype}/{tuple(image.shape)}/".encode())
        digest.update(image.to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
        generators.append(torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little")))
    return generators


def _draw(generator: torch.Generator, high: int) -> int:
    """One index in [0, high)."""
    return int(torch.randint(0, high, (1,), generator=generator))


def random_points(images: torch.Tensor, seed: int | None = 0) -> torch.Tensor:
    """The pixels `RandomBaseline(seed=seed)` radiates from: one uniform draw over the H·W pixels per
    image.

    Args:
        images: `(B, 3, H, W)` images.
        seed: as `RandomBaseline` takes it (0 by default; None draws anew).

    Returns:
        `(B, 2)` long (row, column) per image, on the CPU.
    """
    width = images.shape[-1]
    draws = [_draw(generator, images.shape[-2] * width) for generator in image_generators(images, seed)]
    flat = torch.tensor(draws, dtype=torch.long)
    return torch.stack([flat // width, flat % width], dim=1)


def constant_pixels(images: torch.Tensor, seed: int | None = 0) -> torch.Tensor:
    """The pixel at 1 and the pixel at 0 in `ConstantBaseline(seed=seed)`'s maps for `images`: the first
    uniform over the H·W pixels, the second uniform over the others.

    Args:
        images: `(B, 3, H, W)` images.
        seed: as `ConstantBaseline` takes it (0 by default; None draws anew).

    Returns:
        `(B, 2)` long row-major pixel indices (the one at 1, the one at 0), on the CPU.

    Raises:
        JitterCamError: the images have fewer than 2 pixels.
    """
    pixels = images.shape[-2] * images.shape[-1]
    if pixels < 2:
        raise JitterCamError("the constant baseline needs an image of at least 2 pixels")
    chosen = []
    for generator in image_generators(images, seed):
        high = _draw(generator, pixels)
        low = _draw(generator, pixels - 1)
        chosen.append((high, low + (low >= high)))  # any pixel but the one at 1
    return torch.tensor(chosen, dtype=torch.long)


class _Baseline(CAMMethod):
    """A map at the input's resolution, in the input's dtype and on its device, made without any
    forward pass. The target is checked for its type, its count and its sign (`jittercam.inputs.as_target`,
    as for every method), not against the model's number of classes, which would need a forward pass;
    otherwise it is ignored."""

    uses_layer = False
    layer_map = False

    def passes(self, input_size: int | None = None) -> int:
        return 0

    def options(self) -> dict:
        return {}

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return self.maps(images).to(device=images.device, dtype=images.dtype)

    def maps(self, images: torch.Tensor) -> torch.Tensor:
        """The baseline's maps for `images`, on any device.

        Args:
            images: `(B, 3, H, W)` images (their size, and for a seeded baseline their values, count).

        Returns:
            `(B, H, W)` float32 maps.
        """
        raise NotImplementedError


class _SeededBaseline(_Baseline):
    """A baseline that draws something per image: from a generator seeded with `seed` (0 by default) and
    the image's values (`image_generators`), so the same seed gives the same map for the same image in
    every call, whatever the batch around it or `batch_size`, on any device, while the images of a batch
    get different draws. `seed=None` draws anew at every call."""

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        seed: int | None = 0,
        batch_size: int | None = None,
        input_size: int | None = None,
    ) -> None:
        super().__init__(model, target_layer, batch_size=batch_size, input_size=input_size)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise JitterCamError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed

    def options(self) -> dict:
        return {"seed": self.seed}


@register_method("centre")
class CentreBaseline(_Baseline):
    """A cone radiating from the image's centre ((H − 1) / 2, (W − 1) / 2): 1 there, falling linearly to
    0 at the corners. On an even side the centre falls between pixels, and the 2 (or 4) pixels around
    it share the maximum; the first in row-major order is the one `argmax` points at.

    Args:
        model: the classifier (not run: a baseline costs no forward pass).
        target_layer: must be None: a baseline uses no layer.
        batch_size: images per chunk; None: the measured plan's, else the device's default.
        input_size: not used (no layer is probed); accepted as every method takes it.
        layer: not used.
        precision: "fp32" only.

    Raises:
        JitterCamError: a `target_layer` is given; `batch_size` is not a positive integer; another
            `precision`.
    """

    def maps(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        centre = torch.tensor([(height - 1) / 2, (width - 1) / 2])
        return radial_map(height, width, centre.expand(images.shape[0], 2))


@register_method("random")
class RandomBaseline(_SeededBaseline):
    """A cone radiating from a random pixel, drawn uniformly over the image for each image
    (`random_points` tells which): 1 at that pixel, falling linearly to 0 at the pixel farthest from it.

    Args:
        model: the classifier (not run: a baseline costs no forward pass).
        target_layer: must be None: a baseline uses no layer.
        seed: the seed of the per-image draws (0 by default); None draws anew at every call.
        batch_size: images per chunk; None: the measured plan's, else the device's default.
        input_size: not used (no layer is probed); accepted as every method takes it.

    Raises:
        JitterCamError: a `target_layer` is given; `seed` is neither an integer nor None; `batch_size` is
            not a positive integer.
    """

    def maps(self, images: torch.Tensor) -> torch.Tensor:
        return radial_map(images.shape[-2], images.shape[-1], random_points(images, self.seed))


@register_method("constant")
class ConstantBaseline(_SeededBaseline):
    """§4.3's 'Constant': 0.9 everywhere, except one pixel at 1 and another at 0. The paper puts these
    two at "random pixels"; here they are drawn uniformly for each image (`constant_pixels` tells which),
    always two distinct pixels, so min–max scaling at the same size leaves every other pixel at exactly
    0.9 (after a resize the plateau stays constant, near 0.9). Needs at least two pixels (a
    `JitterCamError` otherwise, when called).

    Args:
        model: the classifier (not run: a baseline costs no forward pass).
        target_layer: must be None: a baseline uses no layer.
        seed: the seed of the per-image draws (0 by default); None draws anew at every call.
        batch_size: images per chunk; None: the measured plan's, else the device's default.
        input_size: not used (no layer is probed); accepted as every method takes it.

    Raises:
        JitterCamError: a `target_layer` is given; `seed` is neither an integer nor None; `batch_size` is
            not a positive integer.
    """

    value = 0.9

    def maps(self, images: torch.Tensor) -> torch.Tensor:
        count, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        maps = torch.full((count, height * width), self.value, dtype=torch.float32)
        rows = torch.arange(count)
        pixels = constant_pixels(images, self.seed)
        maps[rows, pixels[:, 0]] = 1.0
        maps[rows, pixels[:, 1]] = 0.0
        return maps.view(count, height, width)
