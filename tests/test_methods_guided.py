"""Guided Backpropagation (against Captum and by hand) and the `guided:` wrapper (Guided Grad-CAM,
Guided Jitter-CAM)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import jittercam
from jittercam import GradCAM, JitterCAM, JitterCamError
from jittercam.methods.guided import Guided, GuidedBackprop

# Captum warns that it sets hooks on the ReLUs, every call
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")



def _captum(model, x, target):
    captum = pytest.importorskip("captum.attr")
    return captum.GuidedBackprop(model).attribute(x.clone().requires_grad_(True), target=target).detach()


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_equals_captum_on_resnet18_with_inplace_relus(resnet18):
    assert resnet18.relu.inplace and resnet18.layer1[0].relu.inplace  # torchvision's ResNet, called twice a block
    x = torch.randn(2, 3, 64, 64)
    ours = GuidedBackprop(resnet18).attribute_channels(x, [3, 7])
    assert ours.shape == (2, 3, 64, 64)
    torch.testing.assert_close(ours, _captum(resnet18, x, [3, 7]), rtol=1e-5, atol=1e-9)
    plain = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(resnet18(plain)[[0, 1], [3, 7]].sum(), plain)
    assert not torch.allclose(ours, gradient, atol=1e-4 * gradient.abs().max())  # guiding changed something


def test_equals_captum_and_the_rule_by_hand_on_the_tiny_cnn(tiny):
    x = torch.rand(3, 3, 32, 32)
    target = torch.tensor([0, 2, 4])
    ours = GuidedBackprop(tiny).attribute_channels(x, target)
    torch.testing.assert_close(ours, _captum(tiny, x, target), rtol=1e-5, atol=1e-9)
    # logit = W · mean(ReLU(z)): the gradient reaching the ReLU's output is W[c] / 64 at every cell; guided,
    # 1[z > 0] · max(W[c] / 64, 0), and back through the stride-4 convolution to the pixels
    z = tiny.conv(x)
    at_relu = (z > 0) * (tiny.fc.weight[target] / 64).clamp(min=0)[:, :, None, None]
    expected = F.conv_transpose2d(at_relu, tiny.conv.weight, stride=4)
    torch.testing.assert_close(ours, expected.detach(), rtol=1e-5, atol=1e-8)


class ReLUAndSkip(nn.Module):
    """z feeds a ReLU and, past it, the output: logit = 2·Σ ReLU(z) − 3·Σ z."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x):
        z = x * 1.0
        return (2 * self.act(z) - 3 * z).flatten(1).sum(dim=1, keepdim=True)


def test_only_the_relus_backward_is_guided_where_captum_rectifies_the_skip_too():
    x = torch.tensor([1.0, -1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2).clone()
    ours = GuidedBackprop(ReLUAndSkip()).attribute_channels(x, 0)
    # Springenberg et al.: 2·1[z > 0]·max(1, 0) through the ReLU, −3 through the skip, as it is
    assert torch.equal(ours, torch.tensor([-1.0, -3.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2))
    # Captum's hook rectifies the whole gradient reaching the ReLU's input, the skip's share included
    assert torch.equal(_captum(ReLUAndSkip(), x, 0), torch.zeros(1, 3, 1, 2))


class TinyReLU6(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, kernel_size=4, stride=4)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_relu6_is_guided_by_default_and_captums_choice_on_request():
    torch.manual_seed(0)
    model = TinyReLU6().eval()
    with torch.no_grad():
        model.conv.weight.mul_(20)  # some z above 6, where ReLU6 passes no gradient
    x = torch.rand(2, 3, 32, 32)
    z = model.conv(x)
    assert (z > 6).any() and (z < 0).any()
    # Captum's choice (nn.ReLU only) finds nothing to guide here: refused, not made plain
    with pytest.raises(JitterCamError, match=r"no ReLU module to guide \(it has ReLU6 modules"):
        GuidedBackprop(model, activations=(nn.ReLU,))
    got = GuidedBackprop(model).attribute_channels(x, 1)
    at_act = ((z > 0) & (z < 6)) * (model.fc.weight[1] / 64).clamp(min=0)[None, :, None, None]
    torch.testing.assert_close(got, F.conv_transpose2d(at_act, model.conv.weight, stride=4).detach())


def test_functional_relus_and_bad_activations_are_refused(resnet18):
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 4, stride=4), nn.Linear(4, 5)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))

    with pytest.raises(JitterCamError, match=r"F\.relu"):
        GuidedBackprop(Functional())
    with pytest.raises(JitterCamError, match=r"nn.Module classes"):
        GuidedBackprop(Functional(), activations=("ReLU",))
    assert GuidedBackprop(resnet18, activations=nn.ReLU).activations == (nn.ReLU,)  # one class or several


def test_map_is_the_channel_max_of_the_absolute_gradient(tiny):
    x = torch.rand(2, 3, 32, 32)
    method = GuidedBackprop(tiny, batch_size=1)
    channels = method.attribute_channels(x, [1, 3])
    maps = method(x, [1, 3])
    assert maps.shape == (2, 32, 32) and maps.device == x.device
    assert torch.equal(maps, channels.abs().amax(dim=1))
    torch.testing.assert_close(method(x), method(x, tiny(x).argmax(dim=1)))
    assert method.passes() == 1 and method.layer is None
    with pytest.raises(JitterCamError, match="does not use a target layer"):
        GuidedBackprop(tiny, "conv")


