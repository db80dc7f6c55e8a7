"""LeGrad (Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via Feature
Formation Sensitivity", arXiv 2404.03214): the positive gradient of each block's class score with respect to
that block's attention probabilities, averaged over heads, queries and blocks."""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import JitterCamError
from ..inputs import check_target_range, resolve_targets
from .base import CAMMethod
from .capture import LayerCapture
from .registry import register_method
from .rollout import in_projection

VARIANTS = ("paper", "torchcam")


@dataclass
class _Block:
    """One transformer block: the block, its attention's output projection (whose output starts the graph),
    the projection's weight W_o, and how to get the values V from what the attention module was given."""

    block: nn.Module
    output: nn.Module  # the module whose output is the attention's projected output y
    weight: torch.Tensor  # W_o: y = concat_h(A_h V_h) W_oᵀ + b
    source: nn.Module  # the module whose output (timm: qkv) or input (torchvision: the MHA) gives V
    heads: int
    timm: bool


def _blocks(model: nn.Module) -> list[_Block]:
    """The blocks of a timm `VisionTransformer` or a torchvision `VisionTransformer`; [] for anything else."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and hasattr(model, "forward_head") and hasattr(model, "norm"):
        found = []
        for block in blocks:
            attn = getattr(block, "attn", None)
            linear = all(isinstance(getattr(attn, name, None), nn.Linear) for name in ("qkv", "proj"))
            norm, gate = getattr(attn, "norm", nn.Identity()), getattr(attn, "gate", None)
            plain = isinstance(norm, nn.Identity) and gate is None
            if not (linear and plain):
                return []
            assert attn is not None
            found.append(_Block(block, attn.proj, attn.proj.weight, attn.qkv, int(attn.num_heads), True))
        return found
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if isinstance(layers, nn.Sequential) and hasattr(model, "heads"):
        found = []
        for block in layers:
            attention = getattr(block, "self_attention", None)
            if not isinstance(attention, nn.MultiheadAttention) or not attention.batch_first \
                    or not isinstance(getattr(block, "dropout", None), nn.Dropout) or attention.in_proj_weight is None:
                return []
            dropout = block.get_submodule("dropout")
            found.append(_Block(block, dropout, attention.out_proj.weight, attention, attention.num_heads, False))
        return found
    return []


@register_method("legrad")
class LeGrad(CAMMethod):
    """LeGrad: for each block l, s^l = the target's logit computed from the block's output tokens z^l by the
    model's own head, ∇^l = ∂s^l / ∂A^l for the block's attention probabilities A^l (B, heads, N, N), and
    E^l = mean over heads and query tokens of ReLU(∇^l), the prefix (class) keys removed; the map is the
    mean of E^l over the blocks, on the patch grid `(B, H/p, W/p)`.

    A^l is never formed (timm's and torchvision's fused attention): since A^l enters the network only
    through O = A^l V, ∂s/∂A = (∂s/∂O) Vᵀ, with ∂s/∂O = (∂s/∂y) W_o from the gradient at the attention's
    projected output y (the one autograd graph starts there, `LayerCapture` "graph") and V from the
    recorded qkv projection. The model is not changed.

    `variant` picks the score of an intermediate block:

    * ``"paper"`` (default): the model's head on z^l as the model classifies its last tokens: timm's
      `forward_head(norm(z))` (the class token, or its pooling), torchvision's `heads(ln(z)[:, 0])`.
    * ``"torchcam"``: torchcam 0.5.0's `LeGrad` projection for torchvision ViTs, head(norm(mean of all
      tokens)) (timm: `head(fc_norm(norm(mean)))`); torchcam's LeGrad runs on torchvision ViTs only
      (blocks with an `nn.MultiheadAttention`).

    Args:
        model (nn.Module): a timm or torchvision `VisionTransformer`.
        blocks: how many of the last blocks are averaged; None (default) every block.
        variant: "paper" (default) or "torchcam", as above.
        batch_size (int | None): images per forward pass; None: the measured plan's, else the device's default.

    Raises:
        JitterCamError: the model is not a timm or torchvision vision transformer with plain attention
            blocks; `blocks` is not a positive integer up to the number of blocks; an unknown `variant`.
    """

    uses_layer = False
    layer_map = False

    def __init__(self, model, *, blocks: int | None = None, variant: str = "paper",
                 batch_size: int | None = None) -> None:
        if variant not in VARIANTS:
            raise JitterCamError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        found = _blocks(model)
        if not found:
            raise JitterCamError(
                f"legrad needs a timm or torchvision VisionTransformer with plain attention blocks, not "
                f"{type(model).__name__}"
            )
        if blocks is not None and (isinstance(blocks, bool) or not isinstance(blocks, int)
                                   or not 1 <= blocks <= len(found)):
            raise JitterCamError(f"blocks must be an integer from 1 to {len(found)}, got {blocks!r}")
        super().__init__(model, batch_size=batch_size)
        self.blocks, self.variant = blocks, variant
        self._found = found[-blocks:] if blocks else found

    def options(self) -> dict:
        return {**super().options(), "blocks": self.blocks, "variant": self.variant}

    def _score(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits from a block's output tokens (`variant`)."""
        model: Any = self.model
        if self._found[0].timm:
            if self.variant == "paper":
                return model.forward_head(model.norm(tokens))
            return model.head(model.fc_norm(model.norm(tokens.mean(dim=1))))
        if self.variant == "paper":
            return model.heads(model.encoder.ln(tokens)[:, 0])
        return model.heads(model.encoder.ln(tokens.mean(dim=1)))

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        sources: list[torch.Tensor] = []

        def keep_output(_module, _inputs, output):
            outputs.append(output)

        def keep_source(_module, inputs, output):
            sources.append((output if isinstance(output, torch.Tensor) else inputs[0]).detach())

        with torch.inference_mode(False), ExitStack() as stack:
            captures = [stack.enter_context(LayerCapture(b.output, mode="graph")) for b in self._found]
            for b in self._found:
                stack.callback(b.block.register_forward_hook(keep_output).remove)
                stack.callback(b.source.register_forward_hook(keep_source).remove)
            with torch.no_grad():
                logits = self.model(images)
            if target is None:
                target = resolve_targets(None, logits.detach()).clone()
            else:
                check_target_range(target, logits.shape[1])
                target = target.clone()  # not an inference tensor, so that autograd may use it
            relevances = []
            with torch.enable_grad():
                for index, (b, capture) in enumerate(zip(self._found, captures, strict=True)):
                    assert capture.output is not None
                    score = self._score(outputs[index]).gather(1, target[:, None]).sum()
                    (grad_y,) = torch.autograd.grad(score, capture.output, retain_graph=index < len(captures) - 1)
                    relevances.append(self._relevance(b, grad_y.detach(), sources[index]))
        prefix = int(getattr(self.model, "num_prefix_tokens", 1))
        maps = torch.stack(relevances).mean(dim=0)[:, prefix:]
        model: Any = self.model
        patch: Any = getattr(model, "patch_size", None) or getattr(model.patch_embed, "patch_size", (16, 16))
        patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
        height, width = images.shape[-2] // int(patch[0]), images.shape[-1] // int(patch[1])
        if height * width != maps.shape[1]:
            raise JitterCamError(f"legrad found {maps.shape[1]} patch tokens for a {height}x{width} patch grid")
        return maps.reshape(-1, height, width).float()

    @staticmethod
    def _relevance(b: _Block, grad_y: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """`(B, N)`: mean over heads and queries of ReLU(∂s/∂A), ∂s/∂A = ((∂s/∂y) W_o per head) Vᵀ."""
        batch, tokens, _ = grad_y.shape
        grad_o = (grad_y @ b.weight.detach()).reshape(batch, tokens, b.heads, -1).transpose(1, 2)
        if b.timm:
            values = source.reshape(batch, tokens, 3, b.heads, -1)[:, :, 2].transpose(1, 2)
        else:
            assert isinstance(b.source, nn.MultiheadAttention)
            values = in_projection(b.source, source, 2)
        return (grad_o @ values.transpose(-2, -1)).relu().mean(dim=(1, 2))
