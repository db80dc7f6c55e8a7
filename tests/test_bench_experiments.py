"""Every experiment end to end in-process on a tiny CNN and a small stand-in dataset: the rows the report
reads, their values against the metrics called by hand, resume, skips, the cache and the gallery."""
from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import TinyCNN
from jittercam import metrics
from jittercam.bench.experiments import available_experiments, experiment_class
from jittercam.bench.runner import Settings, run
from jittercam.data.samples import Sample
from jittercam.errors import JitterCamError
from jittercam.methods import create
from jittercam.models import ModelCard, activation_input, attach_card, find_target_layer

SIZE = 32
CLASSES = 5


class StandIn:
    """The `BenchmarkDataset` protocol on seeded noise: even items have one label, odd items two
    (boxes in input pixels, masks at an 'original' 40 x 48, every third pair difficult); item 3 is an
    unreadable image."""

    name = "stand-in"
    num_classes = CLASSES
    categories = tuple(f"class {i}" for i in range(CLASSES))
    has = frozenset({"labels", "boxes", "masks", "difficult"})

    def __init__(self, count: int = 8, corrupt: tuple[int, ...] = (3,)) -> None:
        self.count, self.corrupt = count, set(corrupt)

    def config(self) -> dict:
        return {"dataset": self.name, "items": self.count, "root": "/somewhere/stand-in"}

    def keys(self) -> list[str]:
        return [f"item-{i:03d}" for i in range(self.count)]

    def load(self, key: str, card: ModelCard) -> Sample:
        i = int(key.split("-")[1])
        if i in self.corrupt:
            return Sample.skipped(key, f"not an image: {key}.jpg (truncated)")
        generator = torch.Generator().manual_seed(i)
        pixels = torch.rand(3, card.input_size, card.input_size, generator=generator)
        image = (pixels - torch.tensor(card.mean).view(3, 1, 1)) / torch.tensor(card.std).view(3, 1, 1)
        labels = (i % CLASSES,) if i % 2 == 0 else (i % CLASSES, (i + 1) % CLASSES)
        boxes, masks, difficult = {}, {}, {}
        for j, label in enumerate(labels):
            x0 = (3 * i + 7 * j) % 12
            boxes[label] = torch.tensor([[x0, x0, x0 + 12, x0 + 9]], dtype=torch.float32)
            mask = torch.zeros(40, 48, dtype=torch.bool)
            mask[4 + 12 * j : 18 + 12 * j, 4:30] = True
            masks[label] = mask
            difficult[label] = (i + j) % 3 == 0
        return Sample(key, image.float(), labels, boxes, masks, difficult, (40, 48))


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return attach_card(TinyCNN(channels=6, classes=CLASSES).eval(),
                       ModelCard("tiny", SIZE, (0.5,) * 3, (0.5,) * 3, StandIn.categories))


def bench(model, db, experiment, methods=None, dataset=None, **settings):
    options = settings.pop("experiment_options", {})
    return run(Settings(experiment, "stand-in", Path(db), methods=methods, batch_size=settings.pop("batch_size", 3),
                        quiet=True, experiment_options=options, **settings),
               dataset=dataset or StandIn(), model=model)


def rows(db, *where: str) -> dict[tuple, float]:
    """(method, variant, item, metric) -> value; a weak-localisation scheme's curve row as one entry per
    threshold, `scheme@threshold` -> hit."""
    clause = " AND ".join(("1", *where))
    with sqlite3.connect(db) as connection:
        found = connection.execute(f"SELECT method, variant, item, metric, value, curve FROM results WHERE {clause}")
        table = {}
        for *key, value, curve in found:
            if value is None and curve is not None:
                for threshold, hit in zip(metrics.THRESHOLDS, np.frombuffer(curve, "<f4").tolist(), strict=True):
                    table[(*key[:3], f"{key[3]}@{threshold:g}")] = hit
            else:
                table[tuple(key)] = value
        return table


def images_of(model, keys):
    card = model.jittercam_card
    return torch.stack([StandIn().load(key, card).image for key in keys])


