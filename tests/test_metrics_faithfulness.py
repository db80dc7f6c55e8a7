"""Average Drop / Increase in Confidence on models with known outputs."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import jittercam
from jittercam.errors import JitterCamError
from jittercam.metrics import (
    EXPANSION_ALPHAS,
    average_drop,
    constant_baseline,
    expand_explanation,
    expansion_faithfulness,
    faithfulness,
    improvement,
    increase_in_confidence,
)
from jittercam.models import IMAGENET_MEAN, IMAGENET_STD, ModelCard, attach_card, attached_card

NO_NORM = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # pixels = input tensor


class MeanLogit(nn.Module):
    """Logits (mean of the input, 0): the softmax score of class 0 is sigmoid(mean)."""

    def forward(self, x):
        v = x.mean(dim=(1, 2, 3))
        return torch.stack([v, torch.zeros_like(v)], dim=1)


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def half_map() -> torch.Tensor:
    return torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # top half kept


def test_known_outputs():
    images = torch.full((1, 3, 4, 4), 0.5)
    f = faithfulness(MeanLogit(), images, half_map(), target=0, **NO_NORM)
    assert float(f.original) == pytest.approx(sigmoid(0.5))
    # the 2x2 map upsampled to 4x4 and min-max scaled: rows 0-3 weigh 1, 0.75, 0.25, 0
    assert float(f.masked) == pytest.approx(sigmoid(0.5 * 2 / 4))
    drop = (sigmoid(0.5) - sigmoid(0.25)) / sigmoid(0.5) * 100
    assert float(average_drop(f.original, f.masked)) == pytest.approx(drop, rel=1e-5)
    assert float(increase_in_confidence(f.original, f.masked)) == 0


def masked_by_hand(maps: torch.Tensor, size: int) -> torch.Tensor:
    """The (B, 1, S, S) multiplier: bilinear resize, then min-max per map, written out by hand."""
    up = F.interpolate(maps.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)
    low = up.amin(dim=(2, 3), keepdim=True)
    return (up - low) / (up.amax(dim=(2, 3), keepdim=True) - low)


def test_pixel_multiplication_with_the_card_equals_pixel_space_by_hand(tiny):
    # the convention: images are the model's input tensors; 'pixel' masks their [0, 1] pixels
    attach_card(tiny, ModelCard("tiny", input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    torch.manual_seed(1)
    pixels = torch.rand(3, 3, 32, 32)
    x = (pixels - 0.5) / 0.5
    maps = torch.rand(3, 8, 8)
    assert attached_card(tiny).mean == (0.5, 0.5, 0.5)
    f = faithfulness(tiny, x, maps, target=torch.tensor([0, 3, 4]), batch_size=2)
    mask = masked_by_hand(maps, 32)
    with torch.no_grad():
        y = tiny(x).softmax(1)
        o = tiny((pixels * mask - 0.5) / 0.5).softmax(1)
    rows = torch.arange(3)
    torch.testing.assert_close(f.original, y[rows, [0, 3, 4]])
    torch.testing.assert_close(f.masked, o[rows, [0, 3, 4]])
    # the same numbers from the explicit mean/std, and under inference mode
    with torch.inference_mode():
        g = faithfulness(tiny, x, maps, target=torch.tensor([0, 3, 4]), mean=(0.5,) * 3, std=(0.5,) * 3)
    torch.testing.assert_close(g.masked, f.masked)


def test_explicit_mean_std_override_the_card(tiny):
    attach_card(tiny, ModelCard("tiny", input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32)
    maps = torch.rand(2, 8, 8)
    mean, std = (0.2, 0.3, 0.4), (0.5, 0.25, 0.5)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    mask = masked_by_hand(maps, 32)
    with torch.no_grad():
        expect = tiny(((x * s + m) * mask - m) / s).softmax(1)[:, 2]
        from_card = tiny(((x * 0.5 + 0.5) * mask - 0.5) / 0.5).softmax(1)[:, 2]
    both = faithfulness(tiny, x, maps, target=2, mean=mean, std=std)
    torch.testing.assert_close(both.masked, expect)
    assert not torch.allclose(both.masked, from_card)
    # each one left None comes from the card
    only_mean = faithfulness(tiny, x, maps, target=2, mean=mean)
    with torch.no_grad():
        torch.testing.assert_close(only_mean.masked, tiny(((x * 0.5 + m) * mask - m) / 0.5).softmax(1)[:, 2])


def test_no_card_and_no_mean_std_raises():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 4)).eval()  # a user's model: no jittercam card
    assert attached_card(model) is None  # (model_card would make up ImageNet defaults)
    x, maps = torch.randn(1, 3, 4, 4), torch.rand(1, 2, 2)
    for kwargs in ({}, {"mean": (0.5, 0.5, 0.5)}, {"std": (0.5, 0.5, 0.5)}):
        with pytest.raises(JitterCamError, match=r"pass mean= and std= \(the model has no jittercam card\)"):
            faithfulness(model, x, maps, **kwargs)
        with pytest.raises(JitterCamError, match="no jittercam card"):
            expansion_faithfulness(model, x, maps, alphas=(1.0,), **kwargs)
    # masking the input tensor needs no pixel space, hence no card
    faithfulness(model, x, maps, multiply="input")


def test_input_multiplication_equals_hand_computation(tiny):
    # pytorch-grad-cam's variant: the input tensor itself is multiplied (towards the mean colour)
    attach_card(tiny, ModelCard("tiny", input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32)
    maps = torch.rand(2, 4, 4)
    f = faithfulness(tiny, x, maps, target=1, multiply="input", mean=(9.0,) * 3, std=(9.0,) * 3)
    with torch.no_grad():
        expect = tiny(x * masked_by_hand(maps, 32)).softmax(1)[:, 1]
    torch.testing.assert_close(f.masked, expect)
    assert not torch.allclose(f.masked, faithfulness(tiny, x, maps, target=1).masked)


def test_default_target_is_top1():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 4)).eval()
    images = torch.randn(3, 3, 4, 4)
    f = faithfulness(model, images, torch.rand(3, 4, 4), batch_size=2, **NO_NORM)
    with torch.no_grad():
        probs = model(images).softmax(1)  # the images are scored as given: they are the model's input
    assert torch.equal(f.target, probs.argmax(1))
    torch.testing.assert_close(f.original, probs.max(1).values)


def test_real_model_uses_its_card(lite0, goldfish_batch):
    # EfficientNet-Lite0 wants 0.5/0.5, not ImageNet's: the attached card supplies it
    maps = jittercam.create("gradcam", lite0)(goldfish_batch)
    f = faithfulness(lite0, goldfish_batch, maps, target=1)
    g = faithfulness(lite0, goldfish_batch, maps, target=1, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert torch.equal(f.masked, g.masked) and float(f.original) > 0.8  # goldfish, 0.88 with the right card
    imagenet = faithfulness(lite0, goldfish_batch, maps, target=1, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert torch.equal(imagenet.original, f.original) and float((imagenet.masked - f.masked).abs()) > 1e-3


def test_aggregates_by_hand():
    y = torch.tensor([0.5, 0.4, 0.8])
    o = torch.tensor([0.25, 0.6, 0.8])
    assert float(average_drop(y, o)) == pytest.approx(100 * 0.5 / 3)
    assert float(increase_in_confidence(y, o)) == pytest.approx(100 / 3)
    count, gain = improvement(y, o)
    assert count == 1 and gain == pytest.approx(0.2)
    assert improvement(y, y) == (0, 0.0)
    # one column per expansion factor
    o2 = torch.stack([o, y + 0.1], dim=1)
    assert average_drop(y, o2).shape == (2,) and increase_in_confidence(y, o2).tolist() == pytest.approx([100 / 3, 100])


def test_expand_explanation():
    m = torch.tensor([[[0.0, 0.2], [0.5, 1.0]]])
    out = expand_explanation(m, 2.0)
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.4], [1 - 1e-4, 1 - 1e-4]]]))
    torch.testing.assert_close(expand_explanation(m * 7 + 3, 2.0), out)  # units do not matter
    assert (expand_explanation(m, 0.0) == 0).all()
    assert EXPANSION_ALPHAS[0] == 0 and EXPANSION_ALPHAS[-1] == 10 and len(EXPANSION_ALPHAS) == 21


def test_expansion_faithfulness_matches_single_runs():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 4, 4)
    maps = torch.rand(2, 4, 4)
    model = MeanLogit()
    r = expansion_faithfulness(model, images, maps, target=0, alphas=(0.5, 3.0), **NO_NORM)
    assert r.masked.shape == (2, 2)
    for k, a in enumerate((0.5, 3.0)):
        single = faithfulness(model, images, expand_explanation(maps, a), target=0, **NO_NORM)
        torch.testing.assert_close(r.masked[:, k], single.masked)
        torch.testing.assert_close(r.original, single.original)


def test_constant_baseline():
    maps = constant_baseline(4, (5, 6), generator=torch.Generator().manual_seed(0))
    assert maps.shape == (4, 5, 6)
    flat = maps.flatten(1)
    assert ((flat == 1).sum(1) == 1).all() and ((flat == 0).sum(1) == 1).all()
    assert torch.isclose(flat, torch.tensor(0.9)).sum(1).tolist() == [28] * 4


def test_bad_inputs():
    model = MeanLogit()
    with pytest.raises(JitterCamError, match="1 maps for 2 images"):
        faithfulness(model, torch.rand(2, 3, 4, 4), torch.rand(1, 2, 2), **NO_NORM)
    for old in ("logits", "normalized"):  # 'normalized' was renamed 'input'
        with pytest.raises(JitterCamError, match="multiply must be 'pixel' or 'input'"):
            faithfulness(model, torch.rand(1, 3, 4, 4), torch.rand(1, 2, 2), multiply=old, **NO_NORM)
    with pytest.raises(JitterCamError, match="out of range"):
        faithfulness(model, torch.rand(1, 3, 4, 4), torch.rand(1, 2, 2), target=2, **NO_NORM)
    with pytest.raises(JitterCamError, match="std must not contain zeros"):
        faithfulness(model, torch.rand(1, 3, 4, 4), torch.rand(1, 2, 2), mean=(0.5,) * 3, std=(0.5, 0.0, 0.5))
    with pytest.raises(JitterCamError, match=r"\(N,\)"):
        average_drop(torch.rand(3), torch.rand(2))
