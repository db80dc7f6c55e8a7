"""Ground-truth measures: evidence AUC (against scipy's Mann–Whitney U) and the two-peak criterion."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from jittercam.errors import JitterCamError
from jittercam.maps import resize
from jittercam.metrics.groundtruth import (
    evidence_auc,
    profile,
    resolves,
    resolving_power,
    two_peaks,
)

S = 64


def gaussians(centres, sigma, size=S) -> torch.Tensor:
    """A `(1, size, size)` map: the sum of isotropic Gaussians at (x, y) pixel centres."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    out = sum(torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in centres)
    return out.float().unsqueeze(0)


def pair(x1, x2, y=32.0):
    return torch.tensor([[[x1, y], [x2, y]]])


# --- evidence_auc -----------------------------------------------------------------------------------

def mann_whitney_auc(values: np.ndarray, mask: np.ndarray) -> float:
    pos, neg = values[mask], values[~mask]
    return mannwhitneyu(pos, neg, alternative="two-sided").statistic / (len(pos) * len(neg))


def test_evidence_auc_equals_mann_whitney_with_ties():
    g = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 5, (4, 16, 16), generator=g).float()  # heavy ties
    masks = torch.rand(4, 16, 16, generator=g) < torch.tensor([0.1, 0.3, 0.5, 0.9]).view(4, 1, 1)
    got = evidence_auc(maps, masks)
    for i in range(4):
        assert got[i].item() == pytest.approx(mann_whitney_auc(maps[i].numpy(), masks[i].numpy()), abs=1e-6)


def test_evidence_auc_resizes_the_map_to_the_mask():
    g = torch.Generator().manual_seed(1)
    maps = torch.randint(0, 3, (2, 7, 7), generator=g).float()
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 4:20, 8:30] = True
    masks[1, 20:, :10] = True
    got = evidence_auc(maps, masks)
    big = resize(maps, (32, 32)).numpy()
    for i in range(2):
        assert got[i].item() == pytest.approx(mann_whitney_auc(big[i], masks[i].numpy()), abs=1e-6)


def test_evidence_auc_perfect_inverted_constant_and_degenerate():
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[:, 2:5, 3:7] = True
    masks[2] = False
    masks[3] = True
    maps = masks.float().clone()
    maps[1] = 1 - maps[1]
    auc = evidence_auc(maps, masks)
    assert auc[0].item() == 1.0 and auc[1].item() == 0.0
    assert math.isnan(auc[2].item()) and math.isnan(auc[3].item())
    assert evidence_auc(torch.ones(1, 4, 4), masks[:1]).item() == 0.5  # a constant map is chance


def test_evidence_auc_batch_equals_one_by_one_and_checks():
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(3, 8, 8, generator=g)
    masks = torch.rand(3, 24, 24, generator=g) > 0.7
    batch = evidence_auc(maps, masks)
    single = torch.cat([evidence_auc(maps[i : i + 1], masks[i : i + 1]) for i in range(3)])
    assert torch.equal(batch, single)
    with pytest.raises(JitterCamError):
        evidence_auc(maps, masks[:2])


# --- the two-peak criterion -------------------------------------------------------------------------

def test_two_gaussians_are_resolved_and_one_blob_is_not():
    two = gaussians([(20, 32), (44, 32)], sigma=4)
    blob = gaussians([(32, 32)], sigma=14)
    result = two_peaks(torch.cat([two, blob]), torch.cat([pair(20, 44)] * 2), S)
    assert result.resolved.tolist() == [True, False]
    assert result.depth[0] > 0.9 and result.depth[1] == 0
    assert result.where[0, 0].item() == pytest.approx(0.0, abs=0.01)  # peaks found on the centres
    assert result.where[0, 1].item() == pytest.approx(1.0, abs=0.01)


def test_a_low_resolution_map_is_read_as_its_bilinear_upsampling():
    small = torch.zeros(1, 8, 8)
    small[0, 3, 2] = small[0, 3, 5] = 1.0  # two cells, 3 cells apart, at stride 8
    centres = pair(2 * 8 + 3.5, 5 * 8 + 3.5, y=3 * 8 + 3.5)
    assert resolves(small, centres, S).item()
    prof = profile(small, pair(19.5, 43.5, y=27.0), S, samples=49, extend=0.0)
    up = resize(small, S)[0]
    xs = prof.points[0, :, 0]
    whole = xs == xs.round()  # at whole pixels the profile is the resized map
    assert torch.allclose(prof.values[0, whole], up[27, xs[whole].long()], atol=1e-6)
    merged = torch.zeros(1, 8, 8)
    merged[0, 3, 3] = merged[0, 3, 4] = 1.0  # neighbouring cells: one blob after upsampling
    assert not resolves(merged, pair(3 * 8 + 3.5, 4 * 8 + 3.5, y=27.5), S).item()


