"""Ablation-CAM: the definition by hand, closed form == head-only re-runs == whole-network re-runs, the
rule that picks one, and agreement with pytorch-grad-cam."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import jittercam
from jittercam import JitterCamError
from jittercam.methods.ablation import AblationCAM


def _literal(model, layer_module, x, target, value=0.0):
    """Ablation-CAM written out: one whole-network forward per channel, the layer's output overwritten."""
    maps = []
    for image, cls in zip(x, target):
        image = image[None]
        captured = {}
        handle = layer_module.register_forward_hook(lambda _m, _i, out, c=captured: c.setdefault("a", out.clone()))
        with torch.no_grad():
            score = model(image)[0, cls]
        handle.remove()
        activations = captured["a"][0]
        drops = []
        for channel in range(activations.shape[0]):
            ablated = activations.clone()
            ablated[channel] = value
            handle = layer_module.register_forward_hook(lambda _m, _i, _out, a=ablated: a[None].clone())
            with torch.no_grad():
                drops.append(score - model(image)[0, cls])
            handle.remove()
        weights = torch.stack(drops) / score
        maps.append(torch.einsum("c,chw->hw", weights, activations).relu())
    return torch.stack(maps)


def test_closed_form_by_hand_on_the_tiny_cnn(tiny):
    """GAP + linear: y_c - y_c^k = W_ck * mean(A_k), so w_k = W_ck * mean(A_k) / y_c."""
    x = torch.rand(2, 3, 32, 32)
    target = torch.tensor([1, 3])
    with torch.no_grad():
        activations = tiny.act(tiny.conv(x))
        logits = tiny(x)
    score = logits.gather(1, target[:, None])
    weights = tiny.fc.weight[target] * activations.mean(dim=(2, 3)) / score
    expected = torch.einsum("bc,bchw->bhw", weights, activations).relu().detach()
    methods = [AblationCAM(tiny, input_size=32, closed_form=closed_form) for closed_form in (None, True, False)]
    for method in methods:
        torch.testing.assert_close(method(x, target), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(_literal(tiny, tiny.act, x, target), expected, rtol=1e-4, atol=1e-6)
    tiny.double()  # float64: the closed form and the head-only re-run agree to its precision
    closed, rerun = methods[1].weights(x.double(), target), methods[2].weights(x.double(), target)
    torch.testing.assert_close(closed, rerun, rtol=0, atol=1e-12)


def test_strategy_and_passes_on_the_tiny_cnn(tiny):
    assert AblationCAM(tiny, input_size=32).strategy() == "closed-form"
    assert AblationCAM(tiny, input_size=32).passes() == 1
    head = AblationCAM(tiny, input_size=32, closed_form=False)
    assert head.strategy() == "head" and head.passes() == 2  # one forward, one head re-run of 3 copies
    assert AblationCAM(tiny, input_size=32).strategy(64) == "closed-form"


# What a float32 re-run resolves: y_c - y_c^k subtracts two logits, each a sum of C products rounded to
# float32, so a weight (y_c - y_c^k) / y_c carries a rounding of some float32 epsilons (measured: 13 on
# resnet18 at 64 px, 2 on EfficientNet-Lite0). The closed form has no such difference.
FLOAT32_ROUNDING = 200 * torch.finfo(torch.float32).eps


def test_closed_form_equals_rerun_on_resnet18():
    torch.manual_seed(0)
    model = jittercam.load_model("resnet18", weights="random")
    closed = AblationCAM(model, "layer4")
    rerun = AblationCAM(model, "layer4", closed_form=False)
    x = torch.randn(2, 3, 64, 64)
    assert closed.strategy(64) == "closed-form" and rerun.strategy(64) == "head"
    assert closed.passes(64) == 1 and rerun.passes(64) == 2  # 512 copies of 512 x 2 x 2 in one head re-run
    weights = closed.weights(x, [3, 7])
    torch.testing.assert_close(rerun.weights(x, [3, 7]), weights, rtol=0, atol=FLOAT32_ROUNDING)
    assert weights.abs().max() > 100 * FLOAT32_ROUNDING  # the comparison is not vacuous
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_closed_form_equals_rerun_on_efficientnet_lite0(lite0, goldfish_batch):
    """The target is the second call of `_swish`, and the head reads the batch size from its input: the
    head-only re-run feeds one 32 px zero image per ablated copy."""
    closed = AblationCAM(lite0)
    rerun = AblationCAM(lite0, closed_form=False)
    assert closed.layer.call == 1
    assert closed.strategy() == "closed-form" and rerun.strategy() == "head"
    assert rerun.passes() == 1 + 3  # 1280 copies in chunks of 2**25 // (1280 * 49) = 535
    weights = closed.weights(goldfish_batch, 1)
    torch.testing.assert_close(rerun.weights(goldfish_batch, 1), weights, rtol=0, atol=FLOAT32_ROUNDING)
    assert weights.abs().max() > 100 * FLOAT32_ROUNDING
    activations = jittercam.methods.layer_activations(lite0, closed.layer, goldfish_batch)
    expected = torch.einsum("bc,bchw->bhw", weights, activations).relu()
    torch.testing.assert_close(closed(goldfish_batch, 1), expected)


def test_closed_form_through_densenets_relu():
    """DenseNet121's `features` is taken before torchvision's functional ReLU (the methods rectify it):
    with the value 0 the closed form stays exact through that ReLU; "auto" ablates these activations,
    which go below 0, with min - 1e7, which the ReLU cuts to 0 — the check sees it and re-runs."""
    torch.manual_seed(0)
    model = jittercam.load_model("densenet121", weights="random")
    closed = AblationCAM(model, input_size=64)
    rerun = AblationCAM(model, input_size=64, closed_form=False)
    assert closed.layer.name == "features" and closed.layer.rectify
    assert closed.strategy() == "closed-form" and rerun.strategy() == "head"
    x = torch.randn(2, 3, 64, 64)
    weights = closed.weights(x, [3, 7])
    torch.testing.assert_close(rerun.weights(x, [3, 7]), weights, rtol=0, atol=FLOAT32_ROUNDING)
    assert weights.abs().max() > 100 * FLOAT32_ROUNDING
    assert AblationCAM(model, input_size=64, ablated_value="auto").strategy() == "head"


def test_agrees_with_pytorch_grad_cam():
    """pytorch-grad-cam ablates with 0 here (layer4's activations reach 0) and runs the whole network
    for every channel. Its float32 differences of nearly equal logits limit the agreement of the closed
    form (exact) to about 1e-4; the re-run has the same rounding and agrees to 1e-6."""
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = jittercam.load_model("resnet18", weights="random")
    x = torch.randn(1, 3, 48, 48)  # layer4 is 2 x 2
    targets = [7]
    with pytorch_grad_cam.AblationCAM(model=model, target_layers=[model.layer4], batch_size=64) as peer:
        expected = torch.from_numpy(peer(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))
    for closed_form, tolerance in ((None, 2e-4), (False, 1e-5)):
        method = AblationCAM(model, "layer4", closed_form=closed_form, ablated_value="auto")
        got = jittercam.upsample(method(x, targets), 48)
        torch.testing.assert_close(got, expected.float(), atol=tolerance, rtol=0)


class SkipAround(nn.Module):
    """The tiny CNN with a path around its ReLU: the head adds the mean of the input to every logit, so
    the layers after `act` depend on more than its output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=4, stride=4)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3))) + x.mean(dim=(1, 2, 3))[:, None]


class MLPHead(nn.Module):
    """conv -> ReLU -> flatten -> linear -> ReLU -> linear: not affine after the target layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=4, stride=4)
        self.act = nn.ReLU()
        self.hidden = nn.Linear(4 * 8 * 8, 16)
        self.out = nn.Linear(16, 5)

    def forward(self, x):
        return self.out(self.hidden(self.act(self.conv(x)).flatten(1)).relu())


