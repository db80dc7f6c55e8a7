"""`jittercam bench groundtruth`: the dataset drawn from the model's held-out configuration, the rows of every
arm, the resolving power in the report, resume, and the mistakes that must stop a run before it writes."""
from __future__ import annotations

import math
import re
import shutil
import sqlite3
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import jittercam
from jittercam.bench import plots
from jittercam.bench.experiments import Column
from jittercam.bench.experiments.groundtruth import (
    GroundTruth,
    default_sizes,
    resolution_curve,
    resolving_power,
)
from jittercam.bench.report import write_report
from jittercam.bench.stats import Stat
from jittercam.cli import main
from jittercam.errors import JitterCamError
from jittercam.groundtruth.benchmark import GroundTruthBenchmark, default_separations, for_model
from jittercam.groundtruth.train import default_path

# the quick model: 64 px, 2 classes, 12-16 px patches (pairs of 14 px), an 8 x 8 map (m = 8)
SMALL = ["--singles", "4", "--replicates", "2", "--separations", "14-50:12", "--batch-size", "4", "--quiet"]


@pytest.fixture
def weights(quick_groundtruth) -> str:
    return str(quick_groundtruth.path)


def _bench(db, weights, *extra) -> int:
    return main(["bench", "groundtruth", "--weights", weights, "--db", str(db), *SMALL, *extra])


def _rows(db) -> dict[tuple, float]:
    with sqlite3.connect(db) as connection:
        return {tuple(key): value for *key, value in connection.execute(
            "SELECT method, variant, item, metric, value FROM results")}


# ------------------------------------------------------------------------------------------------ dataset
def test_dataset_items_match_the_ground_truth(quick_groundtruth):
    model = quick_groundtruth.model
    data = for_model(model, singles=3, replicates=2, separations=[14, 30])
    # singles and pairs interleaved, the widest separation of a replicate first: any prefix covers both parts
    assert data.keys() == ["pair-s030-r00", "single-0000", "pair-s014-r00", "single-0001",
                           "pair-s030-r01", "single-0002", "pair-s014-r01"]
    assert data.num_classes == 2 and data.side == 14 and data.size == 64
    card = jittercam.model_card(model)
    single = data.load("single-0001", card)
    item = data.data.item(1)  # the model's held-out images: the same seed as its held-out check
    assert data.data.seed == jittercam.model_card(model).heldout["seed"] and torch.equal(single.image, item.image)
    assert single.labels == (1,) and torch.equal(single.masks[1], item.mask) and single.meta["kind"] == "single"
    x, y, side = item.box
    assert single.boxes[1].tolist() == [[x, y, x + side - 1, y + side - 1]]  # inclusive pixels

    pair = data.load("pair-s030-r01", card)
    (x1, y1), (x2, y2) = pair.meta["centres"]
    assert pair.meta["separation"] == 30 == x2 - x1 and y1 == y2 and pair.labels == (1,)  # class r mod 2
    mask = pair.masks[1]
    assert mask.sum() == 2 * 14 * 14
    for x0, y0, x1_, y1_ in pair.boxes[1].tolist():
        assert mask[int(y0):int(y1_) + 1, int(x0):int(x1_) + 1].all()
    again = for_model(model, singles=3, replicates=2, separations=[14, 30]).load("pair-s030-r01", card)
    assert torch.equal(again.image, pair.image)
    other_seed = for_model(model, seed=1, singles=3, replicates=2, separations=[14, 30]).load("pair-s030-r01", card)
    assert not torch.equal(other_seed.image, pair.image)
    assert data.load("pair-s999", card).skip and data.load("single-0000", replace(card, input_size=96)).skip


def test_dataset_refuses_what_it_cannot_draw(quick_groundtruth, lite0):
    model = quick_groundtruth.model
    assert default_separations(16, 128) == list(range(16, 65, 2)) and default_separations(14, 64)[-1] == 50
    with pytest.raises(JitterCamError, match="need 14-50 px"):
        for_model(model, separations=[10])
    with pytest.raises(JitterCamError, match="use model groundtruth, not efficientnet_lite0") as refused:
        for_model(lite0)
    assert refused.value.option == "model"
    with pytest.raises(JitterCamError, match="not both 0"):
        GroundTruthBenchmark(jittercam.model_card(model).heldout, singles=0, replicates=0)


