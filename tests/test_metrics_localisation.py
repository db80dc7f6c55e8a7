"""Weak localisation, pointing game and box energy on synthetic maps with known answers."""
import pytest
import torch

from jittercam.errors import JitterCamError
from jittercam.metrics import (
    THRESHOLDS,
    boxes_to_mask,
    energy_in_boxes,
    energy_in_mask,
    localisation_error,
    pointing_accuracy,
    pointing_game,
    weak_localisation,
)


def two_blocks() -> torch.Tensor:
    """20x20: block A (rows/cols 2-5) = 1, block B (rows 12-17, cols 10-17) = 0.5, rest 0.01."""
    m = torch.full((20, 20), 0.01)
    m[2:6, 2:6] = 1.0
    m[12:18, 10:18] = 0.5
    return m[None]


def box_at(result, alpha: float) -> list[int]:
    return result.box[0, THRESHOLDS.index(alpha)].tolist()


A = [2, 2, 5, 5]
AB = [2, 2, 17, 17]
FULL = [0, 0, 19, 19]


def test_three_schemes_known_boxes():
    r = weak_localisation(two_blocks(), [torch.tensor([A])], 20)
    # Val: scaled values are 0 (background), 0.495 (B), 1 (A)
    assert box_at(r["val"], 0.0) == FULL
    assert box_at(r["val"], 0.05) == AB and box_at(r["val"], 0.45) == AB
    assert box_at(r["val"], 0.5) == A and box_at(r["val"], 0.95) == A
    # Mean: mean = 43.36 / 400 = 0.1084; the background (0.01) survives only a <= 0.05
    assert box_at(r["mean"], 0.05) == FULL
    assert box_at(r["mean"], 0.1) == AB and box_at(r["mean"], 0.95) == AB
    # Energy: total 43.36; A holds 16 (first), B 24; the crossing pixel is excluded, ties row-major
    assert box_at(r["energy"], 0.0) == FULL  # nothing kept: whole image
    assert box_at(r["energy"], 0.05) == [2, 2, 3, 2]  # 2.168 -> two pixels of A's first row
    assert box_at(r["energy"], 0.35) == A  # 15.18 -> 15 pixels of A
    assert box_at(r["energy"], 0.4) == [2, 2, 11, 12]  # 17.34 -> A and two pixels of B
    assert box_at(r["energy"], 0.9) == AB
    # hits: IoU with A >= 0.5
    hits = {s: r[s].hit[0] for s in r}
    assert hits["val"].tolist() == [a >= 0.5 for a in THRESHOLDS]
    assert not hits["mean"].any()
    assert hits["energy"][THRESHOLDS.index(0.35)] and not hits["energy"][THRESHOLDS.index(0.9)]
    assert r["val"].iou[0, THRESHOLDS.index(0.5)] == 1
    assert r["mean"].iou[0, THRESHOLDS.index(0.5)] == pytest.approx(16 / 256)


def test_largest_component_option():
    r_all = weak_localisation(two_blocks(), [torch.tensor([A])], 20, box="all")
    r_big = weak_localisation(two_blocks(), [torch.tensor([A])], 20, box="largest")
    k = THRESHOLDS.index(0.3)
    assert r_all["val"].box[0, k].tolist() == AB
    assert r_big["val"].box[0, k].tolist() == [10, 12, 17, 17]  # B (48 px) beats A (16 px)
    assert r_big["val"].box[0, 0].tolist() == FULL  # background connects everything at a = 0
    # diagonal neighbours are one component (8-connectivity)
    m = torch.zeros(1, 10, 10)
    m[0, 1, 1] = m[0, 2, 2] = m[0, 3, 3] = 1
    m[0, 7:9, 7:9] = 0.9
    r = weak_localisation(m, [torch.tensor([[0, 0, 1, 1]])], 10, box="largest", schemes=["val"])
    assert r["val"].box[0, THRESHOLDS.index(0.5)].tolist() == [7, 7, 8, 8]  # 4 px beat the 3 diagonal ones
    r = weak_localisation(m, [torch.tensor([[0, 0, 1, 1]])], 10, box="largest", schemes=["val"], thresholds=[0.95])
    assert r["val"].box[0, 0].tolist() == [1, 1, 3, 3]


def test_iou_convention_and_any_box():
    m = torch.zeros(1, 10, 10)
    m[0, :, :] = 1  # box = whole image, 100 px
    gts = [torch.tensor([[0, 0, 9, 4], [0, 0, 2, 2]])]  # 50 px box: IoU exactly 0.5 with inclusive sizes
    r = weak_localisation(m, gts, 10, schemes=["mean"], thresholds=[0.5])
    assert r["mean"].iou[0, 0] == pytest.approx(0.5) and r["mean"].hit[0, 0]
    r = weak_localisation(m, [torch.tensor([[0, 0, 9, 3]])], 10, schemes=["mean"], thresholds=[0.5])
    assert not r["mean"].hit[0, 0]


def test_map_resized_to_image_size():
    low = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    r = weak_localisation(low, [[[0, 0, 1, 1]]], 8, schemes=["val"])
    assert r["val"].box[0, -1].tolist() == [0, 0, 1, 1]  # bilinear: value 1 on rows/cols 0-1 only


def test_batched_equals_single():
    torch.manual_seed(0)
    maps = torch.rand(3, 7, 7) ** 3
    boxes = [
        torch.tensor([[3, 4, 20, 25]]),
        torch.tensor([[0, 0, 10, 10], [15, 15, 31, 31]]),
        torch.tensor([[5, 5, 6, 6]]),
    ]
    both = weak_localisation(maps, boxes, (32, 32))
    for i in range(3):
        one = weak_localisation(maps[i:i + 1], boxes[i:i + 1], (32, 32))
        for s in both:
            assert torch.equal(both[s].box[i], one[s].box[0]) and torch.equal(both[s].hit[i], one[s].hit[0])


