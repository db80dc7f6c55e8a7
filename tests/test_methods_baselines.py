"""The paper's baselines (centre, random, constant): exact small maps, seeding, the contract."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import jittercam
from jittercam import JitterCamError
from jittercam.methods.baselines import (
    CentreBaseline,
    ConstantBaseline,
    RandomBaseline,
    constant_pixels,
    radial_map,
    random_points,
)

NAMES = ("centre", "random", "constant")


class NoForward(nn.Module):
    """A model the baselines must never run."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a baseline ran the model")


def test_centre_by_hand_on_5x5():
    maps = CentreBaseline(NoForward())(torch.rand(2, 3, 5, 5), 7)
    expected = torch.tensor(
        [[1 - math.hypot(i - 2, j - 2) / math.sqrt(8) for j in range(5)] for i in range(5)], dtype=torch.float32
    )
    assert maps.shape == (2, 5, 5) and maps.dtype == torch.float32
    torch.testing.assert_close(maps[0], expected, rtol=0, atol=1e-7)
    assert torch.equal(maps[0], maps[1])
    assert maps[0, 2, 2] == 1 and (maps[0] < 1).sum() == 24  # one peak, at the centre
    assert maps[0, 0, 0] == maps[0, 0, 4] == maps[0, 4, 0] == maps[0, 4, 4] == 0
    assert maps[0, 2, 3].item() == pytest.approx(1 - 1 / math.sqrt(8))
    for symmetric in (maps[0].flip(0), maps[0].flip(1), maps[0].T):
        assert torch.equal(symmetric, maps[0])


def test_centre_of_an_even_and_non_square_image():
    maps = CentreBaseline(NoForward())(torch.rand(1, 3, 4, 6))[0]
    assert maps.shape == (4, 6)
    peak = maps.max()
    assert torch.equal(maps[1:3, 2:4], torch.full((2, 2), peak.item()))  # centre (1.5, 2.5) between 4 pixels
    assert (maps == peak).sum() == 4 and divmod(int(maps.argmax()), 6) == (1, 2)
    assert maps.min() == 0 and torch.equal(maps, maps.flip(0)) and torch.equal(maps, maps.flip(1))
    # distances in pixels, round on a non-square image: (0, 2) and (1, 1) are both ~1.58 from the centre
    assert maps[0, 2] == maps[1, 1]
    assert maps[0, 2].item() == pytest.approx(1 - math.hypot(1.5, 0.5) / math.hypot(1.5, 2.5))


def test_radial_maps_span_0_to_1_so_upsample_keeps_them():
    for method in (CentreBaseline(NoForward()), RandomBaseline(NoForward())):
        maps = method(torch.rand(3, 3, 9, 13))
        assert torch.equal(maps.flatten(1).max(1).values, torch.ones(3))
        assert torch.equal(maps.flatten(1).min(1).values, torch.zeros(3))
        torch.testing.assert_close(jittercam.upsample(maps, (9, 13)), maps, rtol=0, atol=1e-7)


def test_random_peaks_at_the_drawn_point():
    x = torch.rand(6, 3, 11, 7)
    points = random_points(x, seed=4)
    maps = RandomBaseline(NoForward(), seed=4)(x, [0, 1, 2, 3, 4, 5])
    for map_, (row, column) in zip(maps, points.tolist()):
        assert map_[row, column] == 1 and (map_ == 1).sum() == 1
        farthest = max(math.hypot(i - row, j - column) for i in range(11) for j in range(7))
        assert map_[0, 0].item() == pytest.approx(1 - math.hypot(row, column) / farthest)
    torch.testing.assert_close(maps, radial_map(11, 7, points))


def test_random_is_seeded_and_differs_per_image():
    x = torch.rand(8, 3, 16, 16)
    first = RandomBaseline(NoForward(), seed=1)(x)
    method = RandomBaseline(NoForward(), seed=1)
    assert torch.equal(method(x), first) and torch.equal(method(x), first)  # every call alike
    assert not torch.equal(RandomBaseline(NoForward(), seed=2)(x), first)
    assert len({int(i) for i in first.flatten(1).argmax(1)}) > 1  # not one point for the whole batch
    # an image gets its map whatever batch it is in and whatever batch_size splits the batch
    assert torch.equal(RandomBaseline(NoForward(), seed=1, batch_size=3)(x), first)
    assert torch.equal(RandomBaseline(NoForward(), seed=1)(x[[5, 2]]), first[[5, 2]])
    assert torch.equal(RandomBaseline(NoForward(), seed=1)(x.double().float()), first)
    # the same image twice gets the same point (the draw is keyed by the image's values)
    twice = RandomBaseline(NoForward(), seed=1)(x[[0, 0]])
    assert torch.equal(twice[0], twice[1])