def test_a_path_around_the_layer_falls_back_to_whole_network_reruns():
    torch.manual_seed(0)
    model = SkipAround().eval()
    x = torch.rand(2, 3, 32, 32)
    method = AblationCAM(model, "act", input_size=32, closed_form=False)
    assert method.strategy() == "full" and method.passes() == 1 + 4
    torch.testing.assert_close(method(x, [1, 2]), _literal(model, model.act, x, [1, 2]), rtol=1e-4, atol=1e-6)
    # the head is still affine in the layer's output, so the automatic rule takes the closed form
    automatic = AblationCAM(model, "act", input_size=32)
    assert automatic.strategy() == "closed-form"
    torch.testing.assert_close(automatic(x, [1, 2]), method(x, [1, 2]), rtol=1e-4, atol=1e-6)


def test_a_head_that_is_not_affine_is_rerun():
    torch.manual_seed(0)
    model = MLPHead().eval()
    x = torch.rand(2, 3, 32, 32)
    method = AblationCAM(model, "act", input_size=32)
    assert method.strategy() == "head"
    expected = _literal(model, model.act, x, [0, 4])
    torch.testing.assert_close(method(x, [0, 4]), expected, rtol=1e-4, atol=1e-6)
    # the closed form would be wrong here
    forced = AblationCAM(model, "act", input_size=32, closed_form=True)(x, [0, 4])
    assert (forced - expected).abs().max() > 1e-3 * expected.abs().max()


