"""ShapleyCAM and Finer-CAM: values by hand, pytorch-grad-cam's and torchcam's maps on ResNet18 and
EfficientNet-Lite0, Jitter-CAM over both, errors."""
from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import jittercam
from jittercam import GradCAM, JitterCamError
from jittercam.methods.finer import FinerCAM, references
from jittercam.methods.shapley import ShapleyCAM

PHOTOS = ("ILSVRC2012_val_00000262.JPEG", "catdog.png", "ILSVRC2012_val_00000001.JPEG")



@pytest.fixture(scope="module")
def resnet_batch():
    return torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def photos(lite0):
    """Three example photos at 128 px (a 4x4 map), so that the softmax of real weights is far from flat."""
    from conftest import EXAMPLES

    card = jittercam.model_card(lite0)
    found = [EXAMPLES / "images" / name for name in PHOTOS if (EXAMPLES / "images" / name).exists()]
    found += sorted(p for p in (EXAMPLES / "images").iterdir() if p not in found)[: 3 - len(found)]
    batch = torch.cat([jittercam.data.to_input(jittercam.data.load_image(p), card) for p in found[:3]])
    return F.interpolate(batch, size=128, mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def lite0_tapped(lite0):
    """A copy of Lite0 for pytorch-grad-cam, whose hooks take every call of a module: the head's ReLU6
    (`_swish`, our target layer's second call) is shared with the stem, so the copy taps its output with an
    `nn.Identity` before the pooling — the same activations and gradients at a module that runs once."""
    tapped = copy.deepcopy(lite0)
    tapped._avg_pooling = nn.Sequential(nn.Identity(), tapped._avg_pooling)
    return tapped, tapped._avg_pooling[0]


def _different_classes(model, images):
    """The top-1 class of the first image and runners-up of the others: a different class per image."""
    with torch.no_grad():
        ranked = model(images).argsort(dim=1, descending=True)
    return [int(ranked[i, i]) for i in range(images.shape[0])]


def _untouched(model):
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert all(not m._forward_hooks for m in model.modules())


# --- ShapleyCAM -----------------------------------------------------------------------------------------


def test_shapleycam_by_hand_on_gap_and_linear(tiny):
    """After GAP + linear, the logit is linear in A (H = 0: Grad-CAM); ReST = 2 y_c − logsumexp(y) has
    H = −(1/hw)² Wᵀ(diag p − p pᵀ)W on every pair of positions, so H·A = −(1/hw) Wᵀ(diag p − p pᵀ) W ā."""
    x = torch.rand(3, 3, 32, 32)
    target = torch.tensor([1, 3, 0])
    A = tiny.act(tiny.conv(x)).detach()
    W, hw = tiny.fc.weight.detach(), A.shape[-1] * A.shape[-2]
    mean = A.mean(dim=(2, 3))
    p = (mean @ W.T + tiny.fc.bias).softmax(dim=1).detach()
    gradient = (2 * W[target] - p @ W) / hw  # ∂ReST/∂A, the same at every position
    curvature = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    hvp = -torch.einsum("kc,bkl,ld,bd->bc", W, curvature, W, mean) / hw
    weights = gradient - 0.5 * hvp
    expected = torch.einsum("bc,bchw->bhw", weights, A).relu()
    torch.testing.assert_close(ShapleyCAM(tiny, input_size=32)(x, target), expected, rtol=1e-5, atol=1e-7)
    logit = ShapleyCAM(tiny, input_size=32, score="logit")(x, target)
    torch.testing.assert_close(logit, GradCAM(tiny, input_size=32)(x, target), rtol=1e-6, atol=0)
    _untouched(tiny)


@pytest.mark.parametrize("score, peer_target", [("rest", "ClassifierOutputReST"), ("logit", "ClassifierOutputTarget")])
def test_shapleycam_equals_pytorch_grad_cam_on_resnet18(resnet18, resnet_batch, score, peer_target):
    from pytorch_grad_cam import ShapleyCAM as Peer
    from pytorch_grad_cam.utils import model_targets

    targets = [3, 7, 11]
    with Peer(model=resnet18, target_layers=[resnet18.layer4]) as peer:
        expected = peer(input_tensor=resnet_batch, targets=[getattr(model_targets, peer_target)(t) for t in targets])
    resnet18.zero_grad(set_to_none=True)  # the peer's backward fills the parameters' .grad; ours must not
    got = ShapleyCAM(resnet18, "layer4", score=score)(resnet_batch, targets)
    assert got.shape == (3, 3, 3)
    torch.testing.assert_close(jittercam.upsample(got, 96), torch.from_numpy(expected), atol=1e-5, rtol=0)
    _untouched(resnet18)


def test_shapleycam_equals_pytorch_grad_cam_on_efficientnet_lite0(lite0, lite0_tapped, photos):
    from pytorch_grad_cam import ShapleyCAM as Peer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST

    targets = _different_classes(lite0, photos)
    tapped, tap = lite0_tapped
    with Peer(model=tapped, target_layers=[tap]) as peer:
        expected = peer(input_tensor=photos, targets=[ClassifierOutputReST(t) for t in targets])
    ours = ShapleyCAM(lite0)
    assert ours.layer.name == "_swish" and ours.layer.call == 1
    got = ours(photos, targets)
    torch.testing.assert_close(jittercam.upsample(got, 128), torch.from_numpy(expected), atol=1e-5, rtol=0)
    _untouched(lite0)
    # with real weights the Hessian term moves the map away from Grad-CAM's
    gradcam = jittercam.upsample(GradCAM(lite0)(photos, targets), 128)
    assert (jittercam.upsample(got, 128) - gradcam).abs().amax() > 0.05


def test_jitter_cam_over_shapleycam(resnet18, resnet_batch):
    method = jittercam.create("jittercam:shapleycam", resnet18, target_layer="layer4", score="logit")
    assert method.base.score == "logit" and method.passes(96) == (3 + 1) ** 2
    x = resnet_batch[:2]
    maps = method(x, [1, 2])
    assert maps.shape == (2, 6, 6) and torch.isfinite(maps).all()
    # with the logit after GAP + linear, ShapleyCAM is Grad-CAM: so is its Jitter-CAM
    reference = jittercam.create("jittercam", resnet18, target_layer="layer4")(x, [1, 2])
    torch.testing.assert_close(maps, reference, rtol=1e-5, atol=1e-7)


def test_shapleycam_refuses_an_unknown_score(tiny):
    with pytest.raises(JitterCamError, match="score must be one of 'rest', 'logit', not 'softmax'"):
        ShapleyCAM(tiny, input_size=32, score="softmax")


# --- Finer-CAM ------------------------------------------------------------------------------------------


def test_references_are_the_nearest_logits_without_the_target():
    logits = torch.tensor([[5.0, 4.9, 1.0, 5.2, 4.0, -3.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    got = references(logits, torch.tensor([0, 5]), 3)
    assert got.tolist() == [[1, 3, 4], [4, 3, 2]]


def test_finercam_by_hand_and_gamma_zero_is_the_base(tiny):
    x = torch.rand(3, 3, 32, 32)
    target = torch.tensor([1, 3, 0])
    A = tiny.act(tiny.conv(x)).detach()
    W = tiny.fc.weight.detach()
    logits = tiny(x).detach()
    others = references(logits, target, 2)
    weights = (W[target] - 0.6 * W[others].mean(dim=1)) / (A.shape[-1] * A.shape[-2])  # the score's gradient
    expected = torch.einsum("bc,bchw->bhw", weights, A).relu()
    torch.testing.assert_close(FinerCAM(tiny, input_size=32, references=2)(x, target), expected, rtol=1e-5, atol=1e-7)
    plain = FinerCAM(tiny, input_size=32, gamma=0, base_method="gradcam++")(x, target)
    torch.testing.assert_close(plain, jittercam.create("gradcam++", tiny, input_size=32)(x, target))
    _untouched(tiny)


@pytest.mark.parametrize("base", ["gradcam", "layercam"])
def test_finercam_equals_torchcam_on_resnet18(resnet18, resnet_batch, base):
    from torchcam import methods

    targets = [3, 7, 11]
    peer_base = {"gradcam": methods.GradCAM, "layercam": methods.LayerCAM}[base]
    with methods.FinerCAM(resnet18, "layer4", input_shape=(3, 96, 96), base_method=peer_base) as peer:
        expected = peer(targets, resnet18(resnet_batch), normalized=False)[0]
    resnet18.zero_grad(set_to_none=True)
    got = FinerCAM(resnet18, "layer4", base_method=base)(resnet_batch, targets)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)  # raw maps: torchcam's before its scaling
    _untouched(resnet18)


def test_finercam_equals_torchcam_on_efficientnet_lite0(lite0, photos):
    from torchcam import methods

    targets = _different_classes(lite0, photos)
    # torchcam keeps the last call of the hooked module: `_swish`'s is the head's, our target layer
    with methods.FinerCAM(lite0, "_swish", input_shape=(3, 128, 128)) as peer:
        expected = peer(targets, lite0(photos), normalized=False)[0]
    lite0.zero_grad(set_to_none=True)
    got = FinerCAM(lite0)(photos, targets)
    assert got.shape == (3, 4, 4) and (got > 0).any()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    _untouched(lite0)


def _pytorch_grad_cam_finer(model, layer, images, targets):
    """pytorch-grad-cam's Finer-CAM picks the references itself for one `target_idx` per call: one call
    per image for a different class per image."""
    import pytorch_grad_cam

    maps = []
    for i, target in enumerate(targets):
        with pytorch_grad_cam.FinerCAM(model=model, target_layers=[layer]) as peer:
            maps.append(torch.from_numpy(peer(input_tensor=images[i : i + 1], targets=None, target_idx=target)))
    model.zero_grad(set_to_none=True)
    return torch.cat(maps)


def test_finercam_pytorch_grad_cam_variant(resnet18, resnet_batch, lite0, lite0_tapped, photos):
    targets = [3, 7, 11]
    expected = _pytorch_grad_cam_finer(resnet18, resnet18.layer4, resnet_batch, targets)
    got = FinerCAM(resnet18, "layer4", variant="pytorch-grad-cam")
    assert got.gamma == 1.0
    torch.testing.assert_close(jittercam.upsample(got(resnet_batch, targets), 96), expected, atol=1e-5, rtol=0)

    targets = _different_classes(lite0, photos)
    tapped, tap = lite0_tapped
    expected = _pytorch_grad_cam_finer(tapped, tap, photos, targets)
    got = FinerCAM(lite0, variant="pytorch-grad-cam")(photos, targets)
    torch.testing.assert_close(jittercam.upsample(got, 128), expected, atol=1e-5, rtol=0)
    _untouched(lite0)
    paper = FinerCAM(lite0)(photos, targets)
    assert (jittercam.upsample(paper, 128) - expected).abs().amax() > 0.01  # the two variants differ


def test_jitter_cam_over_finercam_routes_the_base_method(resnet18, resnet_batch):
    method = jittercam.create("jittercam:finercam", resnet18, target_layer="layer4", base_method="layercam",
                              input_size=96, size=4)
    assert method.base.base_method == "layercam" and "base_method='layercam'" in repr(method)
    assert method.base.passes() == 1 and method.passes(96) == (4 - 3 + 1) ** 2
    maps = method(resnet_batch[:2], [1, 2])
    assert maps.shape == (2, 4, 4) and torch.isfinite(maps).all() and (maps >= 0).all()
    assert "jittercam:finercam" in jittercam.available_methods()
    assert "jittercam:shapleycam" in jittercam.available_methods()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"base_method": "scorecam"}, "base_method must be one of gradcam, gradcam++, xgradcam, hirescam, layercam"),
        ({"variant": "torchcam"}, "variant must be one of 'paper', 'pytorch-grad-cam', not 'torchcam'"),
        ({"gamma": -1}, "gamma must be a finite number >= 0"),
        ({"references": 0}, "references must be a positive integer"),
        ({"references": 5}, "references=5, but the model has 5 classes: at most 4 besides the target"),
    ],
)
def test_finercam_refuses_what_it_cannot_do(tiny, options, message):
    with pytest.raises(JitterCamError, match=re.escape(message)) as error:
        FinerCAM(tiny, input_size=32, **options)
    assert "\n" not in str(error.value)
