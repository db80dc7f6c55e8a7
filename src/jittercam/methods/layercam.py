"""HiResCAM and LayerCAM: the gradient times the activation at every position, with no spatial averaging
of the gradient — one forward and one backward, at any layer (LayerCAM: at several layers at once)."""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch
from torch import nn

from ..errors import JitterCamError
from ..inputs import check_flag, resolve_targets
from ..maps import resize
from ..probe import TargetLayer, find_target_layer
from .base import CAMMethod, GradientMapMethod, activations_and_gradients, maps_per_class
from .capture import LayerCapture
from .registry import register_method


@register_method("hirescam")
class HiResCAM(GradientMapMethod):
    """Draelos & Carin 2020 ("Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional
    neural networks"): Σ_c (∂y_t/∂A_c) ⊙ A_c, the gradient of the target's logit multiplied with the
    activations position by position, summed over the channels — Grad-CAM without the spatial mean of the
    gradient.

    The authors' code computes the signed sum (rachellea/hirescam `cams.proposed_hirescam`) and applies a
    ReLU before min–max scaling it (`run_attn_analysis.clip_and_norm_volume`); pytorch-grad-cam rectifies it
    too (`BaseCAM.compute_cam_per_layer`: `np.maximum(cam, 0)`), as every other map of this library is
    rectified; hence the default `relu=True`.

    After global average pooling and one linear layer the gradient is constant over space, so HiResCAM
    equals Grad-CAM there (and CAM): Σ_c W_tc / hw · A_c.

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose activations are taken: a submodule of
            `model` or its name; None (default) finds it by probing the model.
        relu: True (default) rectifies the map; False returns the signed sum (negative where the evidence
            is against the class).
        **options (Any): `batch_size`, `input_size`, `layer` and `precision` ("fp32", "bf16" or "fp16"),
            as `CAMMethod` takes them.

    Raises:
        JitterCamError: as `CAMMethod` raises it.
    """

    def __init__(self, model, target_layer=None, *, relu: bool = True, **options) -> None:
        super().__init__(model, target_layer, **options)
        self.relu = check_flag(relu, "relu")

    def gradient_map(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        cam = (gradients * activations).sum(dim=1)
        return cam.relu() if self.relu else cam

    def options(self) -> dict:
        return {**super().options(), "relu": self.relu}


FUSIONS = ("paper", "pytorch-grad-cam")


def layer_gradients(
    model: nn.Module, layers: Sequence[TargetLayer], images: torch.Tensor, target: torch.Tensor | None
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """`activations_and_gradients` at several layers in ONE forward and ONE backward: each layer's
    activations (rectified where the layer asks for it), the gradient of the target's logit with respect
    to them, and the class indices explained.

    The trunk runs without autograd up to the first of the layers to run; there the graph starts (the
    output becomes a leaf that requires grad), and every later layer's output, a node of that graph, is
    kept with its graph — `LayerCapture`'s "graph" mode keeps one leaf, and "record" only a detached copy,
    so this uses "replace" with a function that keeps the output and hands a clone downstream (an in-place
    op after the layer then cannot change what was kept). Gradients go to the kept outputs only
    (`torch.autograd.grad`), never into the parameters' `.grad`; the hooks are removed before returning.

    Args:
        model: the classifier.
        layers: the probed layers (`find_target_layer`), in any order.
        images: `(B, 3, H, W)` model inputs.
        target: `(B,)` class indices, or None for each image's top-1 class.

    Returns:
        `(activations, gradients, classes)`: one `(B, C_l, h_l, w_l)` tensor per layer in each list (in the
            order of `layers`; an all-zero gradient for a layer the score does not depend on), and the
            `(B,)` class indices explained.

    Raises:
        JitterCamError: a class index is out of range, or a layer did not run for this input.
    """
    kept: dict[int, torch.Tensor] = {}

    def keeper(index: int):
        def keep(output: torch.Tensor) -> torch.Tensor:
            torch.set_grad_enabled(True)  # for the rest of this forward; the no_grad block below restores it
            if not output.requires_grad:  # the first layer to run: the graph starts here
                output = output.detach().requires_grad_(True)
            kept[index] = output
            return output.clone()

        return keep

    with torch.inference_mode(False):  # callers may be inside inference_mode; gradients are needed here
        with ExitStack() as captures:
            for index, layer in enumerate(layers):
                captures.enter_context(LayerCapture.of(layer, "replace", replacement=keeper(index)))
            with torch.no_grad():
                logits = model(images)
        classes = resolve_targets(target, logits.detach()).clone()  # not an inference tensor
        outputs = [kept[index] for index in range(len(layers))]
        with torch.enable_grad():
            score = logits.gather(1, classes[:, None]).sum()
            found = torch.autograd.grad(score, outputs, allow_unused=True)
    activations = [out.detach().relu() if layer.rectify else out.detach() for out, layer in zip(outputs, layers)]
    gradients = [torch.zeros_like(a) if g is None else g for g, a in zip(found, activations)]
    return activations, gradients, classes


def _layer_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """LayerCAM at one layer: ReLU(Σ_c ReLU(∂y_t/∂A_c) ⊙ A_c)."""
    return (gradients.relu() * activations).sum(dim=1).relu()


@register_method("layercam")
class LayerCAM(CAMMethod):
    """Jiang et al. 2021 ("LayerCAM: Exploring Hierarchical Class Activation Maps for Localization", IEEE
    TIP): M = ReLU(Σ_c ReLU(∂y_t/∂A_c) ⊙ A_c) — each position's activation weighted by the positive part
    of the gradient of the target's logit there; at any layer, shallow ones included.

    `target_layer` may be a list of layers (names or modules). One layer is the usual LayerCAM: a map at
    its resolution (`layer_map` True, so Jitter-CAM can wrap it). Several layers are explained from ONE
    forward and ONE backward (`layer_gradients`) and fused (`layer_map` False on the instance; `self.layer`
    is the finest layer's, the one with the largest map at the probe's input size):

    * ``fusion="paper"`` (default), as torchcam implements the paper's eq. 9 (frgfm/torch-cam,
      `LayerCAM._scale_cams` and `_CAM._fuse_cams`): each layer's map scaled to
      tanh(γ · M / max M) (γ = `gamma`, 2 by default; a map that is all zero stays zero) at its own
      resolution, then resized (bilinear, half-pixel centres) to the finest map's resolution, and fused by
      the element-wise maximum. The scaling is meant for the shallow layers' weaker maps; like torchcam,
      every layer is scaled here (tanh is increasing, so the deepest map keeps its order). torchcam
      min–max normalises M before the tanh; the two agree where a map's minimum is 0.
      The result is at the finest map's resolution, in [0, tanh γ].
    * ``fusion="pytorch-grad-cam"``: jacobgil/pytorch-grad-cam's multi-layer aggregation
      (`BaseCAM.compute_cam_per_layer` / `aggregate_multi_layers`): each layer's map shifted to min 0 and
      divided by (its max + 1e-7) at its own resolution, resized to the input size, then the mean over
      the layers. The result is at the input's resolution (the peer's final min–max is left to
      `jittercam.upsample`, as for every raw map).

    The authors' code (PengtaoJiang/LayerCAM-jittor `cam/layercam.py`) makes one layer's map per call,
    from the gradient of the raw logit (its softmax is commented out), as the single-layer form here.

    Args:
        model: the classifier to explain.
        target_layer: one layer or a list of layers (submodules of `model` or their names); None (default)
            finds one by probing the model.
        fusion: how several layers' maps are fused: "paper" (default) or "pytorch-grad-cam", as above.
        gamma: γ of the "paper" fusion's tanh scaling (2 by default).
        batch_size: images per forward and backward pass; None: the measured plan's, else the device's
            default.
        input_size: the square input size the layers are probed at; None: the model card's.
        layer: an already probed target layer (one layer only), skipping the probe.

    Raises:
        JitterCamError: an unknown `fusion`; `target_layer` is an empty list; or as `CAMMethod` raises it.
    """

    precisions = ("fp32",)  # bf16: 4.1 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | list[nn.Module | str] | tuple[nn.Module | str, ...] | None = None,
        *,
        fusion: str = "paper",
        gamma: float = 2.0,
        batch_size: int | None = None,
        input_size: int | None = None,
        layer: TargetLayer | None = None,
    ) -> None:
        if fusion not in FUSIONS:
            raise JitterCamError(f"fusion must be one of {', '.join(map(repr, FUSIONS))}, not {fusion!r}")
        self.fusion, self.gamma = fusion, float(gamma)
        if isinstance(target_layer, (list, tuple)):
            if not target_layer:
                raise JitterCamError("target_layer is an empty list; name at least one layer")
            if len(target_layer) == 1:
                target_layer = target_layer[0]
        if isinstance(target_layer, (list, tuple)):
            self.layers = [find_target_layer(model, one, input_size) for one in target_layer]
            finest = max(self.layers, key=lambda one: one.map_size)
            super().__init__(model, batch_size=batch_size, layer=finest)
            self.layer_map = False  # a fused map of several layers: no single layer's resolution
        else:
            super().__init__(model, target_layer, batch_size=batch_size, input_size=input_size, layer=layer)
            self.layers = [self.layer]

    def options(self) -> dict:
        if len(self.layers) == 1:
            return super().options()
        names = [layer.name for layer in self.layers]
        return {"target_layer": names, "batch_size": self.batch_size, **self.precision_option(),
                "fusion": self.fusion, "gamma": self.gamma}

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if len(self.layers) == 1:
            activation, gradient, _ = activations_and_gradients(self.model, self.layer, images, target, self.precision)
            return _layer_map(activation, gradient)
        activations, gradients, _ = layer_gradients(self.model, self.layers, images, target)
        maps = [_layer_map(a, g) for a, g in zip(activations, gradients)]
        if self.fusion == "pytorch-grad-cam":
            return torch.stack([resize(_shift_and_scale(m), tuple(images.shape[-2:])) for m in maps]).mean(dim=0)
        finest = max((m.shape[-2:] for m in maps), key=lambda shape: shape[0] * shape[1])
        return torch.stack([resize(self._scale(m), tuple(finest)) for m in maps]).amax(dim=0)

    def _explain_many(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if len(self.layers) > 1:
            return super()._explain_many(images, targets)
        activation, gradient, _ = activations_and_gradients(self.model, self.layer, images, targets, self.precision)
        return maps_per_class(_layer_map, activation, gradient)

    def _scale(self, maps: torch.Tensor) -> torch.Tensor:
        """tanh(γ · M / max M) per map; an all-zero map stays zero."""
        peak = maps.flatten(1).amax(dim=1)[:, None, None]
        return torch.tanh(self.gamma * maps / torch.where(peak > 0, peak, 1))


def _shift_and_scale(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's `scale_cam_image` without the resize: (M − min) / (max(M − min) + 1e-7)."""
    flat = maps.flatten(1)
    shifted = flat - flat.min(dim=1, keepdim=True).values
    return (shifted / (shifted.max(dim=1, keepdim=True).values + 1e-7)).view_as(maps)
