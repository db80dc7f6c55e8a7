"""Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++'s weights from derivatives averaged over noisy copies
of the input."""
from __future__ import annotations

import torch

from ..errors import JitterCamError
from ..inputs import check_target_range, resolve_targets
from ..probe import TargetLayer
from .base import CAMMethod, activations_and_gradients, activations_and_logits
from .baselines import image_generators
from .gradient import plusplus_weights
from .registry import register_method

VARIANTS = ("paper", "torchcam")


def input_noise(
    images: torch.Tensor,
    samples: int,
    std: float,
    seed: int | None = 0,
    shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """The Gaussian noise the noisy methods add: `samples` draws of N(0, std²) per element, per image.

    Each image draws from its own CPU generator (`image_generators`: `seed` and a hash of the image), one
    draw of `shape` after the other, so an image gets the same noise in any batch, chunk or position, and
    on any device (`noise_draws` yields the same draws one at a time).

    Args:
        images: `(B, 3, H, W)` model inputs the noise belongs to.
        samples: the number of draws N.
        std: the noise's standard deviation σ.
        seed: the seed (0); None draws anew on every call.
        shape: the shape of one draw for one image; None: an image's, `(3, H, W)`.

    Returns:
        `(N, B, *shape)` noise on the images' device and in their dtype.
    """
    per_image = [torch.stack(list(noise_draws(g, samples, std, shape or tuple(images.shape[1:]))))
                 for g in image_generators(images, seed)]
    return torch.stack(per_image, dim=1).to(device=images.device, dtype=images.dtype)


def noise_draws(generator: torch.Generator, samples: int, std: float, shape: tuple[int, ...]):
    """`samples` draws of N(0, std²) noise of `shape` from one image's generator, one after the other.

    Args:
        generator: the image's CPU generator (`image_generators`).
        samples: the number of draws.
        std: the standard deviation.
        shape: the shape of one draw.

    Yields:
        CPU float32 tensors of `shape`.
    """
    for _ in range(samples):
        yield torch.randn(shape, generator=generator) * std


def check_sampling(samples: int, std: float | None, seed: int | None) -> None:
    """Refuses a number of samples that is not a positive integer, a negative σ, or a seed that is not an
    integer (or None).

    Args:
        samples: the number of samples.
        std: the noise's standard deviation (None: the method draws no noise).
        seed: the seed of the draws.

    Raises:
        JitterCamError: one of them is invalid (the option named).
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise JitterCamError(f"num_samples must be a positive integer, got {samples!r}")
    if std is not None and (isinstance(std, bool) or not isinstance(std, (int, float)) or not std >= 0):
        raise JitterCamError(f"std must be a non-negative number, got {std!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise JitterCamError(f"seed must be an integer or None, got {seed!r}")


@register_method("smoothgradcam++")
class SmoothGradCAMPlusPlus(CAMMethod):
    """Smooth Grad-CAM++: ReLU(Σ_c w_c A_c) with Grad-CAM++'s weights (`plusplus_weights`) computed from the
    derivatives of the target's logit averaged over N noisy copies X + ε_n of the input, ε_n ~ N(0, σ²)
    added to the model's input tensor (Omeiza et al., "Smooth Grad-CAM++", arXiv 1908.01224).

    `variant` picks between the paper and torchcam 0.5.0 (`torchcam.methods.SmoothGradCAMpp`), checked:

    * ``"paper"`` (default): D^p = (1/N) Σ_n g_n^p for p = 1, 2, 3 (g_n the gradient with respect to the
      layer's activations on the n-th noisy input), α = D² / (2D² + Σ_ab A_ab · D³) (Grad-CAM++'s eq. 19
      on the averaged derivatives, α = 0 where the denominator is 0), w_c = Σ_ij α · ReLU(D¹), A the
      activations of the clean input. The arXiv text writes D¹ in α's numerator; torchcam and this class
      read it as D², the Grad-CAM++ form the paper builds on.
    * ``"torchcam"``: torchcam's code: α = D² / (2D² + Σ_ab D³_ab · A_ab + 1e-8) with the clean input's A,
      but w_c = Σ_ij α · ReLU(g_N) with the last noisy sample's gradient only, and the map is
      ReLU(Σ_c w_c A^N_c) with the last noisy sample's activations (its activation hook stays on during
      the noisy passes).

    The noise comes from `input_noise` (seeded per image), so a call is reproducible and the same noise can
    be handed to a peer. `passes()` is 1 + N (a clean forward, then N forwards and backwards).

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose activations are weighted: a submodule of
            `model` or its name; None (default) finds it by probing the model.
        num_samples: the number of noisy inputs N (torchcam's default, 4).
        std: the noise's standard deviation σ on the model's (normalised) input (torchcam's default, 0.3).
        seed: the seed of the noise (0); None draws anew on every call.
        variant: "paper" (default) or "torchcam", as above.
        **options (Any): `batch_size`, `input_size` and `layer`, as `CAMMethod` takes them.

    Raises:
        JitterCamError: an unknown `variant`, `num_samples` not a positive integer, a negative `std`, a
            `seed` that is not an integer, or as `CAMMethod` raises it.
    """

    precisions = ("fp32",)  # bf16: 4.2 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here

    def __init__(
        self,
        model,
        target_layer=None,
        *,
        num_samples: int = 4,
        std: float = 0.3,
        seed: int | None = 0,
        variant: str = "paper",
        **options,
    ) -> None:
        if variant not in VARIANTS:
            raise JitterCamError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        check_sampling(num_samples, std, seed)
        super().__init__(model, target_layer, **options)
        self.num_samples, self.std, self.seed, self.variant = num_samples, float(std), seed, variant

    def options(self) -> dict:
        return {
            **super().options(),
            "num_samples": self.num_samples,
            "std": self.std,
            "seed": self.seed,
            "variant": self.variant,
        }

    def passes(self, input_size: int | None = None) -> int:
        return 1 + self.num_samples

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        raw, logits = activations_and_logits(self.model, self.layer, images)
        activations = raw.relu() if self.layer.rectify else raw
        if target is None:
            target = resolve_targets(None, logits)
        else:
            check_target_range(target, logits.shape[1])
        noise = input_noise(images, self.num_samples, self.std, self.seed)
        first = second = third = torch.zeros_like(activations)
        noisy_activations = gradients = activations
        for sample in noise:
            noisy_activations, gradients, _ = activations_and_gradients(self.model, self.layer, images + sample, target)
            first, second, third = first + gradients, second + gradients.pow(2), third + gradients.pow(3)
        first, second, third = first / self.num_samples, second / self.num_samples, third / self.num_samples
        if self.variant == "paper":
            weights = plusplus_weights(activations, first, second, third)
            return torch.einsum("bc,bchw->bhw", weights, activations).relu()
        spread = (third * activations).sum(dim=(2, 3), keepdim=True)
        alpha = second / (2 * second + spread + 1e-8)
        weights = (alpha * gradients.relu()).sum(dim=(2, 3))
        return torch.einsum("bc,bchw->bhw", weights, noisy_activations).relu()
