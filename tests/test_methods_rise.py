"""RISE: the reference's masks, the formula written out, seeding, batching, the contract."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

import jittercam
from jittercam import JitterCamError
from jittercam.methods import rise
from jittercam.methods.rise import RISE, MaskMaker, grid_masks, rise_masks, sample_grids

FAST = {"masks": 96, "batch_size": 256}  # few masks, big forwards: the tests stay quick on 2 cores


def _reference_masks(grids, size):
    """The reference's `generate_masks` on our draws, with the upsampling skimage's
    `resize(order=1, mode='reflect', anti_aliasing=False)` runs: scipy.ndimage.zoom in grid mode with
    its 'mirror' boundary (skimage's 'reflect')."""
    height, width = size
    s = grids.grids.shape[-1]
    up = ((s + 1) * math.ceil(height / s), (s + 1) * math.ceil(width / s))
    masks = []
    for cells, (row, column) in zip(grids.grids.double().numpy(), grids.shifts.tolist()):
        zoom = (up[0] / s, up[1] / s)
        upsampled = ndimage.zoom(cells, zoom, order=1, mode="mirror", grid_mode=True)
        assert upsampled.shape == up
        masks.append(upsampled[row : row + height, column : column + width])
    return torch.from_numpy(np.stack(masks)).float()


@pytest.mark.parametrize("size, grid", [((32, 32), 7), ((224, 224), 7), ((30, 45), 5), ((17, 9), 3), ((9, 9), 1)])
def test_masks_are_the_references_upsampled_and_cropped_grids(size, grid):
    grids = sample_grids(20, grid, 0.5, size, torch.Generator().manual_seed(1))
    assert grids.shifts[:, 0].max() < math.ceil(size[0] / grid) and grids.shifts.min() >= 0
    torch.testing.assert_close(grid_masks(grids), _reference_masks(grids, size), rtol=0, atol=2e-7)


def test_masks_agree_with_skimage():
    transform = pytest.importorskip("skimage.transform")
    grids = sample_grids(10, 7, 0.5, (40, 40), torch.Generator().manual_seed(2))
    cell = math.ceil(40 / 7)
    for mask, cells, (row, column) in zip(grid_masks(grids), grids.grids.double().numpy(), grids.shifts.tolist()):
        up = transform.resize(cells, (8 * cell, 8 * cell), order=1, mode="reflect", anti_aliasing=False)
        torch.testing.assert_close(mask, torch.from_numpy(up[row : row + 40, column : column + 40]).float())


def test_masks_edges_are_mirrored_not_clamped():
    """At the first output pixel x = -0.25 (s = 2, up = 3 · 2): skimage mixes cell 0 with cell 1."""
    grids = rise.MaskGrids(torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]), torch.zeros(1, 2, dtype=torch.long), (4, 4))
    first_row = grid_masks(grids)[0, 0]
    x = 0.5 * 2 / 6 - 0.5
    assert first_row[0].item() == pytest.approx(1 - (-x))  # 0.75 * cell 0 + 0.25 * cell 1 (mirrored)


def test_masks_keep_the_expected_share_and_chunks_agree():
    grids = sample_grids(400, 7, 0.3, (32, 32), torch.Generator().manual_seed(0))
    masks = grid_masks(grids)
    assert masks.min() >= 0 and masks.max() <= 1
    assert masks.mean().item() == pytest.approx(0.3, abs=0.03)
    maker = MaskMaker(grids)
    torch.testing.assert_close(torch.cat([maker(i, i + 7) for i in range(0, 400, 7)]), masks, rtol=0, atol=0)
    assert torch.equal(rise_masks(32, masks=400, keep=0.3, seed=0), masks)


def test_same_seed_same_map_other_seed_other_map(tiny):
    x = torch.rand(2, 3, 32, 32)
    first = RISE(tiny, seed=5, **FAST)(x, 1)
    assert torch.equal(RISE(tiny, seed=5, **FAST)(x, 1), first)
    method = RISE(tiny, seed=5, **FAST)
    assert torch.equal(method(x, 1), method(x, 1))  # every call draws the same masks
    assert not torch.allclose(RISE(tiny, seed=6, **FAST)(x, 1), first)


def test_equals_the_formula_written_out(tiny):
    """S = Σ_i P_c(I ⊙ M_i) · M_i / (N · p), one masked image at a time, from the method's own masks."""
    count, keep = 40, 0.4
    method = RISE(tiny, masks=count, grid=5, keep=keep, seed=3, batch_size=16)
    x = torch.randn(2, 3, 32, 32)
    targets = [1, 4]
    masks = rise_masks((32, 32), masks=count, grid=5, keep=keep, seed=3)
    assert torch.equal(masks, grid_masks(method.grids((32, 32))))
    expected = torch.zeros(2, 32, 32)
    with torch.no_grad():
        for b, c in enumerate(targets):
            for mask in masks:
                probability = torch.softmax(tiny(x[b : b + 1] * mask), dim=1)[0, c]
                expected[b] += probability * mask
    expected /= count * keep
    torch.testing.assert_close(method(x, targets), expected, rtol=1e-5, atol=1e-6)


