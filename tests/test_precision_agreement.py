"""Reduced precision against fp32 on EfficientNet-Lite0's real weights (issue 25), and the methods that refuse it.

The bounds come from `benchmarks/bf16_agreement.py` (the offline set's photos, 2-core AMD EPYC): bf16 moves the
gradient CAMs' maps by 2.5-4.7 % relative max (6.7-8.5 % for Upscale-CAM), over issue 25's 1 %; fp16 by
0.2-0.4 %. Every other method stays fp32 only (the measured numbers are beside each `precisions`).
"""
from __future__ import annotations

import pytest

from jittercam.errors import JitterCamError
from jittercam.methods.registry import create

FP32_ONLY = ["scorecam", "sscam", "iscam", "ablationcam", "rise", "layercam", "cameras", "guidedbackprop",
             "eigencam", "eigengradcam", "kpcacam", "fem", "shapleycam", "smoothgradcam++", "fullgrad",
             "refinecam", "polycam", "winsorcam"]


def relative_max(low, full) -> float:
    """Issue 25's measure: max|low − full| / max|full|, the worst image's."""
    return ((low - full).abs().flatten(1).amax(1) / full.abs().flatten(1).amax(1)).max().item()


@pytest.fixture(scope="module")
def fp32_maps(lite0, goldfish_batch):
    return {name: create(name, lite0)(goldfish_batch, None) for name in ("gradcam", "gradcam++", "finercam")}


@pytest.mark.parametrize(("name", "bound"), [("gradcam", 0.05), ("gradcam++", 0.05), ("finercam", 0.05)])
def test_bf16_moves_the_map_by_a_few_percent(lite0, goldfish_batch, fp32_maps, name, bound):
    low = create(name, lite0, precision="bf16")(goldfish_batch, None)
    assert low.dtype == fp32_maps[name].dtype  # float32 maps either way
    assert 0.001 < relative_max(low, fp32_maps[name]) < bound  # 2.0-2.6 % on the goldfish: rounded, not broken


def test_fp16_holds_one_percent(lite0, goldfish_batch, fp32_maps):
    low = create("gradcam", lite0, precision="fp16")(goldfish_batch, None)
    assert 0 < relative_max(low, fp32_maps["gradcam"]) < 0.01  # 0.21 % on the goldfish


@pytest.mark.parametrize("name", FP32_ONLY)
def test_fp32_only_methods_refuse_bf16_in_one_line(lite0, name):
    options = {"num_samples": 1} if name in ("sscam", "iscam") else {}
    refusal = r"supports precision fp32, not 'bf16'|has no option 'precision'"
    with pytest.raises(JitterCamError, match=refusal) as caught:
        create(name, lite0, precision="bf16", **options)
    assert "\n" not in str(caught.value)
    assert create(name, lite0, **options).precision == "fp32"  # refused for the precision alone
