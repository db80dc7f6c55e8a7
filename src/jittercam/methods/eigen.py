"""The principal-component CAMs: Eigen-CAM (the activations' first principal component), EigenGrad-CAM
(the same of activations × gradients) and KPCA-CAM (a kernel PCA of the activations) — each position of
the target layer is one sample of C features, and the map is every position's coordinate on the first
(kernel) principal axis. Batched in torch (`torch.linalg.svd`, `torch.linalg.eigh`), no per-image loop."""
from __future__ import annotations

import math

import torch

from ..errors import JitterCamError
from ..inputs import check_target_range
from ..probe import TargetLayer
from .base import CAMMethod, activations_and_gradients, layer_activations
from .registry import register_method


def first_component(samples: torch.Tensor, centre: bool) -> torch.Tensor:
    """Each sample's coordinate on the first principal axis of its batch item, one SVD per item.

    With X the `(n, C)` samples of one item (X − the mean sample where `centre`), X = U Σ Vᵀ and the
    result is X v₁ = σ₁ u₁. The SVD fixes v₁ only up to its sign (LAPACK returns either); here the sign is
    the one with μ · v₁ ≥ 0, μ the mean sample (not centred): positive where a position's features are
    stronger along the axis than the average. For non-negative features without centring, v₁ ≥ 0
    (Perron–Frobenius), so the coordinates are all ≥ 0.

    Args:
        samples: `(B, n, C)` features, float32 or float64.
        centre: subtract each item's mean sample before the SVD.

    Returns:
        `(B, n)` coordinates, in `samples`' dtype.
    """
    mean = samples.mean(dim=1, keepdim=True)
    data = samples - mean if centre else samples
    u, s, vh = torch.linalg.svd(data, full_matrices=False)
    along = (mean[:, 0, :] * vh[:, 0, :]).sum(dim=1)
    sign = torch.where(along < 0, -1.0, 1.0).to(samples.dtype)
    return u[:, :, 0] * (s[:, :1] * sign[:, None])


def flag(name: str, value) -> bool:
    """`value` when it is a bool (a CLI's `METHOD.NAME=VALUE` gives the string "false", which `bool` would
    read as True).

    Args:
        name: the option's name, for the message.
        value (Any): the value given.

    Returns:
        The bool.

    Raises:
        JitterCamError: `value` is not a bool.
    """
    if not isinstance(value, bool):
        raise JitterCamError(f"{name} must be True or False, not {value!r}")
    return value


