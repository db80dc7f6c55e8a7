"""ROAD (`metrics.road`, `metrics.noisy_linear_imputation`): the imputation by hand and against the peers'
imputers, the scores against pytorch-grad-cam's ROAD metrics (seeded noise) and Quantus 0.6's ROAD, errors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TinyCNN
from jittercam import metrics
from jittercam.errors import JitterCamError
from jittercam.maps import resize
from jittercam.models import ModelCard, attach_card

SIZE = 20  # 400 pixels: pytorch-grad-cam's percentile thresholds remove exactly int(400·p/100) at p = 10, ..., 90
TARGETS = [0, 2, 4]


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = TinyCNN(channels=6, classes=5).eval()
    images = torch.randn(3, 3, SIZE, SIZE)
    maps = torch.rand(3, SIZE, SIZE)  # distinct values: no ties
    return model, images, maps


def test_imputation_by_hand():
    image = torch.arange(9.0).view(1, 1, 3, 3) ** 1.5
    v = image[0, 0].numpy().astype(np.float64)
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 1, 1] = True  # the centre: all 8 neighbours known, weights sum to 1
    centre = (v[0, 1] + v[1, 0] + v[1, 2] + v[2, 1]) / 6 + (v[0, 0] + v[0, 2] + v[2, 0] + v[2, 2]) / 12
    out = metrics.noisy_linear_imputation(image, removed, 0.0)
    assert out[0, 0, 1, 1].item() == pytest.approx(centre, rel=1e-6)
    assert torch.equal(out[~removed[:, None].expand_as(out)], image[~removed[:, None].expand_as(image)])

    removed[0, 0, 0] = True  # a corner too: 3 neighbours, 5/12 of the weight, the centre among them unknown
    removed[0, 1, 1] = True
    # corner a, centre c:  (5/12) a − (1/12) c = (v01 + v10)/6 ;  c − (1/12) a = centre's known part
    known_c = (v[0, 1] + v[1, 0] + v[1, 2] + v[2, 1]) / 6 + (v[0, 2] + v[2, 0] + v[2, 2]) / 12
    system = np.array([[5 / 12, -1 / 12], [-1 / 12, 1.0]])
    a, c = np.linalg.solve(system, [(v[0, 1] + v[1, 0]) / 6, known_c])
    out = metrics.noisy_linear_imputation(image, removed, 0.0)
    assert out[0, 0, 0, 0].item() == pytest.approx(a, rel=1e-6)
    assert out[0, 0, 1, 1].item() == pytest.approx(c, rel=1e-6)


def test_imputation_equals_the_peers_imputers(setup):
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from quantus.functions.perturb_func import noisy_linear_imputation

    _, images, _ = setup
    removed = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
    removed[:, 5:12, 3:15] = True
    removed[0, 0, :] = True
    removed[1, :, -1] = True
    removed[2, ::3, ::2] = True
    ours = metrics.noisy_linear_imputation(images, removed, 0.0)
    imputer = NoisyLinearImputer(noise=0.0)
    theirs = torch.stack([imputer(images[i], (~removed[i]).float()) for i in range(3)])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    for i in range(3):
        quantus = noisy_linear_imputation(images[i].numpy(), np.flatnonzero(removed[i].numpy()), noise=0.0)
        np.testing.assert_allclose(ours[i].numpy(), quantus, rtol=0, atol=1e-6)
    # seeded noise: pytorch-grad-cam draws (C, k) with torch.randn_like per image
    torch.manual_seed(7)
    noisy = torch.stack([NoisyLinearImputer(noise=0.01)(images[i], (~removed[i]).float()) for i in range(3)])
    ours = metrics.noisy_linear_imputation(images, removed, 0.01, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, noisy, rtol=0, atol=1e-6)


def test_imputation_commutes_with_normalisation(setup):
    _, images, maps = setup
    removed = maps > 0.6
    std, mean = torch.tensor([0.2, 0.5, 0.3]).view(1, 3, 1, 1), torch.tensor([0.4, -0.1, 0.2]).view(1, 3, 1, 1)
    direct = metrics.noisy_linear_imputation(images * std + mean, removed, 0.0)
    after = metrics.noisy_linear_imputation(images, removed, 0.0) * std + mean
    torch.testing.assert_close(direct, after, rtol=0, atol=1e-5)


def test_equals_pytorch_grad_cam_with_seeded_noise(setup):
    from pytorch_grad_cam.metrics.road import ROADCombined, ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, images, maps = setup
    targets = [ClassifierOutputSoftmaxTarget(t) for t in TARGETS]
    cams = maps.numpy()
    # pytorch-grad-cam's percentile is the share kept: ROAD...(q) removes 100 − q percent; scores minus the original
    for order, peer in (("morf", ROADMostRelevantFirst), ("lerf", ROADLeastRelevantFirst)):
        result = metrics.road(model, images, maps, TARGETS, [20, 70], orders=(order,), noise_space="input", seed=3,
                              ties="stable")
        torch.manual_seed(3)
        theirs = np.stack([peer(q)(images, cams, targets, model) for q in (80, 30)], axis=1)
        ours = getattr(result, f"{order}_scores") - result.original[:, None]
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-6)
        other = "lerf" if order == "morf" else "morf"
        assert getattr(result, f"{other}_scores").isnan().all()
    # ROADCombined draws LeRF's noise first, then MoRF's, each over its percentiles 10 ... 90 (removing 90 ... 10)
    result = metrics.road(model, images, maps, TARGETS, range(90, 0, -10), orders=("lerf", "morf"),
                          noise_space="input", seed=5, ties="stable")
    torch.manual_seed(5)
    theirs = ROADCombined()(images, cams, targets, model)
    np.testing.assert_allclose(result.combined.numpy(), theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.combined, (result.lerf - result.morf) / 2)
    assert torch.equal(result.percentages, torch.arange(90.0, 0.0, -10.0))
    probs = model(images).softmax(1)
    torch.testing.assert_close(result.original, probs[torch.arange(3), TARGETS])
    accuracy = result.morf_accuracy
    assert set(accuracy.unique().tolist()) <= {0.0, 1.0}


def test_equals_quantus_road_on_one_channel_images():
    # Quantus 0.6 indexes an (H·W) mask with positions in the flattened (C, H, W) attribution: one channel only
    import quantus

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 6, 4, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(6, 5)).eval()
    images = torch.randn(6, 1, SIZE, SIZE)
    maps = torch.rand(6, SIZE, SIZE)
    labels = model(images).argmax(1)
    labels[::2] = (labels[::2] + 1) % 5  # some wrong from the start
    percentages = [1, 15, 33, 50, 75, 99]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.ROAD(percentages=percentages, noise=0.0, disable_warnings=True)(
            model=model, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=maps[:, None].numpy(),
            device="cpu")
    ours = metrics.road(model, images, maps, labels, percentages, orders=("morf",), noise=0.0, ties="stable")
    assert ours.morf_accuracy.mean(0).tolist() == pytest.approx([theirs[p] for p in percentages], abs=1e-6)


def test_maps_of_any_size_are_resized_bilinearly(setup):
    model, images, _ = setup
    small = torch.rand(3, 5, 5)
    a = metrics.road(model, images, small, percentages=[30, 60], seed=1, noise_space="input")
    b = metrics.road(model, images, resize(small, SIZE), percentages=[30, 60], seed=1, noise_space="input")
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    assert torch.equal(a.target, model(images).argmax(1))  # default target: the top-1 class


def test_noise_in_pixel_units_is_divided_by_the_std(setup):
    model, images, maps = setup
    card = ModelCard("tiny", SIZE, (0.5,) * 3, (0.5,) * 3, tuple("abcde"))
    carded = attach_card(TinyCNN(channels=6, classes=5).eval(), card)
    carded.load_state_dict(model.state_dict())
    pixels = metrics.road(carded, images, maps, TARGETS, [50], noise=0.01)
    tensor = metrics.road(model, images, maps, TARGETS, [50], noise=0.02, noise_space="input")
    for x, y in zip(pixels, tensor, strict=True):
        torch.testing.assert_close(x, y, equal_nan=True)
    again = metrics.road(model, images, maps, TARGETS, [50], noise=0.01, std=(0.5,) * 3)
    torch.testing.assert_close(again.morf_scores, pixels.morf_scores)
    other = metrics.road(model, images, maps, TARGETS, [50], noise=0.5, noise_space="input", seed=1)
    assert not torch.equal(other.morf_scores, tensor.morf_scores)


def test_ties_are_broken_by_the_authors_jitter(setup):
    model, images, _ = setup
    flat = torch.zeros(3, SIZE, SIZE)  # a constant map: every pixel tied
    jitter = 1e-4 * torch.randn(SIZE * SIZE, generator=torch.Generator().manual_seed(4))
    jittered = metrics.road(model, images, flat, TARGETS, [30, 70], noise=0.0, seed=4)
    by_hand = metrics.road(model, images, jitter.view(1, SIZE, SIZE).expand(3, -1, -1), TARGETS, [30, 70],
                           noise=0.0, ties="stable")
    torch.testing.assert_close(jittered.morf_scores, by_hand.morf_scores)
    torch.testing.assert_close(jittered.lerf_scores, by_hand.lerf_scores)
    rows = metrics.road(model, images, flat, TARGETS, [30, 70], noise=0.0, ties="stable")  # top rows first
    top = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
    top[:, :6] = True  # 30% of 20 rows
    direct = model(metrics.noisy_linear_imputation(images, top, 0.0)).softmax(1)[torch.arange(3), TARGETS]
    torch.testing.assert_close(rows.morf_scores[:, 0], direct)


@pytest.mark.parametrize(("kwargs", "option"), [
    ({"ties": "random"}, "ties"),
    ({"percentages": [10, 120]}, "percentages"),
    ({"percentages": [100]}, "percentages"),
    ({"percentages": []}, "percentages"),
    ({"orders": ("morf", "up")}, "orders"),
    ({"noise_space": "pixel"}, "noise_space"),
    ({"noise": -1.0, "noise_space": "input"}, "noise"),
    ({"noise": 0.01}, None),  # pixel-space noise without a card or std
])
def test_errors(setup, kwargs, option):
    model, images, maps = setup
    with pytest.raises(JitterCamError) as error:
        metrics.road(model, images, maps, **kwargs)
    if option is not None:
        assert error.value.option == option
    with pytest.raises(JitterCamError):
        metrics.road(model, images, maps[:2], noise_space="input")
    with pytest.raises(JitterCamError):
        metrics.road(model, images, maps, target=7, noise_space="input")
    with pytest.raises(JitterCamError):
        metrics.noisy_linear_imputation(images, torch.zeros(3, 4, 4, dtype=torch.bool))
    with pytest.raises(JitterCamError, match="every pixel"):
        metrics.noisy_linear_imputation(images, torch.ones(3, SIZE, SIZE, dtype=torch.bool))
    kept = metrics.noisy_linear_imputation(images, torch.zeros(3, SIZE, SIZE, dtype=torch.bool))
    assert torch.equal(kept, images)


def test_solving_several_images_at_once_changes_nothing(setup):
    model, images, maps = setup
    removed = maps > 0.4
    one, four = (metrics.noisy_linear_imputation(images, removed, 0.01, threads=threads,
                                                  generator=torch.Generator().manual_seed(3)) for threads in (1, 4))
    assert torch.equal(one, four)  # the noise is drawn in image order, whichever solve ends first
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 3):
            torch.set_num_threads(threads)  # road solves as many images at once as torch has threads
            results.append(metrics.road(model, images, maps, noise_space="input", batch_size=5))
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("threads", [0, -2, 1.5, True])
def test_threads_must_be_a_positive_integer(setup, threads):
    _, images, maps = setup
    with pytest.raises(JitterCamError, match="threads must be a positive integer") as error:
        metrics.noisy_linear_imputation(images, maps > 0.5, threads=threads)
    assert error.value.option == "threads"
