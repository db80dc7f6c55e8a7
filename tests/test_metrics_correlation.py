"""Spearman rank correlation between maps."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from jittercam.errors import JitterCamError
from jittercam.metrics import rank_correlation


def test_matches_scipy_row_by_row():
    torch.manual_seed(0)
    a = torch.rand(4, 7, 7)
    b = a + 0.3 * torch.rand(4, 7, 7)
    b[1] = torch.round(b[1] * 3)  # ties: average ranks, as scipy
    rho = rank_correlation(a, b)
    expected = [spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic for i in range(4)]
    np.testing.assert_allclose(rho.numpy(), expected, rtol=1e-5)
    assert rho.shape == (4,) and rho.dtype == torch.float32


def test_hand_cases():
    a = torch.arange(9.0).view(1, 3, 3)
    assert float(rank_correlation(a, a)) == pytest.approx(1)
    assert float(rank_correlation(a, -a ** 3)) == pytest.approx(-1)  # only the order matters
    assert math.isnan(float(rank_correlation(a, torch.ones(1, 3, 3))))


def test_sizes():
    torch.manual_seed(0)
    small = torch.rand(2, 5, 5)
    big = torch.nn.functional.interpolate(small[:, None], size=(7, 7), mode="bilinear", align_corners=False)[:, 0]
    # the second map is brought to the first one's size (7x7), or both to `size`
    assert rank_correlation(big, small).shape == (2,)
    assert (rank_correlation(big, small) > 0.9).all()
    torch.testing.assert_close(rank_correlation(small, big, size=7), rank_correlation(big, big))


def test_errors():
    with pytest.raises(JitterCamError, match="2 maps for 3 images"):
        rank_correlation(torch.rand(3, 4, 4), torch.rand(2, 4, 4))
    with pytest.raises(JitterCamError, match=r"\(B, h, w\)"):
        rank_correlation(torch.rand(4, 4), torch.rand(4, 4))
