"""Smooth Grad-CAM++, SS-CAM and IS-CAM: the paper's forms by hand, torchcam 0.5.0's variants against
torchcam fed the same noise, seeding, refusals."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import jittercam
from jittercam import JitterCamError
from jittercam.methods.registry import method_class
from jittercam.methods.smoothgrad import SmoothGradCAMPlusPlus, input_noise
from jittercam.methods.sscam import ISCAM, SSCAM


class FedNoise:
    """Stands in for torchcam's `_distrib`: hands out the given draws in order."""

    def __init__(self, noise: torch.Tensor) -> None:
        self.noise, self.drawn = noise, 0

    def sample(self, shape):
        draw = self.noise[self.drawn]
        assert tuple(draw.shape) == tuple(shape)
        self.drawn += 1
        return draw


def _peer(model, name, x, target, peer_class, noise=None, **options):
    """torchcam's raw map (no min-max scaling), its noise replaced by `noise`."""
    with peer_class(model, name, input_shape=tuple(x.shape[1:]), **options) as peer:
        if noise is not None:
            peer._distrib = FedNoise(noise)
        model(x)
        maps = peer(class_idx=target, normalized=False)[0]
    if noise is not None:
        assert peer._distrib.drawn == noise.shape[0]
    return maps


def _models(request, resnet18):
    return (resnet18, 64) if request.param == "resnet18" else (request.getfixturevalue("lite0"), 96)


@pytest.fixture(params=["resnet18", "lite0"])
def model_and_size(request, resnet18):
    return _models(request, resnet18)


def test_smoothgradcam_torchcam_variant_equals_torchcam(model_and_size):
    torchcam = pytest.importorskip("torchcam.methods")
    model, size = model_and_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    target = [3, 7]
    method = SmoothGradCAMPlusPlus(model, input_size=size, variant="torchcam")
    got = method(x, target)
    expected = _peer(model, method.layer.name, x, target, torchcam.SmoothGradCAMpp, input_noise(x, 4, 0.3, 0))
    torch.testing.assert_close(got, expected, atol=1e-6 * float(expected.abs().max()), rtol=1e-4)
    paper = SmoothGradCAMPlusPlus(model, input_size=size)(x, target)
    assert not torch.allclose(paper, got, rtol=1e-2, atol=0)  # the variants differ on a real network


def _tiny_layer(tiny, x):
    return tiny.act(tiny.conv(x))


def test_smoothgradcam_paper_is_eq_19_on_the_averaged_derivatives(tiny):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([1, 3])
    noise = input_noise(x, 3, 0.5, 7)
    grads = []
    for sample in noise:
        A = _tiny_layer(tiny, x + sample).detach().requires_grad_(True)
        logits = tiny.fc(tiny.pool(A).flatten(1))
        (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), A)
        grads.append(g)
    g = torch.stack(grads)
    d1, d2, d3 = g.mean(0), g.pow(2).mean(0), g.pow(3).mean(0)
    A = _tiny_layer(tiny, x).detach()
    alpha = d2 / (2 * d2 + A.sum(dim=(2, 3), keepdim=True) * d3)
    alpha = torch.nan_to_num(alpha)
    w = (alpha * d1.relu()).sum(dim=(2, 3))
    expected = torch.einsum("bc,bchw->bhw", w, A).relu()
    got = SmoothGradCAMPlusPlus(tiny, input_size=32, num_samples=3, std=0.5, seed=7)(x, target)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["sscam", "iscam"])
@pytest.mark.parametrize("name, layer", [("resnet18", "layer1"), ("lite0", "_blocks.3")])
def test_score_family_torchcam_variants_equal_torchcam(request, resnet18, name, layer, kind):
    torchcam = pytest.importorskip("torchcam.methods")
    model = resnet18 if name == "resnet18" else request.getfixturevalue("lite0")
    size = 32 if name == "resnet18" else 64  # early layers (64 and 40 channels, 8x8): one pass per channel and sample
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    target = [3, 7]
    if kind == "sscam":
        method = SSCAM(model, layer, input_size=size, num_samples=2, variant="torchcam", batch_size=128)
        noise = input_noise(x, 2, 2.0, 0, (method.channels(), size, size))
        expected = _peer(model, layer, x, target, torchcam.SSCAM, noise, num_samples=2, batch_size=128)
    else:
        method = ISCAM(model, layer, input_size=size, num_samples=2, variant="torchcam", batch_size=128)
        expected = _peer(model, layer, x, target, torchcam.ISCAM, num_samples=2, batch_size=128)
    got = method(x, target)
    torch.testing.assert_close(got, expected, atol=1e-5 * float(expected.abs().max()), rtol=1e-4)


