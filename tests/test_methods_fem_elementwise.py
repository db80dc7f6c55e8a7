"""FEM and element-wise Grad-CAM: values by hand, pytorch-grad-cam's maps on ResNet18 and
EfficientNet-Lite0, the paper's FEM against the peer's, bf16, Jitter-CAM over them."""
from __future__ import annotations

import pytest
import torch

import jittercam
import test_methods_eigen as eigen_tests
from jittercam import JitterCamError
from jittercam.methods.elementwise import GradCAMElementWise
from jittercam.methods.fem import FEM
from test_methods_eigen import peer_maps

# the same batches as the Eigen-CAM tests (ResNet18 random weights at 96 px, conftest's; three photos on Lite0)
resnet_batch, lite0_batch = eigen_tests.resnet_batch, eigen_tests.lite0_batch


def _fem_by_hand(activations: torch.Tensor, k: float, variant: str) -> torch.Tensor:
    """FEM written out channel by channel (one image)."""
    cam = torch.zeros(activations.shape[1:])
    for channel in activations:
        mean, std = channel.mean(), ((channel - channel.mean()) ** 2).mean().sqrt()
        binary = (channel > mean + k * std).float()
        cam += mean * binary if variant == "paper" else binary.mean() * channel
    return cam.relu()


@pytest.mark.parametrize("variant", ["paper", "pytorch-grad-cam"])
def test_fem_by_hand(tiny, variant):
    x = torch.rand(2, 3, 32, 32)
    activations = tiny.act(tiny.conv(x)).detach()
    for k in (2.0, 0.5):
        got = FEM(tiny, input_size=32, k=k, variant=variant)(x, [0, 4])
        expected = torch.stack([_fem_by_hand(a, k, variant) for a in activations])
        assert (expected > 0).any()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    paper = FEM(tiny, input_size=32, k=0.5)(x)
    assert len(paper.unique()) <= 2**3  # a sum of 3 binary maps: at most 2^3 values, the peer's keeps gradations


def test_elementwise_by_hand_on_gap_linear(tiny):
    with torch.no_grad():
        tiny.fc.weight[1] = torch.tensor([1.0, -1.0, 0.5])  # evidence for and against the class
        tiny.conv.bias.fill_(0.2)  # every channel alive, so that the two meet at a position
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    activations = tiny.act(tiny.conv(x))
    target = torch.tensor([1, 3])
    gradient = tiny.fc.weight[target] / (activations.shape[-1] * activations.shape[-2])  # constant over space
    expected = (gradient[:, :, None, None] * activations).relu().sum(dim=1).detach()
    got = GradCAMElementWise(tiny, input_size=32)(x, target)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    hires = jittercam.create("hirescam", tiny, input_size=32)(x, target)
    assert (got >= hires).all() and (got > hires + 1e-6).any()  # the ReLU inside the sum keeps more


@pytest.mark.parametrize("model_name", ["resnet18", "lite0"])
@pytest.mark.parametrize(
    "ours, theirs, options",
    [("fem", "FEM", {"variant": "pytorch-grad-cam"}), ("elementwise", "GradCAMElementWise", {})],
)
def test_agrees_with_pytorch_grad_cam(request, model_name, ours, theirs, options):
    model = request.getfixturevalue(model_name)
    x, targets = request.getfixturevalue("resnet_batch" if model_name == "resnet18" else "lite0_batch")
    layer = "layer4" if model_name == "resnet18" else "_swish"
    expected = peer_maps(model, layer, x, targets, theirs)
    got = jittercam.upsample(jittercam.create(ours, model, target_layer=layer, **options)(x, targets), x.shape[-1])
    # the peer resizes with OpenCV and divides by max + 1e-7; both are bilinear with half-pixel centres
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_paper_fem_is_another_map_than_the_peers(lite0, lite0_batch):
    x, targets = lite0_batch
    paper = jittercam.upsample(FEM(lite0)(x, targets), 224)
    peer = jittercam.upsample(FEM(lite0, variant="pytorch-grad-cam")(x, targets), 224)
    assert (paper - peer).abs().amax(dim=(1, 2)).min() > 0.1
    torch.testing.assert_close(FEM(lite0)(x), FEM(lite0)(x, [5, 6, 7]))  # class-agnostic: the target is ignored
    with pytest.raises(JitterCamError, match="class index 1000 is out of range"):
        FEM(lite0)(x, 1000)


def test_elementwise_in_bf16(lite0, lite0_batch):
    x, targets = lite0_batch
    full = GradCAMElementWise(lite0)(x, targets)
    half = GradCAMElementWise(lite0, precision="bf16")(x, targets)
    relative = ((half - full).norm(dim=(1, 2)) / full.norm(dim=(1, 2))).max()
    assert 0 < relative < 0.05  # bf16 rounds (8 bits of mantissa); the map stays the same map


@pytest.mark.parametrize("name", ["fem", "elementwise"])
def test_jittercam_wraps_them(resnet18, name):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    method = jittercam.create(f"jittercam:{name}", resnet18)
    maps = method(x, [2, 8])
    assert maps.shape == (2, 4, 4) and torch.isfinite(maps).all() and (maps >= 0).all()  # m = 2 at 64 px
    assert method.passes(64) == 9 and method.base.passes() == 1


def test_options_and_refusals(tiny):
    assert "k=2.0" in repr(FEM(tiny, input_size=32)) and "variant='paper'" in repr(FEM(tiny, input_size=32))
    with pytest.raises(JitterCamError, match="variant must be one of 'paper', 'pytorch-grad-cam'"):
        FEM(tiny, input_size=32, variant="xplique")
    with pytest.raises(JitterCamError, match="k must be a finite number"):
        FEM(tiny, input_size=32, k=float("nan"))
    with pytest.raises(JitterCamError, match="supports precision fp32, not 'fp16'"):
        FEM(tiny, input_size=32, precision="fp16")
