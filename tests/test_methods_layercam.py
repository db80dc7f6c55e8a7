"""HiResCAM and LayerCAM: values by hand, pytorch-grad-cam's maps, several layers in one pass."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import jittercam
from jittercam import JitterCamError
from jittercam.methods.layercam import HiResCAM, LayerCAM


def _tiny_parts(tiny, x):
    activations = tiny.act(tiny.conv(x))  # (B, C, h, w)
    return activations, tiny.fc.weight  # logit_t = sum_c W[t,c] mean_ij A_c


def test_on_gap_linear_the_gradient_is_the_weight_over_hw(tiny):
    x = torch.rand(2, 3, 32, 32)
    A, W = _tiny_parts(tiny, x)
    target = torch.tensor([1, 3])
    g = W[target] / (A.shape[-1] * A.shape[-2])  # constant over space
    signed = torch.einsum("bc,bchw->bhw", g, A).detach()
    torch.testing.assert_close(HiResCAM(tiny, input_size=32)(x, target), signed.relu(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(HiResCAM(tiny, input_size=32, relu=False)(x, target), signed, rtol=1e-5, atol=1e-6)
    expected = torch.einsum("bc,bchw->bhw", g.relu(), A).relu().detach()
    torch.testing.assert_close(LayerCAM(tiny, input_size=32)(x, target), expected, rtol=1e-5, atol=1e-6)
    assert (signed < 0).any()  # the case where the ReLU matters is covered



@pytest.mark.parametrize(
    "ours, theirs, layers, options",
    [
        (HiResCAM, "HiResCAM", ["layer4"], {}),
        (LayerCAM, "LayerCAM", ["layer4"], {}),
        (LayerCAM, "LayerCAM", ["layer2"], {}),
        (LayerCAM, "LayerCAM", ["layer2", "layer4"], {"fusion": "pytorch-grad-cam"}),
    ],
)
def test_agrees_with_pytorch_grad_cam(resnet18, ours, theirs, layers, options):
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    targets = [3, 7]
    modules = dict(resnet18.named_modules())
    with getattr(pytorch_grad_cam, theirs)(model=resnet18, target_layers=[modules[n] for n in layers]) as peer:
        expected = torch.from_numpy(peer(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))
    resnet18.zero_grad(set_to_none=True)  # the peer's backward fills the parameters' .grad; ours must not
    method = ours(resnet18, layers if len(layers) > 1 else layers[0], **options)
    got = jittercam.upsample(method(x, targets), 96)
    # the peer resizes with OpenCV and divides by max + 1e-7; both are bilinear with half-pixel centres
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=0)


class TwoStage(nn.Module):
    """conv(s2) -> ReLU -> conv(s2) -> ReLU -> GAP -> linear: a 16x16 and an 8x8 map at 32 px."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.act1 = nn.Conv2d(3, 8, 2, stride=2), nn.ReLU()
        self.conv2, self.act2 = nn.Conv2d(8, 8, 2, stride=2), nn.ReLU()
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            self.conv2.bias.add_(0.2)  # most of the second stage alive, so that both maps have values
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return self.fc(self.act2(self.conv2(self.act1(self.conv1(x)))).mean(dim=(2, 3)))


def _by_hand(model: TwoStage, x: torch.Tensor, target: torch.Tensor):
    """Each stage's LayerCAM map, gradients by the chain rule written out."""
    a1 = model.act1(model.conv1(x))
    pre2 = model.conv2(a1)
    a2 = pre2.relu()
    g2 = (model.fc.weight[target] / a2[0, 0].numel())[:, :, None, None].expand_as(a2)
    g1 = F.conv_transpose2d(g2 * (pre2 > 0), model.conv2.weight, stride=2)  # back through ReLU and conv2
    return [(g.relu() * a).sum(dim=1).relu().detach() for a, g in ((a1, g1), (a2, g2))]


