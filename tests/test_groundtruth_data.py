"""The ground-truth dataset: deterministic from its seed, exact evidence masks, pairs at the asked separation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jittercam.errors import JitterCamError
from jittercam.groundtruth import MEAN, PATTERNS, STD, GroundTruthDataset, pattern


@pytest.fixture(scope="module")
def data() -> GroundTruthDataset:
    return GroundTruthDataset(seed=3, size=128, count=40, classes=4)


def test_same_seed_same_items_in_any_order(data):
    again = GroundTruthDataset(seed=3, size=128, count=40, classes=4)
    later = [again.item(i) for i in (7, 2, 5)]
    for it, index in zip(later, (7, 2, 5)):
        first = data.item(index)
        assert torch.equal(it.image, first.image) and torch.equal(it.mask, first.mask)
        assert it.label == first.label and it.box == first.box
    other = GroundTruthDataset(seed=4, size=128, count=40, classes=4)
    assert not torch.equal(other.item(2).image, data.item(2).image)


def test_items_are_normalised_images_with_balanced_labels(data):
    image, label, mask = data[5]
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32
    assert mask.shape == (128, 128) and mask.dtype == torch.bool
    assert label == 5 % 4
    it = data.item(5)
    pixels = image * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    torch.testing.assert_close(pixels.permute(1, 2, 0), torch.from_numpy(it.pixels), atol=1e-6, rtol=0)
    images, labels, masks = data.batch(range(8))
    assert images.shape == (8, 3, 128, 128) and labels.tolist() == [0, 1, 2, 3] * 2 and masks.shape == (8, 128, 128)


def test_masks_are_exact(data):
    distractors, sides = 0, []
    for index in range(len(data)):
        it = data.item(index)
        x, y, side = it.box
        mask = it.mask.numpy()
        assert mask.sum() == side * side and mask[y:y + side, x:x + side].all()
        assert round(data.scale[0] * data.patch[0]) <= side <= round(data.scale[1] * data.patch[1])
        sides.append(side)
        changed = (it.pixels != it.background).any(axis=2)
        assert changed[mask].all()  # every evidence pixel was painted
        outside = ~mask
        if it.distractor is not None:
            distractors += 1
            dx, dy, dside = it.distractor
            other = np.zeros_like(mask)
            other[dy:dy + dside, dx:dx + dside] = True
            assert not (other & mask).any()
            outside &= ~other
        assert not changed[outside].any()  # everything else is the background, bit for bit
    assert 0 < distractors < len(data)
    assert min(sides) < 22 and max(sides) > 28  # scales 1-2 of 14-18 px patches


def test_single_scale_setting():
    data = GroundTruthDataset(seed=3, count=20, scale=(1.0, 1.0))
    assert all(14 <= data.item(i).box[2] <= 18 for i in range(20))
    with pytest.raises(JitterCamError, match="scale"):
        GroundTruthDataset(scale=(0.5, 1.0))
    with pytest.raises(JitterCamError, match="size / 3"):
        GroundTruthDataset(size=64, patch=(12, 16), scale=(1.0, 2.0))  # 32 px: over a third of 64 px


def test_patterns_are_distinct():
    shapes = [pattern(name, 16, 4.0, np.zeros(2)) for name in PATTERNS]
    for i in range(len(shapes)):
        assert set(np.unique(shapes[i])) == {0.0, 1.0}
        for j in range(i):
            assert not np.array_equal(shapes[i], shapes[j]), (PATTERNS[i], PATTERNS[j])


@pytest.mark.parametrize("separation", [16, 17, 24, 40, 80, 112])
def test_pairs_at_the_asked_separation(data, separation):
    pair = data.pair(separation, cls=2, seed=1)
    side = pair.side
    assert side == 16 and pair.label == 2 and pair.masks.shape == (2, 128, 128)
    (x1, y1), (x2, y2) = pair.centres
    assert (x2 - x1, y2 - y1) == (separation, 0) and pair.separation == separation
    masks = pair.masks.numpy()
    assert not (masks[0] & masks[1]).any()
    for k, (cx, cy) in enumerate(pair.centres):
        rows, cols = np.nonzero(masks[k])
        assert masks[k].sum() == side * side
        assert (cols.mean() + 0.5, rows.mean() + 0.5) == (cx, cy)  # pixel i covers [i, i + 1)
    gap = int(np.nonzero(masks[1].any(0))[0].min()) - int(np.nonzero(masks[0].any(0))[0].max()) - 1
    assert gap == separation - side  # 0: touching
    changed = (pair.pixels != pair.background).any(axis=2)
    union = masks[0] | masks[1]
    assert changed[union].all() and not changed[~union].any()
    (a0, b0), (a1, b1) = [(int(cx - side / 2), int(cy - side / 2)) for cx, cy in pair.centres]
    first, second = pair.pixels[b0:b0 + side, a0:a0 + side], pair.pixels[b1:b1 + side, a1:a1 + side]
    assert np.array_equal(first, second)  # two identical patches: equal evidence, as Rayleigh's sources


def test_pairs_are_deterministic_and_checked(data):
    a, b = data.pair(30, 1, seed=5), data.pair(30, 1, seed=5)
    assert torch.equal(a.image, b.image) and a.centres == b.centres
    assert not torch.equal(a.image, data.pair(30, 1, seed=6).image)
    slanted = data.pair(30, 0, seed=5, angle=35)
    (x1, y1), (x2, y2) = slanted.centres
    assert abs(math.hypot(x2 - x1, y2 - y1) - 30) < 1 and slanted.separation == math.hypot(x2 - x1, y2 - y1)
    with pytest.raises(JitterCamError, match="overlap"):
        data.pair(15, 0)
    with pytest.raises(JitterCamError, match="fit"):
        data.pair(120, 0)
    with pytest.raises(JitterCamError, match="out of range"):
        data.pair(30, 4)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(JitterCamError, match="classes"):
        GroundTruthDataset(classes=7)
    with pytest.raises(JitterCamError):
        GroundTruthDataset(size=64, patch=(10, 30), scale=(1.0, 1.0))
    with pytest.raises(IndexError):
        GroundTruthDataset(count=3).item(3)