def number(name: str, value, positive: bool = False) -> float:
    """`value` as a float when it is a finite real number (and > 0 where `positive`).

    Args:
        name: the option's name, for the message.
        value (Any): the value given.
        positive: refuse 0 and negative numbers too.

    Returns:
        The float.

    Raises:
        JitterCamError: `value` is not such a number.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
        positive and value <= 0
    ):
        kind = "a positive number" if positive else "a finite number"
        raise JitterCamError(f"{name} must be {kind}, not {value!r}")
    return float(value)


def _positions(maps: torch.Tensor) -> torch.Tensor:
    """`(B, C, h, w)` → `(B, h·w, C)`: one sample per position."""
    return maps.flatten(2).transpose(1, 2)


class _ProjectionCAM(CAMMethod):
    """What Eigen-CAM and EigenGrad-CAM share: the first principal component of a `(B, C, h, w)` tensor
    taken at the target layer, rectified unless `relu=False`."""

    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here

    def __init__(self, model, target_layer=None, *, centre: bool, relu: bool = True, **options) -> None:
        self.centre, self.relu = flag("centre", centre), flag("relu", relu)
        super().__init__(model, target_layer, **options)

    def features(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        features = self.features(images, target)
        batch, _, height, width = features.shape
        cam = first_component(_positions(features.float()), self.centre).reshape(batch, height, width)
        return cam.relu() if self.relu else cam

    def options(self) -> dict:
        return {**super().options(), "centre": self.centre, "relu": self.relu}


@register_method("eigencam")
class EigenCAM(_ProjectionCAM):
    """Eigen-CAM (Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN
    2020, arXiv 2008.00299): the target layer's activations O, one row of C channels per position
    (hw × C), factorised O = U Σ Vᵀ; the map is O's projection on the first right singular vector,
    O v₁ = σ₁ u₁ — the paper's L = O V₁. It uses no gradient and no class: it is **class-agnostic**, the
    target is accepted (so that it fits every caller) and ignored, and the same map comes for every class.
    The forward stops at the target layer.

    The paper factorises O as it is (the default, ``centre=False``). jacobgil/pytorch-grad-cam
    (`utils/svd_on_activations.get_2d_projection`, used by `EigenCAM`) subtracts the mean position first
    ("centering ... seems to be important"): ``centre=True``. Neither fixes the sign of v₁: the paper is
    silent, and the peer keeps whatever numpy's LAPACK returns, which differs between LAPACK builds
    (jacobgil/pytorch-grad-cam issue 315: MKL gives inverted maps) — after its ReLU that is either the
    map or what is left of its negative. Here the sign is the one of `first_component` (μ · v₁ ≥ 0: the
    map is high where the activations are strong along v₁); uncentred rectified activations then give a
    map ≥ 0, so the ReLU changes nothing. With ``centre=True`` the map equals the peer's projection up to
    that sign, per image.

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose activations are factorised: a submodule of
            `model` or its name; None (default) finds it by probing the model.
        centre: subtract the mean position before the SVD (pytorch-grad-cam's variant); False (default)
            is the paper's.
        relu: rectify the map (default, as the peer does); False returns the signed projection.
        **options (Any): `batch_size`, `input_size` and `layer`, as `CAMMethod` takes them.

    Raises:
        JitterCamError: `centre` or `relu` is not a bool; or as `CAMMethod` raises it.
    """

    precisions = ("fp32",)  # bf16: 3.7 % from fp32 on Lite0, relative max, CPU (bound: 1 %)

    def __init__(self, model, target_layer=None, *, centre: bool = False, relu: bool = True, **options) -> None:
        super().__init__(model, target_layer, centre=centre, relu=relu, **options)

    def features(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """The target layer's activations (the target is ignored: Eigen-CAM is class-agnostic).

        Args:
            images: `(B, 3, H, W)` model inputs.
            target: ignored, once checked to be in the model's range.

        Returns:
            `(B, C, h, w)` activations.

        Raises:
            JitterCamError: a class index is out of range.
        """
        if target is not None:  # unused, but a class the model does not have is still refused
            check_target_range(target, self.layer.num_classes)
        return layer_activations(self.model, self.layer, images)


@register_method("eigengradcam")
class EigenGradCAM(_ProjectionCAM):
    """EigenGrad-CAM: Eigen-CAM of the gradient of the target's logit times the activations, g ⊙ A,
    element by element — the first principal component of the class's evidence rather than of the
    activations. It has no paper: jacobgil/pytorch-grad-cam defines it (`EigenGradCAM`:
    `get_2d_projection(grads * activations)`, centred), so its centring is the default here; the sign is
    fixed as `first_component` says (the peer's is LAPACK's, see `EigenCAM`), so the map equals the peer's
    projection up to its sign, per image. One forward and one backward.

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose activations and gradients are taken: a
            submodule of `model` or its name; None (default) finds it by probing the model.
        centre: subtract the mean position before the SVD (True, the peer's definition); False factorises
            g ⊙ A as it is, as the Eigen-CAM paper does O.
        relu: rectify the map (default, as the peer does); False returns the signed projection.
        **options (Any): `batch_size`, `input_size` and `layer`, as `CAMMethod` takes them.

    Raises:
        JitterCamError: `centre` or `relu` is not a bool; or as `CAMMethod` raises it.
    """

    precisions = ("fp32",)  # bf16: 7.6 % from fp32 on Lite0, relative max, CPU (bound: 1 %)

    def __init__(self, model, target_layer=None, *, centre: bool = True, relu: bool = True, **options) -> None:
        super().__init__(model, target_layer, centre=centre, relu=relu, **options)

    def features(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """g ⊙ A at the target layer, g the gradient of the target's logit.

        Args:
            images: `(B, 3, H, W)` model inputs.
            target: `(B,)` class indices, or None for each image's top-1.

        Returns:
            `(B, C, h, w)` products.
        """
        activations, gradients, _ = activations_and_gradients(self.model, self.layer, images, target)
        return gradients * activations


KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


def kernel_matrix(
    samples: torch.Tensor, kernel: str, gamma: float | None = None, degree: float = 3, coef0: float = 1
) -> torch.Tensor:
    """The `(B, n, n)` kernel matrices of `(B, n, C)` samples, as scikit-learn's `pairwise_kernels`
    defines them: linear x·y; poly (γ x·y + c₀)^d; rbf exp(−γ |x − y|²); sigmoid tanh(γ x·y + c₀); cosine
    x·y / (|x| |y|) (a zero sample gives 0). γ = 1/C when None.

    Args:
        samples: `(B, n, C)` features.
        kernel: one of `KERNELS`.
        gamma: γ of rbf, poly and sigmoid; None: 1/C.
        degree: d of poly.
        coef0: c₀ of poly and sigmoid.

    Returns:
        `(B, n, n)` kernel matrices.

    Raises:
        JitterCamError: an unknown `kernel`.
    """
    gamma = 1.0 / samples.shape[-1] if gamma is None else gamma
    if kernel == "cosine":
        norms = samples.norm(dim=-1, keepdim=True)
        samples = samples / torch.where(norms > 0, norms, 1)
    dots = samples @ samples.transpose(1, 2)
    if kernel in ("linear", "cosine"):
        return dots
    if kernel == "poly":
        return (gamma * dots + coef0) ** degree
    if kernel == "sigmoid":
        return torch.tanh(gamma * dots + coef0)
    if kernel == "rbf":
        squares = dots.diagonal(dim1=1, dim2=2)
        distances = (squares[:, :, None] + squares[:, None, :] - 2 * dots).clamp_min(0)
        return torch.exp(-gamma * distances)
    raise JitterCamError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, not {kernel!r}")


def kernel_first_component(kernels: torch.Tensor) -> torch.Tensor:
    """Each sample's coordinate on the first kernel principal axis: scikit-learn's
    `KernelPCA(n_components=1).fit_transform` from the kernel matrix, batched.

    The kernel is centred in feature space (K − row means − column means + the total mean, scikit-learn's
    `KernelCenterer`), its top eigenpair (λ, v) taken (`eigh`, as scikit-learn's dense solver; λ < 0
    counts as 0), v's sign flipped so that its entry of largest magnitude is positive (scikit-learn's
    `svd_flip`), and the coordinates are v √λ.

    Args:
        kernels: `(B, n, n)` symmetric kernel matrices.

    Returns:
        `(B, n)` coordinates.
    """
    centred = (
        kernels
        - kernels.mean(dim=1, keepdim=True)
        - kernels.mean(dim=2, keepdim=True)
        + kernels.mean(dim=(1, 2), keepdim=True)
    )
    values, vectors = torch.linalg.eigh(centred)
    top, vector = values[:, -1].clamp_min(0), vectors[:, :, -1]
    largest = vector.abs().argmax(dim=1, keepdim=True)
    sign = torch.where(vector.gather(1, largest) < 0, -1.0, 1.0).to(vector.dtype)
    return vector * sign * top.sqrt()[:, None]


@register_method("kpcacam")
class KPCACAM(CAMMethod):
    """KPCA-CAM (Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision Models using
    Kernel PCA", MMSP 2024, arXiv 2410.00267): Eigen-CAM with kernel PCA in place of PCA — the target
    layer's activations, one sample of C channels per position, centred (the mean position subtracted),
    and the map is every position's coordinate on the first kernel principal axis. Class-agnostic like
    Eigen-CAM: the target is accepted and ignored; the forward stops at the target layer.

    Its authors' implementation is jacobgil/pytorch-grad-cam's `KPCA_CAM`
    (`utils/svd_on_activations.get_2d_projection_kernel`: scikit-learn's
    `KernelPCA(n_components=1, kernel="sigmoid", gamma=None)` on the centred positions); this is the same
    computation in torch (`kernel_matrix`, `kernel_first_component`), with scikit-learn's defaults (γ = 1/C,
    degree 3, c₀ = 1) and its sign convention (the eigenvector's largest entry positive), so it equals the
    peer's map, sign included. The kernel matrix is (hw)² per image and its eigendecomposition O((hw)³): cheap
    at 7 × 7, seconds at 56 × 56. It is computed in float64 (the maps are float32).

    Args:
        model (nn.Module): the classifier to explain.
        target_layer (nn.Module | str | None): the layer whose activations are taken: a submodule of
            `model` or its name; None (default) finds it by probing the model.
        kernel: "sigmoid" (default, the peer's), "rbf", "poly", "linear" or "cosine", as scikit-learn
            defines them.
        gamma: the kernel's γ; None (default): 1/C.
        degree: the polynomial kernel's degree (3).
        coef0: c₀ of the polynomial and sigmoid kernels (1).
        relu: rectify the map (default, as the peer does); False returns the signed projection.
        **options (Any): `batch_size`, `input_size` and `layer`, as `CAMMethod` takes them.

    Raises:
        JitterCamError: an unknown `kernel`, a `gamma` that is not a positive number (or None), a `degree` or
            `coef0` that is not a finite number, a `relu` that is not a bool; or as `CAMMethod` raises it.
    """

    precisions = ("fp32",)  # bf16: 5.8 % from fp32 on Lite0, relative max, CPU (bound: 1 %)
    layer: TargetLayer  # probed by CAMMethod.__init__ (uses_layer): never None here

    def __init__(
        self,
        model,
        target_layer=None,
        *,
        kernel: str = "sigmoid",
        gamma: float | None = None,
        degree: float = 3,
        coef0: float = 1,
        relu: bool = True,
        **options,
    ) -> None:
        if kernel not in KERNELS:
            raise JitterCamError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, not {kernel!r}")
        self.kernel, self.gamma = kernel, None if gamma is None else number("gamma", gamma, positive=True)
        self.degree, self.coef0 = number("degree", degree), number("coef0", coef0)
        self.relu = flag("relu", relu)
        super().__init__(model, target_layer, **options)

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if target is not None:  # unused, but a class the model does not have is still refused
            check_target_range(target, self.layer.num_classes)
        activations = layer_activations(self.model, self.layer, images)
        batch, _, height, width = activations.shape
        samples = _positions(activations.double())
        samples = samples - samples.mean(dim=1, keepdim=True)
        kernels = kernel_matrix(samples, self.kernel, self.gamma, self.degree, self.coef0)
        cam = kernel_first_component(kernels).float().reshape(batch, height, width)
        return cam.relu() if self.relu else cam

    def options(self) -> dict:
        return {**super().options(), "kernel": self.kernel, "gamma": self.gamma, "degree": self.degree,
                "coef0": self.coef0, "relu": self.relu}
