"""The contract every explanation method follows, and the gradient capture the CAMs share."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import compiled as compiled_pieces
from ..card import model_dtype
from ..errors import JitterCamError
from ..inputs import (
    Target,
    as_targets,
    check_images,
    resolve_batch_size,
    resolve_targets,
)
from ..models import ready_model
from ..probe import TargetLayer, find_target_layer, size_refusal
from ..tuning import Plan, cached_plan, forward_batch
from .capture import LayerCapture

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """Autocast to `precision` on `device` ("fp32": disabled)."""
    dtype = AUTOCAST[precision]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


@dataclass(frozen=True)
class CompiledRun:
    """How one chunk runs compiled: the `torch.compile` mode and the batch size it is padded to."""

    mode: str
    rows: int


class CAMMethod(ABC):
    """An explanation method: built from a model (and an optional target layer), called on a batch
    `(B, 3, H, W)` with a target, it returns raw maps `(B, h, w)` on the input's device — not min–max scaled,
    not resized. Batches larger than `batch_size` are explained in chunks.

    Class attributes a subclass sets:

    * `uses_layer` — the method reads a layer's activations, so the model is probed for its target layer
      (`self.layer`); False for methods that only look at the input and the output (RISE, baselines).
    * `layer_map` — the map has the target layer's resolution, so Jitter-CAM and Upscale-CAM can wrap it.
    * `precisions` — which `precision` values the method implements.

    Args:
        model: the classifier to explain, used as given (a timm model gets the card of its pretrained
            configuration, a Hugging Face classifier is wrapped to return logits: `jittercam.models.ready_model`).
        target_layer: the layer whose activations the method reads: a submodule of `model` or its name in
            `model.named_modules()`; None (default) finds it by probing the model (`find_target_layer`).
            Refused by a method that uses no layer (`uses_layer` False).
        batch_size: images per forward pass; None takes the measured plan for this model and device
            (`jittercam.tuning`) where one was made, else the device's default.
        input_size: the square input size, in pixels, the target layer is probed at; None: the model
            card's.
        layer: an already probed target layer (a wrapper hands its base's on), skipping the probe.
        precision: "fp32" (default); "bf16"/"fp16" runs the network's forward under autocast where the
            method supports it (the gradient CAMs); maps are float32 either way.
        compile: False (default: eager); True runs the forward passes through `torch.compile`d pieces of
            the model (`jittercam.compiled`: "reduce-overhead", i.e. CUDA graphs, for a one-pass method on
            CUDA, "default" otherwise), or a mode: "default", "reduce-overhead" (falls back to "default"
            off CUDA), "max-autotune". Only where the method has a compiled path (`compiles`).

    Raises:
        JitterCamError: the probe refuses the model or `target_layer` (see `find_target_layer`); a target
            layer is given to a method that uses none; `batch_size` is not a positive integer; the method does
            not support `precision`; `compile` is not a valid value, the method has no compiled path, or
            torch.fx cannot trace the model (compiled methods that read a layer need its graph).
    """

    uses_layer: bool = True
    layer_map: bool = True
    precisions: tuple[str, ...] = ("fp32",)  # which `precision` values the method implements
    compiles: bool = False  # the method has a compiled path (`compile=`)

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        batch_size: int | None = None,
        input_size: int | None = None,
        layer: TargetLayer | None = None,
        precision: str = "fp32",
        compile: bool | str | None = False,
    ) -> None:
        self.model = model = ready_model(model)
        if layer is None and self.uses_layer:
            layer = find_target_layer(model, target_layer, input_size)
        self.layer: TargetLayer | None = layer
        if not self.uses_layer and target_layer is not None:
            raise JitterCamError(f"{type(self).__name__} does not use a target layer")
        self.batch_size = batch_size
        resolve_batch_size(batch_size, torch.device("cpu"))  # checked now, not at the first call
        if precision not in self.precisions:
            raise JitterCamError(
                f"{type(self).__name__} supports precision {', '.join(self.precisions)}, not {precision!r}"
            )
        self.precision = precision
        self.compile = compiled_pieces.check_compile(compile)
        if self.compile is not None and not self.compiles:
            raise JitterCamError(f"{type(self).__name__} has no compiled path", option="compile")
        if self.compile is not None and self.layer is not None:
            compiled_pieces.head_inputs(model, self.layer)  # refuses now a model torch.fx cannot cut there

    def __call__(self, images: torch.Tensor, target: Target = None) -> torch.Tensor:
        return self.attribute(images, target)

    def attribute(self, images: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Raw maps for `target`, the batch explained in chunks of `chunk_size(images)` images.

        Args:
            images: `(B, 3, H, W)` floating-point model inputs (normalised with the model's card), in the
                model's dtype.
            target: the class explained: an int, one per image, or None for each image's top-1; or several
                classes per image, a `(B, K)` tensor or a list of B lists of K classes (a single row is
                repeated for every image).

        Returns:
            `(B, h, w)` raw maps on the images' device, `(B, K, h, w)` for K classes per image: not min–max
                scaled, not resized.

        Raises:
            JitterCamError: `images` is not a non-empty `(B, 3, H, W)` floating-point batch of the model's
                dtype, or `target` is not a valid class index (or one per image).
        """
        model = getattr(self, "model", None)
        check_images(images, None if model is None else model_dtype(model))
        plan = self.plan(images)
        size = self.chunk_size(images)
        indices = as_targets(target, images.shape[0], images.device)
        chunks = []
        for start in range(0, images.shape[0], size):
            chunk = images[start : start + size]
            chunk = plan.layout(chunk) if plan else chunk
            if indices is not None and indices.dim() == 2:
                chunks.append(self._explain_many(chunk, indices[start : start + size]))
            else:
                chunks.append(self._explain(chunk, None if indices is None else indices[start : start + size]))
        return torch.cat(chunks)

    def chunk_size(self, images: torch.Tensor) -> int:
        """Images per forward pass: `batch_size`, else the measured plan's, else the device's default.

        Args:
            images: the `(B, 3, H, W)` batch about to be explained (its device and size pick the plan).

        Returns:
            The number of images per forward pass.
        """
        return forward_batch(getattr(self, "model", None), images, self.batch_size)

    def plan(self, images: torch.Tensor) -> Plan | None:
        """The measured forward plan (batch size, layout) for this model at these images' size, if any.

        Args:
            images: the `(B, 3, H, W)` batch about to be explained.

        Returns:
            The plan `jittercam.tuning.tune` measured, or None (no model, or nothing measured).
        """
        model = getattr(self, "model", None)
        return None if model is None else cached_plan(model, images.device, images.shape[-1])

    @abstractmethod
    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Maps for one chunk; `target` is `(B,)` class indices or None (top-1), not yet range-checked."""

    def _explain_many(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """`(B, K, h, w)` maps for one chunk and `(B, K)` classes, not yet range-checked: one `_explain` per
        class here; the methods that can share the forward pass between the K classes override it."""
        return torch.stack([self._explain(images, targets[:, k]) for k in range(targets.shape[1])], dim=1)

    def passes(self, input_size: int | None = None) -> int:
        """Forward passes of the network that one explanation costs (the paper's Table 5 counts these).

        Args:
            input_size: the square input size in pixels; None: the probe's (the model card's by default).

        Returns:
            The number of forward passes for one image.
        """
        return 1

    def compiled_pieces(self, input_size: int) -> set[tuple[str | None, int]]:
        """What a compiled run of this method compiles: a piece per target layer (None: the whole model)
        and input size it runs the network at, each compiled once (20-60 s on a CPU) and then reused, for
        `compiled.choose` to weigh against the time compiling saves.

        Args:
            input_size: the square input size of the images it is given, in pixels.

        Returns:
            `{(layer name or None, pixels)}`; empty for a method without a compiled path.
        """
        if not self.compiles:
            return set()
        return {(None if self.layer is None else self.layer.name, input_size)}

    def options(self) -> dict[str, Any]:
        """What distinguishes this method object from another of its class; `repr` shows it, and the
        benchmark stores it."""
        layer = None if self.layer is None else self.layer.name
        return {"target_layer": layer, "batch_size": self.batch_size, **self.precision_option()}

    def precision_option(self) -> dict[str, Any]:
        """`{"precision": ...}` when it is not the default fp32 (so fp32 methods keep their `repr`), and
        `{"compile": ...}` when the method runs compiled."""
        compiled = {} if getattr(self, "compile", None) is None else {"compile": self.compile}
        return {**({} if self.precision == "fp32" else {"precision": self.precision}), **compiled}

    def compiled_run(self, images: torch.Tensor, one_pass: bool = True, rows: int | None = None) -> CompiledRun | None:
        """How a chunk of `images` runs compiled, or None when the method runs eagerly.

        Args:
            images: the chunk about to be run.
            one_pass: the method costs one forward (and backward) per image (CUDA graphs under "auto").
            rows: the batch size compiled for; None: the method's chunk size. A chunk of fewer images is
                padded to it (one image alone keeps its shape).

        Returns:
            The mode and the padded batch size, or None.
        """
        if self.compile is None:
            return None
        batch = self.chunk_size(images) if rows is None else rows
        return CompiledRun(compiled_pieces.resolve_mode(self.compile, images.device, one_pass),
                           compiled_pieces.padded_rows(images.shape[0], batch))

    def run_model(self, inputs: torch.Tensor, rows: int) -> torch.Tensor:
        """The model's output on `inputs`: eager, or compiled with the batch padded to `rows`.

        Args:
            inputs: a batch of model inputs.
            rows: the batch size the compiled forward runs at (the method's forward batch).

        Returns:
            The model's output for `inputs`.
        """
        run = self.compiled_run(inputs, one_pass=False, rows=rows)
        if run is None:
            return self.model(inputs)
        count = inputs.shape[0]
        return compiled_pieces.forward(self.model, compiled_pieces.pad(inputs, run.rows), run.mode)[:count]

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options().items())
        return f"{type(self).__name__}({options})"


class GradientMapMethod(CAMMethod):
    """A method whose map is a function of the target layer's activations and the gradient of the target's
    logit with respect to them (`gradient_map`): one forward and one backward per chunk, and for K classes
    per image one forward and K backward passes to the layer."""

    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here

    precisions = ("fp32", "bf16", "fp16")
    compiles = True

    @abstractmethod
    def gradient_map(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """`(B, h, w)` maps from `(B, C, h, w)` activations and gradients."""

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        activations, gradients, _ = activations_and_gradients(self.model, self.layer, images, target, self.precision,
                                                              self.compiled_run(images))
        return self.gradient_map(activations, gradients)

    def _explain_many(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # eager: the compiled pieces are built for one class per image
        activations, gradients, _ = activations_and_gradients(self.model, self.layer, images, targets, self.precision)
        return maps_per_class(self.gradient_map, activations, gradients)


def maps_per_class(gradient_map, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """`(B, K, h, w)` maps from `(B, C, h, w)` activations and `(B, K, C, h, w)` gradients of K classes:
    `gradient_map` applied to the K (activations, gradients) pairs of every image as one batch."""
    batch, classes = gradients.shape[:2]
    repeated = activations[:, None].expand(-1, classes, *activations.shape[1:]).flatten(0, 1)
    return gradient_map(repeated, gradients.flatten(0, 1)).unflatten(0, (batch, classes))


def activations_and_gradients(
    model: nn.Module,
    layer: TargetLayer,
    images: torch.Tensor,
    target: Target,
    precision: str = "fp32",
    compiled: CompiledRun | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward and one backward: the target layer's activations `A`, the gradient of the target's
    logit with respect to `A`, and the class indices explained.

    The trunk up to the target layer runs without autograd; the graph starts at the activations, and
    gradients flow to them only (`torch.autograd.grad`), never into the parameters' `.grad`. The hook is
    removed before returning, so the model is left as it was.

    Args:
        model: the classifier.
        layer: its probed target layer (`find_target_layer`); rectified where `layer.rectify` says so.
        images: `(B, 3, H, W)` model inputs.
        target: an int, one class per image, or None for each image's top-1 class; or `(B, K)` classes
            per image (`jittercam.inputs.as_targets`): still one forward, then K backward passes to the layer.
        precision: "fp32" (default); under "bf16"/"fp16" the forward runs under autocast and both tensors
            come back as float32.
        compiled: None (eager, with a hook), or how to run the model's compiled trunk and head
            (`compiled_gradients`).

    Returns:
        `(A, gradients, classes)`: the activations and their gradient, both `(B, C, h, w)`, and the `(B,)`
            long class indices explained; for K classes per image the gradients are `(B, K, C, h, w)` and
            the classes `(B, K)`.

    Raises:
        JitterCamError: a class index is out of range, or the target layer did not run for this input.
    """
    if compiled is not None:
        activations, gradients, _, classes = compiled_gradients(model, layer, images, target, precision, compiled)
        if AUTOCAST[precision] is not None:
            activations, gradients = activations.float(), gradients.float()
        return (activations.relu() if layer.rectify else activations), gradients, classes
    with torch.inference_mode(False):  # callers may be inside inference_mode; gradients are needed here
        with LayerCapture.of(layer, "graph") as capture, torch.no_grad(), autocast(images.device, precision):
            logits = model(images)
        assert capture.output is not None  # leaving the capture raised if the layer did not run
        classes = resolve_targets(target, logits.detach()).clone()  # not an inference tensor
        with torch.enable_grad():
            columns = classes[:, None] if classes.dim() == 1 else classes
            # one backward to the layer per class column; the forward (and its graph) is shared
            found = [
                torch.autograd.grad(logits.gather(1, columns[:, k : k + 1]).sum(), capture.output,
                                    retain_graph=k + 1 < columns.shape[1])[0]
                for k in range(columns.shape[1])
            ]
            gradients = found[0] if classes.dim() == 1 else torch.stack(found, dim=1)
    activations = capture.output.detach()
    if AUTOCAST[precision] is not None:
        activations, gradients = activations.float(), gradients.float()
    if layer.rectify:
        activations = activations.relu()
    return activations, gradients, classes


def compiled_gradients(
    model: nn.Module, layer: TargetLayer, images: torch.Tensor, target: Target, precision: str, compiled: CompiledRun
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`activations_and_gradients` through the compiled trunk and head (`jittercam.compiled.split`): the
    trunk runs without autograd, the head with autograd from the layer's map, the batch padded to
    `compiled.rows` with copies of its first image (their scores are not summed, so they add no gradient).

    Args:
        model: the classifier.
        layer: its probed target layer.
        images: `(B, 3, H, W)` model inputs.
        target: an int, one class per image, or None for each image's top-1 class.
        precision: "fp32", "bf16" or "fp16" (autocast around both pieces).
        compiled: the mode and the padded batch size.

    Returns:
        `(A, gradients, logits, classes)`: the layer's map (not rectified) and its gradient `(B, C, h, w)`
            in the autocast dtype, the logits and the `(B,)` class indices.

    Raises:
        JitterCamError: a class index is out of range; torch.fx cannot trace the model.
    """
    count = images.shape[0]
    padded = compiled_pieces.pad(images, compiled.rows)
    with torch.inference_mode(False), autocast(images.device, precision):
        with torch.no_grad():
            trunk, _ = compiled_pieces.trunk_and_head(model, layer, padded, compiled.mode, grad=False)
            cut = trunk(padded)
        _, head = compiled_pieces.trunk_and_head(model, layer, padded, compiled.mode, grad=True)
        leaf = layer.to_map(cut[0]).detach().requires_grad_(True)
        with torch.enable_grad():
            logits = head(layer.from_map(leaf.clone(), cut[0]), *cut[1:])
            classes = resolve_targets(target, logits[:count].detach()).clone()
            score = logits[:count].gather(1, classes[:, None]).sum()
            (gradients,) = torch.autograd.grad(score, leaf)
    return leaf.detach()[:count], gradients[:count], logits.detach()[:count], classes


def layer_activations(model: nn.Module, layer: TargetLayer, images: torch.Tensor) -> torch.Tensor:
    """The target layer's activations alone (rectified where the layer asks for it): the forward stops
    at the layer, so the rest of the network is not computed.

    Args:
        model: the classifier.
        layer: its probed target layer (`find_target_layer`).
        images: `(B, 3, H, W)` model inputs.

    Returns:
        `(B, C, h, w)` activations of the target layer.

    Raises:
        JitterCamError: the target layer did not run for this input.
    """
    with torch.no_grad(), LayerCapture.of(layer, "record", stop=True) as capture:
        model(images)
    assert capture.output is not None  # leaving the capture raised if the layer did not run
    return capture.output.relu() if layer.rectify else capture.output


def activations_and_logits(model, layer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward: the target layer's raw output (not rectified) and the logits.

    The network downstream gets a copy of the layer's output, so an in-place operation after the layer
    (DenseNet's `F.relu(features, inplace=True)`, a residual `out += identity`) cannot change the
    activations returned."""
    with torch.no_grad(), LayerCapture.of(layer, "replace", replacement=torch.clone) as capture:
        logits = model(images)
    assert capture.output is not None  # leaving the capture raised if the layer did not run
    return capture.output, logits


def check_size(model: nn.Module, method: str, pixels: int) -> None:
    """Refuse, when the method is built, a model that does not run at the input size the method needs
    (one forward there), rather than when it is called, after other results may have been written.

    Args:
        model: the classifier.
        method: the method's name, for the message.
        pixels: the square input size the method will run the model at.

    Raises:
        JitterCamError: the model fails at that size, with its reason, in one line.
    """
    reason = size_refusal(model, pixels)
    if reason is not None:
        raise JitterCamError(size_message(method, pixels, reason))


def size_message(method: str, pixels: int, reason: str) -> str:
    """`at_size`'s and `check_size`'s one line."""
    return (f"{method} runs the model at {pixels}x{pixels} pixels, which it does not accept ({reason}); it needs "
            "a model that takes other input sizes (a timm vision transformer built with dynamic_img_size=True)")


@contextmanager
def at_size(method: str, pixels: int) -> Iterator[None]:
    """Runs the model at another input size than the one given: a model that cannot take `pixels` (a
    fixed-size vision transformer, MaxViT's window partition) is refused in one line, not with the error it
    raises inside.

    Args:
        method: the method's name, for the message.
        pixels: the input size tried, in pixels.

    Raises:
        JitterCamError: the model fails at that size (out-of-memory errors propagate as they are).
    """
    try:
        yield
    except (JitterCamError, torch.OutOfMemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the model raises at a size it does not take
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JitterCamError(size_message(method, pixels, reason)) from None


def progress_bar(enabled: bool, total: int, description: str):
    """A tqdm bar over `total` forward passes, disabled (silent) unless `enabled`."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="pass", disable=not enabled)


def pair_chunks(count: int, size: int, device: torch.device):
    """Flat indices 0..count-1 in chunks of `size` (a flat index is image * channels + channel)."""
    for start in range(0, count, size):
        yield torch.arange(start, min(start + size, count), device=device)