class RegionModel(nn.Module):
    """Class 0's logit is 20 × (the mean of a fixed square of the input − 0.5), class 1's is 0: only the
    square counts, and class 0's probability goes from about 0 to about 1 as more of it is kept."""

    region = (slice(8, 16), slice(18, 26))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 20 * (x[:, :, self.region[0], self.region[1]].mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_the_map_peaks_inside_the_region_the_model_looks_at():
    maps = RISE(RegionModel(), masks=1000, batch_size=1000)(torch.ones(1, 3, 32, 32), 0)[0]
    rows, columns = RegionModel.region
    row, column = divmod(int(maps.argmax()), 32)
    assert rows.start <= row < rows.stop and columns.start <= column < columns.stop
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[rows, columns] = True
    assert maps[inside].mean() > maps[~inside].mean() + 0.1
    # class 1's probability falls where class 0's rises: its map is lowest there
    assert RISE(RegionModel(), masks=1000, batch_size=1000)(torch.ones(1, 3, 32, 32), 1)[0][inside].mean() < maps[
        ~inside
    ].mean()


def test_batched_equals_one_by_one(tiny):
    x = torch.rand(3, 3, 32, 32)
    targets = [0, 2, 4]
    options = {"masks": 48, "seed": 1}
    together = RISE(tiny, batch_size=256, **options)(x, targets)
    small_forwards = RISE(tiny, batch_size=5, **options)(x, targets)  # 2 images x 2 masks, then 1 x 5
    alone = torch.cat([RISE(tiny, batch_size=7, **options)(x[i : i + 1], t) for i, t in enumerate(targets)])
    torch.testing.assert_close(small_forwards, together, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-6)


def test_masks_are_made_a_chunk_at_a_time(tiny, monkeypatch):
    made = []
    real = MaskMaker.__call__

    def spy(self, start=0, stop=None):
        masks = real(self, start, stop)
        made.append(masks.shape[0])
        return masks

    x = torch.rand(1, 3, 32, 32)
    expected = RISE(tiny, **FAST)(x, 2)
    monkeypatch.setattr(rise, "_MASK_ELEMENTS", 10 * 32 * 32)
    monkeypatch.setattr(MaskMaker, "__call__", spy)
    got = RISE(tiny, masks=96, batch_size=4)(x, 2)
    assert sum(made) == 96 and max(made) == 10
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_targets_per_image_and_top1_by_default(tiny):
    x = torch.rand(2, 3, 32, 32)
    method = RISE(tiny, **FAST)
    both = method(x, [3, 0])
    torch.testing.assert_close(both[0], method(x[:1], 3)[0])
    torch.testing.assert_close(both[1], method(x[1:], 0)[0])
    top1 = tiny(x).argmax(dim=1)
    torch.testing.assert_close(method(x), method(x, top1))


def test_same_map_under_inference_mode(tiny):
    x = torch.rand(2, 3, 32, 32)
    method = RISE(tiny, **FAST)
    expected = method(x, 1)
    with torch.inference_mode():
        assert torch.equal(method(x.clone(), 1), expected)
    with torch.no_grad():
        assert torch.equal(method(x, 1), expected)
    assert torch.is_grad_enabled()
    assert all(p.grad is None for p in tiny.parameters())


def test_contract(tiny):
    method = jittercam.create("rise", tiny, masks=12, grid=4, keep=0.25, seed=9, batch_size=8)
    assert isinstance(method, RISE) and not RISE.uses_layer and not RISE.layer_map
    assert method.layer is None and method.passes() == 12 and RISE(tiny).passes() == 8000
    assert repr(method) == "RISE(masks=12, grid=4, keep=0.25, seed=9, batch_size=8)"
    maps = method(torch.rand(2, 3, 20, 28), 0)
    assert maps.shape == (2, 20, 28) and maps.dtype == torch.float32  # the input's resolution
    with pytest.raises(JitterCamError, match="out of range"):
        method(torch.rand(2, 3, 32, 32), 5)
    with pytest.raises(JitterCamError, match="out of range"):
        method(torch.rand(2, 3, 32, 32), -1)
    with pytest.raises(JitterCamError, match="does not use a target layer"):
        jittercam.create("rise", tiny, target_layer="conv")
    with pytest.raises(JitterCamError, match="target layer's resolution"):
        jittercam.create("jittercam:rise", tiny)


@pytest.mark.parametrize(
    "option", [{"masks": 0}, {"grid": 2.5}, {"keep": 0}, {"keep": 1.5}, {"keep": True}, {"seed": "a"}]
)
def test_bad_options(tiny, option):
    with pytest.raises(JitterCamError):
        RISE(tiny, **option)


def test_progress_bar_only_when_asked(tiny, capsys):
    x = torch.rand(1, 3, 32, 32)
    RISE(tiny, **FAST)(x, 0)
    assert capsys.readouterr() == ("", "")
    RISE(tiny, progress=True, **FAST)(x, 0)
    assert "RISE masks" in capsys.readouterr().err


def test_seed_none_draws_new_masks(tiny):
    x = torch.rand(1, 3, 32, 32)
    method = RISE(tiny, seed=None, **FAST)
    assert not torch.equal(method(x, 0), method(x, 0))


def test_same_masks_and_map_on_the_gpu(tiny):
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    x = torch.rand(2, 3, 32, 32)
    grids = sample_grids(50, 7, 0.5, (32, 32), torch.Generator().manual_seed(0))
    torch.testing.assert_close(grid_masks(grids, device="cuda").cpu(), grid_masks(grids), rtol=0, atol=1e-6)
    on_cpu = RISE(tiny, **FAST)(x, [1, 2])
    on_gpu = RISE(tiny.cuda(), **FAST)(x.cuda(), [1, 2])
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-5)
