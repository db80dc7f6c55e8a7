"""RefineCAM: torchcam's and pytorch-grad-cam's maps, the default layers, one pass, refusals."""
from __future__ import annotations

import pytest
import torch

import jittercam
from conftest import model_state
from jittercam import JitterCamError
from jittercam.methods.refine import RefineCAM, resolution_levels


def test_default_layers_are_the_authors(resnet18, lite0):
    assert [one.name for one in resolution_levels(resnet18, 64)] == ["relu", "layer1", "layer2", "layer3", "layer4"]
    method = RefineCAM(resnet18, input_size=64)
    assert [one.name for one in method.layers] == ["layer1", "layer2", "layer3", "layer4"]
    assert method.base_method == "gradcam++" and method.passes() == 1 and method.layer_map is False
    sizes = [one.map_size for one in RefineCAM(lite0).layers]
    assert sizes == [56, 28, 14, 7]  # the last map at each of Lite0's four deepest resolutions


def _torchcam(model, layers, x, targets):
    from torchcam.methods import GradCAM
    from torchcam.methods import RefineCAM as Peer

    with Peer(model, layers, input_shape=tuple(x.shape[1:]), base_method=GradCAM) as peer:
        scores = model(x)
        return peer(class_idx=targets, scores=scores, normalized=False)[0].detach()


@pytest.mark.parametrize("which", ["resnet18", "lite0"])
def test_paper_scaling_equals_torchcam(request, which):
    pytest.importorskip("torchcam")
    model = request.getfixturevalue(which)
    size, layers = (64, ["layer2", "layer3", "layer4"]) if which == "resnet18" else (
        128, ["_blocks.5._swish", "_blocks.11._swish", "_blocks.15"])
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    targets = [3, 7, 1] if which == "resnet18" else [1, 88, 409]
    before = model_state(model)
    method = RefineCAM(model, layers, base_method="gradcam", input_size=size)
    got = method(x, targets)
    assert model_state(model) == before  # model untouched (before the peer, which fills .grad)
    expected = _torchcam(model, layers, x, targets)
    model.zero_grad(set_to_none=True)
    finest = max(one.map_size for one in method.layers)
    assert got.shape == expected.shape == (3, finest, finest)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert got.amax() > 0  # not all zero (a layer whose map is all zero zeroes the product)


@pytest.mark.parametrize("base, peer_base, options", [
    ("gradcam", "GradCAM", {}),
    ("gradcam++", "GradCAMPlusPlus", {"epsilon": 1e-6}),  # the peer's Grad-CAM++ adds 1e-6
])
def test_pytorch_grad_cam_scaling_equals_the_peer(resnet18, base, peer_base, options):
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    targets, names = [3, 7], ["layer2", "layer3", "layer4"]
    modules = dict(resnet18.named_modules())
    peer = pytorch_grad_cam.RefineCAM(resnet18, [modules[n] for n in names],
                                      base_method=getattr(pytorch_grad_cam, peer_base))
    expected = torch.from_numpy(peer(x, [ClassifierOutputTarget(t) for t in targets])).float()
    for cam in peer.base_cam_per_layer:
        cam.activations_and_grads.release()
    resnet18.zero_grad(set_to_none=True)
    method = RefineCAM(resnet18, names, base_method=base, base_options=options, scaling="pytorch-grad-cam",
                       input_size=96)
    got = method(x, targets)
    assert got.shape == (2, 96, 96)
    # the peer min-max scales the product too, and resizes with OpenCV (bilinear, half-pixel centres)
    torch.testing.assert_close(jittercam.upsample(got, 96), expected, atol=2e-5, rtol=0)


def test_product_by_hand(resnet18):
    """Per layer: the base's own map, min-max scaled, resized to the finest grid; then the product."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([5, 9])
    names = ["layer1", "layer3"]
    expected = torch.ones(2, 16, 16)
    for name in names:
        m = jittercam.create("gradcam++", resnet18, target_layer=name, input_size=64)(x, target)
        low, high = m.amin((1, 2), keepdim=True), m.amax((1, 2), keepdim=True)
        m = (m - low) / (high - low)
        expected *= torch.nn.functional.interpolate(m[:, None], (16, 16), mode="bilinear")[:, 0]
    got = RefineCAM(resnet18, names, input_size=64)(x, target)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # a base that is not a gradient CAM: one call per layer, its passes summed
    scored = RefineCAM(resnet18, names, base_method="scorecam", input_size=64, batch_size=64)
    assert scored.passes() == 64 + 256


def test_refusals(resnet18):
    with pytest.raises(JitterCamError, match="scaling must be one of"):
        RefineCAM(resnet18, ["layer3", "layer4"], input_size=64, scaling="mean")
    with pytest.raises(JitterCamError, match="at least two layers"):
        RefineCAM(resnet18, ["layer4"], input_size=64)
    with pytest.raises(JitterCamError, match="at its layer's resolution"):
        RefineCAM(resnet18, ["layer3", "layer4"], input_size=64, base_method="rise")
    with pytest.raises(JitterCamError, match="unknown"):
        RefineCAM(resnet18, ["layer3", "layer4"], input_size=64, base_method="nosuch")