GOOD = [f"item-{i:03d}" for i in (0, 1, 2, 4, 5, 6, 7)]
EXPECTED = {  # experiment -> (methods, options, variants, metrics per item)
    "faithfulness": (["gradcam", "constant"], {"alphas": (0.0, 2.5)}, None, None),
    "local-accuracy": (["gradcam", "centre"], {}, {""}, {"deletion", "insertion"}),
    "road": (["gradcam", "centre"], {"percentages": (20.0, 80.0)}, {""},
             {"morf", "lerf", "combined", "morf_accuracy", "lerf_accuracy"}),
    "weak-localisation": (["gradcam"], {}, {""},
                          {f"{p}@{a:g}" for p in ("val", "mean", "eng") for a in metrics.THRESHOLDS}),
    "pointing": (["gradcam", "random"], {}, {""}, None),
    "efficiency": (["gradcam", "jittercam"], {}, {""}, {"seconds", "passes"}),
    "size-sweep": (["jittercam"], {"sizes": (8, 10)}, {"size=8", "size=10"}, {"deletion", "insertion"}),
    "consistency": (["jittercam"], {"low_size": 24}, {""}, {"spearman"}),
    "layers": (["gradcam"], {}, {"layer=act", "layer=conv"}, {"deletion", "insertion"}),
}


def test_every_experiment_is_tested():
    # groundtruth: test_bench_groundtruth.py, own data; relevance: test_relevance_experiment.py;
    # metric-agreement: test_metric_agreement_experiment.py
    assert set(available_experiments()) == set(EXPECTED) | {"groundtruth", "relevance", "metric-agreement", "sanity"}


@pytest.mark.parametrize("experiment", list(EXPECTED))
def test_every_experiment_writes_the_rows_the_report_reads(model, tmp_path, experiment):
    methods, options, variants, names = EXPECTED[experiment]
    db = tmp_path / "r.db"
    summary = bench(model, db, experiment, methods, experiment_options=options)
    found = rows(db)
    assert summary.skipped_items == 1 and not summary.interrupted
    swept = {"random"} if experiment == "faithfulness" else set()
    assert {method for method, *_ in found} == set(methods) | swept
    if variants is not None:
        assert {variant for _, variant, *_ in found} == variants
    if experiment == "faithfulness":
        assert {variant for _, variant, *_ in found} == {"", "alpha=0", "alpha=2.5"}
        alphas = {(m, v) for m in ("gradcam", "random") for v in ("alpha=0", "alpha=2.5")}
        assert {(m, v) for m, v, *_ in found if v} == alphas
        assert {metric for *_, metric in found} == {"y", "o"}
    elif experiment in ("pointing", "weak-localisation"):
        pairs = {item for _, _, item, _ in found}
        expected = {f"{key}#{label}" for key in GOOD for label in StandIn().load(key, model.jittercam_card).labels}
        if experiment == "weak-localisation":  # one label: the key; several: key#class
            expected = {item.split("#")[0] if int(item[5:8]) % 2 == 0 else item for item in expected}
        assert pairs == expected
    else:
        assert {item for _, _, item, _ in found} == set(GOOD)
    if names is not None:
        assert {metric for *_, metric in found} == names
    with sqlite3.connect(db) as connection:
        (config,) = connection.execute("SELECT config FROM runs").fetchone()
        skips = connection.execute("SELECT method, item, reason FROM skips").fetchall()
    assert '"num_classes": 5' in config
    assert ("", "item-003", "not an image: item-003.jpg (truncated)") in skips


def test_local_accuracy_values_are_the_metric_on_the_methods_maps(model, tmp_path):
    bench(model, tmp_path / "r.db", "local-accuracy", ["gradcam"])
    found = rows(tmp_path / "r.db")
    images = images_of(model, GOOD[:3])  # the first chunk of 3 items, as the run explains it
    top1 = model(images).argmax(1)
    maps = create("gradcam", model)(images, top1)
    games = metrics.deletion_insertion(model, images, maps, top1, batch_size=3)
    for index, key in enumerate(GOOD[:3]):
        assert found[("gradcam", "", key, "deletion")] == pytest.approx(float(games.deletion.auc[index]), abs=1e-6)
        assert found[("gradcam", "", key, "insertion")] == pytest.approx(float(games.insertion.auc[index]), abs=1e-6)
    with sqlite3.connect(tmp_path / "r.db") as connection:
        blob, target = connection.execute(
            "SELECT curve, target FROM results WHERE item=? AND metric='deletion'", (GOOD[0],)).fetchone()
    assert target == int(top1[0])
    assert np.frombuffer(blob, "<f4") == pytest.approx(games.deletion.scores[0].numpy(), abs=1e-6)