def test_gallery_shows_pairs_across_the_sweep():
    keys = ["single-0000"] + [f"pair-s{s:03d}-r{r:02d}" for r in range(2) for s in range(16, 66, 2)]
    assert GroundTruth().showcase(keys, 4) == ["pair-s016-r00", "pair-s032-r00", "pair-s048-r00", "pair-s064-r00"]
    assert GroundTruth().showcase(["single-0000", "single-0001"], 1) == ["single-0000"]
    assert default_sizes(16) == [18, 20, 24, 32] and default_sizes(7) == [9, 10, 11, 14]


# ------------------------------------------------------------------------------------------------ the run
def test_every_arm_is_measured_and_resolves_far_pairs(tmp_path, weights):
    db = tmp_path / "gt.db"
    assert _bench(db, weights, "--methods", "gradcam,layercam,upscale,jittercam", "--sizes", "10,16") == 0
    rows = _rows(db)
    arms = {(m, v) for m, v, *_ in rows}
    assert arms == {("gradcam", ""), ("layercam", ""), ("layercam", "fused"), ("upscale", "size=10"),
                    ("upscale", "size=16"), ("jittercam", "size=10"), ("jittercam", "size=16")}
    items = {item for _, _, item, *_ in rows}
    assert len(items) == 4 + 2 * 4  # 4 singles, 2 replicates of 14, 26, 38, 50 px
    passes = {(m, v): value for (m, v, _, metric), value in rows.items() if metric == "passes"}
    assert passes[("gradcam", "")] == 1 and passes[("jittercam", "size=16")] == 81
    assert passes[("upscale", "size=16")] == 1
    assert passes[("layercam", "fused")] == 1
    for (_method, _variant, item, metric), value in rows.items():
        if item.startswith("single"):
            assert metric in {"energy", "auc", "seconds", "passes"}
        else:
            assert metric in {"separation", "resolved", "depth", "seconds", "passes"}
        if metric in ("energy", "auc"):
            assert 0 <= value <= 1
    auc = [value for (m, v, _, metric), value in rows.items() if metric == "auc" and m == "gradcam"]
    assert np.mean(auc) > 0.9  # the trained model's Grad-CAM finds the evidence
    # the widest pairs (50 px, nearly four 14 px patches apart) are two peaks for Grad-CAM
    assert all(rows[("gradcam", "", f"pair-s050-r{r:02d}", "resolved")] == 1 for r in range(2))
    # touching patches on an 8 x 8 map are one blob
    assert all(rows[("gradcam", "", f"pair-s014-r{r:02d}", "resolved")] == 0 for r in range(2))
    expected = jittercam.metrics.evidence_auc  # the stored AUC is the metric's, for the map the method gives
    model = jittercam.load_model("groundtruth", weights=weights)
    sample = for_model(model).load("single-0002", jittercam.model_card(model))
    maps = jittercam.methods.create("gradcam", model)(sample.image[None], torch.tensor(sample.labels))
    value = float(expected(maps, sample.masks[sample.labels[0]][None])[0])
    assert math.isclose(rows[("gradcam", "", "single-0002", "auc")], value, rel_tol=1e-5)

    assert _bench(db, weights, "--methods", "gradcam,layercam,upscale,jittercam", "--sizes", "10,16") == 0
    assert _rows(db) == rows  # the same command computes nothing again

    out = tmp_path / "report"
    written = write_report([db], out)
    text = (out / "groundtruth.md").read_text()
    assert "Resolving power (px)" in text and "pairs resolved (%) by separation" in text
    assert "jittercam[size=16]" in text and "layercam[fused]" in text
    assert (out / "groundtruth-groundtruth-w8-groundtruth-cost.png").stat().st_size > 1000
    assert (out / "groundtruth-groundtruth-w8-groundtruth-resolution.png").stat().st_size > 1000
    gallery = sorted(p.name for p in (out / "gallery" / "groundtruth-w8-groundtruth").glob("*.input.png"))
    assert gallery == ["pair-s014-r00.input.png", "pair-s026-r00.input.png", "pair-s038-r00.input.png",
                       "pair-s050-r00.input.png"]
    page = (out / "index.html").read_text()
    assert written.gallery > 0 and "groundtruth" in page
    assert re.search(r"pair-s014-r00 \(class \d, (hgrating|vgrating|diagonal|antidiagonal)\)", page)
    csv = (out / "groundtruth.csv").read_text()
    power = [line for line in csv.splitlines()
             if line.startswith("groundtruth,") and ",gradcam,resolving_power," in line]
    assert len(power) == 1 and 14 < float(power[0].split(",")[5]) <= 50


