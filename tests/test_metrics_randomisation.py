"""The model-randomisation sanity check against Quantus 0.6 (MPRT, SmoothMPRT, EfficientMPRT), scipy and
skimage; the user's model untouched; errors."""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from skimage.metrics import structural_similarity
from torch import nn

import jittercam
from jittercam import JitterCamError, metrics
from jittercam.maps import resize

quantus = pytest.importorskip("quantus")


class SmallCNN(nn.Module):
    """Two convolutions with BatchNorm, pooling and a linear head: 7 resettable modules."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def small():
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that their reset changes the model
        for bn in (model.features[1], model.features[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def batch():
    torch.manual_seed(1)
    return torch.randn(3, 3, 32, 32), torch.tensor([0, 2, 4])


def _factory(name: str = "gradcam", **options):
    return functools.partial(jittercam.create, name, target_layer="features.3", **options)


def _quantus_explain(name: str = "gradcam", dtype=torch.float32):
    """Quantus's explain_func: our method on Quantus's model, the map resized (bilinear) to the input."""
    def explain(model, inputs, targets, **_):
        x = torch.as_tensor(inputs)
        maps = _factory(name)(model)(x, torch.as_tensor(targets))
        return resize(maps, tuple(x.shape[-2:])).unsqueeze(1).detach().to(dtype).numpy()
    return explain


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _quantus(metric, model, x, y, explain, batch_size=64):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=explain,
                      device="cpu", batch_size=batch_size)


@pytest.mark.parametrize("order", ["top_down", "bottom_up", "independent"])
def test_mprt_spearman_equals_quantus(small, batch, order):
    x, y = batch
    before = _state(small)
    ours = metrics.mprt(small, x, y, _factory(), order=order, measures=("spearman",))
    theirs = _quantus(quantus.MPRT(layer_order=order, disable_warnings=True), small, x, y, _quantus_explain())
    assert list(ours.layers) == list(theirs)  # "original" then the module names in Quantus's order
    expected = np.array([theirs[k] for k in theirs]).T
    # Quantus divides the batch by its maximum, we each map by its own: float32 rounding moves a few near-ties
    np.testing.assert_allclose(ours.similarity["spearman"].numpy(), expected, atol=2e-5)
    assert all(torch.equal(v, before[k]) for k, v in small.state_dict().items())  # the model untouched
    assert small.training is False


def test_mprt_ssim_flat_equals_quantus_and_2d_equals_skimage(small, batch):
    x, y = batch
    # Quantus's MPRT cannot call its own `ssim` (it returns a list, MPRT calls .tolist()): its function on the
    # flattened prepared maps of each step, as MPRT would pass them
    ours = metrics.mprt(small, x, y, _factory(), measures=("ssim",), flat_ssim=True)
    prepare = lambda m: resize(_factory()(m)(x, y), (32, 32))  # noqa: E731
    def prepared(maps):
        return (maps / maps.abs().flatten(1).amax(1).view(-1, 1, 1)).abs().flatten(1).detach().numpy()
    original = prepared(prepare(small))
    expected = [quantus.similarity_func.ssim(original, original, batched=True)]
    expected += [quantus.similarity_func.ssim(original, prepared(prepare(model)), batched=True)
                 for _, model in metrics.randomised_models(small)]
    np.testing.assert_allclose(ours.similarity["ssim"].numpy(), np.array(expected).T, atol=1e-6)
    # the paper's 2-D SSIM, by skimage on the prepared maps of the fully randomised model
    model = list(metrics.randomised_models(small))[-1][1]  # one copy, randomised step by step
    a, b = prepare(small).double(), prepare(model).double()
    a = (a / a.abs().flatten(1).amax(1).view(-1, 1, 1)).abs()
    b = (b / b.abs().flatten(1).amax(1).view(-1, 1, 1)).abs()
    expected = [structural_similarity(p.numpy(), q.numpy(), data_range=float(max(p.max(), q.max()) - min(p.min(),
                                      q.min()))) for p, q in zip(a, b)]
    twod = metrics.mprt(small, x, y, _factory(), measures=("ssim",))
    np.testing.assert_allclose(twod.last("ssim").numpy(), expected, atol=1e-9)


def test_smooth_mprt_equals_quantus(small, batch, monkeypatch):
    x, y = batch
    samples = 4
    # Quantus draws the noise with numpy's global state and explains through `quantus.explain`: give it ours
    generator = torch.Generator().manual_seed(7)
    draws = [torch.randn(x.shape, generator=generator, dtype=torch.float64).numpy() for _ in range(samples - 1)]
    calls = iter(range(10_000))
    monkeypatch.setattr(np.random, "randn", lambda *shape: draws[next(calls) % (samples - 1)])
    explain = _quantus_explain()
    monkeypatch.setattr(quantus, "explain", lambda model, inputs, targets, **kw: explain(
        model, inputs.astype(np.float32), targets))
    metric = quantus.SmoothMPRT(nr_samples=samples, disable_warnings=True)
    theirs = _quantus(metric, small, x, y, explain)
    ours = metrics.smooth_mprt(small, x, y, _factory(), samples=samples, noise_seed=7)
    np.testing.assert_allclose(ours.similarity["spearman"].numpy(), np.array([theirs[k] for k in theirs]).T,
                               atol=1e-5)


def test_efficient_mprt_equals_quantus(small, batch):
    x, y = batch
    metric = quantus.EfficientMPRT(disable_warnings=True)
    # float64 maps: numpy bins float32 values with float32 edges, whose rounding we do not copy
    theirs = _quantus(metric, small, x, y, _quantus_explain(dtype=torch.float64))
    ours = metrics.efficient_mprt(small, x, y, _factory())  # resized to the input's size, as the explain_func
    np.testing.assert_allclose(ours.score.numpy(), theirs, atol=1e-9)
    assert (ours.score.abs() > 1e-3).all()


def test_measures_equal_scipy_and_numpy():
    torch.manual_seed(3)
    a = torch.randn(4, 9, 9).round(decimals=1)  # ties
    b = torch.randn(4, 9, 9).round(decimals=1)
    expected = [scipy.stats.spearmanr(p.flatten(), q.flatten())[0] for p, q in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(metrics.spearman(a, b).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(metrics.average_ranks(a.flatten(1)).numpy(),
                               scipy.stats.rankdata(a.flatten(1).numpy(), axis=1), atol=0)
    for row in a:
        counts, _ = np.histogram(row.numpy(), bins=100)
        assert float(metrics.discrete_entropy(row[None])[0]) == pytest.approx(scipy.stats.entropy(counts), abs=1e-12)
    assert float(metrics.discrete_entropy(torch.ones(1, 4, 4))[0]) == 0.0


def test_blocks_and_steps(small, batch):
    assert metrics.randomisable_layers(small, "blocks") == ["features.0", "features.1", "features.3",
                                                           "features.4", "fc"]
    names = metrics.randomised_models(small, "top_down", layers=["features", "fc"], steps=1).names
    assert names == ["fc"]
    x, y = batch
    result = metrics.mprt(small, x, y, _factory(), layers=["fc", "features"], steps=2)
    assert result.layers == ("original", "features", "fc")
    assert result.similarity["spearman"].shape == (3, 3)
    assert torch.allclose(result.similarity["spearman"][:, 0], torch.ones(3, dtype=torch.float64))


def test_errors(small, batch):
    x, y = batch
    with pytest.raises(JitterCamError, match="order 'sideways'"):
        metrics.mprt(small, x, y, _factory(), order="sideways")
    with pytest.raises(JitterCamError, match="no module 'nope'"):
        metrics.mprt(small, x, y, _factory(), layers=["nope"])
    with pytest.raises(JitterCamError, match="measures"):
        metrics.mprt(small, x, y, _factory(), measures=("hog",))
    with pytest.raises(JitterCamError, match="steps"):
        metrics.mprt(small, x, y, _factory(), steps=0)
    with pytest.raises(JitterCamError, match="samples"):
        metrics.smooth_mprt(small, x, y, _factory(), samples=0)


def test_rebind_and_precomputed_original(small, batch):
    """A method built on the model, copied onto each randomised copy, gives what re-creating it gives."""
    x, y = batch
    method = _factory()(small)
    built = metrics.mprt(small, x, y, _factory(), layers="blocks")
    rebound = metrics.mprt(small, x, y, metrics.rebind(method, small), layers="blocks", original=method(x, y))
    assert torch.equal(built.similarity["spearman"], rebound.similarity["spearman"])
    assert torch.equal(metrics.efficient_mprt(small, x, y, _factory()).score,
                       metrics.efficient_mprt(small, x, y, metrics.rebind(method, small), original=method(x, y)).score)
    assert method.model is small


@pytest.mark.parametrize("order", ["top_down", "independent"])
def test_randomised_resnet18_equals_quantus_generator(order):
    """resnet18 (random weights): the parameters after each of the first steps equal Quantus's copies."""
    torchvision = pytest.importorskip("torchvision")
    from quantus.helpers.model.pytorch_model import PyTorchModel

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    before = _state(model)
    theirs = PyTorchModel(model, channel_first=True).get_random_layer_generator(order=order, seed=42)
    ours = metrics.randomised_models(model, order, seed=42)
    assert len(ours.names) == 41  # 20 convolutions, 20 BatchNorms, fc
    for step, ((name, mine), (their_name, their_model)) in enumerate(zip(ours, theirs, strict=False)):
        assert name == their_name
        theirs_now = their_model.state_dict()
        assert all(torch.equal(v, theirs_now[k]) for k, v in mine.state_dict().items())
        if step == 3:
            break
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert metrics.randomisable_layers(model, "blocks") == ["conv1", "bn1", *[f"layer{i}.{j}" for i in range(1, 5)
                                                                             for j in range(2)], "fc"]
