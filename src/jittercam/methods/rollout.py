"""Attention rollout (Abnar & Zuidema, ACL 2020) for vision transformers: the attention of every
block, fused over heads and multiplied through the network; the class token's row over the patch grid."""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import JitterCamError
from .base import CAMMethod
from .registry import register_method

FUSIONS = ("mean", "max", "min")
VARIANTS = ("paper", "vit-explain")


# Hugging Face's two attention layouts: from transformers 5.9 (ViT, DeiT, BEiT) one module holds the query,
# key, value and output projections; before, a self-attention module holds `query`, `key` and `value` and
# its parent the output projection as `output.dense` (all of transformers 4 and most of its vision models)
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
OLDER_PROJECTIONS = ("query", "key", "value")


def projection_names(module: nn.Module) -> tuple[str, ...] | None:
    """The names of an attention module's projections in one of Hugging Face's layouts (`PROJECTIONS`, or
    `OLDER_PROJECTIONS` before transformers 5.9), with `num_attention_heads` or `num_heads` heads; None for
    any other module.

    Args:
        module: a module of the network.

    Returns:
        The linear layers' names (queries, keys, values, then the output's where the module holds it), or None.
    """
    heads = getattr(module, "num_attention_heads", getattr(module, "num_heads", None))
    if not (isinstance(heads, int) and heads > 0):
        return None
    for names in (PROJECTIONS, OLDER_PROJECTIONS):
        if all(isinstance(getattr(module, name, None), nn.Linear) for name in names):
            return names
    return None


def projection_heads(module: nn.Module) -> int | None:
    """The head count of an attention module in one of Hugging Face's projection layouts
    (`projection_names`); None for any other module.

    Args:
        module: a module of the network.

    Returns:
        The number of heads, or None.
    """
    if projection_names(module) is None:
        return None
    return int(getattr(module, "num_attention_heads", getattr(module, "num_heads", 0)))


def _own_parameters(module: nn.Module) -> list[str]:
    """The parameters of a projection-layout attention beyond its projections' (a bias table of its own)."""
    names = projection_names(module) or ()
    projections = {id(p) for name in names for p in module.get_submodule(name).parameters()}
    return [name for name, p in module.named_parameters() if id(p) not in projections]


def plain_projection_attention(module: nn.Module) -> bool:
    """A projection-layout attention whose only parameters are its projections': its scores are q kᵀ ·
    scaling plus the attention mask (BEiT's relative position bias from transformers 5.9) or the shared
    relative position bias (before 5.9) it is given, which rollout recomputes; a bias table of the
    attention's own would be added where rollout cannot see it."""
    return projection_names(module) is not None and not _own_parameters(module)


def _unreadable_attention(model: nn.Module) -> str:
    """Why a model's Hugging Face attention is not read, as a clause for rollout's error: the first parameter
    of its own that it adds to the scores (BEiT's per-layer position bias before transformers 5.9), or ''."""
    for module in model.modules():
        own = _own_parameters(module) if projection_names(module) is not None else []
        if own:
            return (f" that it can recompute: its {type(module).__name__} adds a parameter of its own ({own[0]}) "
                    f"to the attention scores (transformers 5.9 and later pass BEiT's as the attention mask)")
    return ""


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules of a vision transformer, in definition (= forward) order: timm's
    `Attention` (a `qkv` linear layer, `num_heads`, `scale`), torch's `nn.MultiheadAttention` (torchvision's
    ViTs, hand-written ones) without added key/value biases or zero attention, and plain attention in Hugging
    Face's projection layouts (`plain_projection_attention`: transformers' ViT, DeiT, BEiT, and before 5.9
    their `query`/`key`/`value` self-attention).

    Args:
        model: the network.

    Returns:
        The attention modules (empty for a network without them).
    """
    return [
        module for module in model.modules()
        if (isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "num_heads")
            and hasattr(module, "scale"))
        or (isinstance(module, nn.MultiheadAttention) and module.bias_k is None and not module.add_zero_attn)
        or plain_projection_attention(module)
    ]


def in_projection(module: nn.MultiheadAttention, x: torch.Tensor, part: int) -> torch.Tensor:
    """One of an `nn.MultiheadAttention`'s input projections (part 0: queries, 1: keys, 2: values) of a
    batch-first `(B, L, E)` input, split into heads: `(B, heads, L, E / heads)`; the weights detached.

    Args:
        module: the attention module (packed `in_proj_weight` or separate q/k/v weights).
        x: `(B, L, E)` tokens.
        part: 0, 1 or 2.

    Returns:
        `(B, heads, L, E / heads)`.
    """
    dim = module.embed_dim
    if module.in_proj_weight is not None:
        weight = module.in_proj_weight[part * dim:(part + 1) * dim]
    else:
        weight = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)[part]
    bias = None if module.in_proj_bias is None else module.in_proj_bias[part * dim:(part + 1) * dim].detach()
    projected = F.linear(x, weight.detach(), bias)
    return projected.unflatten(-1, (module.num_heads, dim // module.num_heads)).transpose(1, 2)


def _multihead_attention(module: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                         mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q kᵀ / √d) per head of an `nn.MultiheadAttention` call: `(B, heads, L, S)`, as the module
    computes it (its `need_weights=True, average_attn_weights=False` output)."""
    if not module.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    q, k = in_projection(module, query, 0), in_projection(module, key, 1)
    scores = (q / q.shape[-1] ** 0.5) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return scores.softmax(dim=-1)


