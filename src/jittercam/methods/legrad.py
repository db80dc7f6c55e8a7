"""LeGrad (Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via Feature
Formation Sensitivity", arXiv 2404.03214): the positive gradient of each block's class score with respect to
that block's attention probabilities, averaged over heads, queries and blocks — on timm's and torchvision's
ViTs, and on any transformer whose blocks each hold one `nn.MultiheadAttention` (a hand-written ViT such as
the ground truth's)."""
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
from .rollout import OLDER_PROJECTIONS, GridRecorder, in_projection, projection_heads, projection_names, token_layout

VARIANTS = ("paper", "torchcam")
LAYOUTS = ("timm", "torchvision", "attention", "projections")
KNOWN_HEADS = ("timm", "torchvision")  # layouts whose head LeGrad calls itself; the others run the model's tail


@dataclass
class _Block:
    """One transformer block: the block, its attention's output projection (whose output starts the graph),
    the projection's weight W_o, and how to get the values V from what the attention module was given."""

    block: nn.Module
    output: nn.Module  # the module whose output is the attention's projected output y
    weight: torch.Tensor  # W_o: y = concat_h(A_h V_h) W_oᵀ + b
    source: nn.Module  # the module whose output (timm: qkv; v_proj) or input (an MHA) gives V
    heads: int
    layout: str  # one of LAYOUTS


def _timm_blocks(model: nn.Module) -> list[_Block]:
    """The blocks of a timm `VisionTransformer` with plain attention; [] for anything else."""
    blocks = getattr(model, "blocks", None)
    if not (isinstance(blocks, nn.Sequential) and hasattr(model, "forward_head") and hasattr(model, "norm")):
        return []
    found = []
    for block in blocks:
        attn = getattr(block, "attn", None)
        linear = all(isinstance(getattr(attn, name, None), nn.Linear) for name in ("qkv", "proj"))
        norm, gate = getattr(attn, "norm", nn.Identity()), getattr(attn, "gate", None)
        if not (linear and isinstance(norm, nn.Identity) and gate is None):
            return []
        assert attn is not None
        found.append(_Block(block, attn.proj, attn.proj.weight, attn.qkv, int(attn.num_heads), "timm"))
    return found


def _torchvision_blocks(model: nn.Module) -> list[_Block]:
    """The blocks of a torchvision `VisionTransformer`; [] for anything else."""
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if not (isinstance(layers, nn.Sequential) and hasattr(model, "heads")):
        return []
    found = []
    for block in layers:
        attention = getattr(block, "self_attention", None)
        if not isinstance(attention, nn.MultiheadAttention) or not attention.batch_first \
                or not isinstance(getattr(block, "dropout", None), nn.Dropout) or attention.in_proj_weight is None:
            return []
        dropout = block.get_submodule("dropout")
        found.append(_Block(block, dropout, attention.out_proj.weight, attention, attention.num_heads, "torchvision"))
    return found


def _attention_blocks(model: nn.Module) -> list[_Block]:
    """Any other transformer: each `nn.MultiheadAttention` (no added key/value biases, no zero attention)
    and each attention in Hugging Face's projection layouts (`q_proj`, `k_proj`, `v_proj`, `o_proj`; before
    transformers 5.9 `query`, `key`, `value`, the output projection the parent's `output.dense`), in
    definition (= forward) order, its block the module that holds it directly (not a ModuleList or
    ModuleDict, which are never called), one attention per block; [] if that fails."""
    parents = {id(child): module for module in model.modules() for child in module.children()}
    found = []
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            if module.bias_k is not None or module.add_zero_attn:
                return []
            found.append(_Block(module, module, module.out_proj.weight, module, module.num_heads, "attention"))
        elif (heads := projection_heads(module)) is not None:
            names = projection_names(module)
            assert names is not None
            holder: nn.Module | None = module
            output = getattr(module, "o_proj", None)
            if names == OLDER_PROJECTIONS:  # the output projection is the parent's `output.dense`
                holder = parents.get(id(module))
                output = getattr(getattr(holder, "output", None), "dense", None)
            if holder is None or not isinstance(output, nn.Linear):
                return []
            found.append(_Block(holder, output, output.weight, module.get_submodule(names[2]), heads,
                                "projections"))
    for b in found:
        block = parents.get(id(b.block))  # the attention's holder is the block
        if block is None or isinstance(block, (nn.ModuleList, nn.ModuleDict)):  # a container is never called
            return []
        b.block = block
    if len({id(b.block) for b in found}) < len(found):
        return []
    return found


def _blocks(model: nn.Module) -> list[_Block]:
    """The blocks LeGrad reads: timm's or torchvision's ViT layout, else `_attention_blocks`."""
    return _timm_blocks(model) or _torchvision_blocks(model) or _attention_blocks(model)