def test_localisation_values_are_the_metrics_on_the_ground_truth_class(model, tmp_path):
    bench(model, tmp_path / "w.db", "weak-localisation", ["gradcam"])
    bench(model, tmp_path / "p.db", "pointing", ["gradcam"], experiment_options={"tolerance": 5})
    weak, pointing = rows(tmp_path / "w.db"), rows(tmp_path / "p.db")
    sample = StandIn().load("item-001", model.jittercam_card)  # two labels
    for label in sample.labels:
        one = create("gradcam", model)(sample.image[None], label)
        hits = metrics.weak_localisation(one, [sample.boxes[label]], SIZE)
        for scheme, prefix in (("val", "val"), ("mean", "mean"), ("energy", "eng")):
            stored = [weak[("gradcam", "", f"item-001#{label}", f"{prefix}@{a:g}")] for a in metrics.THRESHOLDS]
            assert stored == hits[scheme].hit[0].float().tolist()
        hit = metrics.pointing_game(one, sample.masks[label][None], tolerance=5).hit
        assert pointing[("gradcam", "", f"item-001#{label}", "all")] == float(hit)
        assert (("gradcam", "", f"item-001#{label}", "difficult") in pointing) == sample.difficult[label]


def test_faithfulness_and_consistency_values(model, tmp_path):
    bench(model, tmp_path / "f.db", "faithfulness", ["gradcam"], experiment_options={"alphas": (3.0,), "sweep": ()})
    bench(model, tmp_path / "c.db", "consistency", ["jittercam"], experiment_options={"low_size": 24})
    faith, consistency = rows(tmp_path / "f.db"), rows(tmp_path / "c.db")
    assert {variant for _, variant, *_ in faith} == {""}
    images = images_of(model, GOOD[:3])
    top1 = model(images).argmax(1)
    maps = create("gradcam", model)(images, top1)
    expected = metrics.faithfulness(model, images, maps, top1, mean=(0.5,) * 3, std=(0.5,) * 3)
    low = torch.nn.functional.interpolate(images, size=24, mode="bilinear", antialias=True)
    jitter = create("jittercam", model, size=8)(low, top1)
    rho = metrics.rank_correlation(jitter, maps)
    for index, key in enumerate(GOOD[:3]):
        assert faith[("gradcam", "", key, "y")] == pytest.approx(float(expected.original[index]), abs=1e-6)
        assert faith[("gradcam", "", key, "o")] == pytest.approx(float(expected.masked[index]), abs=1e-6)
        assert consistency[("jittercam", "", key, "spearman")] == pytest.approx(float(rho[index]), abs=1e-6)


def test_the_sweep_can_be_added_to_a_finished_faithfulness_run(model, tmp_path):
    db = tmp_path / "r.db"
    plain = bench(model, db, "faithfulness", ["gradcam"], experiment_options={"alphas": (1.0, 2.0), "sweep": ()})
    swept = bench(model, db, "faithfulness", ["gradcam"], experiment_options={"alphas": (1.0, 2.0)})
    assert (plain.computed, swept.computed, swept.stored) == (7, 14, 7)  # gradcam and random swept
    found = rows(db)
    assert {(m, v) for m, v, *_ in found} == {("gradcam", ""), ("gradcam", "alpha=1"), ("gradcam", "alpha=2"),
                                              ("random", "alpha=1"), ("random", "alpha=2")}
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        gallery = connection.execute("SELECT DISTINCT method FROM gallery").fetchall()
    assert sorted(gallery) == [("gradcam",), ("random",)]


def test_resume_computes_only_what_is_missing(model, tmp_path):
    db = tmp_path / "r.db"
    first = bench(model, db, "local-accuracy", ["gradcam"], limit=4)
    assert (first.computed, first.stored, first.skipped_items) == (3, 0, 1)
    again = bench(model, db, "local-accuracy", ["gradcam"])  # more items, the skipped one not retried
    assert (again.computed, again.stored, again.skipped_before, again.skipped_items) == (4, 3, 1, 0)
    more = bench(model, db, "local-accuracy", ["gradcam", "centre"])  # a method added later
    assert (more.computed, more.stored, more.skipped_before) == (7, 7, 2)
    retried = bench(model, db, "local-accuracy", ["gradcam", "centre"], retry_skipped=True)
    assert (retried.computed, retried.skipped_items) == (0, 1)
    whole = tmp_path / "whole.db"
    bench(model, whole, "local-accuracy", ["gradcam", "centre"])
    assert rows(db) == rows(whole)
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(DISTINCT config_hash) FROM results").fetchone()[0] == 1


