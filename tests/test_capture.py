"""The layer-capture piece: record, replace and graph modes, call-indexed, hooks always removed."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from jittercam import JitterCamError
from jittercam.methods import LayerCapture


class TwiceReLU(nn.Module):
    """One ReLU module called twice, as EfficientNet-Lite's `_swish`: conv -> act -> conv -> act -> head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Conv2d(3, 4, 3, padding=1)
        self.second = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.second(self.act(self.first(x)))).mean(dim=(2, 3)))


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("call, size", [(0, 8), (1, 4)])
def test_record_takes_the_chosen_call(call, size):
    model = TwiceReLU().eval()
    x = torch.randn(2, 3, 8, 8)
    with LayerCapture(model.act, call) as capture:
        logits = model(x)
    expected = model.act(model.first(x)) if call == 0 else model.act(model.second(model.act(model.first(x))))
    assert capture.output.shape == (2, 4, size, size)
    torch.testing.assert_close(capture.output, expected.detach())
    torch.testing.assert_close(logits, model(x))
    assert _no_hooks(model)


def test_record_keeps_the_output_an_in_place_operation_downstream_changes():
    """ResNet's bottleneck adds the identity into bn3's output in place; a recording of bn3 must not see it."""

    class InPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.conv(x)
            out += 1.0
            return out.relu_()

    model = InPlace().eval()
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad(), LayerCapture(model.conv) as capture:
        model(x)
    torch.testing.assert_close(capture.output, model.conv(x).detach())


def test_record_with_stop_skips_the_rest_of_the_network():
    model = TwiceReLU().eval()
    calls = []
    model.head.register_forward_hook(lambda *_: calls.append("head"))
    with LayerCapture(model.act, 0, stop=True) as capture:
        model(torch.randn(1, 3, 8, 8))
    assert calls == [] and capture.output.shape == (1, 4, 8, 8)
    assert not model.act._forward_hooks


def test_replace_feeds_any_batch_downstream():
    model = TwiceReLU().eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad(), LayerCapture(model.act, 1, stop=True) as capture:
        model(x)
    activations = capture.output
    ablated = activations.repeat(4, 1, 1, 1)
    ablated[torch.arange(4), torch.arange(4)] = 0  # channel k zeroed in copy k
    with torch.no_grad(), LayerCapture(model.act, 1, "replace", replacement=ablated) as replaced:
        logits = model(x)  # the trunk runs on one image, the head on four
    expected = model.head(ablated.mean(dim=(2, 3)))
    assert logits.shape == (4, 3)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(replaced.output, activations)


def test_replace_with_a_function_of_the_output():
    model = TwiceReLU().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), LayerCapture(model.act, 1, "replace", replacement=torch.zeros_like):
        logits = model(x)
    torch.testing.assert_close(logits, model.head.bias.expand(2, 3))


def test_graph_gives_gradients_to_the_activations_only():
    model = TwiceReLU().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), LayerCapture(model.act, 1, "graph") as capture:
        logits = model(x)
    (gradient,) = torch.autograd.grad(logits[:, 2].sum(), capture.output)
    # the head is mean + linear: the gradient is W[2] / (h w) at every position
    expected = (model.head.weight[2] / 16).detach().view(1, 4, 1, 1).expand(2, 4, 4, 4)
    torch.testing.assert_close(gradient, expected)
    assert all(p.grad is None for p in model.parameters())
    assert torch.is_grad_enabled() and _no_hooks(model)


def test_a_layer_that_did_not_run_is_an_error_and_the_hook_is_gone():
    model = TwiceReLU().eval()
    with pytest.raises(JitterCamError, match="did not run"), LayerCapture(model.act, 5, name="act"):
        model(torch.randn(1, 3, 8, 8))
    assert _no_hooks(model)


def test_an_error_in_the_forward_propagates_and_removes_the_hook():
    model = TwiceReLU().eval()
    with pytest.raises(RuntimeError), LayerCapture(model.act, 0):
        model(torch.randn(1, 5, 8, 8))  # wrong channel count
    assert _no_hooks(model)


def test_bad_modes_are_refused():
    act = nn.ReLU()
    with pytest.raises(ValueError):
        LayerCapture(act, mode="keep")
    with pytest.raises(ValueError):
        LayerCapture(act, mode="replace")  # no replacement
    with pytest.raises(ValueError):
        LayerCapture(act, mode="graph", stop=True)
