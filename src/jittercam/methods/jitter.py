"""Jitter-CAM (Hartley et al., BMVC 2021, §3): a CAM at (m + d) × (m + d) from (d + 1)² patches."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..card import model_device
from ..compiled import check_compile
from ..errors import JitterCamError
from ..inputs import check_target_range
from ..probe import TargetLayer
from .base import CAMMethod, at_size, autocast, layer_activations
from .gradient import GradCAM
from .registry import register_wrapper

INTERPOLATIONS = ("bilinear", "nearest")


def enlarge(images: torch.Tensor, pixels: int, interpolation: str) -> torch.Tensor:
    """Square images resized to `pixels` (bilinear with half-pixel centres, or nearest)."""
    if pixels == images.shape[-1]:
        return images
    align = False if interpolation == "bilinear" else None
    return F.interpolate(images, size=pixels, mode=interpolation, align_corners=align)


def patch_windows(enlarged: torch.Tensor, pixels: int, stride: int) -> torch.Tensor:
    """`(B, d + 1, d + 1, 3, p, p)`: a view of the enlarged images with one p × p window per offset
    (k·i, k·j) — the patches of eqs. (1)–(2), in row-major order of (i, j)."""
    return enlarged.unfold(2, pixels, stride).unfold(3, pixels, stride).permute(0, 2, 3, 1, 4, 5)


class MapSizes:
    """m at each input size: the probe's at its own size, otherwise measured by one forward that stops at
    the target layer (no backward, no extra explanation)."""

    def __init__(self, method: CAMMethod) -> None:
        if method.layer is None:
            raise JitterCamError(f"{type(method).__name__} has no target layer")
        self.method, self.layer = method, method.layer
        self.sizes = {self.layer.input_size: self.layer.map_size}

    def __call__(self, pixels: int, device: torch.device) -> int:
        if pixels not in self.sizes:
            probe = torch.zeros(1, 3, pixels, pixels, device=device)
            with at_size(type(self.method).__name__, pixels):
                self.sizes[pixels] = int(layer_activations(self.method.model, self.layer, probe).shape[-1])
        return self.sizes[pixels]


def check_square(images: torch.Tensor) -> None:
    if images.shape[-1] != images.shape[-2]:
        raise JitterCamError(f"images must be a square (B, 3, p, p) batch, got shape {tuple(images.shape)}")


def as_base(model: nn.Module, base, target_layer, batch_size, input_size, precision="fp32",
            compile=False) -> CAMMethod:
    """`base` built for `model` when it is a class; checked to give maps at its layer's resolution. A base
    built here runs compiled when `compile` says so; "auto" (True) becomes "default" for it: its chunks are
    full batches of patches, a throughput case, where CUDA graphs are not worth their memory."""
    if isinstance(base, type):
        options: dict = {} if precision == "fp32" else {"precision": precision}
        mode = check_compile(compile)
        if mode is not None:
            options["compile"] = "default" if mode == "auto" else mode
        base = base(model, target_layer, batch_size=batch_size, input_size=input_size, **options)
    elif target_layer is not None:
        raise JitterCamError("target_layer goes to the base method when the base is already built")
    if not getattr(base, "layer_map", False) or base.layer is None:
        raise JitterCamError(f"{type(base).__name__} does not give maps at a target layer's resolution")
    return base


# the largest final map, in multiples of m: 8m enlarges the input 8-fold ((7m + 1)² Jitter-CAM patches); the
# paper's sweep ends near 3m, and a size meant as pixels (--size 224) would ask for hours or all the memory
MAX_SCALE = 8


class EnlargingMethod(CAMMethod):
    """What Jitter-CAM and Upscale-CAM share: a base method of the contract, a final map size
    `size` = m + d, and the input enlarged by d·k pixels with the probe's stride k. Their maps are
    (m + d) × (m + d), not the layer's, so they wrap no further.

    Args:
        model: the classifier to explain.
        base: the base method, a class (built here for `model` with `target_layer`, `batch_size`,
            `input_size` and `precision`) or a built instance; its maps must have its target layer's
            resolution (`layer_map`). Grad-CAM by default.
        size: the final map size m + d, in the layer's cells; None doubles m; below m or above
            `MAX_SCALE` · m is refused.
        target_layer: the base method's target layer (a submodule of `model` or its name), when `base` is
            a class; None (default) finds it by probing the model.
        batch_size: images per forward pass, for this method and the base it builds; None: the measured
            plan's, else the device's default.
        input_size: the square input size the base's target layer is probed at; None: the model card's.
        interpolation: how the input is enlarged: "bilinear" (default; half-pixel centres) or "nearest".
        precision: "fp32" (default), or "bf16"/"fp16" where the base supports it.
        compile: False (default); True or a mode runs the base built here compiled (see `CAMMethod`;
            "auto" is "default" for the base); only with a base that has a compiled path.

    Raises:
        JitterCamError: an unknown `interpolation`; `target_layer` given with a built base; a base whose
            maps do not have a target layer's resolution; `size` below m or above 8m; `compile` with a base that has no
            compiled path; or as `CAMMethod` raises it.
    """

    layer: TargetLayer  # the base's, which as_base checks: never None here

    layer_map = False
    compiles = True  # with the default base, Grad-CAM; an instance has its base's

    def __init__(
        self,
        model: nn.Module,
        base: type[CAMMethod] | CAMMethod = GradCAM,
        size: int | None = None,
        target_layer: nn.Module | str | None = None,
        *,
        batch_size: int | None = None,
        input_size: int | None = None,
        interpolation: str = "bilinear",
        precision: str = "fp32",
        compile: bool | str | None = False,
    ) -> None:
        if interpolation not in INTERPOLATIONS:
            raise JitterCamError(f"interpolation must be 'bilinear' or 'nearest', not {interpolation!r}")
        self.base = as_base(model, base, target_layer, batch_size, input_size, precision, compile)
        self.precisions = self.base.precisions
        self.compiles = self.base.compiles
        super().__init__(model, batch_size=batch_size, layer=self.base.layer, precision=precision, compile=compile)
        self.interpolation = interpolation
        self.size = size
        self._map_size = MapSizes(self.base)
        self._final_size(self.layer.map_size)
        self.check_input_sizes()

    def check_input_sizes(self) -> None:
        """Refuse now a model that will not run at the input size the method needs (Upscale-CAM's enlarged
        image); Jitter-CAM's patches have the input's own size, so nothing is checked here."""

    def _final_size(self, map_size: int) -> int:
        size = self.size if self.size is not None else 2 * map_size
        if size < map_size:
            raise JitterCamError(
                f"size {size} is smaller than the map size m={map_size} of target layer {self.layer.name!r}",
                option="size")
        if size > MAX_SCALE * map_size:
            raise JitterCamError(
                f"size {size} is more than {MAX_SCALE} times the map size m={map_size} of target layer "
                f"{self.layer.name!r}: the map's side counts the layer's cells (m + d; 2m = {2 * map_size} by "
                f"default), not pixels, and at most {MAX_SCALE}m = {MAX_SCALE * map_size} enlarges the input "
                f"{MAX_SCALE}-fold ({(size - map_size + 1) ** 2:,} patches and an input of "
                f"{self.layer.stride * size:,} pixels a side would be asked now)", option="size")
        return size

    def geometry(self, pixels: int, device: torch.device) -> tuple[int, int]:
        """The base map's size m and the final size m + d for a p × p input.

        Args:
            pixels: the input's side p, in pixels.
            device: where to run the forward that measures m at a size the probe did not see.

        Returns:
            `(m, m + d)`.
        """
        m = self._map_size(pixels, device)
        return m, self._final_size(m)

    def compiled_pieces(self, input_size: int) -> set[tuple[str | None, int]]:
        return self.base.compiled_pieces(input_size)  # Jitter-CAM's patches have the input's size

    def options(self) -> dict:
        return {"base": self.base, "size": self.size, "interpolation": self.interpolation,
                "batch_size": self.batch_size, **self.precision_option()}

    def _original_top1(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """`target`, or the top-1 class of the original (not enlarged) images; range-checked."""
        if target is None:
            with torch.no_grad(), autocast(images.device, self.precision):
                return self.model(images).argmax(dim=1)
        check_target_range(target, self.layer.num_classes)
        return target


@register_wrapper("jittercam")
class JitterCAM(EnlargingMethod):
    """Wraps any method of the contract (`base`, a class or a built instance; Grad-CAM by default).

    For an input of p × p pixels whose base map is m × m, with the network's total stride k (the probe's,
    k = round(p₀ / m₀) at the model's input size p₀):

    1. enlarge the input to p + d·k pixels, d = size − m (bilinear, align_corners=False, by default);
    2. take the (d + 1)² patches of p × p pixels at offsets (k·i, k·j), i, j = 0..d;
    3. explain every patch with the base method for the same class (the top-1 class of the *original*
       image when `target` is None): E_ij of size m × m;
    4. J[i:i+m, j:j+m] += E_ij and C[i:i+m, j:j+m] += 1 (eqs. 1–2, C starting at 0);
    5. return J / C, of size (m + d) × (m + d).

    The rounding of k is the rule for a non-integer stride: Inception v3 at 299 px has m = 8, so
    k = round(37.375) = 37 and the 16 × 16 map comes from 81 patches of a 595 px image, as in the authors'
    code.

    The authors' code differs from the paper in two ways, offered as options: `interpolation="nearest"`
    and `count_start=1` (their count matrix starts at 1).

    Args:
        model: the classifier to explain.
        base: the base method, a class or a built instance (Grad-CAM by default), as `EnlargingMethod`
            takes it.
        size: m + d; None doubles m (14 for ResNet50/DenseNet121, 16 for Inception v3). `size == m` returns
            exactly the base method's map.
        target_layer: the base method's target layer, when `base` is a class; None finds it by probing.
        count_start: the value the count matrix C starts at: 0 by default (the paper's eqs. 1–2); the
            authors' code starts it at 1.
        **options (Any): `batch_size` (the number of patches per forward pass), `input_size`,
            `interpolation` ("bilinear" by default, "nearest" as the authors' code) and `precision`, as
            `EnlargingMethod` takes them.

    Raises:
        JitterCamError: `count_start` is not a number at least 0; as `EnlargingMethod` raises it; when
            called, the images are not square.
    """

    def __init__(
        self,
        model: nn.Module,
        base: type[CAMMethod] | CAMMethod = GradCAM,
        size: int | None = None,
        target_layer: nn.Module | str | None = None,
        *,
        count_start: int = 0,
        **options,
    ) -> None:
        if isinstance(count_start, bool) or not isinstance(count_start, (int, float)) or not count_start >= 0:
            raise JitterCamError(f"count_start must be a number at least 0, not {count_start!r}",
                                 option="count_start")
        super().__init__(model, base, size, target_layer, **options)
        self.count_start = count_start

    def passes(self, input_size: int | None = None) -> int:
        m, size = self.geometry(input_size or self.layer.input_size, model_device(self.model))
        return (size - m + 1) ** 2 * self.base.passes(input_size)

    def options(self) -> dict:
        return {**super().options(), "count_start": self.count_start}

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return self._jitter(images, self._original_top1(images, target)[:, None]).squeeze(1)

    def _explain_many(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # the base explains each patch for the K classes at once (one forward, K backward for a gradient CAM)
        return self._jitter(images, self._original_top1(images, targets))

    def _jitter(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`(B, K, size, size)` maps for `(B, K)` range-checked classes."""
        check_square(images)
        batch, _, pixels, _ = images.shape
        classes = target.shape[1]
        m, size = self.geometry(pixels, images.device)
        d = size - m
        stride = self.layer.stride

        enlarged = enlarge(images, pixels + d * stride, self.interpolation)
        windows = patch_windows(enlarged, pixels, stride)  # a view, copied chunk by chunk
        per_image = (d + 1) ** 2
        image_of = torch.arange(batch, device=images.device).repeat_interleave(per_image)
        row_of = torch.arange(d + 1, device=images.device).repeat_interleave(d + 1).repeat(batch)
        col_of = torch.arange(d + 1, device=images.device).repeat((d + 1) * batch)
        chunk = self.chunk_size(images)
        cams = []
        for start in range(0, batch * per_image, chunk):
            pick = slice(start, start + chunk)
            patches = windows[image_of[pick], row_of[pick], col_of[pick]]
            wanted = target[image_of[pick]]
            cams.append(self.base(patches, wanted[:, 0])[:, None] if classes == 1 else self.base(patches, wanted))
        # Eqs. (1)-(2) as one fold: block l of image b (and class k) is added at (l // (d+1), l % (d+1))
        blocks = torch.cat(cams).reshape(batch, per_image, classes, m * m).permute(0, 2, 3, 1)
        blocks = blocks.reshape(batch * classes, m * m, per_image)
        jitter = F.fold(blocks, output_size=size, kernel_size=m)
        count = F.fold(torch.ones_like(blocks[:1]), output_size=size, kernel_size=m) + self.count_start
        return (jitter / count).reshape(batch, classes, size, size)
