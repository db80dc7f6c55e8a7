"""Score-CAM: the authors' definition by hand, pytorch-grad-cam's variant against pytorch-grad-cam, batching."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import jittercam
from jittercam import JitterCamError
from jittercam.methods.scorecam import ScoreCAM


class CountingForwards:
    """Counts the images that go through `model.conv` (a forward hook, removed on leaving)."""

    def __init__(self, module):
        self.module, self.images = module, 0

    def __enter__(self):
        self.handle = self.module.register_forward_hook(self._count)
        return self

    def _count(self, _module, inputs, _output):
        self.images += inputs[0].shape[0]

    def __exit__(self, *_):
        self.handle.remove()


def _constant_channel(tiny) -> None:
    """Channel 0 of the tiny CNN gives ReLU(0) = 0 everywhere: a constant map."""
    with torch.no_grad():
        tiny.conv.weight[0].zero_()
        tiny.conv.bias[0] = -1.0


def _literal(tiny, x, target, variant):
    """Score-CAM written out channel by channel, as the authors' loop (paper) or pytorch-grad-cam does."""
    maps = []
    for image, cls in zip(x, target):
        image = image[None]
        activations = tiny.act(tiny.conv(image))[0].detach()
        scores, kept = [], []
        for channel in activations:
            upsampled = F.interpolate(
                channel[None, None], size=32, mode="bilinear", align_corners=variant != "paper"
            )
            low, high = upsampled.min(), upsampled.max()
            if variant == "paper":
                if high == low:
                    continue  # the authors' code skips a constant channel
                logits = tiny(image * (upsampled - low) / (high - low))
                scores.append(logits.softmax(dim=1)[0, cls])
            else:
                scores.append(tiny(image * (upsampled - low) / (high - low + 1e-8))[0, cls])
            kept.append(channel)
        weights = torch.stack(scores)
        if variant != "paper":
            weights = weights.softmax(dim=0)
        maps.append(torch.einsum("c,chw->hw", weights, torch.stack(kept)).relu())
    return torch.stack(maps).detach()


@pytest.mark.parametrize("variant", ["paper", "pytorch-grad-cam"])
def test_by_hand_on_the_tiny_cnn(tiny, variant):
    _constant_channel(tiny)
    x = torch.rand(2, 3, 32, 32)
    target = [1, 3]
    method = ScoreCAM(tiny, input_size=32, variant=variant)
    with CountingForwards(tiny.conv) as counter:
        got = method(x, target)
    torch.testing.assert_close(got, _literal(tiny, x, target, variant), rtol=1e-5, atol=1e-7)
    # 2 images x 3 channels, plus the forward to the layer; the paper variant skips the constant channel
    assert counter.images == 2 + (2 * 2 if variant == "paper" else 2 * 3)
    assert method.passes() == 3


def test_paper_weights_are_class_probabilities():
    """One channel only: the map is p_c(x * mask) * A, with p the class-softmax probability."""
    from conftest import TinyCNN

    torch.manual_seed(1)
    tiny = TinyCNN(channels=1).eval()
    x = torch.rand(1, 3, 32, 32)
    activations = tiny.act(tiny.conv(x)).detach()
    mask = F.interpolate(activations, size=32, mode="bilinear", align_corners=False)
    mask = (mask - mask.min()) / (mask.max() - mask.min())
    probability = tiny(x * mask).softmax(dim=1)[0, 2]
    got = ScoreCAM(tiny, input_size=32)(x, 2)
    torch.testing.assert_close(got, (probability * activations[:, 0]).detach(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("variant", ["paper", "pytorch-grad-cam"])
def test_batched_equals_one_by_one_and_targets_per_image(tiny, variant):
    x = torch.rand(3, 3, 32, 32)
    together = ScoreCAM(tiny, input_size=32, variant=variant, batch_size=5)(x, [0, 4, 2])
    one = ScoreCAM(tiny, input_size=32, variant=variant, batch_size=1)
    alone = torch.cat([one(x[i : i + 1], t) for i, t in enumerate([0, 4, 2])])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-7)
    # each image is explained for its own class
    assert not torch.allclose(one(x[:1], 0), one(x[:1], 4))


def test_agrees_with_pytorch_grad_cam_in_its_variant():
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = jittercam.load_model("resnet18", weights="random")
    x = torch.randn(1, 3, 64, 64)
    target = 7
    peer = pytorch_grad_cam.ScoreCAM(model=model, target_layers=[model.layer4])
    peer.batch_size = 64
    expected = torch.from_numpy(peer(input_tensor=x, targets=[ClassifierOutputTarget(target)])).float()
    method = ScoreCAM(model, "layer4", variant="pytorch-grad-cam", batch_size=64)
    got = jittercam.upsample(method(x, target), 64)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert method.passes() == 512


def test_bad_variant_is_refused(tiny):
    with pytest.raises(JitterCamError, match="variant must be one of"):
        ScoreCAM(tiny, input_size=32, variant="grad-cam")