def test_constant_is_0_9_with_one_1_and_one_0():
    maps = ConstantBaseline(NoForward())(torch.rand(4, 3, 6, 5), 3)
    assert maps.shape == (4, 6, 5)
    nine = torch.tensor(0.9)
    for map_ in maps:
        assert (map_ == 1).sum() == 1 and (map_ == 0).sum() == 1 and (map_ == nine).sum() == 28
    # min-max scaling keeps it near-constant: exactly the same map at the same size
    assert torch.equal(jittercam.upsample(maps, (6, 5)), maps)
    assert torch.equal(jittercam.minmax(maps), maps)
    # resized, the plateau stays flat (near 0.9: bilinear sampling misses the exact 0 and 1)
    up = jittercam.upsample(ConstantBaseline(NoForward())(torch.rand(4, 3, 20, 20)), (100, 100))
    for map_ in up:
        values, counts = map_.unique(return_counts=True)
        plateau = values[counts.argmax()]
        assert counts.max() > 0.9 * map_.numel() and 0.85 < plateau < 0.95


def test_constant_is_seeded_and_its_pixels_vary_per_image():
    x = torch.rand(6, 3, 16, 16)
    first = ConstantBaseline(NoForward())(x)
    pixels = constant_pixels(x)
    assert torch.equal(first.flatten(1).argmax(1), pixels[:, 0])
    assert torch.equal(first.flatten(1).argmin(1), pixels[:, 1])
    assert torch.equal(ConstantBaseline(NoForward(), seed=0, batch_size=1)(x), first)
    assert torch.equal(ConstantBaseline(NoForward())(x[3:]), first[3:])
    assert not torch.equal(ConstantBaseline(NoForward(), seed=3)(x), first)
    assert len({int(i) for i in first.flatten(1).argmax(1)}) > 1
    two = ConstantBaseline(NoForward())(torch.rand(5, 3, 1, 2))  # the smallest image: both pixels taken
    assert torch.equal(two.sort(dim=-1).values, torch.tensor([[[0.0, 1.0]]]).expand(5, 1, 2))
    with pytest.raises(JitterCamError, match="at least 2 pixels"):
        ConstantBaseline(NoForward())(torch.rand(1, 3, 1, 1))


@pytest.mark.parametrize("name", NAMES)
def test_contract(name, tiny):
    method = jittercam.create(name, tiny)
    assert not method.uses_layer and not method.layer_map and method.layer is None and method.passes() == 0
    x = torch.rand(2, 3, 20, 24)
    maps = method(x, [1, 2])
    assert maps.shape == (2, 20, 24) and maps.dtype == torch.float32
    with torch.inference_mode():
        assert torch.equal(method(x.clone()), maps)  # the target is ignored
    in_double = jittercam.create(name, NoForward().double())(x.double(), 0)
    assert in_double.dtype == torch.float64
    with pytest.raises(JitterCamError, match="out of range"):
        method(torch.rand(2, 3, 8, 8), -1)
    with pytest.raises(JitterCamError, match="3 targets"):
        method(torch.rand(2, 3, 8, 8), [0, 1, 2])
    with pytest.raises(JitterCamError, match="must hold integer"):
        method(torch.rand(2, 3, 8, 8), [0.5, 1.0])
    with pytest.raises(JitterCamError, match="RGB"):
        method(torch.rand(2, 8, 8))
    # the model's number of classes is unknown without a forward pass: a large index is not checked
    assert method(torch.rand(1, 3, 8, 8), 10**6).shape == (1, 8, 8)
    with pytest.raises(JitterCamError, match="does not use a target layer"):
        jittercam.create(name, tiny, target_layer="conv")
    with pytest.raises(JitterCamError, match="target layer's resolution"):
        jittercam.create(f"jittercam:{name}", tiny)
    assert name in jittercam.available_methods()


def test_options_and_repr(tiny):
    assert repr(CentreBaseline(tiny)) == "CentreBaseline()"
    assert repr(jittercam.create("random", tiny, seed=3)) == "RandomBaseline(seed=3)"
    assert repr(jittercam.create("constant", tiny)) == "ConstantBaseline(seed=0)"
    with pytest.raises(JitterCamError, match="seed"):
        RandomBaseline(tiny, seed=1.5)
    with pytest.raises(JitterCamError, match="has no option 'seed'"):
        jittercam.create("centre", tiny, seed=1)
    fresh = RandomBaseline(tiny, seed=None)
    x = torch.rand(16, 3, 32, 32)
    assert not torch.equal(fresh(x), fresh(x))


def test_maps_on_the_inputs_device():
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    x = torch.rand(3, 3, 16, 16)
    for name in NAMES:
        method = jittercam.create(name, NoForward())
        on_gpu = method(x.cuda())
        assert on_gpu.device.type == "cuda"
        assert torch.equal(on_gpu.cpu(), method(x))  # same draws and values on every device