def test_localisation_error():
    hits = torch.tensor([[True, False], [False, False], [True, True]])
    e = localisation_error(hits)
    assert e.error == pytest.approx(100 / 3) and e.index == 0
    assert e.errors.tolist() == pytest.approx([100 / 3, 200 / 3])
    r = weak_localisation(two_blocks(), [torch.tensor([A])], 20)
    assert localisation_error(r["val"]).error == 0 and localisation_error(r["mean"]).error == 100


def test_weak_localisation_errors():
    with pytest.raises(JitterCamError, match="at least one ground-truth box"):
        weak_localisation(two_blocks(), [torch.zeros(0, 4)], 20)
    with pytest.raises(JitterCamError, match="schemes"):
        weak_localisation(two_blocks(), [[A]], 20, schemes=["otsu"])
    with pytest.raises(JitterCamError, match="box must be"):
        weak_localisation(two_blocks(), [[A]], 20, box="hull")
    with pytest.raises(JitterCamError, match="boxes for 2 images"):
        weak_localisation(two_blocks(), [[A], [A]], 20)
    with pytest.raises(JitterCamError, match="x0 <= x1"):
        weak_localisation(two_blocks(), [[[5, 2, 2, 5]]], 20)


def test_boxes_to_mask():
    mask = boxes_to_mask([torch.tensor([[1, 0, 2, 1], [3, 3, 9, 9]])], (4, 5))
    expected = torch.zeros(1, 4, 5, dtype=torch.bool)
    expected[0, 0:2, 1:3] = True
    expected[0, 3, 3:5] = True
    assert torch.equal(mask, expected)


# --- pointing game ---------------------------------------------------------------------------------

def peak_at(y: int, x: int, size: int = 64) -> torch.Tensor:
    m = torch.zeros(1, size, size)
    m[0, y, x] = 1
    return m


def single_pixel_mask(y: int, x: int, size: int = 64) -> torch.Tensor:
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, y, x] = True
    return mask


@pytest.mark.parametrize(
    "dy, dx, hit",
    [(0, 14, True), (0, 16, False), (0, 15, False), (14, 0, True), (-16, 0, False), (9, 11, True), (9, 12, False)],
)
def test_pointing_tolerance(dy, dx, hit):
    p = pointing_game(peak_at(30, 30), single_pixel_mask(30 + dy, 30 + dx))
    assert p.point.tolist() == [[30, 30]]
    assert bool(p.hit[0]) is hit


def test_pointing_first_maximum_and_batch():
    m = torch.zeros(2, 40, 40)
    m[0, 5, 30] = m[0, 30, 5] = 1  # tie: row-major first is (row 5, col 30)
    m[1, 20, 20] = 2
    masks = torch.zeros(2, 40, 40, dtype=torch.bool)
    masks[0, 28:32, 0:8] = True  # around the second maximum only
    masks[1, 0:40, 30:40] = True  # 10 px right of the peak
    p = pointing_game(m, masks)
    assert p.point.tolist() == [[30, 5], [20, 20]]
    assert p.hit.tolist() == [False, True]
    assert pointing_game(m[1:], masks[1:], tolerance=10).hit.tolist() == [False]


def test_pointing_map_resized_to_mask():
    low = torch.zeros(1, 4, 4)
    low[0, 3, 3] = 1
    p = pointing_game(low, torch.ones(1, 64, 64, dtype=torch.bool))
    assert p.point.tolist() == [[56, 56]]  # the peak's area after bilinear upsampling starts at 56


def test_pointing_accuracy():
    hits = torch.tensor([True, False, True, True])
    classes = torch.tensor([0, 0, 1, 2])
    acc = pointing_accuracy(hits, classes, num_classes=4)
    assert acc.overall == pytest.approx(75) and acc.class_mean == pytest.approx(62.5)
    assert acc.per_class.tolist() == pytest.approx([50, 100, 100, 0])
    present = pointing_accuracy(hits, classes)
    assert present.class_mean == pytest.approx(250 / 3)
    assert pointing_accuracy(hits).overall == pytest.approx(75)


def test_pointing_errors():
    with pytest.raises(JitterCamError, match="empty"):
        pointing_game(peak_at(3, 3), torch.zeros(1, 64, 64, dtype=torch.bool))
    with pytest.raises(JitterCamError, match="masks"):
        pointing_game(peak_at(3, 3), torch.ones(64, 64, dtype=torch.bool))
    with pytest.raises(JitterCamError, match="out of range"):
        pointing_accuracy(torch.tensor([True]), [5], num_classes=3)


# --- energy ------------------------------------------------------------------------------------------

def test_energy_in_boxes():
    m = torch.zeros(2, 4, 4)
    m[0, 0, 0], m[0, 0, 1], m[0, 3, 3] = 2.0, 1.0, 1.0
    m[0, 2, 2] = -5.0  # negatives are clipped, not subtracted
    boxes = [torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 0, 3, 3]])]
    e = energy_in_boxes(m, boxes, 4)
    assert e.tolist() == pytest.approx([0.75, 0.0])  # an all-zero map has no energy inside
    torch.testing.assert_close(e, energy_in_mask(m, boxes_to_mask(boxes, 4)))
    full = energy_in_boxes(torch.rand(1, 3, 3) + 0.1, [torch.tensor([[0, 0, 9, 9]])], 10)
    assert float(full) == pytest.approx(1.0)
    # min-max first (Score-CAM's variant): values (v - 5) / 7; inside 23/7 of a total 79/7
    normed = energy_in_boxes(m[:1] + 10, boxes[:1], 4, minmax=True)
    assert float(normed) == pytest.approx(23 / 79)