def test_several_layers_fused_as_the_paper_in_one_forward():
    model = TwoStage().eval()
    x = torch.rand(3, 3, 32, 32)
    target = torch.tensor([0, 2, 4])
    m1, m2 = _by_hand(model, x, target)
    method = LayerCAM(model, ["act1", "act2"], input_size=32)
    assert method.layer_map is False and method.layer.name == "act1" and LayerCAM.layer_map is True
    model.forwards = 0
    got = method(x, target)
    assert model.forwards == 1  # both layers from one forward (and one backward)

    def scaled(m):  # tanh(2 M / max M), per map
        return torch.tanh(2 * m / m.flatten(1).amax(dim=1)[:, None, None])

    up = F.interpolate(scaled(m2)[:, None], size=16, mode="bilinear", align_corners=False)[:, 0]
    expected = torch.maximum(scaled(m1), up)
    assert (scaled(m1) > up).any() and (scaled(m1) < up).any()  # both layers win somewhere
    assert got.shape == (3, 16, 16)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    gamma = LayerCAM(model, ["act2", "act1"], input_size=32, gamma=0.5)(x, target)  # order does not matter
    m1s, m2s = (torch.tanh(0.5 * m / m.flatten(1).amax(dim=1)[:, None, None]) for m in (m1, m2))
    up = F.interpolate(m2s[:, None], size=16, mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(gamma, torch.maximum(m1s, up), rtol=1e-5, atol=1e-6)

    peer_style = LayerCAM(model, ["act1", "act2"], input_size=32, fusion="pytorch-grad-cam")(x, target)
    assert peer_style.shape == (3, 32, 32)


def test_a_list_of_one_layer_is_the_single_layer_method(tiny):
    x = torch.rand(2, 3, 32, 32)
    one = LayerCAM(tiny, ["act"], input_size=32)
    assert one.layer_map is True and one.layer.name == "act"
    torch.testing.assert_close(one(x, 1), LayerCAM(tiny, "act", input_size=32)(x, 1))


def test_several_layers_contract(resnet18):
    method = jittercam.create("layercam", resnet18, target_layer=["layer3", "layer4"], batch_size=2)
    assert "target_layer=['layer3', 'layer4']" in repr(method) and "fusion='paper'" in repr(method)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    targets = [5, 1, 9]
    maps = method(x, targets)
    assert maps.shape == (3, 4, 4) and torch.isfinite(maps).all() and (maps >= 0).all()
    alone = torch.cat([method(x[i : i + 1], t) for i, t in enumerate(targets)])
    torch.testing.assert_close(alone, maps, rtol=1e-4, atol=1e-6)
    with torch.inference_mode():
        torch.testing.assert_close(method(x.clone(), targets), maps, rtol=1e-5, atol=1e-6)
    assert torch.is_grad_enabled()
    torch.testing.assert_close(method(x), method(x, resnet18(x).argmax(dim=1)))
    assert all(p.grad is None for p in resnet18.parameters())
    assert all(not m._forward_hooks for m in resnet18.modules()) and not resnet18.training
    assert method.passes() == 1


def test_wrappers_refuse_a_fused_map_and_bad_options_are_refused(tiny):
    model = TwoStage().eval()
    with pytest.raises(JitterCamError, match="target layer's resolution"):
        jittercam.create("jittercam:layercam", model, target_layer=["act1", "act2"], input_size=32)
    assert jittercam.create("jittercam:layercam", tiny, input_size=32)(torch.rand(1, 3, 32, 32), 0).shape == (1, 16, 16)
    with pytest.raises(JitterCamError, match="fusion must be one of"):
        LayerCAM(model, ["act1", "act2"], input_size=32, fusion="mean")
    with pytest.raises(JitterCamError, match="empty list"):
        LayerCAM(model, [], input_size=32)
    with pytest.raises(JitterCamError, match="no module named 'nope'"):
        LayerCAM(model, ["act1", "nope"], input_size=32)


def test_a_layer_with_no_positive_gradient_adds_zeros_not_nan():
    model = TwoStage().eval()
    with torch.no_grad():
        model.fc.weight[1] = -model.fc.weight[1].abs()  # every gradient of class 1 is <= 0 at act2
    x = torch.rand(2, 3, 32, 32)
    m1, m2 = _by_hand(model, x, torch.tensor([1, 1]))
    assert torch.equal(m2, torch.zeros_like(m2)) and (m1 > 0).any()
    maps = LayerCAM(model, ["act1", "act2"], input_size=32)(x, 1)
    expected = torch.tanh(2 * m1 / m1.flatten(1).amax(dim=1)[:, None, None])  # the max with zeros
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