def test_other_method_options_in_the_same_store_are_refused(model, tmp_path):
    bench(model, tmp_path / "r.db", "local-accuracy", ["rise"], method_options={"rise": {"masks": 8}}, limit=2)
    with pytest.raises(JitterCamError, match="other options"):
        bench(model, tmp_path / "r.db", "local-accuracy", ["rise"], method_options={"rise": {"masks": 16}}, limit=2)


def test_a_method_that_refuses_an_item_is_a_skip(model, tmp_path, monkeypatch):
    from jittercam.methods.baselines import CentreBaseline

    def refuse(self, images):
        raise JitterCamError("centre refuses this batch")

    monkeypatch.setattr(CentreBaseline, "maps", refuse)
    summary = bench(model, tmp_path / "r.db", "local-accuracy", ["centre", "gradcam"])
    assert summary.skipped == 7 and summary.computed == 7
    with sqlite3.connect(tmp_path / "r.db") as connection:
        reasons = connection.execute("SELECT method, reason FROM skips WHERE method != ''").fetchall()
    assert set(reasons) == {("centre", "centre refuses this batch")}
    assert {m for m, *_ in rows(tmp_path / "r.db")} == {"gradcam"}


def test_maps_are_shared_through_the_cache(model, tmp_path, monkeypatch):
    from jittercam.methods.gradient import GradCAM

    db = tmp_path / "r.db"
    bench(model, db, "faithfulness", ["gradcam"], experiment_options={"alphas": (1.0,), "sweep": ()})
    monkeypatch.setattr(GradCAM, "_explain", lambda *args: pytest.fail("explained again"))
    summary = bench(model, db, "local-accuracy", ["gradcam"])  # the same top-1 maps
    assert summary.computed == 7
    other = {"alphas": (2.0,), "sweep": ()}  # another configuration, the same maps
    assert bench(model, db, "faithfulness", ["gradcam"], experiment_options=other).computed == 7
    with pytest.raises(BaseException, match="explained again"):
        bench(model, db, "faithfulness", ["gradcam"], experiment_options={"alphas": (4.0,)}, cache="none")


def test_gallery_holds_the_first_items(model, tmp_path):
    bench(model, tmp_path / "r.db", "pointing", ["gradcam", "centre"], gallery=3)
    with sqlite3.connect(tmp_path / "r.db") as connection:
        entries = connection.execute("SELECT method, item, target, image, map, height, width FROM gallery").fetchall()
    first = ("item-000#0", "item-001#1", "item-002#2")  # the first unit of each of the first 3 items
    assert {(m, item) for m, item, *_ in entries} == {(m, i) for m in ("gradcam", "centre") for i in first}
    for method, _, _, png, blob, height, width in entries:
        assert Image.open(io.BytesIO(png)).size == (SIZE, SIZE)
        assert (height, width) == ((8, 8) if method == "gradcam" else (SIZE, SIZE))
        assert np.frombuffer(blob, "<f4").shape == (height * width,)
    sample = StandIn().load("item-000", model.jittercam_card)
    png = next(e[3] for e in entries if e[1] == "item-000#0")
    pixels = np.asarray(Image.open(io.BytesIO(png))) / 255
    assert np.abs(pixels - (sample.image.permute(1, 2, 0).numpy() * 0.5 + 0.5)).max() <= 0.5 / 255 + 1e-6


def test_ctrl_c_keeps_what_is_committed_and_resumes(model, tmp_path, monkeypatch):
    from jittercam.methods.gradient import GradCAM

    original, calls = GradCAM._explain, []

    def interrupted(self, images, target):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, images, target)

    monkeypatch.setattr(GradCAM, "_explain", interrupted)
    db = tmp_path / "r.db"
    summary = bench(model, db, "local-accuracy", ["gradcam"])
    assert summary.interrupted and summary.computed == 3  # the first chunk is stored, the second is not
    assert {item for _, _, item, _ in rows(db)} == set(GOOD[:3])
    monkeypatch.setattr(GradCAM, "_explain", original)
    resumed = bench(model, db, "local-accuracy", ["gradcam"])
    assert (resumed.computed, resumed.stored, resumed.skipped_before) == (4, 3, 1)
    bench(model, tmp_path / "whole.db", "local-accuracy", ["gradcam"])
    assert rows(db) == rows(tmp_path / "whole.db")


