"""Score-CAM (Wang et al., CVPR Workshops 2020): each channel of the target layer weighted by the score
of the input masked with that channel's upsampled map."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..card import model_device, model_dtype
from ..errors import JitterCamError
from ..inputs import check_flag, check_target_range, resolve_targets
from ..probe import TargetLayer
from .base import (
    CAMMethod,
    activations_and_logits,
    layer_activations,
    pair_chunks,
    progress_bar,
)
from .registry import register_method

VARIANTS = ("paper", "pytorch-grad-cam")


@register_method("scorecam")
class ScoreCAM(CAMMethod):
    """Score-CAM: L = ReLU(Σ_k w_k A_k) at the target layer's resolution, one forward pass per channel k.

    For every channel A_k of the target layer (rectified where the layer asks for it, see
    `find_target_layer`), the mask H_k is A_k upsampled bilinearly to the input's H × W and min–max
    scaled to [0, 1]; the network is run on the input tensor as given (the normalised tensor the model
    takes) multiplied by H_k, and the target class's score on that masked input gives w_k. The two
    published definitions differ, so `variant` picks one:

    * ``"paper"`` (default) — the authors' code (haofanwang/Score-CAM, `cam/scorecam.py`) and the first
      arXiv version's text ("we represent weight as post-softmax value"): w_k = softmax(f(X ∘ H_k))_c,
      the class-softmax probability of the masked input; no softmax across channels; upsampling with
      ``align_corners=False``; H_k = (U_k − min) / (max − min) without an epsilon; a constant channel is
      skipped (w_k = 0, no forward pass). The CVPR Workshops version calls the weight the channel-wise
      increase of confidence, C(A_k) = f(X ∘ H_k) − f(X_b), and its Algorithm 1 adds a softmax over the
      channels; the authors' answer (haofanwang/Score-CAM issues 6 and 17) is that X_b is a black image
      left out of the code and that their f is already a probability — their code has neither the
      baseline nor the softmax over channels, and neither has this variant.
    * ``"pytorch-grad-cam"`` — jacobgil/pytorch-grad-cam's `ScoreCAM`, which follows the algorithm box of
      the paper's second version (α = softmax over channels of the CIC score): w = softmax over the
      channels k of the raw logit f_c(X ∘ H_k); upsampling with ``align_corners=True``;
      H_k = (U_k − min) / (max − min + 1e-8), so a constant channel gives an all-zero mask and still
      takes its pass.

    The authors' code adds the weighted maps after upsampling them and applies the ReLU at the input's
    resolution; this class returns the raw map at the layer's resolution (`layer_map`, so it can be a
    Jitter-CAM base) — the same up to where the ReLU sits. pytorch-grad-cam's output is this map, resized
    and min–max scaled.

    The (image, channel) pairs of a chunk are batched together, and only one batch of masks exists at a
    time. `passes()` is the number of channels C (2048 for ResNet50), plus nothing for the activations,
    which come from a forward that stops at the layer (a full forward only when the target is None, for
    the top-1 class).

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose channels are weighted: a submodule of
            `model` or its name; None (default) finds it by probing the model.
        variant: "paper" (default) or "pytorch-grad-cam", as above.
        progress: True shows a tqdm bar over the masked passes (off by default).
        **options (Any): `batch_size` (the number of masked inputs per forward pass, and of images per
            chunk), `input_size`, `layer`, `precision` and `compile` (the masked passes compiled, the last
            chunk padded), as `CAMMethod` takes them.

    Raises:
        JitterCamError: an unknown `variant`, or as `CAMMethod` raises it.
    """

    precisions = ("fp32",)  # bf16: 2.2 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here
    compiles = True  # the masked passes (`compile=`)

    def __init__(self, model, target_layer=None, *, variant: str = "paper", progress: bool = False, **options):
        if variant not in VARIANTS:
            raise JitterCamError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        super().__init__(model, target_layer, **options)
        self.variant = variant
        self.progress = check_flag(progress, "progress")
        self._channels: int | None = None

    def options(self) -> dict:
        return {**super().options(), "variant": self.variant}

    def channels(self) -> int:
        """C, the number of channels of the target layer (one forward to the layer, once).

        Returns:
            The number of channels C.
        """
        if self._channels is None:
            size = self.layer.input_size
            probe = torch.zeros(1, 3, size, size, device=model_device(self.model), dtype=model_dtype(self.model))
            self._channels = int(layer_activations(self.model, self.layer, probe).shape[1])
        return self._channels

    def passes(self, input_size: int | None = None) -> int:
        return self.channels()

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            if target is None:
                raw, logits = activations_and_logits(self.model, self.layer, images)
                target = resolve_targets(None, logits)
                activations = raw.relu() if self.layer.rectify else raw
            else:
                check_target_range(target, self.layer.num_classes)
                activations = layer_activations(self.model, self.layer, images)
            self._channels = activations.shape[1]
            scores = self._scores(images, activations, target)
            if self.variant == "pytorch-grad-cam":
                scores = scores.softmax(dim=1)
            return torch.einsum("bc,bchw->bhw", scores, activations).relu()

    def _scores(self, images: torch.Tensor, activations: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`(B, C)`: the target's score on the input masked by each channel (0 for a skipped channel)."""
        batch, channels = activations.shape[:2]
        paper = self.variant == "paper"
        flat = activations.flatten(2)
        if paper:  # a constant channel is skipped (the authors' `continue`)
            pairs = (flat.amax(dim=2) > flat.amin(dim=2)).flatten().nonzero().squeeze(1)
        else:
            pairs = torch.arange(batch * channels, device=images.device)
        scores = torch.zeros(batch * channels, dtype=activations.dtype, device=images.device)
        size = self.chunk_size(images)
        with progress_bar(self.progress, pairs.numel(), "Score-CAM") as bar:
            for chunk in pair_chunks(pairs.numel(), size, images.device):
                pair = pairs[chunk]
                image, channel = pair // channels, pair % channels
                upsampled = F.interpolate(
                    activations[image, channel][:, None],
                    size=images.shape[-2:],
                    mode="bilinear",
                    align_corners=not paper,
                )
                low = upsampled.amin(dim=(2, 3), keepdim=True)
                span = upsampled.amax(dim=(2, 3), keepdim=True) - low
                # the paper variant never sees a constant map here; where() only keeps a 0/0 out of reach
                masks = (upsampled - low) / (torch.where(span > 0, span, 1) if paper else span + 1e-8)
                logits = self.run_model(images[image] * masks, size)
                if paper:
                    logits = logits.softmax(dim=1)
                scores[pair] = logits.gather(1, target[image][:, None]).squeeze(1)
                bar.update(pair.numel())
        return scores.view(batch, channels)
