"""Relevance mass and rank accuracy (Arras et al. 2022): hand-computed cases and Quantus 0.6's values."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jittercam.errors import JitterCamError
from jittercam.metrics import boxes_to_mask, energy_in_boxes, energy_in_mask, relevance_mass, relevance_rank

quantus = pytest.importorskip("quantus")


def _quantus(metric, maps: torch.Tensor, masks: torch.Tensor, absolute: bool) -> np.ndarray:
    """Quantus's scores for maps already at the masks' size (it takes no other)."""
    b, h, w = maps.shape
    score = metric(abs=absolute, disable_warnings=True)
    return np.asarray(score(model=None, x_batch=np.zeros((b, 3, h, w), np.float32), y_batch=np.zeros(b, int),
                            a_batch=maps.double().numpy()[:, None], s_batch=masks.numpy()[:, None].astype(np.float32)))


def test_hand_computed_mass_and_rank():
    maps = torch.tensor([[[3.0, 2.0, 1.0], [0.0, 0.0, 0.0]]])
    masks = torch.tensor([[[1, 0, 0], [0, 1, 0]]], dtype=torch.bool)
    assert relevance_mass(maps, masks).tolist() == [0.5]  # 3 of 6
    assert relevance_rank(maps, masks).tolist() == [0.5]  # K = 2: the 3 (inside) and the 2 (outside)


def test_ties_at_the_kth_value():
    maps = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    masks = torch.tensor([[[0, 1, 1], [0, 0, 0]]], dtype=torch.bool)
    # K = 2: the 1 (outside), then one of the five tied zeros, two of which are inside: 2/5 expected hits
    assert relevance_rank(maps, masks).item() == pytest.approx(0.2)
    assert relevance_rank(maps, masks, ties="first").item() == 0.5  # row-major: pixel (0, 1), inside
    assert relevance_mass(maps, masks).item() == 0.0


def test_all_zero_map_and_empty_mask():
    zeros = torch.zeros(2, 2, 3)
    masks = torch.tensor([[[1, 0, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]], dtype=torch.bool)
    mass, rank = relevance_mass(zeros, masks), relevance_rank(zeros, masks)
    assert mass[0].item() == 0.0 and rank[0].item() == pytest.approx(2 / 6)  # no relevance: 0; rank: chance
    assert relevance_rank(zeros, masks, ties="first")[0].item() == 0.5  # pixels (0, 0) and (0, 1)
    assert math.isnan(mass[1]) and math.isnan(rank[1])  # an empty mask: missing, as Quantus
    for relevance in ("signed", "abs"):
        assert relevance_mass(zeros, masks, relevance=relevance)[0].item() == 0.0


def test_which_relevance_counts():
    maps = torch.tensor([[[2.0, -1.0], [-3.0, 1.0]]])
    masks = torch.tensor([[[0, 1], [1, 0]]], dtype=torch.bool)
    assert relevance_mass(maps, masks).item() == 0.0  # positive: 0 of 3 inside
    assert relevance_mass(maps, masks, relevance="signed").item() == 4.0  # -4 / -1
    assert relevance_mass(maps, masks, relevance="abs").item() == pytest.approx(4 / 7)
    assert relevance_rank(maps, masks).item() == 0.0  # K = 2: the 2 and the 1, both outside
    assert relevance_rank(maps, masks, relevance="signed").item() == 0.0
    assert relevance_rank(maps, masks, relevance="abs").item() == 0.5  # |-3| (inside), then 2 (outside)


@pytest.mark.parametrize("relevance, absolute", [("signed", False), ("abs", True), ("positive", False)])
def test_equals_quantus_on_random_maps(relevance, absolute):
    generator = torch.Generator().manual_seed(3)
    maps = torch.randn(4, 24, 20, generator=generator, dtype=torch.float64)
    # clipped, about half the pixels tie at 0: masks smaller than that keep the K-th value above the tie
    shares = [0.1, 0.2, 0.3, 0.4] if relevance == "positive" else [0.1, 0.3, 0.5, 0.8]
    masks = torch.rand(4, 24, 20, generator=generator) < torch.tensor(shares).view(4, 1, 1)
    given = maps.clamp_min(0) if relevance == "positive" else maps  # the authors' "sum,pos" heatmap
    expected_mass = _quantus(quantus.RelevanceMassAccuracy, given, masks, absolute)
    expected_rank = _quantus(quantus.RelevanceRankAccuracy, given, masks, absolute)
    np.testing.assert_allclose(relevance_mass(maps, masks, relevance=relevance).numpy(), expected_mass, rtol=1e-10)
    np.testing.assert_allclose(relevance_rank(maps, masks, relevance=relevance).numpy(), expected_rank, rtol=1e-10)


def test_low_resolution_maps_are_resized_to_the_mask():
    generator = torch.Generator().manual_seed(5)
    maps = torch.rand(3, 7, 7, generator=generator)
    masks = torch.rand(3, 56, 64, generator=generator) < 0.4
    big = F.interpolate(maps[:, None], size=(56, 64), mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(relevance_mass(maps, masks).numpy(),
                               _quantus(quantus.RelevanceMassAccuracy, big, masks, False), rtol=1e-5)
    np.testing.assert_allclose(relevance_rank(maps, masks).numpy(),
                               _quantus(quantus.RelevanceRankAccuracy, big, masks, False), rtol=1e-5)


def test_boxes_and_energy():
    generator = torch.Generator().manual_seed(7)
    maps = torch.randn(2, 7, 7, generator=generator)
    boxes = [torch.tensor([[2.0, 3.0, 20.0, 25.0]]), torch.tensor([[0.0, 0.0, 5.0, 5.0], [10.0, 12.0, 31.0, 31.0]])]
    masks = boxes_to_mask(boxes, 32)
    torch.testing.assert_close(relevance_mass(maps, masks), energy_in_boxes(maps, boxes, 32))
    torch.testing.assert_close(relevance_mass(maps, masks), energy_in_mask(maps, masks))
    rank = relevance_rank(maps, masks)
    assert rank.shape == (2,) and rank.dtype == maps.dtype and bool(((rank >= 0) & (rank <= 1)).all())


def test_a_perfect_map_scores_one():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    maps = masks.float() * 0.7
    assert relevance_mass(maps, masks).item() == 1.0 and relevance_rank(maps, masks).item() == 1.0
    assert relevance_rank(1 - maps, masks).item() == 0.0


@pytest.mark.parametrize("call, option", [
    (lambda m, k: relevance_mass(m, k, relevance="negative"), "relevance"),
    (lambda m, k: relevance_rank(m, k, ties="random"), "ties"),
])
def test_unknown_options_are_refused(call, option):
    with pytest.raises(JitterCamError) as raised:
        call(torch.rand(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool))
    assert raised.value.option == option and len(str(raised.value).splitlines()) == 1


def test_masks_must_match_the_maps():
    with pytest.raises(JitterCamError, match="masks for"):
        relevance_rank(torch.rand(2, 4, 4), torch.ones(3, 4, 4, dtype=torch.bool))
    with pytest.raises(JitterCamError, match="masks must be"):
        relevance_mass(torch.rand(2, 4, 4), torch.ones(4, 4, dtype=torch.bool))