def test_resolving_power_from_rows():
    separations = [16, 16, 20, 20, 24, 24, 28, 28]
    resolved = [0, 0, 1, 0, 1, 1, 1, 1]
    assert resolving_power(separations, resolved, fraction=1.0) == Stat(24.0, 8)
    assert resolving_power(separations, resolved, fraction=0.5) == Stat(20.0, 8)
    curve = resolution_curve(separations, resolved)
    assert {s: stat.value for s, stat in curve.items()} == {16.0: 0.0, 20.0: 0.5, 24.0: 1.0, 28.0: 1.0}
    assert all(stat.n == 2 for stat in curve.values())
    stats = GroundTruth.summarise({
        "separation": Column(np.array(separations, float)), "resolved": Column(np.array(resolved, float)),
        "depth": Column(np.full(8, 0.1)), "auc": Column(np.array([0.5, 1.0]))}, {})
    assert set(stats) == {"resolving_power", "auc"} and stats["auc"].value == 0.75
    assert stats["resolving_power"].value == 24.0  # 75 % of the pairs: both of two
    assert math.isnan(resolving_power([16, 20], [1, 0]).value)  # the widest is not resolved


def test_default_model_comes_from_the_cache_and_its_file_is_the_identity(tmp_path, monkeypatch, weights):
    monkeypatch.setenv("JITTERCAM_CACHE_DIR", str(tmp_path / "cache"))
    db = tmp_path / "gt.db"
    assert main(["bench", "groundtruth", "--db", str(db), *SMALL, "--methods", "gradcam"]) == 2
    assert not db.exists()
    target = default_path(0, 1200, 128, 4, 8)
    target.parent.mkdir(parents=True)
    shutil.copy(weights, target)
    assert main(["bench", "groundtruth", "--db", str(db), *SMALL, "--methods", "gradcam"]) == 0
    with sqlite3.connect(db) as connection:
        (stored,) = connection.execute("SELECT DISTINCT weights FROM runs").fetchone()
    assert stored.startswith(f"{target.name} sha256:")