def test_experiment_checks_before_anything_is_written(model, tmp_path):
    db = tmp_path / "r.db"
    for experiment, methods, options, message in [
        ("size-sweep", ["gradcam"], {}, "no map size"),
        ("layers", ["rise"], {}, "does not use a target layer"),
        ("local-accuracy", ["gradcam"], {"sizes": (8,)}, "no option"),
        ("consistency", ["jittercam"], {"low_size": 64}, "must be below"),
        ("nonsense", None, {}, "unknown experiment"),
    ]:
        with pytest.raises(JitterCamError, match=message):
            bench(model, db, experiment, methods, experiment_options=options)
    with pytest.raises(JitterCamError, match="needs boxes"):
        no_boxes = StandIn()
        no_boxes.has = frozenset({"labels"})
        bench(model, db, "weak-localisation", ["gradcam"], dataset=no_boxes)
    assert not db.exists()


def test_all_keeps_the_methods_an_experiment_can_run(model, tmp_path):
    from jittercam.bench.runner import method_names

    sweep = experiment_class("size-sweep")()
    assert set(method_names(sweep, ["all"])) == {"jittercam", "upscale"}
    assert "rise" not in method_names(experiment_class("layers")(), ["all"])
    assert method_names(experiment_class("pointing")(), None) == list(experiment_class("pointing").default_methods)


class NormLast(nn.Module):
    """conv -> batch norm -> pool: the last map is a norm's output (DenseNet's case)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.fc = nn.Conv2d(3, 4, 4, 4), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.norm(self.conv(x))).mean((2, 3)))


def test_the_layer_before_the_activation(model, lite0):
    assert activation_input(model, find_target_layer(model)) == "conv"
    assert activation_input(lite0, find_target_layer(lite0)) == "_bn1"
    norm_last = attach_card(NormLast().eval(), ModelCard("norm-last", 32))
    with pytest.raises(JitterCamError, match="not an activation's output"):
        activation_input(norm_last, find_target_layer(norm_last))


def test_the_layer_before_resnets_activation():
    import jittercam

    resnet = jittercam.load_model("resnet18", weights="random")
    layer = find_target_layer(resnet, input_size=64)
    assert (layer.name, activation_input(resnet, layer)) == ("layer4", "layer4.1.bn2")


def test_pointing_explains_an_image_once_for_all_its_classes(model, tmp_path, monkeypatch):
    """An image with two labelled classes is explained in one call with a (1, 2) target (one forward, two
    backward passes for Grad-CAM); the stored hits are those of separate calls (the test above)."""
    from jittercam.methods.base import GradientMapMethod

    shapes: list[tuple[int, ...]] = []
    many = GradientMapMethod._explain_many

    def spy(self, images, targets):
        shapes.append(tuple(targets.shape))
        return many(self, images, targets)

    monkeypatch.setattr(GradientMapMethod, "_explain_many", spy)
    bench(model, tmp_path / "p.db", "pointing", ["gradcam"], experiment_options={"tolerance": 5})
    assert (1, 2) in shapes or any(k == 2 for _, k in shapes)
    assert ("gradcam", "", "item-001#" + str(StandIn().load("item-001", model.jittercam_card).labels[0]), "all") \
        in rows(tmp_path / "p.db")


def test_all_leaves_out_a_method_that_refuses_the_model_with_a_note(model, tmp_path, monkeypatch, capsys):
    """`--methods all` (or an experiment's default of every method): rollout, a vision transformers' method,
    is left out on a CNN with its reason; named, its refusal is the error."""
    from jittercam.methods import registry

    monkeypatch.setattr(registry, "_METHODS", {name: registry._METHODS[name] for name in ("gradcam", "rollout")})
    monkeypatch.setattr(registry, "_WRAPPERS", {})
    bench(model, tmp_path / "a.db", "local-accuracy", ["all"], limit=1)
    assert "rollout left out: rollout needs a vision transformer" in capsys.readouterr().err
    assert {method for method, *_ in rows(tmp_path / "a.db")} == {"gradcam"}
    with pytest.raises(JitterCamError, match="rollout needs a vision transformer"):
        bench(model, tmp_path / "b.db", "local-accuracy", ["gradcam,rollout"], limit=1)
