"""CAMERAS: the authors' sizes, what one size must equal, two sizes by hand, the contract."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

import jittercam
from jittercam import JitterCamError
from jittercam.methods import activations_and_gradients
from jittercam.methods import cameras as cameras_module
from jittercam.methods.cameras import CAMERAS, default_sizes
from jittercam.methods.layercam import HiResCAM


def test_default_sizes_are_the_authors_at_224_and_scale_with_the_input(tiny):
    assert default_sizes(224) == [224, 324, 424, 524, 624, 724, 824, 924]  # range(224, 1000, 100)
    assert default_sizes(32) == [32, 46, 61, 75, 89, 103, 118, 132]
    method = CAMERAS(tiny, input_size=32)
    assert method.passes() == 8 and method.passes(224) == 8 and method.layer_map is False
    assert CAMERAS(tiny, input_size=32, sizes=[32, 40, 48]).passes() == 3


def _up(tensors, pixels):
    return F.interpolate(tensors, size=(pixels, pixels), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("layer", ["layer4", "layer3"])  # gradients constant over space, and varying
@pytest.mark.parametrize("sizes", [[64], [64, 80, 96]])
def test_the_product_of_the_mean_upsampled_activations_and_gradients(layer, sizes):
    """ReLU(Σ_c mean_s(↑A_s)_c ⊙ mean_s(↑G_s)_c), ↑ the bilinear resize to p, made directly — with one
    size, not the resized HiResCAM map in general, since the resize of a product is not the product of
    the resizes."""
    torch.manual_seed(0)
    model = jittercam.load_model("resnet18", weights="random")
    x = torch.randn(2, 3, 64, 64)
    target = torch.tensor([2, 5])
    method = CAMERAS(model, layer, sizes=sizes)
    mean_a = mean_g = 0
    for pixels in sizes:
        resized = x if pixels == 64 else F.interpolate(x, size=pixels, mode="bicubic", align_corners=False)
        A, G, _ = activations_and_gradients(model, method.layer, resized, target)
        mean_a, mean_g = mean_a + _up(A, 64) / len(sizes), mean_g + _up(G, 64) / len(sizes)
    expected = (mean_a * mean_g).sum(dim=1).relu()
    torch.testing.assert_close(method(x, target), expected, rtol=1e-5, atol=1e-6)


def test_one_size_on_gap_linear_is_the_resized_signed_hirescam(tiny):
    """After global average pooling and one linear layer G is constant over space, so ↑G_c ⊙ ↑A_c =
    ↑(G_c ⊙ A_c): one size gives ReLU(↑ Σ_c G_c ⊙ A_c), the signed HiResCAM (= Grad-CAM) map resized."""
    x = torch.rand(2, 3, 32, 32)
    signed = HiResCAM(tiny, input_size=32, relu=False)(x, [1, 4])
    expected = jittercam.resize(signed, 32).relu()
    torch.testing.assert_close(CAMERAS(tiny, input_size=32, sizes=[32])(x, [1, 4]), expected, rtol=1e-5, atol=1e-7)


def test_two_sizes_by_hand(tiny):
    x = torch.rand(2, 3, 32, 32)
    target = torch.tensor([0, 3])
    W = tiny.fc.weight[target]
    means_a, means_g = 0, 0
    for pixels in (32, 48):
        enlarged = x if pixels == 32 else F.interpolate(x, size=48, mode="bicubic", align_corners=False)
        A = tiny.act(tiny.conv(enlarged))  # 8x8, then 12x12
        means_a = means_a + _up(A, 32) / 2
        means_g = means_g + W / (A.shape[-1] * A.shape[-2]) / 2  # the logit's gradient, constant over space
    expected = torch.einsum("bc,bchw->bhw", means_g, means_a).relu().detach()
    got = CAMERAS(tiny, input_size=32, sizes=[48, 32])(x, target)
    assert got.shape == (2, 32, 32)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gradients, columns", [
    ("varying", None), ("varying", 1 << 12),  # the Gram form: one block of columns, and blocks of a few
    ("constant", None),  # a global-average-pooling head: one channel resized per size
])
def test_mean_product_equals_the_resized_tensors_made_directly(monkeypatch, gradients, columns):
    """The Gram form (no C × p × p tensors) and the constant-gradient shortcut against
    Σ_c mean_s(↑A_s) ⊙ mean_s(↑G_s) made directly, with a size equal to p, sizes left out per image, and an
    image with none."""
    if columns is not None:
        monkeypatch.setattr(cameras_module, "_BLOCK", columns)
    monkeypatch.setattr(cameras_module, "_resize_matrix", _counting(cameras_module._resize_matrix))
    generator = torch.Generator().manual_seed(0)
    sides = [5, 8, 11, 24]
    A = [torch.rand(3, 6, n, n, generator=generator) for n in sides]
    if gradients == "varying":
        G = [torch.randn(3, 6, n, n, generator=generator) for n in sides]
    else:
        G = [torch.randn(3, 6, 1, 1, generator=generator).expand(3, 6, n, n) for n in sides]
    kept = torch.tensor([[1.0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    weights = kept / kept.sum(dim=0).clamp_min(1)
    mean_a = sum(w[:, None, None, None] * _up(a, 24) for a, w in zip(A, weights))
    mean_g = sum(w[:, None, None, None] * _up(g, 24) for g, w in zip(G, weights))
    expected = (mean_a * mean_g).sum(dim=1)
    got = cameras_module._mean_product(A, G, 24, kept)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(got[2], torch.zeros(24, 24)) and got[:2].abs().min() > 0
    every_size = (sum(_up(a, 24) for a in A) / 4 * sum(_up(g, 24) for g in G) / 4).sum(dim=1)  # kept None
    torch.testing.assert_close(cameras_module._mean_product(A, G, 24), every_size, rtol=1e-5, atol=1e-6)
    assert (cameras_module._resize_matrix.calls > 0) == (gradients == "varying")  # the path the case is for


def _counting(function):
    def counted(*args):
        counted.calls += 1
        return function(*args)

    counted.calls = 0
    return counted


def test_batched_equals_one_by_one_and_any_mode(tiny):
    x = torch.rand(3, 3, 32, 32)
    targets = [4, 0, 2]
    method = CAMERAS(tiny, input_size=32)  # the 8 default sizes, 32 to 132 px
    maps = method(x, targets)
    assert maps.shape == (3, 32, 32) and torch.isfinite(maps).all() and (maps >= 0).all() and maps.max() > 0
    alone = torch.cat([method(x[i : i + 1], t) for i, t in enumerate(targets)])
    torch.testing.assert_close(alone, maps, rtol=1e-4, atol=1e-7)
    with torch.inference_mode():
        torch.testing.assert_close(method(x.clone(), targets), maps, rtol=1e-5, atol=1e-7)
    assert torch.is_grad_enabled()
    assert all(p.grad is None for p in tiny.parameters()) and not tiny.training
    assert all(not m._forward_hooks for m in tiny.modules())


@pytest.mark.parametrize("sizes", [[32, 48], [40, 48]])
def test_no_target_is_the_top1_of_the_input_as_given(tiny, sizes):
    x = torch.rand(2, 3, 32, 32)
    method = CAMERAS(tiny, input_size=32, sizes=sizes)  # 32 not among the sizes: one more forward
    torch.testing.assert_close(method(x), method(x, tiny(x).argmax(dim=1)))


def test_same_top1_leaves_out_the_sizes_that_disagree_as_the_authors_code():
    from conftest import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN(channels=8).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 32, 32, generator=generator) * 3 * torch.rand(64, 1, 1, 1, generator=generator)
    with torch.no_grad():
        top = {32: model(x).argmax(dim=1)}
        for p in (40, 48):
            top[p] = model(F.interpolate(x, size=p, mode="bicubic", align_corners=False)).argmax(dim=1)
    agree = top[32] == top[48]
    assert agree.any() and not agree.all()  # the draw has both cases

    def cameras(sizes, **options):
        return CAMERAS(model, input_size=32, sizes=sizes, **options)

    got = cameras([32, 48], same_top1=True)(x)
    both, alone = cameras([32, 48])(x), cameras([32])(x)
    assert (both[~agree] != alone[~agree]).any() and (alone[~agree] > 0).any()  # the two cases differ
    torch.testing.assert_close(got[agree], both[agree])
    torch.testing.assert_close(got[~agree], alone[~agree])
    # a target given: every size explains it, as in the authors' code
    torch.testing.assert_close(cameras([32, 48], same_top1=True)(x, 1), cameras([32, 48])(x, 1))
    # the input size not among the sizes: an image whose every size disagrees with it gets an all-zero map
    none_left = (top[40] != top[32]) & (top[48] != top[32])
    assert none_left.any()
    maps = cameras([40, 48], same_top1=True)(x)
    assert torch.equal(maps[none_left], torch.zeros_like(maps[none_left])) and (maps[~none_left] > 0).any()


def test_refusals(tiny):
    for sizes in ([], [0], [32.0], "32", [True]):
        with pytest.raises(JitterCamError, match="sizes must be"):
            CAMERAS(tiny, input_size=32, sizes=sizes)
    with pytest.raises(JitterCamError, match="square"):
        CAMERAS(tiny, input_size=32, sizes=[32])(torch.rand(1, 3, 32, 40), 0)
    with pytest.raises(JitterCamError, match="out of range"):
        CAMERAS(tiny, input_size=32, sizes=[32])(torch.rand(1, 3, 32, 32), 5)
    with pytest.raises(JitterCamError, match="target layer's resolution"):
        jittercam.create("jittercam:cameras", tiny, input_size=32)
    method = jittercam.create("cameras", tiny, input_size=32, sizes=(32, 48))
    assert repr(method) == "CAMERAS(target_layer='act', batch_size=None, sizes=[32, 48], same_top1=False)"


class _MultipleOf32(torch.nn.Module):
    """A network that, like HRNet and DLA, only takes inputs whose side is a multiple of 32."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 32, stride=32), torch.nn.ReLU())
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32:
            raise RuntimeError(f"Sizes of tensors must match: {x.shape[-1]} is no multiple of 32")
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_default_sizes_are_rounded_to_the_stride_for_a_model_that_needs_it():
    model = _MultipleOf32().eval()
    method = jittercam.create("cameras", model, input_size=64)
    assert method.multiple == 32
    assert method.sizes_for(224) == [224, 320, 416, 512, 640, 736, 832, 928]
    assert method(torch.rand(1, 3, 64, 64), 1).shape == (1, 64, 64)
    with pytest.raises(jittercam.JitterCamError, match=r"CAMERAS runs the model at 100x100 pixels, which it does "
                       r"not accept \(Sizes of tensors must match: 100 is no multiple of 32\)"):
        jittercam.create("cameras", model, input_size=64, sizes=[64, 100])
    assert jittercam.create("cameras", torchvision.models.resnet18(), input_size=64).multiple == 1