def _arguments(module: nn.Module, args: tuple, kwargs: dict) -> dict:
    """A module call's arguments by the names of its `forward`'s parameters (a `**kwargs` parameter's
    contents among them); only `kwargs` where the call does not fit the signature."""
    try:
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return dict(kwargs)
    given = dict(bound.arguments)
    for name, parameter in bound.signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            given.update(given.pop(name, {}))
    return given


class AttentionRecorder:
    """Records the attention probabilities of every attention module during one forward: for timm's
    `Attention`, softmax(q kᵀ · scale) from the output of its `qkv` layer (after the module's
    `q_norm`/`k_norm`), so that its fused attention, which never forms the matrix, needs no change to the
    model; for `nn.MultiheadAttention`, the same from its inputs and input projection (its callers usually
    ask for no weights; an `attn_mask` is applied, a key padding mask is not supported); for Hugging Face's
    projection layouts, softmax(q kᵀ · scaling + the attention mask it is given) from its `q_proj` and `k_proj`
    (whichever attention implementation the model was loaded with; BEiT's relative position bias comes as
    that mask; a boolean mask is not supported), or before transformers 5.9 from its `query` and `key` plus
    the shared relative position bias it is given (a head mask is not supported). The hooks are removed on
    leaving.

    Args:
        modules (list[nn.Module]): the attention modules (`attention_modules`).
    """

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules = modules
        self.attentions: list[torch.Tensor] = []
        self._handles: list = []

    def _hook(self, attention: nn.Module):
        def record(_module, _inputs, output: torch.Tensor) -> None:
            batch, tokens, _ = output.shape
            heads = int(attention.num_heads)  # type: ignore[arg-type]
            qkv = output.detach().reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
            query, key = qkv[0], qkv[1]
            query = getattr(attention, "q_norm", nn.Identity())(query)
            key = getattr(attention, "k_norm", nn.Identity())(key)
            self.attentions.append(((query * attention.scale) @ key.transpose(-2, -1)).softmax(dim=-1).float())

        return record

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        query = args[0] if args else kwargs["query"]
        key = args[1] if len(args) > 1 else kwargs.get("key", query)
        if kwargs.get("key_padding_mask") is not None or (len(args) > 3 and args[3] is not None):
            raise JitterCamError("rollout does not support a key padding mask in nn.MultiheadAttention")
        mask = kwargs.get("attn_mask", args[5] if len(args) > 5 else None)
        assert isinstance(module, nn.MultiheadAttention)
        self.attentions.append(_multihead_attention(module, query.detach(), key.detach(), mask).float())

    def _projection_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        # by name: the positions differ between versions (BEiT's second argument was the head mask in
        # transformers 4, `output_attentions` in 5.0-5.8, the attention mask from 5.9)
        given = _arguments(module, args, kwargs)
        hidden = (given["hidden_states"] if "hidden_states" in given else args[0]).detach()
        names, heads = projection_names(module), projection_heads(module)
        assert names is not None and heads
        if given.get("head_mask") is not None:
            raise JitterCamError(f"rollout does not support a head mask in {type(module).__name__}")
        masks = [given[name] for name in ("attention_mask", "relative_position_bias") if given.get(name) is not None]
        if any(not mask.is_floating_point() for mask in masks):
            raise JitterCamError(f"rollout does not support a boolean attention mask in {type(module).__name__}")
        projections = (module.get_submodule(names[0]), module.get_submodule(names[1]))
        q, k = (F.linear(hidden, layer.get_parameter("weight").detach(),
                         None if layer.bias is None else layer.get_parameter("bias").detach())
                .unflatten(-1, (heads, -1)).transpose(1, 2) for layer in projections)
        scores = (q * getattr(module, "scaling", q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)
        for mask in masks:  # added to the scores, as transformers' eager attention does (BEiT's position bias)
            scores = scores + mask.detach()[..., : scores.shape[-1]]
        self.attentions.append(scores.float().softmax(dim=-1))

    def _hook_for(self, module: nn.Module):
        if isinstance(module, nn.MultiheadAttention):
            return module.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        if projection_heads(module) is not None:
            return module.register_forward_pre_hook(self._projection_hook, with_kwargs=True)
        return module.get_submodule("qkv").register_forward_hook(self._hook(module))

    def __enter__(self) -> AttentionRecorder:
        self.attentions = []
        self._handles = [self._hook_for(module) for module in self.modules]
        return self

    def __exit__(self, *_exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


MAX_PREFIX = 16  # class, distillation and register tokens: a handful, never a grid's worth


class GridRecorder:
    """Records the output grid (h, w) of a vision transformer's patch embedding — its first convolution —
    during one forward, in `grid` (None without a convolution). The hook is removed on leaving.

    Args:
        model (nn.Module): the network.
    """

    def __init__(self, model: nn.Module) -> None:
        self.embedding = next((module for module in model.modules() if isinstance(module, nn.Conv2d)), None)
        self.grid: tuple[int, int] | None = None
        self._handle: RemovableHandle | None = None

    def _hook(self, _module, _inputs, output: torch.Tensor) -> None:
        if self.grid is None and output.dim() == 4:
            self.grid = (int(output.shape[-2]), int(output.shape[-1]))

    def __enter__(self) -> GridRecorder:
        self.grid = None
        if self.embedding is not None:
            self._handle = self.embedding.register_forward_hook(self._hook)
        return self

    def __exit__(self, *_exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def token_layout(model: nn.Module, tokens: int, grid: tuple[int, int] | None, height: int,
                 width: int) -> tuple[int, tuple[int, int]]:
    """How `tokens` tokens split into prefix tokens (class, distillation, register) and the patch grid: the
    model's `num_prefix_tokens` (timm) where it has one; else the patch embedding's grid as recorded during
    the forward, the rest of the tokens the prefix (torchvision's, Hugging Face's, hand-written ViTs); else
    one prefix token and `patch_grid`.

    Args:
        model: the network (a loader's wrapper is looked through).
        tokens: the tokens of a block, prefix included.
        grid: the patch embedding's output grid (h, w), or None.
        height: the input's height in pixels.
        width: the input's width in pixels.

    Returns:
        `(prefix, (h, w))`.

    Raises:
        JitterCamError: the tokens make no grid.
    """
    prefix = getattr(_unwrapped(model), "num_prefix_tokens", None)
    if isinstance(prefix, int):
        return prefix, patch_grid(tokens - prefix, height, width)
    if grid is not None and 0 <= tokens - grid[0] * grid[1] <= MAX_PREFIX:
        return tokens - grid[0] * grid[1], grid
    return 1, patch_grid(tokens - 1, height, width)


def patch_grid(tokens: int, height: int, width: int) -> tuple[int, int]:
    """The patch grid (h, w) of `tokens` patch tokens from a `height × width` image: h · w = tokens with
    h / w = height / width, whatever the patch size (timm's, torchvision's, a convolution's stride).

    Args:
        tokens: the number of patch tokens.
        height: the input's height in pixels.
        width: the input's width in pixels.

    Returns:
        `(h, w)`.

    Raises:
        JitterCamError: no such grid.
    """
    rows = max(1, round((tokens * height / width) ** 0.5))
    if tokens % rows:
        raise JitterCamError(f"found {tokens} patch tokens, no grid of a {height}x{width} image's shape")
    return rows, tokens // rows


def rollout(attentions: list[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0,
            variant: str = "paper") -> torch.Tensor:
    """Attention rollout: R = Â_L ⋯ Â_1 with Â = normalise((fuse_heads(A) + I) / 2).

    Args:
        attentions: per block, `(B, heads, N, N)` attention probabilities, in forward order.
        head_fusion: "mean", "max" or "min" over the heads.
        discard_ratio: the fraction of the N² fused weights of each image set to 0, smallest first, never
            the class token's own weight (entry (0, 0)) (jacobgil/vit-explain's; 0: none, the paper's).
        variant: "paper" re-normalises each row to sum 1; "vit-explain" divides like its `rollout`
            (`a / a.sum(dim=-1)` without keepdim: entry (i, j) by the sum of row j).

    Returns:
        `(B, N, N)` rolled-out attention R.
    """
    tokens = attentions[0].shape[-1]
    identity = torch.eye(tokens, device=attentions[0].device, dtype=attentions[0].dtype)
    result = identity.expand(attentions[0].shape[0], tokens, tokens)
    for attention in attentions:
        if head_fusion == "mean":
            fused = attention.mean(dim=1)
        elif head_fusion == "max":
            fused = attention.amax(dim=1)
        else:
            fused = attention.amin(dim=1)
        count = int(tokens * tokens * discard_ratio)
        if count:
            flat = fused.flatten(1)
            drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(
                1, flat.topk(count, dim=1, largest=False).indices, True
            )
            drop[:, 0] = False
            fused = flat.masked_fill(drop, 0).view_as(fused)
        fused = (fused + identity) / 2
        sums = fused.sum(dim=-1)
        fused = fused / (sums[:, :, None] if variant == "paper" else sums[:, None, :])
        result = fused @ result
    return result


@register_method("rollout")
class AttentionRollout(CAMMethod):
    """Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020) on a
    vision transformer with a class token: the attention probabilities of every block, fused
    over the heads, averaged with the identity (the residual), re-normalised and multiplied from the first
    block to the last; the map is the class token's row over the patch tokens, on the patch grid
    (`(B, H/p, W/p)` for patch size p).

    Class-agnostic: `target` is accepted and ignored (every class gets the same map). The attention is
    recomputed from each block's query and key projections (`AttentionRecorder`: timm's `qkv`, an
    `nn.MultiheadAttention`'s input projection, Hugging Face's `q_proj`/`k_proj`), so fused attention needs
    no change to the model. Checked against jacobgil/vit-explain's `VITAttentionRollout` (`vit_rollout.py`,
    `rollout`), which this class reproduces with `discard_ratio=0.9, variant="vit-explain"` (its defaults,
    head fusion "mean"); the defaults here are the paper's: no discarding, rows re-normalised. vit-explain
    discards only in the batch's first image and divides entry (i, j) by row j's sum (a missing keepdim);
    here each image is discarded alike, and the division is an option.

    Args:
        model (nn.Module): a vision transformer with a class token: timm's, torchvision's, Hugging Face's
            (ViT, DeiT, BEiT), or one written with `nn.MultiheadAttention`.
        head_fusion: "mean" (default), "max" or "min" over the heads.
        discard_ratio: the fraction of each block's smallest fused weights set to 0, in [0, 1) (default 0).
        variant: "paper" (default) or "vit-explain", the normalisation as above.
        batch_size (int | None): images per forward pass; None: the measured plan's, else the device's default.

    Raises:
        JitterCamError: the model has no attention modules `attention_modules` finds or no class token; an unknown
            `head_fusion` or `variant`; `discard_ratio` outside [0, 1).
    """

    uses_layer = False
    layer_map = False

    def __init__(self, model, *, head_fusion: str = "mean", discard_ratio: float = 0.0, variant: str = "paper",
                 batch_size: int | None = None) -> None:
        if head_fusion not in FUSIONS:
            raise JitterCamError(f"head_fusion must be one of {', '.join(FUSIONS)}, not {head_fusion!r}")
        if variant not in VARIANTS:
            raise JitterCamError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)) \
                or not 0 <= discard_ratio < 1:
            raise JitterCamError(f"discard_ratio must be in [0, 1), got {discard_ratio!r}")
        self.attentions = attention_modules(model)
        if not self.attentions or _class_token(model) is None:
            raise JitterCamError(
                f"rollout needs a vision transformer with a class token and self-attention modules (timm's "
                f"ViTs such as vit_tiny_patch16_224, torchvision's vit_b_16, Hugging Face's ViT, DeiT, BEiT); "
                f"{type(model).__name__} has "
                f"{'no class token' if self.attentions else 'none' + _unreadable_attention(model)}"
            )
        super().__init__(model, batch_size=batch_size)
        self.head_fusion, self.discard_ratio, self.variant = head_fusion, float(discard_ratio), variant

    def options(self) -> dict:
        return {**super().options(), "head_fusion": self.head_fusion, "discard_ratio": self.discard_ratio,
                "variant": self.variant}

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad(), AttentionRecorder(self.attentions) as recorder, GridRecorder(self.model) as embedded:
            self.model(images)
        rolled = rollout(recorder.attentions, self.head_fusion, self.discard_ratio, self.variant)
        prefix, grid = token_layout(self.model, rolled.shape[-1], embedded.grid, images.shape[-2], images.shape[-1])
        return rolled[:, 0, prefix:].reshape(-1, *grid)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The network a loader's wrapper holds (`model.model`, as jittercam's Hugging Face wrapper), else itself."""
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, nn.Module) else model


def _class_token(model: nn.Module) -> torch.Tensor | None:
    """The class token parameter: timm's and hand-written ViTs' `cls_token`, torchvision's `class_token`,
    Hugging Face's `embeddings.cls_token` (wherever the network keeps it)."""
    return next((parameter for name, parameter in model.named_parameters()
                 if name.rsplit(".", 1)[-1] in ("cls_token", "class_token")), None)
