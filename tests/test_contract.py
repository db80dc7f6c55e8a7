"""Every registered method keeps the one contract: raw `(B, h, w)` maps on the input's device, the model
left as it was, the same maps under `no_grad` and `inference_mode`, chunking invisible."""
from __future__ import annotations

import re

import pytest
import torch

import jittercam

# options that keep the expensive methods fast on the 32 px tiny CNN
FAST = {"rise": {"masks": 64}, "cameras": {"sizes": [32, 48]}, "sscam": {"num_samples": 3}, "iscam": {"num_samples": 3},
        "smoothgradcam++": {"num_samples": 2}}


def _options(name: str) -> dict:
    options = {"input_size": 32}
    for part in name.split(":"):
        options.update(FAST.get(part, {}))
    if not jittercam.methods.method_class(name).uses_layer:
        options.pop("input_size")
    return {key: value for key, value in options.items() if key in jittercam.methods.method_options(name)}


NAMES = [*jittercam.available_methods(), "guided:jittercam", "upscale:gradcam++"]
MULTI_LAYER = {"polycam", "refinecam", "winsorcam"}  # they need maps at two resolutions at least


class TwoStageCNN(torch.nn.Module):
    """Two convolutions (16x16, then 8x8 maps at 32 px) for the multi-layer methods."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 2, 2), torch.nn.ReLU())
        self.stage2 = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 2, 2), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stage2(self.stage1(x))).flatten(1))


TRANSFORMER_ONLY = {"rollout", "legrad"}  # they read attention: a vision transformer


@pytest.fixture
def tiny(request, tiny):
    """The conftest's one-layer CNN, a two-stage one for a multi-layer method, a small ViT for the attention
    methods."""
    name = getattr(getattr(request.node, "callspec", None), "params", {}).get("name", "")
    if set(name.split(":")) & MULTI_LAYER:
        torch.manual_seed(0)
        return TwoStageCNN().eval()
    if set(name.split(":")) & TRANSFORMER_ONLY:
        timm = pytest.importorskip("timm")
        torch.manual_seed(0)
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                                 embed_dim=16, num_heads=2, num_classes=5).eval()
    return tiny


def _state(model):
    hooks = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )
    return hooks, model.training, [p.grad for p in model.parameters()]


@pytest.mark.parametrize("name", NAMES)
def test_contract(tiny, name):
    try:
        jittercam.methods.check_method_name(name)
    except jittercam.JitterCamError:
        pytest.skip(f"{name} is not registered")
    x = torch.rand(3, 3, 32, 32)
    targets = [1, 3, 0]
    before = tiny(x)
    method = jittercam.create(name, tiny, **_options(name))
    maps = method(x, targets)
    assert isinstance(maps, torch.Tensor) and maps.dim() == 3 and maps.shape[0] == 3
    assert maps.is_floating_point() and maps.device == x.device and torch.isfinite(maps).all()
    assert _state(tiny) == (0, False, [None] * len(list(tiny.parameters())))
    torch.testing.assert_close(tiny(x), before, rtol=0, atol=0)
    assert isinstance(method.passes(), int) and method.passes() >= 0
    assert repr(method).startswith(type(method).__name__ + "(")

    with torch.no_grad():
        torch.testing.assert_close(method(x, targets), maps, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        torch.testing.assert_close(method(x.clone(), targets), maps, rtol=1e-5, atol=1e-6)
    assert torch.is_grad_enabled()

    one_by_one = jittercam.create(name, tiny, **_options(name), batch_size=1)
    alone = torch.cat([one_by_one(x[i : i + 1], t) for i, t in enumerate(targets)])
    torch.testing.assert_close(alone, maps, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_top1_when_no_target(tiny, name):
    jittercam.methods.check_method_name(name)
    x = torch.rand(2, 3, 32, 32)
    method = jittercam.create(name, tiny, **_options(name))
    torch.testing.assert_close(method(x), method(x, tiny(x).argmax(dim=1)))


@pytest.mark.parametrize("name", ["gradcam", "jittercam"])
@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(3, 32, 32), "(B, 3, H, W)"),
        (torch.rand(1, 1, 32, 32), "(B, 3, H, W)"),
        (torch.rand(0, 3, 32, 32), "empty batch"),
        ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), "torch.uint8"),
        (torch.rand(1, 3, 32, 32, dtype=torch.float64), "float64"),
    ],
)
def test_bad_batches_are_refused_with_what_was_expected(tiny, name, images, message):
    method = jittercam.create(name, tiny, input_size=32)
    with pytest.raises(jittercam.JitterCamError, match=re.escape(message)):
        method(images, 0)


@pytest.mark.parametrize("name", NAMES)
def test_several_classes_per_image_equal_separate_calls(tiny, name):
    """A (B, K) target gives (B, K, h, w) maps, map k equal to the call for column k (one forward and K
    backward passes for the gradient CAMs, one call per class for the others)."""
    jittercam.methods.check_method_name(name)
    x = torch.rand(2, 3, 32, 32)
    rows = [[1, 3, 0], [4, 4, 2]]
    method = jittercam.create(name, tiny, **_options(name))
    maps = method(x, rows)
    assert maps.shape[:2] == (2, 3)
    separate = torch.stack([method(x, [row[k] for row in rows]) for k in range(3)], dim=1)
    torch.testing.assert_close(maps, separate, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(method(x, torch.tensor(rows)), maps)
    torch.testing.assert_close(method(x, [[2, 0]]), torch.stack([method(x, 2), method(x, 0)], dim=1))


@pytest.mark.parametrize(
    "target, message",
    [
        ([[1, 2], [3]], "same number of classes"),
        ([[1, 2], [3, 1], [0, 0]], "classes for 3 images, not 2"),
        ([[1, 9]], "class index 9 is out of range"),
        ([[1, -1]], "class index -1 is out of range"),
        ([[1.5, 2]], "integer class indices"),
        (torch.zeros(2, 0, dtype=torch.long), "names no class"),
    ],
)
def test_bad_class_lists_are_refused_in_one_line(tiny, target, message):
    method = jittercam.create("gradcam", tiny, input_size=32)
    with pytest.raises(jittercam.JitterCamError, match=re.escape(message)):
        method(torch.rand(2, 3, 32, 32), target)
