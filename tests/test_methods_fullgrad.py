"""FullGrad: a case by hand, the authors' algorithm, pytorch-grad-cam's maps on ResNet18 and
EfficientNet-Lite0, the model left as it was, refusals."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import jittercam
from jittercam import JitterCamError
from jittercam.methods.fullgrad import FullGrad, bias_layers


@pytest.fixture(scope="module")
def batch():
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _scaled(values: torch.Tensor, dims, eps: float) -> torch.Tensor:
    values = values.abs()
    values = values - values.amin(dim=dims, keepdim=True)
    return values / (values.amax(dim=dims, keepdim=True) + eps)


def test_by_hand_on_one_convolution(tiny):
    """conv (bias b) -> ReLU -> GAP -> linear: ∂y_c/∂z = W_c/hw where the ReLU passes, 0 elsewhere; the
    input term is |∇_x y_c ⊙ x|. Each term scaled by its min and max over channels and positions."""
    x = torch.rand(3, 3, 32, 32)
    target = torch.tensor([1, 3, 0])
    pixels = x.clone().requires_grad_(True)
    z = tiny.conv(pixels)
    y = tiny.fc(z.relu().mean(dim=(2, 3)))
    (input_gradient,) = torch.autograd.grad(y.gather(1, target[:, None]).sum(), pixels)
    g = (tiny.fc.weight[target] / 64)[:, :, None, None] * (z > 0)  # (B, C, 8, 8)
    bias_term = _scaled(g * tiny.conv.bias[:, None, None], (1, 2, 3), 1e-6).sum(dim=1).detach()
    expected = _scaled(input_gradient * x, (1, 2, 3), 1e-6).sum(dim=1)
    expected = expected + F.interpolate(bias_term[:, None], size=32, mode="bilinear", align_corners=True)[:, 0]
    method = FullGrad(tiny)
    assert method.layers == [tiny.conv] and method.passes() == 1
    got = method(x, target)
    assert got.shape == (3, 32, 32)  # the input's resolution
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in tiny.parameters())


def _collector(bias: torch.Tensor, terms: list):
    def hook(_module, _inputs, output):
        output.register_hook(lambda grad: terms.append(grad * bias[:, None, None]))

    return hook


def _authors_fullgrad(model: nn.Module, images: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """The authors' algorithm (idiap/fullgrad-saliency `FullGrad.saliency`), written out here: tensor
    hooks collect the gradient at every convolution's and batch norm's output, times its (effective) bias;
    each term |.| min-max scaled over its channels and positions (+1e-6), resized with align_corners=True."""
    terms, handles = [], []
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            bias = module.bias - module.running_mean * module.weight / torch.sqrt(module.running_var + module.eps)
        elif isinstance(module, nn.Conv2d) and module.bias is not None:
            bias = module.bias
        else:
            continue

        handles.append(module.register_forward_hook(_collector(bias.detach(), terms)))
    pixels = images.clone().requires_grad_(True)
    try:
        out = model(pixels)
        (input_gradient,) = torch.autograd.grad(out[torch.arange(len(targets)), targets].sum(), pixels)
    finally:
        for handle in handles:
            handle.remove()
    cam = _scaled(input_gradient * images, (1, 2, 3), 1e-6).sum(dim=1, keepdim=True)
    for term in terms:
        scaled = _scaled(term, (1, 2, 3), 1e-6)
        cam = cam + F.interpolate(scaled, size=images.shape[-2:], mode="bilinear", align_corners=True).sum(1, True)
    return cam[:, 0].detach()


def test_paper_variant_is_the_authors_algorithm_on_resnet18(resnet18, batch):
    targets = [3, 7, 11]
    expected = _authors_fullgrad(resnet18, batch, targets)
    method = FullGrad(resnet18)
    assert len(method.layers) == 20  # ResNet18's convolutions have no bias: its 20 batch norms
    got = method(batch, targets)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert all(p.grad is None for p in resnet18.parameters())


def _peer(model, images, targets):
    from pytorch_grad_cam import FullGrad as Peer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with Peer(model=model, target_layers=[]) as peer:
        expected = peer(input_tensor=images, targets=[ClassifierOutputTarget(t) for t in targets])
    model.zero_grad(set_to_none=True)  # the peer's backward fills the parameters' .grad; ours must not
    return torch.from_numpy(expected)


@pytest.mark.filterwarnings("ignore")
def test_pytorch_grad_cam_variant_on_resnet18_and_efficientnet_lite0(resnet18, batch, lite0):
    for model, targets in ((resnet18, [3, 7, 11]), (lite0, [1, 294, 985])):
        expected = _peer(model, batch, targets)  # the peer's final min-max scaling applied to ours below
        before = model(batch).detach()
        got = FullGrad(model, variant="pytorch-grad-cam")(batch, targets)
        assert got.shape == (3, 64, 64)
        torch.testing.assert_close(jittercam.upsample(got, 64), expected, atol=2e-5, rtol=0)
        assert all(p.grad is None for p in model.parameters()) and not model.training
        assert all(not m._forward_hooks for m in model.modules())
        torch.testing.assert_close(model(batch), before, rtol=0, atol=0)
    # Lite0's 49 batch norms, found by both; the paper's scaling gives another map
    assert len(bias_layers(lite0)) == len(bias_layers(lite0, "pytorch-grad-cam")) == 49
    paper = jittercam.upsample(FullGrad(lite0)(batch, [1, 294, 985]), 64)
    assert (paper - expected).abs().amax() > 0.05


def test_one_by_one_equals_the_batch_and_top1_is_the_default(resnet18, batch):
    method = FullGrad(resnet18, batch_size=1)
    maps = FullGrad(resnet18)(batch)
    torch.testing.assert_close(method(batch, resnet18(batch).argmax(dim=1)), maps, rtol=1e-5, atol=1e-5)


def test_refusals(tiny, resnet18):
    no_bias = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, 2)).eval()
    with pytest.raises(JitterCamError, match=r"FullGrad needs layers with a bias .*; Sequential has none") as error:
        FullGrad(no_bias)
    assert "\n" not in str(error.value)

    class Subclassed(nn.Conv2d):
        pass

    only_subclass = nn.Sequential(Subclassed(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert len(FullGrad(only_subclass).layers) == 1  # the paper's isinstance
    with pytest.raises(JitterCamError, match="exact types"):
        FullGrad(only_subclass, variant="pytorch-grad-cam")
    with pytest.raises(JitterCamError, match="does not use a target layer"):
        FullGrad(resnet18, target_layer="layer4")
    with pytest.raises(JitterCamError, match="variant must be one of 'paper', 'pytorch-grad-cam', not 'peer'"):
        FullGrad(tiny, variant="peer")
    with pytest.raises(JitterCamError, match="needs a map at the target layer's resolution"):
        jittercam.create("jittercam:fullgrad", tiny)
    assert "fullgrad" in jittercam.available_methods() and repr(FullGrad(tiny)).startswith("FullGrad(")
