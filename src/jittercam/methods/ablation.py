"""Ablation-CAM (Desai & Ramaswamy, WACV 2020): a channel's weight is the relative drop of the target's
logit when that channel of the target layer is switched off. Only the layers after the target layer run
again — or none at all, when they are affine in the layer's output (the drop then has a closed form)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import compiled as compiled_pieces
from ..card import model_device, model_dtype
from ..errors import JitterCamError
from ..inputs import (
    Target,
    as_target,
    check_flag,
    check_images,
    resolve_targets,
)
from ..probe import TargetLayer
from .base import CAMMethod, activations_and_logits, compiled_gradients, pair_chunks, progress_bar
from .capture import LayerCapture
from .registry import register_method

HEAD_VALUES = 2**25  # activation values per head-only re-run (128 MiB of float32; 334 copies of ResNet50's)
CHECK_CHANNELS = 8  # channels re-run to check the closed form, once per input size
AUTO_OFFSET = 1e7  # pytorch-grad-cam's ablation value when the activations never reach 0: min - 1e7
PROBE_IMAGES = 2  # replaying two images catches a head that reads the batch size from the input


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class _Rerun:
    """What the model is fed while the layer's output is replaced by ablated copies: the images themselves
    (`pixels` None: the whole network runs again, as pytorch-grad-cam does), or a cheap zero input of
    `pixels` × `pixels` — one image whatever the number of copies (`single`), or one per copy."""

    pixels: int | None
    single: bool = False

    def inputs(self, images: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if self.pixels is None:
            return images[image]
        return images.new_zeros(1 if self.single else image.numel(), 3, self.pixels, self.pixels)


@dataclass(frozen=True)
class _Plan:
    closed_form: bool
    rerun: _Rerun | None  # None when nothing runs again (closed form forced)
    map_values: int = 0  # C·h·w of one image's activations at this input size
    channels: int = 0


@register_method("ablationcam")
class AblationCAM(CAMMethod):
    """Ablation-CAM: L = ReLU(Σ_k w_k A_k) at the target layer's resolution, with
    w_k = (y_c − y_c^k) / y_c, y_c the target's raw logit and y_c^k the logit when channel k of the target
    layer's output is set to `ablated_value` (0, the paper's; `"auto"` is pytorch-grad-cam's rule: 0 when
    the image's activations reach 0, else their minimum − 1e7 — without pytorch-grad-cam's drift, where
    each later copy in one of its batches gets a further −1e7). A_k is rectified where the layer asks for
    it (DenseNet's `features`); the ablation acts on the raw output the network sees. Where y_c = 0 the
    weights are 0 (an all-zero map) instead of infinite. pytorch-grad-cam's `AblationCAM` returns this
    map, ReLU'd, resized and min–max scaled.

    How y_c^k is computed — the three give the same maps (up to rounding: a float32 re-run subtracts two
    nearly equal logits, which the closed form does not); only the cost differs:

    * **closed form**: when the network after the layer is affine in the layer's output A (global average
      pooling and one linear layer: ResNet, DenseNet, EfficientNet-Lite0), y_c − y_c^k =
      Σ_ij (∂y_c/∂A_kij)(A_kij − value) — for pooling + linear, W_ck · (mean(A_k) − value). One forward
      and one backward of the layers after the target layer; no re-run. The formula stays exact through
      a ReLU between the layer and the affine head (DenseNet) when the value is 0.
    * **head-only re-runs**: the ablated copies of A (each with one channel switched off, all channels of
      all images, in chunks of about 2^25 values) replace the layer's output while the model is fed a
      tiny zero image, so that the trunk before the layer costs almost nothing.
      This is only valid when the network after the layer depends on the layer's output alone; it is
      verified once per input size by replaying the unablated activations of two probe images this way
      and comparing the logits with the real ones (relative 1e-5). The zero input is the smallest of
      1, 2, 4, 8, ... pixels that the model accepts (1 for ResNet, 32 for EfficientNet-Lite0 and
      DenseNet121, 128 for Inception v3), one image in all, or else one per copy (EfficientNet-Lite0's
      head reads the batch size from its input). When no such replay matches (a path around the
      layer: a residual connection skipping it, a head that also reads the input), finally —
    * **full re-runs**: the whole network on the image, `batch_size` ablated copies per forward (what
      pytorch-grad-cam does for every model).

    With `closed_form` None (the default) the choice is made once per input size: the closed-form drops
    of 8 channels of a probe image (the 4 largest and 4 spread over the channels) are compared with their
    re-runs, and the closed form is used
    when every one agrees within 1e-3 of the largest drop (plus 1e-5 of |y_c|) — a check on one random
    image, not a proof. Measured: errors of 1e-7..4e-6, 300× or more below the bound, on ResNet50 and
    DenseNet121 (random weights) and the real EfficientNet-Lite0; a third of the largest drop, 300×
    above it, on VGG16's head of two hidden ReLU layers, which is therefore re-run head-only — as is
    DenseNet121 with "auto", whose min − 1e7 the ReLU after `features` cuts to 0. `strategy()` says what
    was chosen. Choosing costs, once per input size, one forward and backward of two probe images, a few
    forwards of tiny inputs and one re-run of 8 copies.

    `passes()` counts calls of the model's forward for one image: 1 with the closed form (plus a backward
    of the head); 1 + ⌈C / chunk⌉ with head-only re-runs, each of them running only the layers after the
    target layer on a chunk of ablated copies (plus the trunk on a tiny image) — the paper's Table 5
    counts C = 2048 passes for ResNet50 here; 1 + C with full re-runs.

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose channels are ablated: a submodule of
            `model` or its name; None (default) finds it by probing the model.
        closed_form: True always uses the closed form (exact only for an affine head), False always
            re-runs, None (default) decides once per input size, as above.
        ablated_value: the value a switched-off channel takes: a finite number (0, the paper's, by
            default) or "auto" (pytorch-grad-cam's rule, as above).
        progress: True shows a tqdm bar over the ablated copies (off by default).
        **options (Any): `batch_size` (ablated copies per forward in full re-runs, images per chunk),
            `input_size`, `layer`, `precision` and `compile`, as `CAMMethod` takes them. Compiled, the
            closed form runs the model's compiled trunk and head (CUDA graphs on CUDA under `compile=True`),
            head-only re-runs feed the ablated copies to the compiled head itself (no input image at all;
            the last chunk padded) where the head reads the layer's output alone, and full re-runs the
            compiled model. The decision between them is made eagerly, as above.

    Raises:
        JitterCamError: `closed_form` is not True, False or None; `ablated_value` is neither a finite
            number nor "auto"; or as `CAMMethod` raises it.
    """

    precisions = ("fp32",)  # bf16: 3.7 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here
    compiles = True  # the closed form's forward and backward, the head-only re-runs (`compile=`)

    def __init__(
        self,
        model,
        target_layer=None,
        *,
        closed_form: bool | None = None,
        ablated_value: float | str = 0.0,
        progress: bool = False,
        **options,
    ):
        if closed_form not in (None, True, False):
            raise JitterCamError(f"closed_form must be True, False or None (automatic), not {closed_form!r}")
        if ablated_value != "auto" and not _finite_number(ablated_value):
            raise JitterCamError(f"ablated_value must be a finite number or 'auto', not {ablated_value!r}")
        super().__init__(model, target_layer, **options)
        self.closed_form = closed_form
        self.ablated_value = ablated_value if ablated_value == "auto" else float(ablated_value)
        self.progress = check_flag(progress, "progress")
        self._plans: dict[tuple, _Plan] = {}

    def options(self) -> dict:
        return {**super().options(), "closed_form": self.closed_form, "ablated_value": self.ablated_value}

    # ---------------------------------------------------------------------------------------- plan
    def strategy(self, input_size: int | None = None) -> str:
        """How the drops are computed at `input_size`, decided (and remembered) on the first ask.

        Args:
            input_size: the square input size in pixels; None: the probe's.

        Returns:
            "closed-form", "head" (head-only re-runs) or "full" (whole-network re-runs).
        """
        plan = self._plan_for_size(input_size)
        if plan.closed_form:
            return "closed-form"
        assert plan.rerun is not None  # only a closed form runs nothing again
        return "full" if plan.rerun.pixels is None else "head"

    def passes(self, input_size: int | None = None) -> int:
        plan = self._plan_for_size(input_size)
        if plan.closed_form:
            return 1
        assert plan.rerun is not None  # only a closed form runs nothing again
        if plan.rerun.pixels is None:
            return 1 + plan.channels
        return 1 + math.ceil(plan.channels / self._head_chunk(plan.map_values))

    def _plan_for_size(self, input_size: int | None) -> _Plan:
        size = input_size or self.layer.input_size
        return self._plan(size, size, model_device(self.model), model_dtype(self.model))

    def _plan(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> _Plan:
        key = (height, width, device, dtype)
        if key not in self._plans:
            self._plans[key] = self._make_plan(height, width, device, dtype)
        return self._plans[key]

    def _make_plan(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> _Plan:
        if self.closed_form is True:
            return _Plan(closed_form=True, rerun=None)
        generator = torch.Generator().manual_seed(0)
        probe = torch.rand(PROBE_IMAGES, 3, height, width, generator=generator).to(device, dtype)
        if self.closed_form is False:
            raw, logits = activations_and_logits(self.model, self.layer, probe)
            return _Plan(False, self._find_rerun(probe, raw, logits), raw[0].numel(), raw.shape[1])
        raw, gradients, logits, classes = self._with_gradients(probe, None)
        rerun = self._find_rerun(probe, raw, logits)
        score = logits[0, classes[0]]
        closed = self._closed_form_agrees(probe[:1], rerun, raw[:1], gradients[:1], score, classes[0])
        return _Plan(closed, rerun, raw[0].numel(), raw.shape[1])

    def _find_rerun(self, probe: torch.Tensor, raw: torch.Tensor, logits: torch.Tensor) -> _Rerun:
        """The cheapest input whose replay of the unablated activations gives the real logits: zero images
        of 1, 2, 4, ... pixels (one in all, then one per copy), else the images themselves."""
        everyone = torch.arange(probe.shape[0], device=probe.device)
        tolerance = 1e-5 * float(logits.abs().max()) + 1e-6
        pixels = 1
        while pixels < min(probe.shape[-2:]):
            for single in (True, False):
                candidate = _Rerun(pixels, single)
                try:
                    replayed = self._run(candidate, probe, everyone, raw.clone())
                except Exception:  # noqa: BLE001, S112 - any failure of the model on a tiny input rules it out
                    continue
                if replayed.shape == logits.shape and float((replayed - logits).abs().max()) <= tolerance:
                    return candidate
            pixels *= 2
        return _Rerun(None)

    def _closed_form_agrees(self, image, rerun: _Rerun, raw, gradients, score, cls) -> bool:
        """Whether the closed-form drops of a few channels of one probe image equal their re-runs."""
        drops = self._closed_form_drops(raw, gradients)[0]
        spread = torch.linspace(0, drops.numel() - 1, CHECK_CHANNELS // 2, device=drops.device).long()
        largest = drops.abs().topk(min(CHECK_CHANNELS // 2, drops.numel())).indices
        channels = torch.cat([largest, spread]).unique()
        first = torch.zeros_like(channels)
        with torch.no_grad():
            scores = self._run(rerun, image, first, self._ablated(raw, first, channels, self._values(raw)))
        error = float((score - scores[:, cls] - drops[channels]).abs().max())
        return error <= 1e-3 * float(drops.abs().max()) + 1e-5 * float(score.abs()) + 1e-12

    # ---------------------------------------------------------------------------------------- maps
    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        raw, weights = self._weights(images, target)
        with torch.no_grad():
            activations = raw.relu() if self.layer.rectify else raw
            return torch.einsum("bc,bchw->bhw", weights, activations).relu()

    def weights(self, images: torch.Tensor, target: Target = None) -> torch.Tensor:
        """The channel weights w_k = (y_c − y_c^k) / y_c of a batch taken in one go.

        Args:
            images: `(B, 3, H, W)` model inputs, in the model's dtype.
            target: an int, one class per image, or None for each image's top-1 class.

        Returns:
            `(B, C)` weights; 0 where y_c = 0.

        Raises:
            JitterCamError: `images` is not a valid batch, or `target` not a valid class index.
        """
        check_images(images, model_dtype(self.model))
        return self._weights(images, as_target(target, images.shape[0], images.device))[1]

    def _weights(self, images: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self._plan(images.shape[-2], images.shape[-1], images.device, images.dtype)
        if plan.closed_form:
            raw, gradients, logits, target = self._with_gradients(images, target)
            drops = self._closed_form_drops(raw, gradients)
        else:
            assert plan.rerun is not None  # only a closed form runs nothing again
            raw, logits = activations_and_logits(self.model, self.layer, images)
            target = resolve_targets(target, logits)
            drops = self._rerun_drops(images, raw, logits, target, plan.rerun)
        with torch.no_grad():
            score = logits.gather(1, target[:, None])
            return raw, torch.where(score != 0, drops / torch.where(score != 0, score, 1), 0)

    def _values(self, raw: torch.Tensor) -> torch.Tensor:
        """`(B,)`: the value an ablated channel takes, per image."""
        if not isinstance(self.ablated_value, str):  # a number, else "auto"
            return raw.new_full(raw.shape[:1], self.ablated_value)
        low = raw.flatten(1).amin(dim=1)
        return torch.where(low == 0, 0, low - AUTO_OFFSET)

    def _closed_form_drops(self, raw: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return ((raw - self._values(raw)[:, None, None, None]) * gradients).sum(dim=(2, 3))

    def _with_gradients(self, images: torch.Tensor, target: torch.Tensor | None):
        """The layer's raw output, the gradient of the target's logit with respect to it, the logits and
        the classes: one forward (no graph before the layer) and one backward of the layers after it."""
        run = self.compiled_run(images)
        if run is not None:
            return compiled_gradients(self.model, self.layer, images, target, "fp32", run)
        with torch.inference_mode(False):
            with LayerCapture.of(self.layer, "graph") as capture, torch.no_grad():
                logits = self.model(images)
            assert capture.output is not None  # leaving the capture raised if the layer did not run
            classes = resolve_targets(target, logits.detach()).clone()
            with torch.enable_grad():
                score = logits.gather(1, classes[:, None]).sum()
                (gradients,) = torch.autograd.grad(score, capture.output)
        return capture.output.detach(), gradients, logits.detach(), classes

    def _head_chunk(self, map_values: int) -> int:
        return max(1, HEAD_VALUES // map_values)

    def _rerun_drops(
        self, images: torch.Tensor, raw: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, rerun: _Rerun
    ) -> torch.Tensor:
        """`(B, C)`: y_c − y_c^k from re-runs of every channel of every image, in chunks."""
        batch, channels = raw.shape[:2]
        size = self.chunk_size(images) if rerun.pixels is None else self._head_chunk(raw[0].numel())
        values = self._values(raw)
        scores = torch.empty(batch * channels, dtype=logits.dtype, device=logits.device)
        # one buffer for every chunk: a fresh 128 MiB tensor per chunk costs more than filling it
        buffer = raw.new_empty((min(size, batch * channels), *raw.shape[1:]))
        with torch.no_grad(), progress_bar(self.progress, batch * channels, "Ablation-CAM") as bar:
            for pair in pair_chunks(batch * channels, size, images.device):
                image, channel = pair // channels, pair % channels
                ablated = self._ablated(raw, image, channel, values, out=buffer[: pair.numel()])
                out = self._compiled_run(rerun, images, image, buffer, pair.numel())
                if out is None:
                    out = self._run(rerun, images, image, ablated)
                scores[pair] = out.gather(1, target[image][:, None]).squeeze(1)
                bar.update(pair.numel())
            return logits.gather(1, target[:, None]) - scores.view(batch, channels)

    @staticmethod
    def _ablated(raw, image: torch.Tensor, channel: torch.Tensor, values: torch.Tensor, out=None) -> torch.Tensor:
        """Copy number i is image `image[i]`'s activations with channel `channel[i]` set to its value (in
        `out` when given: the model may change it in place, and the next chunk overwrites all of it)."""
        ablated = torch.index_select(raw, 0, image, out=out)
        ablated[torch.arange(image.numel(), device=raw.device), channel] = values[image][:, None, None]
        return ablated

    def _compiled_run(self, rerun: _Rerun, images: torch.Tensor, image: torch.Tensor, buffer: torch.Tensor,
                      count: int) -> torch.Tensor | None:
        """The re-run's logits from the compiled head fed the whole `buffer` (a fixed shape; its rows past
        `count` are left from the last chunk), with what else the head reads from the trunk run on the re-run's
        input (padded likewise); or None to re-run eagerly: not compiled, or a layer whose output is not a
        `(B, C, h, w)` map."""
        if self.compile is None or self.layer.layout != "nchw":
            return None
        mode = compiled_pieces.resolve_mode(self.compile, images.device, False)
        rest: tuple = ()
        if compiled_pieces.head_inputs(self.model, self.layer) > 1:
            inputs = images[image] if rerun.pixels is None else rerun.inputs(images, image)
            if inputs.shape[0] > 1:
                inputs = compiled_pieces.pad(inputs, buffer.shape[0])
            trunk, _ = compiled_pieces.trunk_and_head(self.model, self.layer, inputs, mode, grad=False)
            rest = tuple(trunk(inputs)[1:])
        _, head = compiled_pieces.trunk_and_head(self.model, self.layer, buffer, mode, grad=False)
        return head(buffer, *rest)[:count]

    def _run(self, rerun: _Rerun, images: torch.Tensor, image: torch.Tensor, ablated: torch.Tensor):
        """Logits of the network with the layer's output replaced by `ablated`."""
        with torch.no_grad(), LayerCapture.of(self.layer, "replace", replacement=ablated):
            return self.model(rerun.inputs(images, image))
