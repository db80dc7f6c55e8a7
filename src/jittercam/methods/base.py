"""The contract every explanation method follows, and the gradient capture the CAMs share."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import JitterCamError
from ..inputs import Target, as_target, resolve_batch_size, resolve_targets
from ..models import TargetLayer, find_target_layer


class CAMMethod:
    """An explanation method: built from a model (and an optional target layer), called on a batch
    `(B, 3, H, W)` with a target, it returns raw low-resolution maps `(B, h, w)` on the input's device —
    not normalised, not resized. Batches larger than `batch_size` are explained in chunks.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        batch_size: int | None = None,
        input_size: int | None = None,
    ) -> None:
        self.model = model
        self.layer: TargetLayer = find_target_layer(model, target_layer, input_size)
        self.batch_size = batch_size

    def __call__(self, images: torch.Tensor, target: Target = None) -> torch.Tensor:
        return self.attribute(images, target)

    def attribute(self, images: torch.Tensor, target: Target = None) -> torch.Tensor:
        if images.dim() != 4:
            raise JitterCamError(f"images must be a (B, 3, H, W) batch, got shape {tuple(images.shape)}")
        size = resolve_batch_size(self.batch_size, images.device)
        indices = as_target(target, images.shape[0], images.device)
        chunks = [
            self._explain(images[start : start + size], None if indices is None else indices[start : start + size])
            for start in range(0, images.shape[0], size)
        ]
        return torch.cat(chunks)

    def _explain(self, images: torch.Tensor, target: Target) -> torch.Tensor:
        raise NotImplementedError


def activations_and_gradients(
    model: nn.Module, layer: TargetLayer, images: torch.Tensor, target: Target
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward and one backward: the target layer's activations `A`, the gradient of the target's
    logit with respect to `A`, and the class indices explained.

    The trunk up to the target layer runs without autograd; the graph starts at the activations, and
    gradients flow to them only (`torch.autograd.grad`), never into the parameters' `.grad`. The hook is
    removed before returning, so the model is left as it was.
    """
    captured: dict[str, torch.Tensor] = {}
    calls = 0

    def start_graph_here(_module, _inputs, output):
        nonlocal calls
        call, calls = calls, calls + 1
        if call != layer.call:
            return None
        torch.set_grad_enabled(True)  # for the rest of this forward; the no_grad block restores it
        captured["A"] = output.detach().requires_grad_(True)
        return captured["A"].clone()  # a non-leaf, so that an in-place op downstream stays legal

    handle = layer.module.register_forward_hook(start_graph_here)
    with torch.inference_mode(False):  # callers may be inside inference_mode; gradients are needed here
        try:
            with torch.no_grad():
                logits = model(images)
        finally:
            handle.remove()
        if "A" not in captured:
            raise JitterCamError(f"target layer {layer.name!r} did not run for this input")
        classes = resolve_targets(target, logits.detach()).clone()  # not an inference tensor
        activations = captured["A"]
        with torch.enable_grad():
            score = logits.gather(1, classes[:, None]).sum()
            (gradients,) = torch.autograd.grad(score, activations)
    activations = activations.detach()
    if layer.rectify:
        activations = activations.relu()
    return activations, gradients, classes