@pytest.mark.parametrize("name", ["guidedbackprop", "guided", "guided:jittercam"])
def test_the_model_is_left_as_it_was(resnet18, name):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = resnet18(x)
    maps = jittercam.create(name, resnet18, input_size=64)(x, 5)
    assert maps.shape == (1, 64, 64) and maps.max() > 0
    assert _hooks(resnet18) == 0 and not resnet18.training
    assert all(p.grad is None for p in resnet18.parameters())
    with torch.no_grad():
        torch.testing.assert_close(resnet18(x), before, rtol=0, atol=0)


def test_train_mode_stays_and_hooks_go_even_when_the_forward_fails(tiny):
    tiny.train()
    GuidedBackprop(tiny)(torch.rand(1, 3, 32, 32), 0)
    assert tiny.training and _hooks(tiny) == 0
    with pytest.raises(RuntimeError):
        GuidedBackprop(tiny)(torch.rand(1, 3, 2, 2), 0)  # smaller than the 4 x 4 kernel: the conv fails
    assert _hooks(tiny) == 0


@pytest.mark.parametrize("name", ["guidedbackprop", "guided", "guided:jittercam"])
def test_same_maps_under_no_grad_and_inference_mode(tiny, name):
    x = torch.rand(2, 3, 32, 32)
    method = jittercam.create(name, tiny, input_size=32)
    expected = method(x, [0, 1])
    with torch.no_grad():
        assert torch.equal(method(x, [0, 1]), expected)
    with torch.inference_mode():
        made_here = x.clone()
        assert torch.equal(method(made_here, [0, 1]), expected)
        assert torch.equal(method.attribute_channels(made_here, [0, 1]).abs().amax(dim=1), expected)
    assert torch.is_grad_enabled()


def test_guided_gradcam_is_the_product_by_hand():
    from conftest import TinyCNN

    torch.manual_seed(0)
    tiny = TinyCNN(channels=8).eval()
    x = torch.rand(3, 3, 32, 32)
    target = [2, 0, 4]
    guided = GuidedBackprop(tiny).attribute_channels(x, target)
    cam = GradCAM(tiny, input_size=32)(x, target)
    assert cam.amax(dim=(1, 2)).count_nonzero() >= 2  # (a map of zeros, if any, weights everything by 0)
    cam = F.interpolate(cam[:, None], size=32, mode="bilinear", align_corners=False)
    low, high = cam.amin(dim=(2, 3), keepdim=True), cam.amax(dim=(2, 3), keepdim=True)
    expected = guided * torch.where(high > low, (cam - low) / (high - low), 0)
    method = Guided(tiny, input_size=32)
    assert isinstance(method.base, GradCAM) and method.passes() == 2
    torch.testing.assert_close(method.attribute_channels(x, target), expected, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(method(x, target), expected.abs().amax(dim=1), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(method(x), method(x, tiny(x).argmax(dim=1)))  # one class for both factors


def test_guided_jittercam_builds_from_the_nested_name(tiny, lite0, goldfish_batch):
    x = torch.rand(2, 3, 32, 32)
    method = jittercam.create("guided:jittercam", tiny, input_size=32, size=12, batch_size=3)
    assert isinstance(method, Guided) and isinstance(method.base, JitterCAM) and isinstance(method.base.base, GradCAM)
    assert (method.base.size, method.batch_size, method.base.batch_size) == (12, 3, 3)
    assert method.passes() == 1 + 25  # m = 8, size 12: (4 + 1)^2 patches
    maps = method(x, [1, 2])
    assert maps.shape == (2, 32, 32)
    explicit = jittercam.create("guided:jittercam:gradcam", tiny, input_size=32, size=12)
    torch.testing.assert_close(explicit(x, [1, 2]), maps)
    guided = GuidedBackprop(tiny).attribute_channels(x, [1, 2])
    weights = jittercam.upsample(method.base(x, [1, 2]), 32)
    torch.testing.assert_close(maps, (guided * weights[:, None]).abs().amax(dim=1))
    # EfficientNet-Lite0 has only ReLU6s: the option reaches the wrapper, `size` the Jitter-CAM inside
    lite = jittercam.create("guided:jittercam", lite0, size=8, activations=(nn.ReLU, nn.ReLU6))
    assert lite(goldfish_batch, 1).shape == (1, 224, 224)
    assert repr(lite).startswith("Guided(base=JitterCAM(") and "activations=('ReLU', 'ReLU6')" in repr(lite)


def test_guided_over_a_method_without_a_layer(tiny):
    # the class takes any base; by name (`guided:guidedbackprop`) it is refused: no class map (test_registry)
    method = Guided(tiny, GuidedBackprop, input_size=32)
    assert method.layer is None and method.passes() == 2
    x = torch.rand(1, 3, 32, 32)
    guided = GuidedBackprop(tiny)(x, 3)
    torch.testing.assert_close(method(x, 3), guided * jittercam.minmax(guided))
    with pytest.raises(JitterCamError, match="already built"):
        Guided(tiny, GradCAM(tiny, input_size=32), "conv")
