"""SS-CAM (smoothed Score-CAM) and IS-CAM (integrated Score-CAM): Score-CAM whose channel scores are
averaged over N masked inputs, with noise added to the masks (SS-CAM) or along a scaling path (IS-CAM)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import JitterCamError
from ..probe import TargetLayer
from .base import progress_bar
from .baselines import image_generators
from .registry import register_method
from .scorecam import ScoreCAM
from .smoothgrad import check_sampling, noise_draws

VARIANTS = ("paper", "torchcam")


class _AveragedScoreCAM(ScoreCAM):
    """Score-CAM whose score of channel k is the mean over N masked inputs; subclasses say how the n-th mask
    departs from H_k (`_offsets`, `_coefficient`)."""

    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here

    def __init__(self, model, target_layer=None, *, num_samples: int, std: float | None = None,
                 seed: int | None = 0, variant: str = "paper", progress: bool = False, **options) -> None:
        if variant not in VARIANTS:
            raise JitterCamError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        check_sampling(num_samples, std, seed)
        super().__init__(model, target_layer, progress=progress, **options)
        self.variant, self.num_samples, self.seed = variant, num_samples, seed
        self.std = None if std is None else float(std)

    def options(self) -> dict:
        return {**super().options(), "num_samples": self.num_samples}

    def passes(self, input_size: int | None = None) -> int:
        return self.channels() * self.num_samples

    def _offsets(self, images: torch.Tensor, shape: tuple[int, ...]):
        """Per image, an iterator over the N additive offsets of its masks (None: no offset)."""
        return [iter([None] * self.num_samples) for _ in range(images.shape[0])]

    def _coefficient(self, sample: int) -> float:
        """The factor of the n-th masked input (0-based n)."""
        return 1.0

    def _scores(self, images: torch.Tensor, activations: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`(B, C)`: the target's mean score over the N masked inputs of each channel."""
        batch, channels = activations.shape[:2]
        torchcam = self.variant == "torchcam"
        flat = activations.flatten(2)
        if torchcam:  # min-max at the layer's resolution, then upsampled; scores are logits minus the input's
            low = flat.amin(dim=2)[..., None, None]
            sources = (activations - low) / ((activations - low).flatten(2).amax(dim=2)[..., None, None] + 1e-8)
            baseline = self.model(images).gather(1, target[:, None]).squeeze(1)
            kept = torch.ones(batch, channels, dtype=torch.bool, device=images.device)
        else:  # the authors' Score-CAM: upsampled, then min-max; a constant channel is skipped
            sources = activations
            kept = flat.amax(dim=2) > flat.amin(dim=2)
        scores = torch.zeros(batch, channels, dtype=activations.dtype, device=images.device)
        size = self.chunk_size(images)
        offsets = self._offsets(images, (channels, *images.shape[-2:]))
        total = int(kept.sum()) * self.num_samples
        with progress_bar(self.progress, total, type(self).__name__) as bar:
            for image in range(batch):
                indices = kept[image].nonzero().squeeze(1)
                for sample in range(self.num_samples):
                    offset = next(offsets[image])
                    coefficient = self._coefficient(sample)
                    for start in range(0, indices.numel(), size):
                        channel = indices[start : start + size]
                        masks = F.interpolate(
                            sources[image, channel][:, None], size=images.shape[-2:], mode="bilinear",
                            align_corners=False,
                        )
                        if not torchcam:
                            low = masks.amin(dim=(2, 3), keepdim=True)
                            masks = (masks - low) / (masks.amax(dim=(2, 3), keepdim=True) - low)
                        if offset is not None:
                            masks = masks + offset[channel][:, None]
                        masked = masks * images[image]
                        logits = self.model(masked * coefficient if coefficient != 1.0 else masked)
                        cls = target[image]
                        score = logits[:, cls] - baseline[image] if torchcam else logits.softmax(dim=1)[:, cls]
                        scores[image, channel] += score
                        bar.update(channel.numel())
        scores = scores / self.num_samples
        return scores.softmax(dim=1) if torchcam else scores


