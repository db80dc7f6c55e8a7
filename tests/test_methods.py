"""Grad-CAM family and Jitter-CAM: hand-computed values, the paper's equations, the contract."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import jittercam
from jittercam import GradCAM, GradCAMPlusPlus, JitterCAM, JitterCamError, XGradCAM
from jittercam.methods import CAMMethod


def _tiny_parts(tiny, x):
    activations = tiny.act(tiny.conv(x))  # (B, C, h, w)
    return activations, tiny.fc.weight  # logit_c = sum_k W[c,k] mean_ij A_k


def test_gradcam_on_gap_linear_is_the_weighted_map(tiny):
    x = torch.rand(2, 3, 32, 32)
    A, W = _tiny_parts(tiny, x)
    hw = A.shape[-1] * A.shape[-2]
    target = torch.tensor([1, 3])
    g = W[target] / hw  # the gradient of the logit is constant over space
    expected = torch.einsum("bc,bchw->bhw", g, A).relu()
    for method in (GradCAM, XGradCAM):  # on GAP + linear, XGrad-CAM's weights are exactly g
        got = method(tiny, input_size=32)(x, target)
        torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("epsilon", [0.0, 1e-6])
def test_gradcam_plus_plus_closed_form_by_hand(tiny, epsilon):
    x = torch.rand(1, 3, 32, 32)
    A, W = _tiny_parts(tiny, x)
    hw = A.shape[-1] * A.shape[-2]
    g = W[2] / hw
    sums = A[0].sum(dim=(1, 2))
    alpha = g**2 / (2 * g**2 + sums * g**3 + epsilon)  # eq. 19, plus pytorch-grad-cam's epsilon if asked
    weights = hw * alpha * g.relu()  # alpha and g are constant over the hw positions
    expected = torch.einsum("c,chw->hw", weights, A[0]).relu()
    got = GradCAMPlusPlus(tiny, input_size=32, epsilon=epsilon)(x, 2)[0]
    torch.testing.assert_close(got, expected.detach(), rtol=1e-4, atol=1e-6)


def test_gradcam_plus_plus_epsilon_matters_where_gradients_are_small():
    """Squared gradients of the size of 1e-6 (a real network's head): eq. 19 and pytorch-grad-cam's
    variant weight the channels differently."""
    from conftest import TinyCNN

    torch.manual_seed(0)
    tiny = TinyCNN(channels=8).eval()
    with torch.no_grad():
        tiny.fc.weight.mul_(1e-2)  # g = W / 64, so g^2 is about 1e-8..1e-7
    x = torch.rand(1, 3, 32, 32)
    paper = jittercam.upsample(GradCAMPlusPlus(tiny, input_size=32)(x, 1), 8)
    peer = jittercam.upsample(GradCAMPlusPlus(tiny, input_size=32, epsilon=1e-6)(x, 1), 8)
    assert (paper - peer).abs().max() > 0.05


def test_gradcam_plus_plus_zero_denominator_gives_zero_weight(tiny):
    with torch.no_grad():
        tiny.fc.weight[0].zero_()  # class 0's gradient is 0 everywhere: 0/0 must not be NaN
    maps = GradCAMPlusPlus(tiny, input_size=32)(torch.rand(2, 3, 32, 32), 0)
    assert torch.equal(maps, torch.zeros_like(maps))


@pytest.mark.parametrize(
    "ours, theirs",
    [(GradCAM, "GradCAM"), (GradCAMPlusPlus, "GradCAMPlusPlus"), (XGradCAM, "XGradCAM")],
)
def test_agrees_with_pytorch_grad_cam(ours, theirs):
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = jittercam.load_model("resnet18", weights="random")
    x = torch.randn(2, 3, 224, 224)
    targets = [3, 7]
    with getattr(pytorch_grad_cam, theirs)(model=model, target_layers=[model.layer4]) as peer:
        expected = torch.from_numpy(peer(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))
    options = {"epsilon": 1e-6} if ours is GradCAMPlusPlus else {}  # the peer's variant of eq. 19
    got = jittercam.upsample(ours(model, "layer4", **options)(x, targets), 224)
    # the peer resizes with OpenCV and divides by max + 1e-7; both are bilinear with half-pixel centres
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=0)


class SampleAtStride(CAMMethod):
    """A contract method whose map cell (u, v) is the patch's first channel at pixel (u·k, v·k): every
    patch covering a Jitter-CAM cell then reports the same enlarged-image pixel."""

    def __init__(self, m: int, k: int, classes: int = 5):
        self.layer = jittercam.TargetLayer("stub", torch.nn.Identity(), 0, m * k, m, k, classes)
        self.batch_size, self.calls = None, 0

    def _explain(self, images, target):
        self.calls += 1
        k, m = self.layer.stride, self.layer.map_size
        return images[:, 0, : m * k : k, : m * k : k].clone()


@pytest.mark.parametrize("pixels, m, size", [(32, 4, 7), (30, 4, 8), (16, 4, 4)])
def test_jitter_patches_sit_at_multiples_of_the_stride(tiny, pixels, m, size):
    k = round(pixels / m)
    images = torch.rand(2, 3, pixels, pixels)
    stub = SampleAtStride(m, k)
    stub.layer = jittercam.TargetLayer("stub", torch.nn.Identity(), 0, pixels, m, k, 5)
    got = JitterCAM(tiny, base=stub, size=size, batch_size=3)(images, 0)
    d = size - m
    enlarged = F.interpolate(images, size=pixels + d * k, mode="bilinear", align_corners=False) if d else images
    expected = enlarged[:, 0, : size * k : k, : size * k : k]
    assert got.shape == (2, size, size)
    torch.testing.assert_close(got, expected)


class CountingBase(CAMMethod):
    """Patch number n (in the order Jitter-CAM explains them) gets the constant map n + 1."""

    def __init__(self):
        self.layer = jittercam.TargetLayer("stub", torch.nn.Identity(), 0, 4, 2, 2, 5)
        self.batch_size, self.seen = 1, 0

    def _explain(self, images, target):
        self.seen += 1
        return torch.full((1, 2, 2), float(self.seen))


def test_jitter_sum_and_count_by_hand(tiny):
    # m = 2, d = 1: four patches with maps 1, 2 (top row), 3, 4 (bottom row); eqs. (1)-(2) give
    J = torch.tensor([[1.0, 3, 2], [4, 10, 6], [3, 7, 4]])
    C = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]])
    got = JitterCAM(tiny, base=CountingBase(), size=3, batch_size=1)(torch.rand(1, 3, 4, 4), 0)
    torch.testing.assert_close(got[0], J / C)
    reference = JitterCAM(tiny, base=CountingBase(), size=3, batch_size=1, count_start=1)
    torch.testing.assert_close(reference(torch.rand(1, 3, 4, 4), 0)[0], J / (C + 1))


def test_size_m_is_exactly_the_base(lite0, goldfish_batch):
    base = GradCAM(lite0)(goldfish_batch, 1)
    assert torch.equal(JitterCAM(lite0, size=7)(goldfish_batch, 1), base)


def test_default_size_doubles_m_and_maps_are_finite_and_non_negative(lite0, goldfish_batch):
    maps = JitterCAM(lite0)(goldfish_batch)
    assert maps.shape == (1, 14, 14) and maps.device == goldfish_batch.device
    assert torch.isfinite(maps).all() and (maps >= 0).all() and maps.max() > 0


def test_batched_equals_one_by_one_and_targets_per_image(tiny):
    x = torch.rand(3, 3, 32, 32)
    method = JitterCAM(tiny, base=GradCAMPlusPlus, input_size=32, batch_size=5)
    together = method(x, [0, 4, 2])
    alone = torch.cat([method(x[i : i + 1], t) for i, t in enumerate([0, 4, 2])])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_none_target_is_the_top1_of_the_original_image(tiny):
    x = torch.rand(2, 3, 32, 32)
    top1 = tiny(x).argmax(dim=1)
    for method in (GradCAM(tiny, input_size=32), JitterCAM(tiny, input_size=32)):
        torch.testing.assert_close(method(x), method(x, top1))


def test_other_input_sizes_are_measured(tiny):
    # trained at 32 px (m = 8); at 24 px the base map is 6 x 6, so the default doubles it to 12
    maps = JitterCAM(tiny, input_size=32)(torch.rand(1, 3, 24, 24), 0)
    assert maps.shape == (1, 12, 12)


def test_methods_leave_the_model_as_they_found_it(lite0, goldfish_batch):
    JitterCAM(lite0, base=XGradCAM, size=9)(goldfish_batch)
    assert not lite0.training
    assert all(p.grad is None for p in lite0.parameters())
    assert all(not m._forward_hooks for m in lite0.modules())


@pytest.mark.parametrize("target, message", [(5, "out of range"), (-1, "out of range"), ([0, 1, 2], "3 targets")])
def test_bad_targets(tiny, target, message):
    for method in (GradCAM(tiny, input_size=32), JitterCAM(tiny, input_size=32)):
        with pytest.raises(JitterCamError, match=message):
            method(torch.rand(2, 3, 32, 32), target)


def test_size_below_m_or_above_8m_is_refused(tiny):
    with pytest.raises(JitterCamError, match="smaller than the map size m=8"):
        JitterCAM(tiny, size=7, input_size=32)
    assert JitterCAM(tiny, size=64, input_size=32).size == 64
    with pytest.raises(JitterCamError, match=r"size 65 is more than 8 times the map size m=8 .*\(3,364 patches and an "
                       r"input of 260 pixels a side"):
        JitterCAM(tiny, size=65, input_size=32)


def test_upsample_range_and_zero_maps():
    maps = torch.stack([torch.zeros(7, 7), torch.arange(49.0).view(7, 7)])
    up = jittercam.upsample(maps, (30, 40))
    assert up.shape == (2, 30, 40) and not torch.isnan(up).any()
    assert torch.equal(up[0], torch.zeros(30, 40))
    assert up[1].min() == 0 and up[1].max() == 1


def test_same_maps_under_no_grad_and_inference_mode(tiny):
    x = torch.rand(2, 3, 32, 32)
    methods = (GradCAM(tiny, input_size=32), JitterCAM(tiny, base=XGradCAM, input_size=32))
    expected = [method(x) for method in methods]
    with torch.no_grad():
        assert all(torch.equal(method(x), e) for method, e in zip(methods, expected))
    with torch.inference_mode():
        made_here = x.clone()
        assert all(torch.equal(method(made_here), e) for method, e in zip(methods, expected))
    assert torch.is_grad_enabled()


def test_jitter_recreates_the_224px_gradcam_from_a_160px_input(lite0):
    """Paper §4.2: at 160 px the map is 5x5; Jitter-CAM to 7x7 should rank pixels like Grad-CAM at 224
    (paper: mean Spearman 0.95 on ResNet50), and better than the 5x5 map resized to 7x7."""
    import torchvision.transforms.functional as TF

    from conftest import EXAMPLES
    from jittercam.metrics import rank_correlation

    card = jittercam.model_card(lite0)
    gradcam, jitter = GradCAM(lite0), JitterCAM(lite0, size=7)
    jittered, resized = [], []
    for path in sorted((EXAMPLES / "images").iterdir()):
        image = jittercam.data.load_image(path)
        full = jittercam.data.to_input(image, card)
        small = TF.normalize(TF.to_tensor(TF.resize(image, [160, 160], antialias=True)), card.mean, card.std)[None]
        target = int(lite0(full).argmax())
        reference = gradcam(full, target)
        jittered.append(rank_correlation(reference, jitter(small, target)))
        resized.append(rank_correlation(reference, gradcam(small, target), size=7))
    assert torch.cat(jittered).mean() > 0.9
    assert torch.cat(jittered).mean() > torch.cat(resized).mean() + 0.03
