"""FEM, the Feature Explanation Method: the positions where a channel of the target layer is unusually
strong (the k-sigma rule), weighted by the channel's mean — no gradient, no class."""
from __future__ import annotations

import torch

from ..errors import JitterCamError
from ..inputs import check_target_range
from ..probe import TargetLayer
from .base import CAMMethod, layer_activations
from .eigen import number
from .registry import register_method

VARIANTS = ("paper", "pytorch-grad-cam")


@register_method("fem")
class FEM(CAMMethod):
    """FEM (Fuad, Martin, Giot, Bourqui, Benois-Pineau & Zemmari, "Features understanding in 3D CNNs for
    actions recognition in video", IPTA 2020, hal-02963298; for 2D images Bourroux et al., ICPRAI 2022):
    each channel A_c of the target layer is binarised by the k-sigma rule, B_c = [A_c > μ_c + k σ_c]
    (μ_c, σ_c the channel's spatial mean and population standard deviation), and the map is the binary
    maps weighted by the channels' means, Σ_c μ_c B_c. It uses no gradient: **class-agnostic**, the
    target is accepted and ignored. The forward stops at the target layer.

    `variant` picks between the two published forms:

    * ``"paper"`` (default): Σ_c μ_c B_c, as the paper and the authors' code (`compute_binary_maps`,
      `aggregate_binary_maps`: a strict ``>``; numpy's population std) and deel-ai/xplique
      (`xplique/attributions/fem.py`: w_c = μ_c on the binary masks, there with ``>=``) compute it.
    * ``"pytorch-grad-cam"``: jacobgil/pytorch-grad-cam's `FEM.get_cam_image`, which weights the
      *activations* by the share of each channel's positions above the threshold, Σ_c mean(B_c) · A_c —
      another map (it keeps the activations' gradations, the paper's is a sum of binary masks).

    Both are rectified (the peer's BaseCAM does it; with rectified activations, as at the probe's layers,
    they are ≥ 0 anyway). The map stays at the target layer's resolution, so Jitter-CAM can wrap it.

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose activations are taken: a submodule of
            `model` or its name; None (default) finds it by probing the model.
        k: the number of standard deviations above the mean that the threshold lies (2, the paper's and
            the peer's).
        variant: "paper" (default) or "pytorch-grad-cam", as above.
        **options (Any): `batch_size`, `input_size` and `layer`, as `CAMMethod` takes them.

    Raises:
        JitterCamError: an unknown `variant`, a `k` that is not a finite number; or as `CAMMethod` raises it.
    """

    precisions = ("fp32",)  # bf16: 12 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here

    def __init__(self, model, target_layer=None, *, k: float = 2.0, variant: str = "paper", **options) -> None:
        if variant not in VARIANTS:
            raise JitterCamError(f"variant must be one of {', '.join(map(repr, VARIANTS))}, not {variant!r}")
        self.k, self.variant = number("k", k), variant
        super().__init__(model, target_layer, **options)

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if target is not None:  # unused, but a class the model does not have is still refused
            check_target_range(target, self.layer.num_classes)
        activations = layer_activations(self.model, self.layer, images)
        mean = activations.mean(dim=(2, 3), keepdim=True)
        std = activations.std(dim=(2, 3), keepdim=True, correction=0)
        binary = (activations > mean + self.k * std).to(activations.dtype)
        if self.variant == "paper":
            cam = (mean * binary).sum(dim=1)
        else:
            cam = (binary.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)
        return cam.relu()

    def options(self) -> dict:
        return {**super().options(), "k": self.k, "variant": self.variant}
