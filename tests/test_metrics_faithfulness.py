"""Average Drop / Increase in Confidence on models with known outputs."""
import math

import pytest
import torch
from torch import nn

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

NO_NORM = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


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


def test_pixel_space_then_normalise_vs_normalised_tensor():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 4, 4)
    maps = torch.rand(2, 2, 2)
    mean, std = (0.2, 0.3, 0.4), (0.5, 0.25, 0.5)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    from jittercam.maps import upsample

    mask = upsample(maps, (4, 4)).unsqueeze(1)
    model = MeanLogit()
    pixel = faithfulness(model, images, maps, target=1, mean=mean, std=std)
    normed = faithfulness(model, images, maps, target=1, mean=mean, std=std, multiply="normalized")
    expect = lambda x: model(x).softmax(1)[:, 1]  # noqa: E731
    torch.testing.assert_close(pixel.original, expect((images - m) / s))
    torch.testing.assert_close(pixel.masked, expect((images * mask - m) / s))
    torch.testing.assert_close(normed.masked, expect((images - m) / s * mask))


def test_default_target_is_top1_and_imagenet_normalisation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 4)).eval()
    images = torch.rand(3, 3, 4, 4)
    f = faithfulness(model, images, torch.rand(3, 4, 4), batch_size=2)
    m = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    s = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model((images - m) / s).softmax(1)
    assert torch.equal(f.target, probs.argmax(1))
    torch.testing.assert_close(f.original, probs.max(1).values)


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
    with pytest.raises(JitterCamError, match=r"pixel-space images in \[0, 1\]"):
        faithfulness(model, torch.randn(1, 3, 4, 4) * 3, torch.rand(1, 2, 2))
    with pytest.raises(JitterCamError, match="1 maps for 2 images"):
        faithfulness(model, torch.rand(2, 3, 4, 4), torch.rand(1, 2, 2))
    with pytest.raises(JitterCamError, match="multiply"):
        faithfulness(model, torch.rand(1, 3, 4, 4), torch.rand(1, 2, 2), multiply="logits")
    with pytest.raises(JitterCamError, match="out of range"):
        faithfulness(model, torch.rand(1, 3, 4, 4), torch.rand(1, 2, 2), target=2)
    with pytest.raises(JitterCamError, match=r"\(N,\)"):
        average_drop(torch.rand(3), torch.rand(2))