@register_method("sscam")
class SSCAM(_AveragedScoreCAM):
    """SS-CAM (Wang, Naidu et al., "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature Localization",
    arXiv 2006.14255): L = ReLU(Σ_k w_k A_k) at the layer's resolution, w_k the target's score averaged over
    N inputs X ∘ (H_k + ε_n), ε_n ~ N(0, σ²) drawn at the input's resolution for each channel mask H_k.

    `variant` picks the score, as for `ScoreCAM`:

    * ``"paper"`` (default): Score-CAM's authors' definition (the `scorecam` default): H_k = the upsampled
      (bilinear, ``align_corners=False``) A_k min-max scaled without an epsilon, constant channels skipped,
      w_k = (1/N) Σ_n softmax(f(X ∘ (H_k + ε_n)))_c, no softmax over the channels. The SS-CAM authors' code
      (SSCAM1) adds the noise to the raw upsampled map with a standard deviation (2 / range)², a scale
      this class does not follow: σ here is on the [0, 1] mask, as the paper's equation writes it.
    * ``"torchcam"``: torchcam 0.5.0's `SSCAM`: A_k min-max scaled at the layer's resolution (+1e-8), then
      upsampled; w = softmax over channels of (1/N) Σ_n (f_c(X ∘ (H_k + ε_n)) − f_c(X)) on logits.

    The noise of image b, sample n is `noise_draws`' n-th draw of shape (C, H, W) from the image's generator
    (`image_generators`), so `input_noise(images, N, σ, seed, (C, H, W))` hands a peer the same noise.
    `passes()` is C · N (44 800 for EfficientNet-Lite0 with the defaults).

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose channels are weighted; None (default) finds it
            by probing the model.
        num_samples: the number of noisy masks N per channel (35: the paper's and torchcam's).
        std: the noise's standard deviation σ (2.0: the paper's and torchcam's).
        seed: the seed of the noise (0); None draws anew on every call.
        variant: "paper" (default) or "torchcam", as above.
        progress: True shows a tqdm bar over the masked passes.
        **options (Any): `batch_size` (masked inputs per forward), `input_size` and `layer`, as `CAMMethod`
            takes them.

    Raises:
        JitterCamError: an unknown `variant`, `num_samples` not a positive integer, a negative `std`, a
            `seed` that is not an integer, or as `CAMMethod` raises it.
    """

    precisions = ("fp32",)  # bf16: 8.3 % from fp32 on Lite0, relative max, CPU (bound: 1 %)

    def __init__(self, model, target_layer=None, *, num_samples: int = 35, std: float = 2.0, seed: int | None = 0,
                 variant: str = "paper", progress: bool = False, **options) -> None:
        super().__init__(model, target_layer, num_samples=num_samples, std=std, seed=seed, variant=variant,
                         progress=progress, **options)

    def options(self) -> dict:
        return {**super().options(), "std": self.std, "seed": self.seed}

    def _offsets(self, images: torch.Tensor, shape: tuple[int, ...]):
        assert self.std is not None  # set by __init__
        std = self.std
        return [
            (draw.to(device=images.device, dtype=images.dtype) for draw in noise_draws(g, self.num_samples, std, shape))
            for g in image_generators(images, self.seed)
        ]


@register_method("iscam")
class ISCAM(_AveragedScoreCAM):
    """IS-CAM (Naidu et al., "IS-CAM: Integrated Score-CAM for axiomatic-based explanations", arXiv
    2010.03023): L = ReLU(Σ_k w_k A_k) at the layer's resolution, w_k the target's score averaged over N
    inputs X ∘ (c_i · H_k), i = 1…N, the mask scaled along a path from 0 (no randomness).

    The paper's mask is M_i = Σ_{j=0}^{i−1} (j/N) · H_k, so c_i = i(i − 1)/(2N) (c_1 = 0, c_N = (N − 1)/2);
    torchcam 0.5.0's loop adds (j + 1)/N before its first pass, c_i = i(i + 1)/(2N) (c_N = (N + 1)/2).
    `variant` picks:

    * ``"paper"`` (default): the paper's c_i, with Score-CAM's authors' scores (as `scorecam`'s default):
      H_k upsampled then min-max scaled, constant channels skipped, w_k = (1/N) Σ_i softmax(f(c_i · X ∘ H_k))_c.
    * ``"torchcam"``: torchcam's `ISCAM`: its c_i, A_k min-max scaled at the layer's resolution (+1e-8) then
      upsampled, w = softmax over channels of (1/N) Σ_i (f_c(c_i · X ∘ H_k) − f_c(X)) on logits.

    `passes()` is C · N (12 800 for EfficientNet-Lite0 with the default N = 10).

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose channels are weighted; None (default) finds it
            by probing the model.
        num_samples: the number of steps N (10: torchcam's).
        variant: "paper" (default) or "torchcam", as above.
        progress: True shows a tqdm bar over the masked passes.
        **options (Any): `batch_size` (masked inputs per forward), `input_size` and `layer`, as `CAMMethod`
            takes them.

    Raises:
        JitterCamError: an unknown `variant`, `num_samples` not a positive integer, or as `CAMMethod` raises
            it.
    """

    precisions = ("fp32",)  # bf16: 8.0 % from fp32 on Lite0, relative max, CPU (bound: 1 %)

    def __init__(self, model, target_layer=None, *, num_samples: int = 10, variant: str = "paper",
                 progress: bool = False, **options) -> None:
        super().__init__(model, target_layer, num_samples=num_samples, variant=variant, progress=progress,
                         **options)

    def _coefficient(self, sample: int) -> float:
        step = sample + 1
        return (step * (step + 1) if self.variant == "torchcam" else step * (step - 1)) / (2 * self.num_samples)
