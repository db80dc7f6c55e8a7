"""Eigen-CAM, EigenGrad-CAM and KPCA-CAM: the projections by hand (numpy's SVD, scikit-learn's KernelPCA),
pytorch-grad-cam's maps on ResNet18 and EfficientNet-Lite0, class-agnosticism, Jitter-CAM over them."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import jittercam
from jittercam import JitterCamError
from jittercam.methods.eigen import KERNELS, KPCACAM, EigenCAM, first_component, kernel_first_component, kernel_matrix

EXAMPLES = ["ILSVRC2012_val_00000262.JPEG", "ILSVRC2012_val_00000259.JPEG", "ILSVRC2012_val_00000760.JPEG"]


class SecondCall(nn.Module):
    """EfficientNet-Lite0 calls one `_swish` in the stem and in the head; a peer hooking it would take the
    stem's map. This stand-in runs the same activation and passes the head's call (every second one)
    through `head`, an identity the peer can hook."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act, self.head, self.calls = act, nn.Identity(), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.act(x)
        return self.head(out) if self.calls % 2 == 0 else out


def peer_maps(model: nn.Module, layer: str, x: torch.Tensor, targets: list[int], name: str, **options) -> torch.Tensor:
    """pytorch-grad-cam's `name` on `model` at `layer` (its final maps: resized, min-max scaled)."""
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if layer == "_swish":  # the head's call of the shared activation (the probe's layer)
        twin = copy.copy(model)
        twin._modules = dict(model._modules)  # the same parameters; the original keeps its own _swish
        twin._swish = SecondCall(model._swish)
        model, module = twin, twin._swish.head
    else:
        module = dict(model.named_modules())[layer]
    with getattr(pytorch_grad_cam, name)(model=model, target_layers=[module], **options) as peer:
        maps = peer(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    model.zero_grad(set_to_none=True)  # the peer's backward fills the parameters' .grad; ours must not
    return torch.from_numpy(maps).float()



@pytest.fixture(scope="module")
def resnet_batch():
    return torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(1)), [3, 7, 1]


@pytest.fixture(scope="module")
def lite0_batch(lite0, example_labels):
    from conftest import EXAMPLES as FOLDER

    card = jittercam.model_card(lite0)
    x = torch.cat([jittercam.data.to_input(jittercam.data.load_image(FOLDER / "images" / f), card) for f in EXAMPLES])
    return x, [example_labels[f] for f in EXAMPLES]  # goldfish, matchstick, sawmill


def _numpy_first_component(matrix: np.ndarray, centre: bool) -> np.ndarray:
    mean = matrix.mean(axis=0)
    data = matrix - mean if centre else matrix
    _, _, vt = np.linalg.svd(data)
    v = vt[0] if mean @ vt[0] >= 0 else -vt[0]
    return data @ v


@pytest.mark.parametrize("centre", [False, True])
def test_first_component_is_numpys_svd_with_the_mean_along_it(centre):
    generator = torch.Generator().manual_seed(3)
    samples = torch.rand(3, 20, 6, dtype=torch.float64, generator=generator)  # n > C
    wide = torch.rand(2, 5, 12, dtype=torch.float64, generator=generator) - 0.3  # n < C, signed
    for batch in (samples, wide):
        got = first_component(batch, centre)
        expected = np.stack([_numpy_first_component(item, centre) for item in batch.numpy()])
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    if not centre:  # non-negative features, uncentred: v1 >= 0, every coordinate >= 0 (Perron-Frobenius)
        assert (first_component(samples, centre) >= 0).all()


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_pca_is_scikit_learns(kernel):
    decomposition = pytest.importorskip("sklearn.decomposition")
    generator = torch.Generator().manual_seed(4)
    samples = torch.rand(2, 30, 8, dtype=torch.float64, generator=generator)
    samples = samples - samples.mean(dim=1, keepdim=True)  # as KPCA-CAM centres the positions
    for gamma in (None, 0.7):
        got = kernel_first_component(kernel_matrix(samples, kernel, gamma))
        for item, coordinates in zip(samples.numpy(), got.numpy()):
            expected = decomposition.KernelPCA(n_components=1, kernel=kernel, gamma=gamma).fit_transform(item)[:, 0]
            np.testing.assert_allclose(coordinates, expected, rtol=1e-7, atol=1e-9)  # sign included


def _peer_up_to_sign(signed: torch.Tensor, expected: torch.Tensor) -> list[int]:
    """The sign per image that makes ReLU(±map), resized and scaled as the peer does, its map."""
    signs = []
    for one, theirs in zip(signed, expected):
        errors = {}
        for s in (1, -1):
            errors[s] = (jittercam.upsample((s * one[None]).relu(), theirs.shape[-1])[0] - theirs).abs().max()
        sign = min(errors, key=errors.get)
        assert errors[sign] < 1e-4, errors
        signs.append(sign)
    return signs