def test_the_benchmark_finds_the_quick_model_that_was_trained(tmp_path, monkeypatch, capsys):
    # issue 21.12: `groundtruth train --quick` then `bench groundtruth` (no --weights) runs on that model
    monkeypatch.setenv("JITTERCAM_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["groundtruth", "train", "--quick", "--steps", "3"]) == 0
    quick = default_path(0, 3, 64, 2, 8)
    assert quick.is_file() and "benchmark it: jittercam bench groundtruth --db gt.db\n" in capsys.readouterr().out
    db = tmp_path / "gt.db"
    assert main(["bench", "groundtruth", "--db", str(db), *SMALL, "--methods", "gradcam"]) == 0
    with sqlite3.connect(db) as connection:
        (stored,) = connection.execute("SELECT DISTINCT weights FROM runs").fetchone()
    assert stored.startswith(f"{quick.name} sha256:")

    # a second training of another configuration: which one is meant is not clear, so the command says how
    assert main(["groundtruth", "train", "--quick", "--steps", "4"]) == 0
    other = default_path(0, 4, 64, 2, 8)
    assert f"benchmark it: jittercam bench groundtruth --weights {other} --db gt.db" in capsys.readouterr().out
    assert main(["bench", "groundtruth", "--db", str(tmp_path / "two.db"), *SMALL, "--methods", "gradcam"]) == 2
    error = capsys.readouterr().err
    assert "pass one as --weights" in error and quick.name in error and other.name in error
    assert len(error.strip().splitlines()) == 1 and not (tmp_path / "two.db").exists()

    # the default training, once there, is the benchmark's model again
    shutil.copy(quick, default_path(0, 1200, 128, 4, 8))
    assert main(["bench", "groundtruth", "--db", str(tmp_path / "default.db"), *SMALL, "--methods", "gradcam"]) == 0


def test_a_limited_run_covers_the_whole_benchmark(tmp_path, weights, quick_groundtruth):
    # issue 21.13: the first N items mix singles and pairs spread over the whole sweep
    keys = for_model(quick_groundtruth.model).keys()  # 64 singles, 8 replicates of 14-50 px every 2 px
    first = keys[:10]
    separations = sorted(int(key[6:9]) for key in first if key.startswith("pair-"))
    assert sum(key.startswith("single-") for key in first) == 3 and len(separations) == 7
    assert separations[0] == 14 and separations[-1] == 50 and len(set(separations)) == 7
    assert sorted(keys) == sorted([f"single-{i:04d}" for i in range(64)]
                                  + [f"pair-s{s:03d}-r{r:02d}" for r in range(8) for s in range(14, 51, 2)])
    assert {key for key in keys[:27] if key.startswith("pair-")} == {
        f"pair-s{s:03d}-r00" for s in range(14, 51, 2)}  # a whole replicate of the sweep in the first 27 items

    db = tmp_path / "limit.db"
    assert main(["bench", "groundtruth", "--weights", weights, "--db", str(db), "--limit", "10",
                 "--methods", "gradcam", "--quiet"]) == 0
    metrics = {metric for *_, metric in _rows(db)}
    assert {"energy", "auc", "separation", "resolved"} <= metrics
    out = tmp_path / "report"
    write_report([db], out)
    text = (out / "groundtruth.md").read_text()
    assert "Resolving power (px)" in text
    assert ("a partial run: 3 of 64 single-patch images, pairs at 7 of 19 separations, 1 of 8 pairs at each"
            in text)
    # the complete small run of the other tests is not called partial
    full = tmp_path / "full.db"
    assert _bench(full, weights, "--methods", "gradcam") == 0
    write_report([full], tmp_path / "full")
    assert "partial" not in (tmp_path / "full" / "groundtruth.md").read_text()


class _Writer:
    """What `extra_report` may call on `jittercam.bench.report.SectionWriter`, recorded."""

    def __init__(self) -> None:
        self.section = SimpleNamespace(notes=[])
        self.tables: list[tuple] = []
        self.costs: list[tuple] = []

    @staticmethod
    def sorted_keys(keys):
        return sorted(keys)

    @staticmethod
    def label(key):
        return f"{key[0]}[{key[1]}]" if key[1] else key[0]

    def table(self, title, corner, columns, rows, notes):
        self.tables.append((title, columns, rows, notes))

    def sweep_figure(self, *args) -> None:
        pass

    def cost_figure(self, suffix, title, xlabel, ylabel, methods, caption):
        self.costs.append((methods, caption))


def test_a_dash_is_explained_and_the_method_still_plotted():
    # issue 21.14: 2 pairs per separation, 100 % from 18 px but 50 % at the widest: power "—"
    separations = [14, 14, 18, 18, 30, 30, 50, 50]
    sharp = [0, 0, 1, 1, 1, 1, 1, 0]
    blurred = [0, 0, 0, 0, 1, 1, 1, 1]
    never = [0, 0, 0, 0, 0, 1, 0, 1]
    columns = {name: {"separation": Column(np.array(separations, float)), "resolved": Column(np.array(r, float)),
                      "auc": Column(np.array([0.9, 0.95]))} for name, r in
               (("jittercam", sharp), ("gradcam", blurred), ("rise", never))}
    variants = {"jittercam": "size=16", "gradcam": "", "rise": ""}
    group = SimpleNamespace(label="gt-w8", dataset="groundtruth", runs=[], series={}, stats={})
    for name, arm in columns.items():
        key = (name, variants[name])
        group.series[key] = GroundTruth.series(arm)
        group.stats[key] = {**GroundTruth.summarise(arm, {}), "passes": Stat(81.0 if name == "jittercam" else 1.0, 2)}
    assert math.isnan(group.stats[("jittercam", "size=16")]["resolving_power"].value)
    assert group.stats[("gradcam", "")]["resolving_power"].value == 30

    writer = _Writer()
    GroundTruth.extra_report(group, writer)
    (_, columns_shown, rows, notes), = writer.tables
    assert columns_shown == ["14", "18", "30", "50"] and ("jittercam[size=16]", [
        ("0", None), ("100", None), ("100", None), ("50", None)]) in rows
    assert ("resolving power — for jittercam[size=16]: resolved 50% of the pairs at 50 px, the widest separation "
            "(75% needed); below, at least 75% at every separation from 18 to 30 px") in " ".join(notes)
    assert "resolving power — for rise: resolved at least 75% of the pairs at no separation" in " ".join(notes)
    (methods, caption), = writer.costs
    assert methods["jittercam"] == [(81.0, 18.0, "16", True)]  # plotted where it resolves, flagged
    assert methods["gradcam"] == [(1.0, 30.0, "", False)] and "rise" not in methods
    assert "† not resolved at the widest separations" in caption and "never resolved, absent: rise" in caption
    labels = {"jittercam[size=16]": group.stats[("jittercam", "size=16")], "gradcam": group.stats[("gradcam", "")]}
    (note,) = GroundTruth.notes("gt-w8", labels, {}, {})
    assert note.startswith("gt-w8: resolving power — (jittercam[size=16]): fewer than 75% of the pairs at the widest")

    figure = plots.cost_plot("t", "x", "y", methods)
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert sorted(legend) == ["gradcam", "jittercam †"]
    assert any("not resolved at every" in text.get_text() for text in figure.texts)
    assert "16†" in [text.get_text() for text in figure.axes[0].texts]


@pytest.mark.parametrize("arguments,message", [
    (["--dataset", "offline"], "its own synthetic images"),
    (["--separations", "4"], "need 14-50 px"),
    (["--dip", "1.5"], "--dip must be between 0 and 1"),
    (["--input-size", "96"], "leave out --input-size"),
    (["--separations", "20-40:0"], "step must be at least 1"),
    (["--methods", "gradcam", "--weights", "missing.pt"], "no such ground-truth model file"),
])
def test_mistakes_are_one_line_and_write_nothing(tmp_path, weights, capsys, arguments, message):
    db = tmp_path / "gt.db"
    command = ["bench", "groundtruth", "--db", str(db), *SMALL, "--methods", "gradcam"]
    if "--weights" not in arguments:
        command += ["--weights", weights]
    assert main([*command, *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1 and not db.exists()


def test_other_experiments_run_on_the_ground_truth_and_lite0_is_refused(tmp_path, weights, capsys):
    db = tmp_path / "p.db"
    assert main(["bench", "pointing", "--dataset", "groundtruth", "--model", "groundtruth", "--weights", weights,
                 "--methods", "gradcam", "--limit", "6", "--db", str(db), "--quiet"]) == 0
    assert len(_rows(db)) == 6  # a pointing trial for each of the first 6 items
    assert main(["bench", "local-accuracy", "--dataset", "groundtruth", "--db", str(tmp_path / "x.db")]) == 2
    assert "--model groundtruth" in capsys.readouterr().err
    assert main(["bench", "groundtruth", "--model", "efficientnet_lite0", "--db", str(tmp_path / "y.db")]) == 2
    assert "--model groundtruth" in capsys.readouterr().err
    assert main(["bench", "local-accuracy", "--db", str(tmp_path / "z.db")]) == 2
    assert "local-accuracy needs --dataset: offline, " in capsys.readouterr().err


def test_pairs_at_an_angle_are_a_dataset_of_their_own(quick_groundtruth, tmp_path, weights):
    model = quick_groundtruth.model
    slanted = for_model(model, singles=0, replicates=1, angle=45)
    assert slanted.name == "groundtruth-45deg" and for_model(model).name == "groundtruth"
    assert slanted.separations[0] == 20  # 14 px patches on a diagonal: offsets of 14 px each way, at least
    pair = slanted.load(f"pair-s{slanted.separations[0]:03d}-r00", jittercam.model_card(model))
    (x1, y1), (x2, y2) = pair.meta["centres"]
    assert x2 - x1 == y2 - y1 == 14 and abs(pair.meta["separation"] - 20) < 1
    with pytest.raises(JitterCamError, match="at 45 degrees"):
        for_model(model, separations=[16], angle=45)  # 11 px each way: the patches would overlap
    db = tmp_path / "a.db"
    assert _bench(db, weights, "--methods", "gradcam", "--angle", "90") == 0
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT DISTINCT dataset FROM runs").fetchall() == [("groundtruth-90deg",)]