def plateau_profile(valley: float) -> torch.Tensor:
    """A map constant along y whose x-profile has flat peaks of 1 at x≈16 and x≈48 and a flat valley."""
    xs = torch.tensor([0, 10, 14, 18, 28, 30, 34, 36, 46, 50, 54, 63], dtype=torch.float64)
    vs = torch.tensor([0, 0, 1, 1, valley, valley, valley, valley, 1, 1, 0, 0], dtype=torch.float64)
    row = torch.from_numpy(np.interp(np.arange(S), xs.numpy(), vs.numpy())).float()
    return row.expand(1, S, S).clone()


def test_the_dip_threshold_flips_the_answer():
    maps = torch.cat([plateau_profile(0.79), plateau_profile(0.81)])
    result = two_peaks(maps, torch.cat([pair(16, 48)] * 2), S, dip=0.2)
    assert result.resolved.tolist() == [True, False]
    assert result.depth.tolist() == pytest.approx([0.21, 0.19], abs=1e-5)
    assert result.valley.tolist() == pytest.approx([0.79, 0.81], abs=1e-6)
    # the same maps against a shallower requirement are both resolved
    assert resolves(maps, torch.cat([pair(16, 48)] * 2), S, dip=0.15).all()


def test_the_floor_rejects_a_faint_second_peak():
    two = gaussians([(20, 32)], sigma=4) + 0.4 * gaussians([(44, 32)], sigma=4)
    assert not resolves(two, pair(20, 44), S).item()
    assert resolves(two, pair(20, 44), S, floor=0.3).item()


def test_criterion_is_offset_invariant_and_handles_coincident_centres():
    two = gaussians([(20, 32), (44, 32)], sigma=6)
    shifted = 3.0 + 2.0 * two  # e.g. RISE's baseline: min–max scaling removes it
    a = two_peaks(two, pair(20, 44), S)
    b = two_peaks(shifted, pair(20, 44), S)
    assert torch.allclose(a.depth, b.depth, atol=1e-5) and a.resolved.item() == b.resolved.item()
    assert not resolves(two, pair(20, 20), S).item()


def test_sweep_matches_the_analytic_two_gaussian_limit():
    sigma = 4.0
    seps = torch.arange(4, 33, 1.0)
    maps = torch.cat([gaussians([(32 - d / 2, 32), (32 + d / 2, 32)], sigma) for d in seps.tolist()])
    centres = torch.stack([pair(32 - d / 2, 32 + d / 2)[0] for d in seps.tolist()])
    got = resolving_power(seps, resolves(maps, centres, S, samples=513))
    # 1-D sum of two unit Gaussians: dip(d) = 1 − f(0) / max f, on a fine grid
    x = np.linspace(-40, 40, 80001)
    dips = [1 - 2 * np.exp(-(d**2) / (8 * sigma**2)) / (np.exp(-((x - d / 2) ** 2) / (2 * sigma**2))
            + np.exp(-((x + d / 2) ** 2) / (2 * sigma**2))).max() for d in seps.tolist()]
    first = float(seps[next(i for i, v in enumerate(dips) if v >= 0.2)])
    assert got == first


def test_two_peaks_batch_equals_one_by_one():
    maps = torch.cat([gaussians([(20, 30), (40, 36)], 5), gaussians([(30, 30)], 10), plateau_profile(0.79)])
    centres = torch.cat([torch.tensor([[[20.0, 30], [40, 36]]]), pair(24, 36), pair(16, 48)])
    batch = two_peaks(maps, centres, S)
    for i in range(3):
        one = two_peaks(maps[i : i + 1], centres[i : i + 1], S)
        for a, b in zip(batch, one):
            assert torch.equal(a[i : i + 1], b)


def test_two_peaks_checks_its_arguments():
    maps = gaussians([(20, 32)], 4)
    with pytest.raises(JitterCamError):
        resolves(maps, torch.zeros(1, 3, 2), S)
    with pytest.raises(JitterCamError):
        resolves(maps, pair(20, 44), S, dip=1.5)
    with pytest.raises(JitterCamError):
        profile(maps, pair(20, 44), S, samples=2)


# --- resolving_power --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("separations", "resolved", "expected"),
    [
        ([2, 4, 8, 16, 32], [False, False, True, True, True], 8.0),
        ([32, 16, 8, 4, 2], [True, True, True, False, False], 8.0),  # order does not matter
        ([2, 4, 8, 16, 32], [True, False, True, True, True], 8.0),  # a lucky small one does not count
        ([2, 4, 8, 16, 32], [True] * 5, 2.0),
        ([2, 4, 8, 16, 32], [True, True, True, True, False], math.nan),
        ([5], [False], math.nan),
    ],
)
def test_resolving_power(separations, resolved, expected):
    got = resolving_power(separations, resolved)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


def test_resolving_power_with_repeated_separations():
    seps = [4, 4, 8, 8, 16, 16]
    hits = [True, False, True, True, True, True]
    assert resolving_power(seps, hits) == 8.0
    assert resolving_power(torch.tensor(seps), torch.tensor(hits), fraction=0.5) == 4.0
    with pytest.raises(JitterCamError):
        resolving_power([1, 2], [True])
