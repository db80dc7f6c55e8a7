"""Poly-CAM and Winsor-CAM: each against its authors' recursion written out from their definitions."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import jittercam
from jittercam import JitterCamError
from jittercam.methods.winsor import WinsorCAM


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return jittercam.load_model("resnet18", weights="random")


def _state(model):
    return (model.training, [p.requires_grad for p in model.parameters()],
            [p.grad for p in model.parameters()], dict(model._forward_hooks))


def _winsor_oracle(model, image, target, percentile, weighting, mode):
    """USD-AI-ResearchLab/Winsor-CAM's steps for one image, from its definitions: hooks on every Conv2d,
    one backward of the logit, per layer Grad-CAM (mean gradient, ReLU), min-max (constant -> 0), layer
    importance = mean (or max) channel weight, ReLU, winsorised at the percentile of the nonzero values,
    nonzero values onto [0.1, 1], the maps resized to the largest and summed with those weights."""
    kept = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        kept.append(output)

    hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.enable_grad():
            image = image[None].clone().requires_grad_(True)
            model(image)[0, target].backward()
    finally:
        for hook in hooks:
            hook.remove()
    model.zero_grad(set_to_none=True)
    cams, importance = [], []
    for out in kept:
        weights = out.grad[0].mean(dim=(1, 2))
        cam = (weights[:, None, None] * out[0].detach()).sum(0).relu()
        cam = (cam - cam.min()) / (cam.max() - cam.min()) if cam.max() != cam.min() else torch.zeros_like(cam)
        cams.append(cam)
        importance.append(weights.mean() if weighting == "mean" else weights.max())
    importance = torch.stack(importance).relu()
    nonzero = importance > 0
    threshold = torch.quantile(importance[nonzero], percentile / 100)
    importance = torch.where(nonzero, importance.clamp(max=threshold), importance)
    values = importance[nonzero]
    importance[nonzero] = 0.1 + (values - values.min()) / (values.max() - values.min()) * 0.9
    size = max(c.shape for c in cams)
    resized = [F.interpolate(c[None, None], size=size, mode=mode)[0, 0] for c in cams]
    return (torch.stack(resized) * importance[:, None, None]).sum(0)


@pytest.mark.parametrize("which, size, targets, options", [
    ("resnet18", 64, [3, 7, 1], {}),
    ("resnet18", 64, [3, 7, 1], {"percentile": 50, "layer_weighting": "max", "interpolation": "nearest"}),
    ("lite0", 96, [1, 88, 409], {}),
])
def test_winsorcam_equals_the_authors_steps(request, which, size, targets, options):
    model = request.getfixturevalue(which)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(4))
    method = WinsorCAM(model, input_size=size, **options)
    before = _state(model)
    got = method(x, targets)
    assert _state(model) == before
    assert method.passes() == 1 and method.layer_map is False
    expected = torch.stack([
        _winsor_oracle(model, x[i], t, options.get("percentile", 90), options.get("layer_weighting", "mean"),
                       options.get("interpolation", "bilinear"))
        for i, t in enumerate(targets)])
    assert got.shape == expected.shape == (3, size // 2, size // 2)  # the first convolution's grid
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_winsorcam_percentile_zero_weights_every_positive_layer_one():
    from jittercam.methods.winsor import winsorised_weights

    importance = torch.tensor([[0.0, 1.0, 2.0, 10.0], [3.0, 3.0, 0.0, 0.0]])
    torch.testing.assert_close(winsorised_weights(importance, 0), torch.tensor([[0.0, 1, 1, 1], [1, 1, 0, 0]]))
    # 50th percentile of (1, 2, 10) is 2: (1, 2, 2) -> (0.1, 1, 1); equal values -> 1
    torch.testing.assert_close(winsorised_weights(importance, 50), torch.tensor([[0.0, 0.1, 1, 1], [1, 1, 0, 0]]))


def test_winsorcam_refusals(resnet18):
    with pytest.raises(JitterCamError, match="percentile must be in"):
        WinsorCAM(resnet18, input_size=64, percentile=120)
    with pytest.raises(JitterCamError, match="layer_weighting must be one of"):
        WinsorCAM(resnet18, input_size=64, layer_weighting="median")
    with pytest.raises(JitterCamError, match="several convolutions"):
        WinsorCAM(resnet18, ["layer4"], input_size=64)
