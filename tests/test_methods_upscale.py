"""Upscale-CAM: the base method once on Jitter-CAM's enlarged input, a map of Jitter-CAM's size."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import jittercam
from jittercam import GradCAM, GradCAMPlusPlus, JitterCAM, JitterCamError
from jittercam.methods import CAMMethod, check_method_name
from jittercam.methods.upscale import UpscaleCAM


@pytest.mark.parametrize("size", [None, 8, 11, 16])
def test_same_size_as_jittercam_on_the_tiny_cnn(tiny, size):
    x = torch.rand(2, 3, 32, 32)  # m = 8
    upscale = UpscaleCAM(tiny, size=size, input_size=32)(x, [0, 3])
    jitter = JitterCAM(tiny, size=size, input_size=32)(x, [0, 3])
    assert upscale.shape == jitter.shape == (2, size or 16, size or 16)
    assert torch.isfinite(upscale).all() and (upscale >= 0).all()


def test_same_size_as_jittercam_on_lite0(lite0, goldfish_batch):
    gradcam = GradCAM(lite0)  # m = 7, k = 32
    upscale = UpscaleCAM(lite0, gradcam, size=9)(goldfish_batch, 1)
    jitter = JitterCAM(lite0, gradcam, size=9)(goldfish_batch, 1)
    assert upscale.shape == jitter.shape == (1, 9, 9) and upscale.max() > 0
    # the default doubles m as Jitter-CAM's does (README: 14 x 14), from one pass of 224 + 7·32 = 448 px
    assert UpscaleCAM(lite0, gradcam)(goldfish_batch, 1).shape == (1, 14, 14)


def test_size_m_is_exactly_the_base(tiny, lite0, goldfish_batch):
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(UpscaleCAM(tiny, size=8, input_size=32)(x), GradCAM(tiny, input_size=32)(x))
    base = GradCAMPlusPlus(lite0)
    assert torch.equal(UpscaleCAM(lite0, base, size=7)(goldfish_batch, 1), base(goldfish_batch, 1))


def test_the_base_explains_the_enlarged_image(tiny):
    """On a real model: Upscale-CAM is Grad-CAM of the image enlarged to 32 + 8·4 = 64 px."""
    x = torch.rand(2, 3, 32, 32)
    big = F.interpolate(x, size=64, mode="bilinear", align_corners=False)
    gradcam = GradCAM(tiny, input_size=32)
    torch.testing.assert_close(UpscaleCAM(tiny, gradcam, size=16)(x, [1, 2]), gradcam(big, [1, 2]))


class Recorder(CAMMethod):
    """A stub base (m = 4 at 16 px, k = 4) that records what it is given; its map is the first channel
    sampled every k pixels, so it has (pixels / k) cells, and `passes` reports the pixels it is asked for."""

    def __init__(self):
        self.layer = jittercam.TargetLayer("stub", nn.Identity(), 0, 16, 4, 4, 5)
        self.batch_size, self.seen = None, []

    def _explain(self, images, target):
        self.seen.append((images.clone(), target.clone()))
        return images[:, 0, ::4, ::4].clone()

    def passes(self, input_size=None):
        return input_size


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_the_base_sees_jitters_enlarged_input_and_the_original_top1(tiny, interpolation):
    x = torch.rand(3, 3, 16, 16)
    base = Recorder()
    got = UpscaleCAM(tiny, base, size=7, interpolation=interpolation)(x)
    (seen, target), = base.seen  # one call for the whole batch: d = 3, 16 + 3·4 = 28 px
    align = False if interpolation == "bilinear" else None
    torch.testing.assert_close(seen, F.interpolate(x, size=28, mode=interpolation, align_corners=align), rtol=0, atol=0)
    assert torch.equal(target, tiny(x).argmax(dim=1))  # the class of the original, not the enlarged image
    assert got.shape == (3, 7, 7) and torch.equal(got, seen[:, 0, ::4, ::4])


def test_passes_are_the_bases_at_the_enlarged_size(tiny):
    assert UpscaleCAM(tiny, Recorder(), size=7).passes() == 28
    assert UpscaleCAM(tiny, Recorder(), size=4).passes() == 16
    assert UpscaleCAM(tiny, input_size=32).passes() == 1  # one Grad-CAM pass, of 64² instead of 32² pixels


class Unpadded(nn.Module):
    """Two unpadded stride-2 convolutions: m = 7 at 32 px (k = round(32 / 7) = 5), but 16 (not 14) at
    32 + 7·5 = 67 px — the geometry that makes Inception v3 give 17 x 17 instead of 16 x 16 at 595 px."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.ReLU())
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_an_odd_geometry_is_resized_to_jitters_size():
    torch.manual_seed(0)
    model = Unpadded().eval()
    x = torch.rand(1, 3, 32, 32)
    gradcam = GradCAM(model, input_size=32)
    assert (gradcam.layer.map_size, gradcam.layer.stride) == (7, 5)
    big = gradcam(F.interpolate(x, size=67, mode="bilinear", align_corners=False), 2)
    assert big.shape == (1, 16, 16)
    got = UpscaleCAM(model, gradcam, size=14)(x, 2)
    expected = F.interpolate(big[:, None], size=14, mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(got, expected)
    assert got.shape == JitterCAM(model, gradcam, size=14)(x, 2).shape


def test_registry_and_refusals(tiny):
    method = jittercam.create("upscale", tiny, input_size=32, size=12, batch_size=2)
    assert isinstance(method, UpscaleCAM) and isinstance(method.base, GradCAM)
    assert (method.size, method.batch_size, method.base.batch_size) == (12, 2, 2)
    assert isinstance(jittercam.create("upscale:gradcam++", tiny, input_size=32).base, GradCAMPlusPlus)
    assert repr(method).startswith("UpscaleCAM(base=GradCAM(target_layer='act'")
    with pytest.raises(JitterCamError, match="smaller than the map size m=8"):
        UpscaleCAM(tiny, size=7, input_size=32)
    with pytest.raises(JitterCamError, match="interpolation"):
        UpscaleCAM(tiny, input_size=32, interpolation="bicubic")
    with pytest.raises(JitterCamError, match="out of range"):
        UpscaleCAM(tiny, input_size=32)(torch.rand(1, 3, 32, 32), 5)
    with pytest.raises(JitterCamError, match="target layer's resolution"):  # its map is m + d, not m
        check_method_name("jittercam:upscale")
