"""Poly-CAM and Winsor-CAM: each against its authors' recursion written out from their definitions."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import model_state
from jittercam import JitterCamError
from jittercam.methods.winsor import WinsorCAM


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
    before = model_state(model)
    got = method(x, targets)
    assert model_state(model) == before
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


def _poly_oracle(model, image, target, names, variant, lnorm=True, outlier=0.1):
    """aenglebert/polycam's recursion for one image, from its definitions: activations by forward hooks,
    masks scaled by numpy percentiles (divided by the high percentile), softmax scores of masked images,
    the deepest map down to the shallowest with LNorm."""
    import numpy as np

    modules = dict(model.named_modules())
    kept = {}
    hooks = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: kept.__setitem__(n, out.detach()))
             for n in names]
    with torch.no_grad():
        base = model(image[None]).softmax(1)[0, target]
    for hook in hooks:
        hook.remove()

    def score(batch):
        with torch.no_grad():
            return torch.cat([model(batch[i:i + 128]).softmax(1)[:, target] for i in range(0, len(batch), 128)])

    previous = None
    for name in reversed(names):
        a = kept[name]  # (1, C, h, w)
        flat = a.flatten(-2).numpy()
        low = torch.from_numpy(np.percentile(flat, outlier, axis=-1)).float()[..., None, None]
        high = torch.from_numpy(np.percentile(flat, 100 - outlier, axis=-1)).float()[..., None, None]
        masks = ((a - low) / torch.maximum(high, torch.tensor(1e-12))).clamp(0, 1)
        masks = F.interpolate(masks, image.shape[-2:], mode="bilinear").transpose(0, 1)  # (C, 1, H, W)
        if variant == "+":
            w = score(masks * image)
        elif variant == "-":
            w = (base - score((1 - masks) * image)).relu()
        else:
            w = (score(masks * image) + base - score((1 - masks) * image)).relu()
        cam = (a * w[None, :, None, None]).sum(1, keepdim=True).relu()
        if previous is None:
            previous = cam
        else:
            if lnorm:
                factor = F.interpolate(F.interpolate(cam, previous.shape[-2:], mode="bilinear"), cam.shape[-2:],
                                       mode="bilinear")
                cam = cam / torch.maximum(factor, torch.tensor(1e-12))
            previous = cam * F.interpolate(previous, cam.shape[-2:], mode="bilinear")
        previous = previous.relu()
    return previous[0, 0]


class Small(nn.Module):
    """conv(s2) -> ReLU -> conv(s2) -> ReLU -> conv(s2) -> ReLU -> GAP -> linear: three resolutions."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.a1 = nn.Conv2d(3, 6, 3, 2, 1), nn.ReLU()
        self.c2, self.a2 = nn.Conv2d(6, 8, 3, 2, 1), nn.ReLU()
        self.c3, self.a3 = nn.Conv2d(8, 10, 3, 2, 1), nn.ReLU()
        self.fc = nn.Linear(10, 5)
        with torch.no_grad():
            for conv in (self.c1, self.c2, self.c3):
                conv.bias.add_(0.1)

    def forward(self, x):
        x = self.a3(self.c3(self.a2(self.c2(self.a1(self.c1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("variant", ["+", "-", "±"])
@pytest.mark.parametrize("lnorm", [True, False])
def test_polycam_equals_the_authors_recursion_by_hand(variant, lnorm):
    from jittercam.methods.polycam import PolyCAM

    model = Small().eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    targets = [0, 2, 4]
    method = PolyCAM(model, variant=variant, lnorm=lnorm, input_size=32, batch_size=7)
    assert [one.name for one in method.layers] == ["a1", "a2", "a3"]
    assert method.passes() == 1 + (2 if variant == "±" else 1) * (6 + 8 + 10)
    got = method(x, targets)
    expected = torch.stack([_poly_oracle(model, x[i], t, ["a1", "a2", "a3"], variant, lnorm)
                            for i, t in enumerate(targets)])
    assert got.shape == (3, 16, 16)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)
    assert got.amax() > 0


@pytest.mark.parametrize("which, size, names, targets, variant", [
    ("resnet18", 32, ["relu", "layer1"], [3, 7], "-"),
    ("lite0", 64, ["_blocks.0._project_conv", "_blocks.2._project_conv"], [1, 409], "+"),
])
def test_polycam_equals_the_authors_recursion(request, which, size, names, targets, variant):
    from jittercam.methods.polycam import PolyCAM

    model = request.getfixturevalue(which)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(6))
    method = PolyCAM(model, names, variant=variant, input_size=size, batch_size=128)
    before = model_state(model)
    got = method(x, targets)
    assert model_state(model) == before
    expected = torch.stack([_poly_oracle(model, x[i], t, names, variant) for i, t in enumerate(targets)])
    assert got.shape == expected.shape == (2, method.layers[0].map_size, method.layers[0].map_size)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)


def test_polycam_default_layers_and_refusals(resnet18):
    from jittercam.methods.polycam import PolyCAM

    method = PolyCAM(resnet18, input_size=64)
    assert [one.name for one in method.layers] == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert method.passes() == 1 + 2 * (64 + 64 + 128 + 256 + 512) and method.layer_map is False
    assert PolyCAM(resnet18, input_size=64, variant="−").variant == "-"
    with pytest.raises(JitterCamError, match="variant must be one of"):
        PolyCAM(resnet18, input_size=64, variant="x")
    with pytest.raises(JitterCamError, match="at least two layers"):
        PolyCAM(resnet18, ["layer4"], input_size=64)