@pytest.mark.parametrize("model_name", ["resnet18", "lite0"])
@pytest.mark.parametrize(
    "ours, theirs, options",
    [("eigencam", "EigenCAM", {"centre": True}), ("eigengradcam", "EigenGradCAM", {}), ("kpcacam", "KPCA_CAM", {})],
)
def test_agrees_with_pytorch_grad_cam(request, model_name, ours, theirs, options):
    model = request.getfixturevalue(model_name)
    x, targets = request.getfixturevalue("resnet_batch" if model_name == "resnet18" else "lite0_batch")
    layer = "layer4" if model_name == "resnet18" else "_swish"
    expected = peer_maps(model, layer, x, targets, theirs)
    method = jittercam.create(ours, model, target_layer=layer, **options)
    got = jittercam.upsample(method(x, targets), x.shape[-1])
    # the peer resizes with OpenCV and divides by max + 1e-7; both are bilinear with half-pixel centres
    if ours == "kpcacam":  # scikit-learn's sign convention, reproduced: the same maps
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
        return
    # the SVD's sign is LAPACK's in the peer: equal up to it, image by image
    signed = jittercam.create(ours, model, target_layer=layer, relu=False, **options)(x, targets)
    signs = _peer_up_to_sign(signed, expected)
    # numpy's OpenBLAS picks the sign of ours on these images (and on all 8 example photos); with another
    # LAPACK (MKL: jacobgil/pytorch-grad-cam issue 315) the peer may flip some, which is why ours fixes it
    for sign, mine, theirs in zip(signs, got, expected):
        if sign == 1:
            torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


def test_paper_eigencam_is_the_uncentred_projection(resnet18, resnet_batch):
    x, targets = resnet_batch
    activations = jittercam.methods.layer_activations(resnet18, EigenCAM(resnet18, "layer4").layer, x)
    samples = activations.flatten(2).transpose(1, 2).double().numpy()
    expected = np.stack([_numpy_first_component(item, centre=False) for item in samples]).reshape(3, 3, 3)
    maps = EigenCAM(resnet18, "layer4")(x, targets)
    np.testing.assert_allclose(maps.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert (expected >= -1e-6).all()  # rectified activations, no centring: the ReLU changes nothing
    centred = EigenCAM(resnet18, "layer4", centre=True)(x, targets)
    assert not torch.allclose(maps, centred)  # the peer's centring gives another map


@pytest.mark.parametrize("name", ["eigencam", "kpcacam"])
def test_class_agnostic_methods_ignore_the_target(resnet18, resnet_batch, name):
    x, targets = resnet_batch
    method = jittercam.create(name, resnet18, target_layer="layer4")
    maps = method(x, targets)
    torch.testing.assert_close(method(x, [9, 9, 9]), maps)
    torch.testing.assert_close(method(x), maps)
    assert method.passes() == 1 and method.layer_map
    with pytest.raises(JitterCamError, match="class index 1000 is out of range"):
        method(x, 1000)  # ignored, but not a class of the model


@pytest.mark.parametrize("name", ["eigencam", "eigengradcam", "kpcacam"])
def test_jittercam_wraps_them(resnet18, name):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    method = jittercam.create(f"jittercam:{name}", resnet18)
    maps = method(x, [2, 8])
    assert maps.shape == (2, 4, 4) and torch.isfinite(maps).all() and (maps >= 0).all()  # m = 2 at 64 px
    assert method.passes(64) == 9 and method.passes() == 64  # (d + 1)^2 patches, one pass each
    assert all(p.grad is None for p in resnet18.parameters()) and not resnet18.training


def test_options_and_refusals(tiny):
    method = jittercam.create("kpcacam", tiny, input_size=32, kernel="rbf", gamma=0.5)
    assert "kernel='rbf'" in repr(method) and "gamma=0.5" in repr(method)
    assert "centre=False" in repr(EigenCAM(tiny, input_size=32))
    assert "centre=True" in repr(jittercam.create("eigengradcam", tiny, input_size=32))
    with pytest.raises(JitterCamError, match="kernel must be one of 'sigmoid', 'rbf'"):
        KPCACAM(tiny, input_size=32, kernel="laplacian")
    with pytest.raises(JitterCamError, match="centre must be True or False, not 'false'"):
        EigenCAM(tiny, input_size=32, centre="false")  # as `--option eigencam.centre=false` gives it
    with pytest.raises(JitterCamError, match="coef0 must be a finite number"):
        KPCACAM(tiny, input_size=32, coef0="one")
    with pytest.raises(JitterCamError, match="gamma must be a positive number"):
        KPCACAM(tiny, input_size=32, gamma=-1.0)
    with pytest.raises(JitterCamError, match="supports precision fp32, not 'bf16'"):
        EigenCAM(tiny, input_size=32, precision="bf16")


def test_a_constant_layer_gives_a_zero_map_not_nan(tiny):
    with torch.no_grad():
        tiny.conv.weight.zero_()
        tiny.conv.bias.fill_(0.5)  # every position the same: no variance to project on
    x = torch.rand(2, 3, 32, 32)
    for name in ("eigengradcam", "kpcacam"):
        maps = jittercam.create(name, tiny, input_size=32)(x, 1)
        assert torch.isfinite(maps).all() and maps.abs().max() < 1e-5
    centred = EigenCAM(tiny, input_size=32, centre=True)(x)
    assert torch.isfinite(centred).all() and centred.abs().max() < 1e-5