def _literal_score(tiny, x, target, masks_of):
    """The paper variants channel by channel: the mean class probability over the masks `masks_of` gives."""
    maps = []
    for b, (image, cls) in enumerate(zip(x, target)):
        activations = _tiny_layer(tiny, image[None])[0].detach()
        weights = []
        for k, channel in enumerate(activations):
            up = F.interpolate(channel[None, None], size=32, mode="bilinear", align_corners=False)[0, 0]
            if up.max() == up.min():
                weights.append(torch.tensor(0.0))
                continue
            mask = (up - up.min()) / (up.max() - up.min())
            probabilities = [tiny(image[None] * m).softmax(dim=1)[0, cls] for m in masks_of(b, k, mask)]
            weights.append(torch.stack(probabilities).mean())
        maps.append(torch.einsum("c,chw->hw", torch.stack(weights), activations).relu())
    return torch.stack(maps).detach()


def test_sscam_and_iscam_paper_variants_by_hand(tiny):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([0, 2])
    noise = input_noise(x, 3, 0.4, 5, (3, 32, 32))  # tiny has 3 channels
    expected = _literal_score(tiny, x, target, lambda b, k, mask: [mask + noise[n, b, k] for n in range(3)])
    got = SSCAM(tiny, input_size=32, num_samples=3, std=0.4, seed=5)(x, target)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    coefficients = [i * (i - 1) / (2 * 4) for i in range(1, 5)]  # Σ_{j<i} j/N, N = 4
    expected = _literal_score(tiny, x, target, lambda b, k, mask: [c * mask for c in coefficients])
    got = ISCAM(tiny, input_size=32, num_samples=4)(x, target)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_noise_is_seeded_per_image(tiny):
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    noise = input_noise(x, 2, 0.3, 0)
    assert noise.shape == (2, 3, 3, 32, 32)
    torch.testing.assert_close(input_noise(x[[2, 0]], 2, 0.3, 0), noise[:, [2, 0]])  # whatever the batch
    assert not torch.equal(input_noise(x, 2, 0.3, 1), noise)
    method = SSCAM(tiny, input_size=32, num_samples=2)
    maps = method(x, [0, 1, 2])
    torch.testing.assert_close(method(x, [0, 1, 2]), maps)  # reproducible
    torch.testing.assert_close(method(x[[2, 0]], [2, 0]), maps[[2, 0]])  # an image's map, whatever its batch
    method.seed = 1
    assert not torch.equal(method(x, [0, 1, 2]), maps)


def test_model_left_untouched_and_counts(tiny):
    tiny.train()
    before = {name: p.clone() for name, p in tiny.state_dict().items()}
    for method in (SmoothGradCAMPlusPlus(tiny, input_size=32), SSCAM(tiny, input_size=32, num_samples=2),
                   ISCAM(tiny, input_size=32, num_samples=2)):
        assert method(torch.rand(2, 3, 32, 32), [0, 1]).shape == (2, 8, 8)
    assert tiny.training and all(p.grad is None and p.requires_grad for p in tiny.parameters())
    assert not tiny.conv._forward_hooks and not tiny._forward_pre_hooks
    assert all(torch.equal(before[name], value) for name, value in tiny.state_dict().items())
    assert SmoothGradCAMPlusPlus(tiny, input_size=32).passes() == 5
    assert SSCAM(tiny, input_size=32).passes() == 3 * 35 and ISCAM(tiny, input_size=32).passes() == 3 * 10


@pytest.mark.parametrize("factory, option", [
    (lambda m: SmoothGradCAMPlusPlus(m, variant="pytorch-grad-cam"), "variant"),
    (lambda m: SmoothGradCAMPlusPlus(m, num_samples=0), "num_samples"),
    (lambda m: SSCAM(m, std=-1.0), "std"),
    (lambda m: SSCAM(m, seed="x"), "seed"),
    (lambda m: ISCAM(m, variant="nope"), "variant"),
])
def test_bad_options_are_refused_in_one_line(tiny, factory, option):
    with pytest.raises(JitterCamError) as error:
        factory(tiny)
    assert str(error.value).startswith(option) and "\n" not in str(error.value)


def test_registered_and_wrappable():
    assert {"smoothgradcam++", "sscam", "iscam"} <= set(jittercam.available_methods())
    for name in ("smoothgradcam++", "sscam", "iscam"):
        assert method_class(name).layer_map
