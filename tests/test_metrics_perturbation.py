"""Deletion / insertion against hand-computed curves and a literal RISE loop."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from jittercam.errors import JitterCamError
from jittercam.metrics import (
    PerturbationCurves,
    auc,
    blur_kernel,
    deletion,
    deletion_insertion,
    gaussian_blur,
    insertion,
)


def tiny_model(classes: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, classes)
    )
    with torch.no_grad():
        model[-1].weight.mul_(8)  # spread the logits so the curves move
    return model.eval()


class PixelProbe(nn.Module):
    """Logits (value of one pixel of channel 0, 0): with softmax=False the score is that pixel."""

    def __init__(self, y: int, x: int):
        super().__init__()
        self.y, self.x = y, x

    def forward(self, x):
        v = x[:, 0, self.y, self.x]
        return torch.stack([v, torch.zeros_like(v)], dim=1)


class MeanProbe(nn.Module):
    def forward(self, x):
        v = x.mean(dim=(1, 2, 3))
        return torch.stack([v, torch.zeros_like(v)], dim=1)


# --- RISE, written as in eclique/RISE evaluation.py (gkern, auc, CausalMetric.single_run) ---------

def rise_gkern(klen, nsig):
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((3, 3, klen, klen))
    kern[0, 0] = k
    kern[1, 1] = k
    kern[2, 2] = k
    return torch.from_numpy(kern.astype("float32"))


def rise_auc(arr):
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


def rise_single_run(model, mode, step, substrate_fn, img_tensor, explanation):
    HW = img_tensor.shape[2] * img_tensor.shape[3]
    pred = model(img_tensor)
    _, c = torch.max(pred, 1)
    c = c.cpu().numpy()[0]
    n_steps = (HW + step - 1) // step
    if mode == "del":
        start = img_tensor.clone()
        finish = substrate_fn(img_tensor)
    else:
        start = substrate_fn(img_tensor)
        finish = img_tensor.clone()
    scores = np.empty(n_steps + 1)
    salient_order = np.flip(np.argsort(explanation.reshape(-1, HW), axis=1), axis=-1)
    for i in range(n_steps + 1):
        pred = model(start)
        scores[i] = pred[0, c]
        if i < n_steps:
            coords = salient_order[:, step * i:step * (i + 1)]
            start.cpu().numpy().reshape(1, 3, HW)[0, :, coords] = finish.cpu().numpy().reshape(1, 3, HW)[0, :, coords]
    return scores


@pytest.fixture
def setup():
    torch.manual_seed(1)
    model = tiny_model()
    images = torch.randn(3, 3, 16, 16)
    saliency = torch.rand(3, 16, 16)  # continuous: no ties, so RISE's order is unambiguous
    return model, images, saliency


def test_blur_kernel_is_rises():
    k = blur_kernel()
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    np.testing.assert_allclose(k.numpy(), gaussian_filter(delta, 5), rtol=1e-6)
    assert abs(float(k.sum()) - 1) < 1e-6
    one_d = k.sum(dim=0)  # the kernel is separable, its 1-D factor sums to 1
    assert abs(float(one_d[0]) - 0.088) < 1e-3 and abs(float(one_d[-1]) - 0.088) < 1e-3
    assert abs(float(one_d[5]) - 0.094) < 1e-3
    torch.testing.assert_close(k, torch.outer(one_d, one_d), rtol=1e-5, atol=1e-7)


def test_gaussian_blur_matches_rise_conv():
    x = torch.randn(2, 3, 20, 20)
    expected = nn.functional.conv2d(x, rise_gkern(11, 5), padding=5)
    torch.testing.assert_close(gaussian_blur(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("step", [24, 64, 256, 1000])
def test_equals_literal_rise_loop(setup, step):
    model, images, saliency = setup
    rise_model = nn.Sequential(model, nn.Softmax(dim=1))
    blur = lambda x: nn.functional.conv2d(x, rise_gkern(11, 5), padding=5)  # noqa: E731
    zeros = torch.zeros_like
    with torch.no_grad():
        ref_del = [
            rise_single_run(rise_model, "del", step, zeros, images[i:i + 1], saliency[i].numpy()) for i in range(3)
        ]
        ref_ins = [
            rise_single_run(rise_model, "ins", step, blur, images[i:i + 1], saliency[i].numpy()) for i in range(3)
        ]
    d = deletion(model, images, saliency, step=step, return_curves=True)
    i = insertion(model, images, saliency, step=step, return_curves=True)
    np.testing.assert_allclose(d.scores.numpy(), np.stack(ref_del), atol=1e-5)
    np.testing.assert_allclose(i.scores.numpy(), np.stack(ref_ins), atol=1e-5)
    np.testing.assert_allclose(d.auc.numpy(), [rise_auc(s) for s in ref_del], atol=1e-5)
    np.testing.assert_allclose(i.auc.numpy(), [rise_auc(s) for s in ref_ins], atol=1e-5)
    # RISE's set AUC is the AUC of the mean curve, which equals the mean of the per-image AUCs
    assert abs(float(d.auc.mean()) - rise_auc(np.stack(ref_del).mean(0))) < 1e-5


def test_batched_equals_unbatched(setup):
    model, images, saliency = setup
    reference = deletion_insertion(model, images, saliency, step=40, batch_size=1)
    for batch_size in (2, 7, 13, 1000):
        got = deletion_insertion(model, images, saliency, step=40, batch_size=batch_size)
        torch.testing.assert_close(got.deletion.scores, reference.deletion.scores, atol=1e-5, rtol=0)
        torch.testing.assert_close(got.insertion.scores, reference.insertion.scores, atol=1e-5, rtol=0)
    for k in range(3):
        one = deletion_insertion(model, images[k:k + 1], saliency[k:k + 1], step=40)
        assert abs(float(one.deletion.auc[0] - reference.deletion.auc[k])) < 1e-5
        assert abs(float(one.insertion.auc[0] - reference.insertion.auc[k])) < 1e-5


def test_combined_equals_separate_games(setup):
    model, images, saliency = setup
    both = deletion_insertion(model, images, saliency, step=50, batch_size=5)
    torch.testing.assert_close(both.deletion.auc, deletion(model, images, saliency, step=50), atol=1e-6, rtol=0)
    torch.testing.assert_close(both.insertion.auc, insertion(model, images, saliency, step=50), atol=1e-6, rtol=0)


def test_endpoints_and_default_target(setup):
    model, images, saliency = setup
    with torch.no_grad():
        probs = model(images).softmax(1)
        top = probs.argmax(1)
        on_zeros = model(torch.zeros_like(images)).softmax(1)
        on_blur = model(gaussian_blur(images)).softmax(1)
    r = deletion_insertion(model, images, saliency, step=30)
    assert torch.equal(r.deletion.target, top) and torch.equal(r.insertion.target, top)
    pick = lambda p: p.gather(1, top[:, None]).squeeze(1)  # noqa: E731
    torch.testing.assert_close(r.deletion.scores[:, 0], pick(probs), atol=1e-6, rtol=0)
    torch.testing.assert_close(r.deletion.scores[:, -1], pick(on_zeros), atol=1e-6, rtol=0)
    torch.testing.assert_close(r.insertion.scores[:, 0], pick(on_blur), atol=1e-6, rtol=0)
    torch.testing.assert_close(r.insertion.scores[:, -1], pick(probs), atol=1e-6, rtol=0)
    assert ((r.deletion.auc >= 0) & (r.deletion.auc <= 1)).all()


def test_explicit_target(setup):
    model, images, saliency = setup
    as_int = deletion(model, images, saliency, target=4, step=64, return_curves=True)
    as_list = deletion(model, images, saliency, target=[4, 4, 4], step=64, return_curves=True)
    torch.testing.assert_close(as_int.scores, as_list.scores)
    with torch.no_grad():
        expected = model(images).softmax(1)[:, 4]
    torch.testing.assert_close(as_int.scores[:, 0], expected, atol=1e-6, rtol=0)
    assert (as_int.target == 4).all()


def test_hand_computed_curves():
    image = torch.ones(1, 3, 2, 2)
    probe = PixelProbe(0, 0)
    first = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])  # (0, 0) is the most salient pixel
    last = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    c = deletion(probe, image, first, target=0, step=1, softmax=False, return_curves=True)
    assert c.scores.tolist() == [[1, 0, 0, 0, 0]] and c.fractions.tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert float(c.auc) == pytest.approx(0.125)
    assert float(deletion(probe, image, last, target=0, step=1, softmax=False)) == pytest.approx(0.875)
    # the mean of the image falls by a quarter per step: AUC 0.5; with step 3 (last step partial): 0.375
    assert float(deletion(MeanProbe(), image, first, target=0, step=1, softmax=False)) == pytest.approx(0.5)
    assert float(deletion(MeanProbe(), image, first, target=0, step=3, softmax=False)) == pytest.approx(0.375)
    # insertion from a black substrate restores (0, 0) first
    ins = insertion(
        probe, image, first, target=0, step=1, softmax=False, substrate=torch.zeros_like, return_curves=True
    )
    assert ins.scores.tolist() == [[0, 1, 1, 1, 1]] and float(ins.auc) == pytest.approx(0.875)


def test_ties_broken_row_major():
    image = torch.ones(1, 3, 2, 2)
    flat = torch.ones(1, 2, 2)
    assert float(deletion(PixelProbe(0, 0), image, flat, target=0, step=1, softmax=False)) == pytest.approx(0.125)
    assert float(deletion(PixelProbe(1, 1), image, flat, target=0, step=1, softmax=False)) == pytest.approx(0.875)


def test_low_resolution_saliency_is_resized():
    image = torch.ones(1, 3, 8, 8)
    low = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # top-left quadrant first after upsampling
    c = deletion(PixelProbe(0, 0), image, low, target=0, step=16, softmax=False, return_curves=True)
    assert c.scores[0, 1] == 0


def test_default_step_gives_the_papers_28_iterations():
    model = tiny_model()
    images = torch.randn(1, 3, 224, 224)
    c = insertion(model, images, torch.rand(1, 7, 7), return_curves=True, batch_size=29)
    assert c.scores.shape == (1, 29) and c.fractions[1] == pytest.approx(1792 / 224**2)
    assert float(auc(torch.tensor([1.0, 0.5, 0.0]))) == pytest.approx(0.5)


def test_model_left_untouched(setup):
    model, images, saliency = setup
    model.train()
    before = [p.clone() for p in model.parameters()]
    deletion_insertion(model, images, saliency, step=128)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(saliency=torch.rand(2, 16, 16)), "2 maps for 3 images"),
        (dict(saliency=torch.rand(16, 16)), r"\(B, h, w\)"),
        (dict(saliency=torch.full((3, 4, 4), float("nan"))), "NaN"),
        (dict(step=0), "step"),
        (dict(step=2.5), "step"),
        (dict(target=5), "out of range"),
        (dict(target=-1), "class index -1 is out of range"),
        (dict(target=[0, 1]), "2 targets for 3 images"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_inputs(setup, kwargs, message):
    model, images, saliency = setup
    args = dict(saliency=saliency)
    args.update(kwargs)
    with pytest.raises(JitterCamError, match=message):
        deletion(model, images, **args)


def test_bad_images():
    with pytest.raises(JitterCamError, match=r"\(B, C, H, W\)"):
        insertion(tiny_model(), torch.rand(3, 8, 8), torch.rand(3, 8, 8))


def test_returns_plain_tensor_by_default(setup):
    model, images, saliency = setup
    out = insertion(model, images, saliency, step=128)
    assert isinstance(out, torch.Tensor) and out.shape == (3,)
    assert isinstance(insertion(model, images, saliency, step=128, return_curves=True), PerturbationCurves)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_gpu(setup):
    model, images, saliency = setup
    cpu = deletion_insertion(model, images, saliency, step=40)
    gpu = deletion_insertion(model.cuda(), images.cuda(), saliency.cuda(), step=40)
    assert gpu.deletion.auc.is_cuda
    torch.testing.assert_close(gpu.deletion.auc.cpu(), cpu.deletion.auc, atol=1e-4, rtol=0)


def test_insertion_alone_reads_top1_from_the_restored_image(setup):
    model, images, saliency = setup
    with torch.no_grad():
        top = model(images).argmax(1)
    for batch_size in (1, 4, 100):
        c = insertion(model, images, saliency, step=np.int64(64), batch_size=batch_size, return_curves=True)
        assert torch.equal(c.target, top)


def test_custom_substrate_checked(setup):
    model, images, saliency = setup
    grey = torch.full((1, 3, 16, 16), 0.5)
    a = deletion(model, images, saliency, step=64, substrate=grey)
    b = deletion(model, images, saliency, step=64, substrate=lambda x: torch.full_like(x, 0.5))
    torch.testing.assert_close(a, b)
    with pytest.raises(JitterCamError, match="substrate"):
        deletion(model, images, saliency, step=64, substrate=torch.zeros(2, 3, 16, 16))