@register_method("legrad")
class LeGrad(CAMMethod):
    """LeGrad: for each block l, s^l = the target's logit computed from the block's output tokens z^l by the
    model's own head, ∇^l = ∂s^l / ∂A^l for the block's attention probabilities A^l (B, heads, N, N), and
    E^l = mean over heads and query tokens of ReLU(∇^l), the prefix (class) keys removed; the map is the
    mean of E^l over the blocks, on the patch grid `(B, H/p, W/p)`.

    A^l is never formed (fused attention): since A^l enters the network only through O = A^l V,
    ∂s/∂A = (∂s/∂O) Vᵀ, with ∂s/∂O = (∂s/∂y) W_o from the gradient at the attention's projected output y
    (the one autograd graph starts there) and V from the recorded value projection. The model is not
    changed.

    Where it finds the blocks: timm's `VisionTransformer` (`blocks`, each `attn` with `qkv` and `proj`),
    torchvision's (`encoder.layers`, each `self_attention`), and otherwise any transformer whose attention
    is an `nn.MultiheadAttention` (a hand-written ViT) or in Hugging Face's projection layout (`q_proj`,
    `k_proj`, `v_proj`, `o_proj`: transformers' ViT, DeiT, BEiT), one per block (the block: the module
    holding it). There, s^l is the model's own layers after its last block run on z^l in its place: in the
    one forward, the last block hands every block's tokens, stacked, to the layers after it (one more
    forward per block where those layers read more of the batch, a skip connection to the head); for a
    ViT's final norm and head, the paper's head(norm(z^l)). The prefix tokens are the model's
    `num_prefix_tokens` (timm), else what the patch embedding's grid leaves over.

    `variant` picks the score of an intermediate block:

    * ``"paper"`` (default): the model's head on z^l as the model classifies its last tokens: timm's
      `forward_head(norm(z))` (the class token, or its pooling), torchvision's `heads(ln(z)[:, 0])`, the
      layers after the last block elsewhere.
    * ``"torchcam"``: torchcam 0.5.0's `LeGrad` projection for torchvision ViTs, head(norm(mean of all
      tokens)) (timm: `head(fc_norm(norm(mean)))`); torchcam's LeGrad runs on torchvision ViTs only
      (blocks with an `nn.MultiheadAttention`); not defined for other transformers.

    Args:
        model (nn.Module): a vision transformer, as above.
        blocks: how many of the last blocks are averaged; None (default) every block.
        variant: "paper" (default) or "torchcam", as above.
        batch_size (int | None): images per forward pass; None: the measured plan's, else the device's default.

    Raises:
        JitterCamError: the model has no attention blocks LeGrad can read; `blocks` is not a positive
            integer up to the number of blocks; an unknown `variant`, or "torchcam" on a transformer that
            is neither timm's nor torchvision's.
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
                f"legrad needs a vision transformer (timm's, torchvision's or Hugging Face's ViT, or blocks that "
                f"each hold one nn.MultiheadAttention); {type(model).__name__} has none"
            )
        if variant == "torchcam" and found[0].layout not in KNOWN_HEADS:
            raise JitterCamError(f"variant 'torchcam' is torchcam's projection for timm's and torchvision's ViTs; "
                                 f"use variant 'paper' on {type(model).__name__}")
        if blocks is not None and (isinstance(blocks, bool) or not isinstance(blocks, int)
                                   or not 1 <= blocks <= len(found)):
            raise JitterCamError(f"blocks must be an integer from 1 to {len(found)}, got {blocks!r}")
        super().__init__(model, batch_size=batch_size)
        self.blocks, self.variant = blocks, variant
        self._last_block = found[-1].block
        self._found = found[-blocks:] if blocks else found

    def options(self) -> dict:
        return {**super().options(), "blocks": self.blocks, "variant": self.variant}

    def passes(self, input_size: int | None = None) -> int:
        return 1  # (1 + blocks on a model whose head reads more than the last block's tokens)

    def _score(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits from a block's output tokens (`variant`), for timm's and torchvision's ViTs."""
        model: Any = self.model
        if self._found[0].layout == "timm":
            if self.variant == "paper":
                return model.forward_head(model.norm(tokens))
            return model.head(model.fc_norm(model.norm(tokens.mean(dim=1))))
        if self.variant == "paper":
            return model.heads(model.encoder.ln(tokens)[:, 0])
        return model.heads(model.encoder.ln(tokens.mean(dim=1)))

    def _tail(self, images: torch.Tensor, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        """Class logits of each block's output tokens, one forward per block, the model's layers after its
        last block run on them in place of its output (the rest of the network under no_grad, the graph
        starting at the replacement): for a model whose head also reads something else of the batch (a skip
        connection), where the stacked tail of the first forward cannot run."""
        scores = []
        for block_tokens in tokens:
            def substitute(_module, _inputs, output, block_tokens=block_tokens):
                torch.set_grad_enabled(True)  # for the rest of this forward; the no_grad block restores it
                return (block_tokens, *output[1:]) if isinstance(output, tuple) else block_tokens

            handle = self._last_block.register_forward_hook(substitute)
            try:
                with torch.no_grad():
                    scores.append(self.model(images))
            finally:
                handle.remove()
        return scores

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if self._found[0].layout in KNOWN_HEADS:
            return self._relevance_map(images, target, stacked=False)
        try:  # the blocks' tokens stacked through the model's head in the one forward
            return self._relevance_map(images, target, stacked=True)
        except RuntimeError:  # the head reads more of the batch than the last block's tokens
            return self._relevance_map(images, target, stacked=False)

    def _relevance_map(self, images: torch.Tensor, target: torch.Tensor | None, stacked: bool) -> torch.Tensor:
        blocks = self._found
        outputs: list[torch.Tensor] = []  # z^l, each block's output tokens, in forward order
        sources: list[torch.Tensor] = []  # what V is made from, in forward order

        def keep_output(_module, _inputs, output):  # a block may return (tokens, ...): transformers' BEiT < 5.9
            outputs.append(output[0] if isinstance(output, tuple) else output)

        def stacked_output(_module, _inputs, output):
            return (torch.cat(outputs), *output[1:]) if isinstance(output, tuple) else torch.cat(outputs)

        def cut_input(_module, args, kwargs):
            # ∂s^l/∂y^l does not pass through the block's input; without the cut, every block's slice of the
            # stacked tail would send (zero) gradients back through all the blocks before it
            if args and isinstance(args[0], torch.Tensor):
                return (args[0].detach(), *args[1:]), kwargs
            return None

        def keep_output_of_source(_module, _inputs, output):  # timm's qkv, Hugging Face's v_proj
            sources.append(output.detach())

        def keep_value(_module, args, kwargs):  # an nn.MultiheadAttention's value argument
            sources.append((args[2] if len(args) > 2 else kwargs["value"]).detach())

        with torch.inference_mode(False), ExitStack() as stack:
            embedded = stack.enter_context(GridRecorder(self.model))
            captures = [stack.enter_context(LayerCapture(b.output, mode="graph")) for b in blocks]
            for b in blocks:
                stack.callback(b.block.register_forward_hook(keep_output).remove)
                stack.callback(b.block.register_forward_pre_hook(cut_input, with_kwargs=True).remove)
                if isinstance(b.source, nn.MultiheadAttention):
                    stack.callback(b.source.register_forward_pre_hook(keep_value, with_kwargs=True).remove)
                else:
                    stack.callback(b.source.register_forward_hook(keep_output_of_source).remove)
            if stacked:  # after keep_output: the last block hands every block's tokens to the head at once
                stack.callback(self._last_block.register_forward_hook(stacked_output).remove)
            with torch.no_grad():
                logits = self.model(images)
            stack.close()
            if stacked:
                if logits.shape[0] != len(blocks) * images.shape[0]:
                    raise RuntimeError("the head did not keep the stacked tokens' rows")
                scores = list(logits.chunk(len(blocks)))
                logits = scores[-1]  # the last block's own tokens: the model's output
            if not len(outputs) == len(sources) == len(blocks):
                raise JitterCamError(f"legrad: {type(self.model).__name__}'s {len(blocks)} attention blocks "
                                     f"ran {len(outputs)} times and their attention {len(sources)} times in one "
                                     f"forward, not once each")
            if target is None:
                target = resolve_targets(None, logits.detach()).clone()
            else:
                check_target_range(target, logits.shape[1])
                target = target.clone()  # not an inference tensor, so that autograd may use it
            if blocks[0].layout in KNOWN_HEADS:
                scores = [self._score(tokens) for tokens in outputs]
            elif not stacked:
                scores = self._tail(images, outputs)
            relevances = []
            with torch.enable_grad():
                for index, (b, capture) in enumerate(zip(blocks, captures, strict=True)):
                    assert capture.output is not None
                    score = scores[index].gather(1, target[:, None]).sum()
                    (grad_y,) = torch.autograd.grad(score, capture.output, retain_graph=index < len(blocks) - 1)
                    relevances.append(self._relevance(b, grad_y.detach(), sources[index]))
        relevance = torch.stack(relevances).mean(dim=0)
        prefix, grid = token_layout(self.model, relevance.shape[1], embedded.grid, images.shape[-2],
                                    images.shape[-1])
        return relevance[:, prefix:].reshape(-1, *grid).float()

    @staticmethod
    def _relevance(b: _Block, grad_y: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """`(B, N)`: mean over heads and queries of ReLU(∂s/∂A), ∂s/∂A = ((∂s/∂y) W_o per head) Vᵀ."""
        if b.layout == "attention" and not b.source.batch_first:  # (N, B, E) in and out
            grad_y, source = grad_y.transpose(0, 1), source.transpose(0, 1)
        batch, tokens, _ = grad_y.shape
        grad_o = (grad_y @ b.weight.detach()).reshape(batch, tokens, b.heads, -1).transpose(1, 2)
        if b.layout == "timm":
            values = source.reshape(batch, tokens, 3, b.heads, -1)[:, :, 2].transpose(1, 2)
        elif b.layout == "projections":  # v_proj's output, heads concatenated
            values = source.reshape(batch, tokens, b.heads, -1).transpose(1, 2)
        else:
            assert isinstance(b.source, nn.MultiheadAttention)
            values = in_projection(b.source, source, 2)
        return (grad_o @ values.transpose(-2, -1)).relu().mean(dim=(1, 2))
