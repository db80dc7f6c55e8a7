"""The README's table of transformer families holds: the probe's layer (never an attention matrix, a
q/k/v projection or a layer with a block after it), Grad-CAM and Jitter-CAM on the token grid, Upscale-CAM
and CAMERAS refused when built on a fixed-size model and built on one that takes other sizes."""
from __future__ import annotations

import pytest
import torch

import jittercam
from families import FAMILIES
from jittercam import JitterCamError

pytest.importorskip("timm")
pytest.importorskip("transformers")


@pytest.mark.parametrize("key", list(FAMILIES))
def test_family_row(key):
    family = FAMILIES[key]
    model = family.build()
    state = [p.clone() for p in model.parameters()]
    image = torch.rand(2, 3, family.pixels, family.pixels)
    if family.layer is None:
        with pytest.raises(JitterCamError, match="weighted layers run after it"):
            jittercam.create("gradcam", model, input_size=family.pixels)
        return
    gradcam = jittercam.create("gradcam", model, input_size=family.pixels)
    assert gradcam.layer.name == family.layer
    m = gradcam.layer.map_size
    maps = gradcam(image, [1, 2])
    assert maps.shape == (2, m, m) and torch.isfinite(maps).all()
    signed = jittercam.create("hirescam", model, relu=False, layer=gradcam.layer)(image, [1, 2])
    assert signed.abs().amin(dim=(1, 2)).gt(0).all()  # the grid tokens get a gradient: the layer decides
    jitter = jittercam.create("jittercam", model, size=m + 1, input_size=family.pixels)
    assert jitter(image[:1], 1).shape == (1, m + 1, m + 1)
    for method in ("upscale", "cameras"):
        if method in family.refuses:
            with pytest.raises(JitterCamError, match="which it does not accept"):
                jittercam.create(method, model, input_size=family.pixels)
        else:
            jittercam.create(method, model, input_size=family.pixels)
    assert not model.training and all(torch.equal(a, b) for a, b in zip(state, model.parameters()))
