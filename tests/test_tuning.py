"""The measured forward plan (batch size, layout) and reduced precision: same maps, remembered plans."""
from __future__ import annotations

import json

import pytest
import torch

import jittercam
import jittercam.metrics
from jittercam import tuning
from jittercam.errors import JitterCamError
from jittercam.methods import create


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JITTERCAM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "_memory", {})
    return tmp_path / "plans.json"


def test_tune_measures_every_candidate_and_remembers_the_fastest(tiny, cache):
    plan = tuning.tune(tiny, torch.device("cpu"), 32, batch_sizes=(1, 2, 4), images=4)
    assert plan.batch_size in (1, 2, 4)
    assert 0 < plan.seconds_per_image <= plan.contiguous_seconds_per_image
    stored = json.loads(cache.read_text())
    assert list(stored.values()) == [{
        "batch_size": plan.batch_size, "channels_last": plan.channels_last,
        "seconds_per_image": plan.seconds_per_image, "contiguous_seconds_per_image": plan.contiguous_seconds_per_image,
    }]
    tuning._memory.clear()  # a new process reads the file
    assert tuning.cached_plan(tiny, torch.device("cpu"), 32) == plan
    assert tuning.cached_plan(tiny, torch.device("cpu"), 64) is None  # another input size: not measured


def test_a_damaged_or_disabled_cache_is_not_fatal(tiny, cache, monkeypatch):
    cache.write_text("{not json")
    assert tuning.cached_plan(tiny, torch.device("cpu"), 32) is None
    monkeypatch.setenv("JITTERCAM_CACHE_DIR", "off")
    tuning._memory.clear()
    tuning.tune(tiny, torch.device("cpu"), 32, batch_sizes=(2,), images=2)
    assert cache.read_text() == "{not json"  # untouched
    assert tuning.cached_plan(tiny, torch.device("cpu"), 32).batch_size == 2  # still known in this process


def test_plans_measured_with_freed_memory_retained_or_not_are_kept_apart(tiny, monkeypatch):
    # the best CPU batch differs: returned memory is faulted in again on every pass, the more the larger
    monkeypatch.setattr("jittercam.runtime._retaining", False)
    returned = tuning.plan_key(tiny, torch.device("cpu"), 32)
    monkeypatch.setattr("jittercam.runtime._retaining", True)
    retained = tuning.plan_key(tiny, torch.device("cpu"), 32)
    assert returned != retained
    assert f"|{torch.get_num_threads()} retained|" in retained


def _force_plan(model, size, batch_size, channels_last):
    key = tuning.plan_key(model, torch.device("cpu"), size)
    tuning._memory[key] = tuning.Plan(batch_size, channels_last, 1.0, 1.0)


@pytest.mark.parametrize("name", ["gradcam", "jittercam", "scorecam", "rise"])
def test_a_plan_changes_speed_not_maps(name, cache, tiny):
    resnet = name in ("gradcam", "jittercam")
    model = jittercam.load_model("resnet18", weights="random").eval() if resnet else tiny
    size = 64 if resnet else 32
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    options = {"masks": 16} if name == "rise" else {}
    plain = create(name, model, input_size=size, **options)(images)
    _force_plan(model, size, 2, True)
    planned_method = create(name, model, input_size=size, **options)
    assert planned_method.chunk_size(images) == 2
    planned = planned_method(images)
    torch.testing.assert_close(planned, plain, rtol=1e-4, atol=1e-5)


def test_metrics_take_the_plan_batch_size(tiny, cache):
    images = torch.randn(2, 3, 32, 32)
    assert tuning.forward_batch(tiny, images, None) == 4  # no plan: the CPU default
    _force_plan(tiny, 32, 8, False)
    assert tuning.forward_batch(tiny, images, None) == 8
    assert tuning.forward_batch(tiny, images, 3) == 3  # an explicit batch size wins
    with pytest.raises(JitterCamError, match="batch_size"):
        tuning.forward_batch(tiny, images, 0)


def test_reduced_precision_keeps_the_map(lite0, goldfish_batch):
    full = create("gradcam", lite0)(goldfish_batch)
    half = create("gradcam", lite0, precision="bf16")(goldfish_batch)
    assert half.dtype == torch.float32
    relative = (half - full).abs().max() / full.abs().max()
    assert relative < 0.05  # bf16 keeps 8 bits of mantissa: the documented tolerance of the README
    assert relative > 0  # it really ran in bf16


def test_precision_reaches_jittercams_base_and_is_refused_where_unsupported(tiny):
    method = create("jittercam", tiny, precision="bf16")
    assert method.precision == method.base.precision == "bf16"
    assert "precision='bf16'" in repr(method)
    with pytest.raises(JitterCamError, match="ScoreCAM supports precision fp32, not 'bf16'"):
        create("scorecam", tiny, precision="bf16")
    with pytest.raises(JitterCamError, match="supports precision"):
        create("gradcam", tiny, precision="fp8")


def test_deletion_insertion_in_the_plan_layout_gives_the_same_curves(cache):
    model = jittercam.load_model("resnet18", weights="random").eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    maps = torch.rand(2, 2, 2, generator=torch.Generator().manual_seed(2))
    plain = jittercam.metrics.deletion_insertion(model, images, maps, step=512)
    _force_plan(model, 64, 5, True)
    planned = jittercam.metrics.deletion_insertion(model, images, maps, step=512)
    torch.testing.assert_close(planned.deletion.scores, plain.deletion.scores, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(planned.insertion.auc, plain.insertion.auc, rtol=1e-4, atol=1e-6)


def test_a_load_that_passes_during_one_sweep_does_not_decide_the_plan(tiny, cache, monkeypatch):
    """Batch 4 is the fastest, but another process was busy while it was first timed: the second sweep finds
    it, and the plan keeps its unloaded seconds."""
    unloaded = {(2, False): 3.0, (2, True): 2.5, (4, False): 2.0, (4, True): 1.0}
    calls: list[tuple[int, bool]] = []

    def seconds(model, batch, images):
        key = (batch.shape[0], batch.is_contiguous(memory_format=torch.channels_last))
        calls.append(key)
        return unloaded[key] * (5.0 if key[0] == 4 and calls.count(key) == 1 else 1.0)

    monkeypatch.setattr(tuning, "_seconds_per_image", seconds)
    plan = tuning.tune(tiny, torch.device("cpu"), 32, batch_sizes=(2, 4), images=2)
    assert sorted(calls) == sorted(list(unloaded) * tuning.CPU_ROUNDS)
    assert (plan.batch_size, plan.channels_last, plan.seconds_per_image) == (4, True, 1.0)
    assert plan.contiguous_seconds_per_image == 2.0