def test_auto_value_when_the_activations_never_reach_zero(tiny):
    """Without the ReLU the minimum is negative: "auto" ablates with min - 1e7, as pytorch-grad-cam; the
    closed form, the re-run and the literal loop agree (in float64: the drops are about 1e7)."""
    tiny.act = nn.Identity()
    methods = [
        AblationCAM(tiny, "act", input_size=32, closed_form=closed_form, ablated_value="auto")
        for closed_form in (None, False)
    ]
    tiny.double()  # after the layer probe, which feeds float32
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        low = tiny.conv(x).flatten(1).min(dim=1).values
    assert (low < 0).all()
    assert [method.strategy() for method in methods] == ["closed-form", "head"]
    expected = torch.cat(
        [_literal(tiny, tiny.act, x[i : i + 1], [t], float(low[i]) - 1e7) for i, t in enumerate([1, 2])]
    )
    for method in methods:
        torch.testing.assert_close(method(x, [1, 2]), expected, rtol=1e-6, atol=1e-9 * float(expected.max()))


def test_auto_value_before_a_relu_is_rerun(tiny):
    """At the convolution, before the ReLU, min - 1e7 is cut to 0 by the ReLU: the closed form (which
    would count the 1e7) fails the check, and the automatic rule re-runs."""
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        low = tiny.conv(x).flatten(1).min(dim=1).values
    method = AblationCAM(tiny, "conv", input_size=32, ablated_value="auto")
    assert method.strategy() == "head"
    expected = torch.cat(
        [_literal(tiny, tiny.conv, x[i : i + 1], [t], float(low[i]) - 1e7) for i, t in enumerate([1, 2])]
    )
    torch.testing.assert_close(method(x, [1, 2]), expected, rtol=1e-4, atol=1e-6)
    # on the ReLU's output the minimum is 0, so "auto" is the paper's 0
    torch.testing.assert_close(
        AblationCAM(tiny, input_size=32, ablated_value="auto")(x, 1), AblationCAM(tiny, input_size=32)(x, 1)
    )


@pytest.mark.parametrize("closed_form", [None, False])
def test_batched_equals_one_by_one_and_targets_per_image(tiny, closed_form):
    x = torch.rand(3, 3, 32, 32)
    together = AblationCAM(tiny, input_size=32, closed_form=closed_form, batch_size=5)(x, [0, 4, 2])
    one = AblationCAM(tiny, input_size=32, closed_form=closed_form, batch_size=1)
    alone = torch.cat([one(x[i : i + 1], t) for i, t in enumerate([0, 4, 2])])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(one(x[:1], 0), one(x[:1], 4))


def test_zero_score_gives_a_zero_map(tiny):
    with torch.no_grad():
        tiny.fc.weight[0].zero_()
        tiny.fc.bias[0] = 0.0
    for closed_form in (None, False):
        maps = AblationCAM(tiny, input_size=32, closed_form=closed_form)(torch.rand(2, 3, 32, 32), 0)
        assert torch.equal(maps, torch.zeros_like(maps))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"closed_form": "yes"}, "closed_form must be"),
        ({"ablated_value": "min"}, "ablated_value must be"),
        ({"ablated_value": float("nan")}, "ablated_value must be"),
    ],
)
def test_bad_options_are_refused(tiny, options, message):
    with pytest.raises(JitterCamError, match=message):
        AblationCAM(tiny, input_size=32, **options)
