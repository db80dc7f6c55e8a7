"""`jittercam report`: stores read and merged, the paper's numbers, the aggregation by hand, the outputs.

The stores are written here with sqlite3 straight from the schema of issue 11's design (not with the
benchmark's own code): every experiment, a few items, several methods, split over two "rank" files.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import GOLDFISH
from jittercam.bench import paper
from jittercam.bench.experiments import Column, Variant, available_experiments, experiment_class
from jittercam.bench.experiments.base import COMBINED
from jittercam.bench.report import format_value
from jittercam.bench.stats import Stat, mean, mean_curve
from jittercam.cli import main
from jittercam.metrics import auc

SCHEMA = """
CREATE TABLE runs (config_hash TEXT PRIMARY KEY, experiment TEXT, model TEXT, weights TEXT, dataset TEXT,
                   config TEXT, rank INTEGER, world_size INTEGER, machine TEXT, created TEXT);
CREATE TABLE results (config_hash TEXT, experiment TEXT, model TEXT, weights TEXT, dataset TEXT,
                      method TEXT, options TEXT, variant TEXT NOT NULL DEFAULT '', item TEXT, target INTEGER,
                      metric TEXT, value REAL, seconds REAL, seed INTEGER, created TEXT,
                      PRIMARY KEY (config_hash, method, variant, item, metric));
CREATE TABLE skips (config_hash TEXT, experiment TEXT, dataset TEXT, method TEXT, item TEXT, reason TEXT,
                    PRIMARY KEY (config_hash, method, item));
CREATE TABLE curves (config_hash TEXT, experiment TEXT, model TEXT, dataset TEXT, method TEXT, variant TEXT,
                     item TEXT, kind TEXT, scores BLOB, PRIMARY KEY (config_hash, method, variant, item, kind));
CREATE TABLE gallery (config_hash TEXT, model TEXT, dataset TEXT, method TEXT, item TEXT, target INTEGER,
                      image BLOB, map BLOB, height INTEGER, width INTEGER, PRIMARY KEY (config_hash, method, item));
"""
LITE0, OFFLINE = "efficientnet_lite0", "offline"
ITEMS = [f"item-{i}" for i in range(6)]
THRESHOLDS = [round(0.05 * i, 2) for i in range(20)]
EXPERIMENTS = ("faithfulness", "local-accuracy", "weak-localisation", "pointing", "efficiency", "size-sweep",
               "consistency", "layers")

# hand-set values whose aggregates are worked out in the tests below
FAITH_Y = [0.5, 0.4, 0.8, 0.2]
FAITH_O = {"gradcam": [0.25, 0.6, 0.8, 0.1], "gradcam++": [0.5, 0.5, 0.4, 0.3],
           "constant": [0.505, 0.404, 0.808, 0.202]}
DELETION = {"gradcam": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "random": [0.3] * 6, "centre": [0.2] * 6,
            "jittercam:gradcam": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3], "rise": [0.12] * 6}
WEAK_CENTRES = [0.3, 0.3, 0.5, 0.5, 0.5, 0.9]  # item i hits at threshold a when |a - c_i| < 0.12
POINTING = {  # item#class -> (gradcam hit, difficult?)
    "item-0#0": (1, False), "item-0#1": (0, True), "item-1#2": (1, False), "item-2#0": (1, False),
    "item-3#3": (0, True), "item-4#1": (1, True), "item-5#2": (0, False),
}
SPEARMAN = [0.9, 0.8, None, 0.7, 1.0, 0.6]  # None: a constant map's NaN, stored as NULL


PAPER = tuple(v for name in available_experiments() for v in experiment_class(name).paper_values)


def paper_value(experiment, model, dataset, method, metric):
    return paper.lookup(experiment_class(experiment).paper_values, model, dataset, method, metric)


def column(values, targets=None, curves=None) -> Column:
    array = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    return Column(array, None if targets is None else np.array(targets), curves)


def summarise(experiment, columns, **config):
    return experiment_class(experiment).summarise(columns, config)


class StoreWriter:
    """Rows of one results store, as `jittercam bench` writes them (issue 11's schema)."""

    def __init__(self, path: Path, rank: int = 0, world: int = 1) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.rank, self.world = rank, world

    def run(self, config_hash, experiment, model=LITE0, dataset=OFFLINE, weights="pretrained",
            created="2026-01-01T00:00:00", **config):
        config = {"experiment": experiment, "model": model, "dataset": dataset, **config}
        self.db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)", (
            config_hash, experiment, model, weights, dataset, json.dumps(config), self.rank, self.world,
            "test CPU, 2 cores, torch 2", created))

    def result(self, config_hash, experiment, method, item, metric, value, variant="", target=1, model=LITE0,
               dataset=OFFLINE, weights="pretrained", options="batch_size=4"):
        self.db.execute("INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
            config_hash, experiment, model, weights, dataset, method, f"{method}({options})", variant, item,
            target, metric, value, 0.01, 0, "2026-01-01T00:00:01"))

    def skip(self, config_hash, experiment, item, reason, method="", dataset=OFFLINE):
        self.db.execute("INSERT INTO skips VALUES (?,?,?,?,?,?)",
                        (config_hash, experiment, dataset, method, item, reason))

    def curve(self, config_hash, experiment, method, item, kind, scores, variant="", model=LITE0, dataset=OFFLINE):
        blob = np.asarray(scores, dtype="<f4").tobytes()
        self.db.execute("INSERT INTO curves VALUES (?,?,?,?,?,?,?,?,?)",
                        (config_hash, experiment, model, dataset, method, variant, item, kind, blob))

    def gallery(self, config_hash, method, item, target, image: bytes, raw: np.ndarray, model=LITE0, dataset=OFFLINE):
        self.db.execute("INSERT INTO gallery VALUES (?,?,?,?,?,?,?,?,?,?)", (
            config_hash, model, dataset, method, item, target, image, raw.astype("<f4").tobytes(), *raw.shape))

    def close(self) -> None:
        self.db.commit()
        self.db.close()


def _curve(auc_like: float, kind: str, steps: int = 28) -> np.ndarray:
    x = np.linspace(0, 1, steps + 1)
    rate = 1.0 / max(auc_like, 1e-3)
    return np.exp(-rate * x) if kind == "deletion" else 1 - np.exp(-rate * x) * (1 - 0.05)


def _photos() -> list[bytes]:
    """Three 64 x 64 input PNGs: the goldfish photo and two crops of it."""
    photo = Image.open(GOLDFISH).convert("RGB")
    crops = [photo, photo.crop((150, 100, 400, 350)), photo.crop((0, 0, 250, 250))]
    result = []
    for crop in crops:
        buffer = io.BytesIO()
        crop.resize((64, 64)).save(buffer, format="PNG")
        result.append(buffer.getvalue())
    return result


def fill(writer: StoreWriter, items: list[str]) -> None:
    """Every experiment's rows for `items` (a rank's share of ITEMS)."""
    index = {item: ITEMS.index(item) for item in items}
    for experiment in EXPERIMENTS:
        extra = {"num_classes": 4} if experiment == "pointing" else {}
        if experiment == "local-accuracy":  # the gallery's run: its labels name the class
            extra = {"class_names": ["tench", "goldfish"]}
        writer.run(f"cfg-{experiment}", experiment, limit=len(ITEMS), **extra)
    writer.run("cfg-faith-r50", "faithfulness", model="resnet50", dataset="imagenet-val")
    writer.run("cfg-local-r50", "local-accuracy", model="resnet50", dataset="imagenet-val")

    for item, i in index.items():
        # faithfulness: Table 1 methods on the first four items, the expansion sweep on all
        if i < 4:
            for method, o in FAITH_O.items():
                writer.result("cfg-faithfulness", "faithfulness", method, item, "y", FAITH_Y[i])
                writer.result("cfg-faithfulness", "faithfulness", method, item, "o", o[i])
        for method in ("gradcam", "random"):
            for alpha in (0.5, 1, 2, 4):
                o = 0.5 * (1 + 0.1 * alpha * (i - 2)) * (0.9 if method == "random" else 1)
                writer.result("cfg-faithfulness", "faithfulness", method, item, "y", 0.5, variant=f"alpha={alpha:g}")
                writer.result("cfg-faithfulness", "faithfulness", method, item, "o", o, variant=f"alpha={alpha:g}")
        if i < 2:
            for method in ("gradcam", "gradcam++"):
                writer.result("cfg-faith-r50", "faithfulness", method, item, "y", 0.6, model="resnet50",
                              dataset="imagenet-val")
                writer.result("cfg-faith-r50", "faithfulness", method, item, "o", 0.3 + 0.4 * i, model="resnet50",
                              dataset="imagenet-val")
                writer.result("cfg-local-r50", "local-accuracy", method, item, "deletion", 0.15, model="resnet50",
                              dataset="imagenet-val")
                writer.result("cfg-local-r50", "local-accuracy", method, item, "insertion", 0.55, model="resnet50",
                              dataset="imagenet-val")
        # local accuracy, with curves
        for method, deletions in DELETION.items():
            writer.result("cfg-local-accuracy", "local-accuracy", method, item, "deletion", deletions[i])
            writer.result("cfg-local-accuracy", "local-accuracy", method, item, "insertion", 1 - deletions[i])
            for kind, area in (("deletion", deletions[i]), ("insertion", 1 - deletions[i])):
                writer.curve("cfg-local-accuracy", "local-accuracy", method, item, kind, _curve(area, kind))
        # weak localisation: gradcam's hits by WEAK_CENTRES, jittercam always hits at 0.5 only
        for method in ("gradcam", "jittercam:gradcam", "centre"):
            for scheme in ("val", "mean", "eng"):
                for a in THRESHOLDS:
                    if method == "gradcam":
                        hit = abs(a - WEAK_CENTRES[i]) < 0.12
                    else:
                        hit = a == 0.5 and (method == "jittercam:gradcam" or i % 2 == 0)
                    writer.result("cfg-weak-localisation", "weak-localisation", method, item, f"{scheme}@{a:g}",
                                  float(hit))
        # pointing: per item#class, class as target
        for key, (hit, difficult) in POINTING.items():
            if key.split("#")[0] != item:
                continue
            target = int(key.split("#")[1])
            for method, value in (("gradcam", hit), ("centre", 1 - hit)):
                writer.result("cfg-pointing", "pointing", method, key, "all", value, target=target)
                if difficult:
                    writer.result("cfg-pointing", "pointing", method, key, "difficult", value, target=target)
        # efficiency
        for method, seconds, passes in (("gradcam", 0.02, 1), ("jittercam:gradcam", 0.3 + 0.01 * i, 64),
                                        ("scorecam", 2.0, 1280)):
            writer.result("cfg-efficiency", "efficiency", method, item, "seconds", seconds)
            writer.result("cfg-efficiency", "efficiency", method, item, "passes", passes)
        # size sweep 7..11, with curves for one size
        for size in range(7, 12):
            deletion = 0.2 - 0.01 * (size - 7) + 0.001 * i
            insertion = 0.6 - 0.02 * (size - 7)
            for metric, value in (("deletion", deletion), ("insertion", insertion)):
                writer.result("cfg-size-sweep", "size-sweep", "jittercam:gradcam", item, metric, value,
                              variant=f"size={size}")
        # consistency, one NaN
        writer.result("cfg-consistency", "consistency", "jittercam:gradcam", item, "spearman", SPEARMAN[i])
        # layers
        for method in ("gradcam", "jittercam:gradcam"):
            for layer in ("_bn1", "_swish"):
                writer.result("cfg-layers", "layers", method, item, "deletion", 0.1 + 0.05 * (layer == "_bn1"),
                              variant=f"layer={layer}")
                writer.result("cfg-layers", "layers", method, item, "insertion", 0.5, variant=f"layer={layer}")
    # skips: an unreadable image in faithfulness, two items without a box in weak localisation
    if "item-5" in index:
        writer.skip("cfg-faithfulness", "faithfulness", "broken.JPEG", "cannot read image: truncated file")
        writer.skip("cfg-weak-localisation", "weak-localisation", "composite-9", "no box for its class")
    if "item-0" in index:
        writer.skip("cfg-weak-localisation", "weak-localisation", "composite-8", "no box for its class")
    # gallery: three items, three methods
    photos = _photos()
    for item, i in index.items():
        if i >= 3:
            continue
        rng = np.random.default_rng(i)
        for method, side in (("gradcam", 7), ("jittercam:gradcam", 14), ("random", 7)):
            raw = rng.random((side, side)).astype(np.float32)
            raw[side // 2, side // 2] = 3.0
            writer.gallery("cfg-local-accuracy", method, item, 1, photos[i], raw)


def build_stores(folder: Path) -> tuple[list[Path], Path]:
    """Two rank stores (items split as torchrun would: rank r takes items[r::2]) and one store with
    every item (as one process would write it)."""
    folder.mkdir(parents=True, exist_ok=True)
    ranks = []
    for rank in range(2):
        path = folder / f"bench.rank{rank}-of2.db"
        writer = StoreWriter(path, rank, 2)
        fill(writer, ITEMS[rank::2])
        writer.close()
        ranks.append(path)
    single = folder / "single.db"
    writer = StoreWriter(single)
    fill(writer, ITEMS)
    writer.close()
    return ranks, single


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[list[Path], Path]:
    return build_stores(tmp_path_factory.mktemp("stores"))


@pytest.fixture(scope="module")
def report(stores, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    assert main(["report", *map(str, stores[0]), "--out", str(out), "--quiet"]) == 0
    return out


def read_csv(path: Path) -> dict[tuple[str, str, str, str], tuple[float, int]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0]) == ["experiment", "model", "dataset", "method", "metric", "value", "n"]
    return {(r["model"], r["dataset"], r["method"], r["metric"]): (float(r["value"]), int(r["n"])) for r in rows}


# ------------------------------------------------------------------------------------------ the paper's numbers
def test_paper_numbers_by_value():
    assert paper_value("faithfulness", "resnet50", "imagenet-val", "gradcam", "iic") == 40.21
    assert paper_value("faithfulness", "inception_v3", "imagenet-val", "constant", "ad") == 1.32
    assert paper_value("faithfulness", "resnet50", "imagenet-val", "constant", "improved") == 24094
    assert paper_value("faithfulness", "resnet50", "imagenet-val", "gradcam++", "mean_improvement") == 0.081
    assert paper_value("local-accuracy", "densenet121", "imagenet-val", "xgradcam", "insertion") == 0.540
    assert paper_value("local-accuracy", "inception_v3", "imagenet-val", "rise", "deletion") == 0.162
    assert paper_value("local-accuracy", "resnet50", "imagenet-val", "jittercam:gradcam", "deletion") == 0.118
    assert paper_value("weak-localisation", "densenet121", "imagenet-val", "gradcam++", "eng") == 42.88
    assert paper_value("weak-localisation", "inception_v3", "imagenet-val", "jittercam", "mean") == 39.10
    assert paper_value("pointing", "resnet50", "coco-val2014", "jittercam", "difficult") == 61.10
    assert paper_value("pointing", "resnet50", "coco-val2014", "random", "all") == 12.33
    assert paper_value("efficiency", "densenet121", "imagenet-val", "scorecam", "passes") == 1024
    assert paper_value("efficiency", "inception_v3", "imagenet-val", "jittercam", "passes") == 81
    assert paper_value("efficiency", "resnet50", "imagenet-val", "rise", "seconds") == 17.58
    assert paper_value("consistency", "resnet50", "imagenet-val", "jittercam", "spearman") == 0.95
    # no number for another model, dataset or a method the paper did not run
    assert paper_value("faithfulness", LITE0, "imagenet-val", "gradcam", "iic") is None
    assert paper_value("pointing", "resnet50", "imagenet-val", "gradcam", "all") is None
    assert paper_value("local-accuracy", "resnet50", "imagenet-val", "layercam", "deletion") is None


def test_paper_tables_are_complete():
    def count(experiment, metric=None):
        return sum(v.experiment == experiment and (metric is None or v.metric == metric) for v in PAPER)

    assert count("faithfulness", "iic") == count("faithfulness", "ad") == 3 * 3
    assert count("local-accuracy") == 9 * 2 * 3
    assert count("weak-localisation") == 9 * 3 * 3
    assert count("pointing") == 7 * 2
    assert count("efficiency") == 7 * 2 * 3
    # §4.3's counts are ResNet50's: improved / 50,000 is Table 1's IIC for Grad-CAM and Grad-CAM++
    for method in ("gradcam", "gradcam++"):
        improved = paper_value("faithfulness", "resnet50", "imagenet-val", method, "improved")
        assert 100 * improved / 50000 == pytest.approx(paper_value(
            "faithfulness", "resnet50", "imagenet-val", method, "iic"), abs=0.005)
    methods = {"gradcam", "gradcam++", "xgradcam", "scorecam", "ablationcam", "rise", "jittercam", "random",
               "centre", "constant"}
    assert {v.method for v in PAPER} == methods
    assert {v.metric for v in PAPER} == {
        "ad", "iic", "improved", "mean_improvement", "deletion", "insertion", "val", "mean", "eng", "all", "difficult",
        "seconds", "passes", "spearman"}


# ------------------------------------------------------------------------------------------ aggregation by hand
def test_mean_leaves_missing_values_out():
    assert mean([1.0, float("nan"), 3.0]) == Stat(2.0, 2)
    empty = mean([float("nan")])
    assert math.isnan(empty.value) and empty.n == 0
    assert mean(column([0.5, None, 1.5]).values) == Stat(1.0, 2)


def _faithfulness(y, o):
    return summarise("faithfulness", {"y": column(y), "o": column(o)})


def test_faithfulness_by_hand():
    # Y = 0.5, 0.4, 0.8, 0.2; O = 0.25, 0.6, 0.8, 0.1: drops 0.5, 0, 0, 0.5 -> AD 25; only item 2 rises (by 0.2)
    result = _faithfulness(FAITH_Y, FAITH_O["gradcam"])
    assert result["ad"] == Stat(25.0, 4)
    assert result["iic"] == Stat(25.0, 4)
    assert result["improved"] == Stat(1.0, 4)
    assert result["mean_improvement"].value == pytest.approx(0.2) and result["mean_improvement"].n == 1
    # equal scores are no increase; Y <= 0 is left out of AD only; a NaN pair is left out of everything
    result = _faithfulness([0.5, 0.0, 0.3, float("nan")], [0.5, 0.1, 0.15, 0.2])
    assert result["ad"] == Stat(25.0, 2)
    assert result["iic"].value == pytest.approx(100 / 3) and result["improved"] == Stat(1.0, 3)


def _weak(scheme, thresholds, hits):
    curves = np.array(hits, dtype=np.float64)
    return summarise("weak-localisation", {scheme: column([None] * len(curves), curves=curves)},
                     options={"thresholds": thresholds})


def test_weak_localisation_by_hand():
    # |a - c_i| < 0.12 with c = .3 .3 .5 .5 .5 .9: at a = 0.4 five of six hit (0.35: 2, 0.45: 3, 0.5: 3)
    result = _weak("val", THRESHOLDS, [[float(abs(a - c) < 0.12) for a in THRESHOLDS] for c in WEAK_CENTRES])
    assert result["val"].value == pytest.approx(100 / 6) and result["val"].n == 6
    assert result["val_threshold"].value == 0.4
    # a tie keeps the smaller threshold; a missing item (NaN) is left out
    tie = _weak("eng", [0.1, 0.2, 0.5], [[0, 0, 1], [0, 1, 0], [float("nan")] * 3])
    assert tie["eng"] == Stat(50.0, 2) and tie["eng_threshold"].value == 0.2


def test_pointing_is_torchray_mean_over_classes():
    targets = [int(key.split("#")[1]) for key in POINTING]
    hits = [hit for hit, _ in POINTING.values()]
    # classes 0: 2/2, 1: 1/2, 2: 1/2, 3: 0/1 -> mean 0.5; overall 4 of 7
    result = summarise("pointing", {"all": column(hits, targets)}, num_classes=4)
    assert result["all"] == Stat(50.0, 7) and result["all_classes"] == Stat(4.0, 7)
    assert result["all_overall"].value == pytest.approx(400 / 7) and result["all_overall"].n == 7
    # a class without trials is left out (TorchRay counts it 0; on a whole dataset every class has trials)
    result = summarise("pointing", {"all": column(hits, targets)}, num_classes=8)
    assert result["all"] == Stat(50.0, 7) and result["all_classes"] == Stat(4.0, 7)


def test_combined_and_curves():
    combined = summarise("size-sweep", {"deletion": column([0.1, 0.3, 0.2, 0.2, 0.2]),
                                        "insertion": column([0.7, 0.7, 0.7, 0.7])})
    assert combined[COMBINED] == Stat(pytest.approx(0.5), 4)
    # curves of 3 and 5 points: the short one is resampled onto the long one's points
    averaged = mean_curve([np.array([1.0, 0.5, 0.0]), np.array([1.0, 1.0, 1.0, 1.0, 1.0])])
    np.testing.assert_allclose(averaged, [1.0, 0.875, 0.75, 0.625, 0.5])
    assert float(auc(torch.tensor([1.0, 0.5, 0.0]))) == pytest.approx(0.5)


def test_summarise_per_experiment():
    pointing = summarise("pointing", {"all": column([1, 0, 1], [0, 0, 1])}, num_classes=2)
    assert pointing["all"] == Stat(75.0, 3) and pointing["all_overall"].value == pytest.approx(200 / 3)
    sweep = summarise("size-sweep", {"deletion": column([0.1, 0.3]), "insertion": column([0.6, None])})
    assert sweep[COMBINED].value == pytest.approx(0.2 + 1 - 0.6)
    faith = _faithfulness(FAITH_Y, FAITH_O["gradcam++"])
    assert faith["ad"] == Stat(12.5, 4) and faith["iic"] == Stat(50.0, 4)
    assert Variant.of("size=9") == Variant("size", 9.0) and Variant.of("layer=_bn1").number is None
    assert Variant("size", 9.0).label == "size=9" and Variant("fused").label == "fused"


def test_number_formats():
    assert format_value("ad", 25.0) == "25.00" and format_value("deletion", 0.35) == "0.350"
    assert format_value("passes", 64.0) == "64" and format_value("seconds", 0.03, paper_number=True) == "0.03"
    assert format_value("iic", float("nan")) == "—"


# ------------------------------------------------------------------------------------------ the report
def test_every_experiment_has_its_files(report):
    for experiment in EXPERIMENTS:
        assert (report / f"{experiment}.md").is_file() and (report / f"{experiment}.csv").is_file()
    assert (report / "index.html").is_file()
    assert sorted(p.name for p in report.glob("*.png")) == [
        "faithfulness-efficientnet_lite0-offline-alpha.png",
        "local-accuracy-efficientnet_lite0-offline-curves.png",
        "size-sweep-efficientnet_lite0-offline-size.png",
    ]
    assert len(list((report / "gallery").rglob("*.png"))) == 3 * (1 + 3)
    assert "item-0 (class 1, goldfish)" in (report / "index.html").read_text()


def test_numbers_are_the_hand_computed_ones(report):
    faith = read_csv(report / "faithfulness.csv")
    assert faith[LITE0, OFFLINE, "gradcam", "ad"] == (25.0, 4)
    assert faith[LITE0, OFFLINE, "gradcam", "iic"] == (25.0, 4)
    assert faith[LITE0, OFFLINE, "gradcam++", "improved"] == (2.0, 4)
    assert faith[LITE0, OFFLINE, "constant", "iic"] == (100.0, 4)
    assert faith[LITE0, OFFLINE, "gradcam[alpha=2]", "ad"][1] == 6
    local = read_csv(report / "local-accuracy.csv")
    assert local[LITE0, OFFLINE, "gradcam", "deletion"][0] == pytest.approx(0.35)
    assert local[LITE0, OFFLINE, "gradcam", "deletion"][1] == 6
    weak = read_csv(report / "weak-localisation.csv")
    assert weak[LITE0, OFFLINE, "gradcam", "val"][0] == pytest.approx(100 / 6)
    assert weak[LITE0, OFFLINE, "gradcam", "eng_threshold"][0] == 0.4
    assert weak[LITE0, OFFLINE, "jittercam:gradcam", "mean"] == (0.0, 6)
    assert weak[LITE0, OFFLINE, "centre", "eng"][0] == pytest.approx(50.0)
    point = read_csv(report / "pointing.csv")
    assert point[LITE0, OFFLINE, "gradcam", "all"] == (50.0, 7)
    assert point[LITE0, OFFLINE, "gradcam", "all_overall"][0] == pytest.approx(400 / 7)
    assert point[LITE0, OFFLINE, "gradcam", "difficult"] == (25.0, 3)  # classes 1: 1/2, 3: 0/1; 0 and 2: no trial
    assert point[LITE0, OFFLINE, "centre", "all"] == (50.0, 7)  # 0/2, 1/2, 1/2, 1/1 -> 2 / 4
    eff = read_csv(report / "efficiency.csv")
    assert eff[LITE0, OFFLINE, "jittercam:gradcam", "passes"] == (64.0, 6)
    assert eff[LITE0, OFFLINE, "jittercam:gradcam", "seconds"][0] == pytest.approx(0.325)
    size = read_csv(report / "size-sweep.csv")
    assert size[LITE0, OFFLINE, "jittercam:gradcam[size=9]", COMBINED][0] == pytest.approx(
        (0.18 + 0.0025) + 1 - 0.56)
    consistency = read_csv(report / "consistency.csv")
    assert consistency[LITE0, OFFLINE, "jittercam:gradcam", "spearman"] == (pytest.approx(0.8), 5)
    layers = read_csv(report / "layers.csv")
    assert layers[LITE0, OFFLINE, "gradcam[layer=_bn1]", "deletion"][0] == pytest.approx(0.15)


def test_tables_have_every_method_and_metric(report):
    expected = {
        "faithfulness": (["gradcam", "gradcam++", "constant"], ["IIC", "AD", "Improved", "Mean impr."]),
        "local-accuracy": (list(DELETION), ["Del", "Ins"]),
        "weak-localisation": (["gradcam", "jittercam:gradcam", "centre"], ["Val", "Mean", "Eng"]),
        "pointing": (["gradcam", "centre"], ["All", "Difficult"]),
        "efficiency": (["gradcam", "jittercam:gradcam", "scorecam"], ["Seconds", "Passes"]),
        "size-sweep": (["jittercam:gradcam"], ["Del", "Ins", "Del+(1-Ins)"]),
        "consistency": (["jittercam:gradcam"], ["Spearman"]),
        "layers": (["gradcam[layer=_bn1]", "jittercam:gradcam[layer=_swish]"], ["Del", "Ins"]),
    }
    for experiment, (methods, columns) in expected.items():
        text = (report / f"{experiment}.md").read_text()
        header = next(line for line in text.splitlines() if line.startswith("| "))
        if experiment == "size-sweep":  # a row per size, columns grouped per method
            assert header.startswith("| size |")
            assert [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")][1:] == [
                "7", "8", "9", "10", "11"]
            group = "jittercam:gradcam"
        else:
            rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
            for method in methods:
                assert method in rows, (experiment, method)
            group = LITE0
        headers = [line for line in text.splitlines() if line.startswith(("| Method |", "| size |"))]
        for column in columns:
            assert any(f" {group} {column} |" in line for line in headers), (experiment, column)


def test_paper_numbers_beside_ours_only_where_model_and_dataset_match(report):
    text = (report / "faithfulness.md").read_text()
    # resnet50 on imagenet-val: ours (paper); y = 0.6, o = 0.3 and 0.7 -> AD 25, IIC 50
    row = next(line for line in text.splitlines() if line.startswith("| gradcam |") and "(40.21)" in line)
    assert "50.00 (40.21)" in row and "25.00 (14.04)" in row and "(20103)" in row
    lite0 = next(line for line in text.splitlines() if line.startswith("| gradcam |") and "(40.21)" not in line)
    assert "(" not in lite0
    assert "Paper (Fig. 5" in text
    local = (report / "local-accuracy.md").read_text()
    assert "0.150 (0.142)" in local and "0.550 (0.576)" in local


def test_items_skips_runs_and_configuration_under_the_tables(report):
    weak = (report / "weak-localisation.md").read_text()
    assert "n = 6 items for each of 3 methods; 2 items skipped (no box for its class ×2)" in weak
    assert "; gradcam val 0.4, mean 0.4, eng 0.4;" in weak
    faith = (report / "faithfulness.md").read_text()
    assert "1 item skipped (cannot read image: truncated file ×1)" in faith
    assert "test CPU, 2 cores, torch 2, 2 ranks" in faith and "[configuration](runs/cfg-faithfulness.json)" in faith
    assert json.loads((report / "runs" / "cfg-faithfulness.json").read_text())["limit"] == 6
    assert "gradcam(batch_size=4)" in faith
    text = (report / "pointing.md").read_text()
    assert "mean over the 4 classes with a trial, of 4 (the run's configuration)" in text
    assert "1 item without a Spearman value" in (report / "consistency.md").read_text()


def test_two_ranks_merge_to_the_one_process_store(stores, report, tmp_path):
    ranks, single = stores
    out = tmp_path / "single"
    assert main(["report", str(single), "--out", str(out), "--quiet"]) == 0
    for experiment in EXPERIMENTS:
        merged, alone = read_csv(report / f"{experiment}.csv"), read_csv(out / f"{experiment}.csv")
        assert merged.keys() == alone.keys()
        for key, (value, n) in merged.items():
            assert alone[key][1] == n and alone[key][0] == pytest.approx(value, rel=1e-12, nan_ok=True), key
    # the same rows given twice, and all three files together, are still one row each
    again = tmp_path / "again"
    assert main(["report", *map(str, ranks), str(single), str(ranks[0]), "--out", str(again), "--quiet"]) == 0
    assert (again / "local-accuracy.csv").read_bytes() == (out / "local-accuracy.csv").read_bytes()


def test_stores_are_only_read_and_a_summary_is_printed(stores, tmp_path, capsys):
    ranks, _ = stores
    before = [path.read_bytes() for path in ranks]
    files = sorted(path.name for path in ranks[0].parent.iterdir())
    for path in ranks:
        path.chmod(0o444)
    try:
        assert main(["report", *map(str, ranks), "--out", str(tmp_path / "out"), "--gallery", "1"]) == 0
    finally:
        for path in ranks:
            path.chmod(0o644)
    assert [path.read_bytes() for path in ranks] == before
    assert sorted(path.name for path in ranks[0].parent.iterdir()) == files  # no -wal or -shm left beside them
    line = capsys.readouterr().out.strip()
    # 1446 one-value rows in schema 1: each weak-localisation scheme is one curve row now (20 thresholds)
    assert line.startswith("2 stores, 420 result rows after merging -> ") and "3 plots, 3 gallery images" in line


def test_a_store_being_written_is_read_as_committed(tmp_path):
    path = tmp_path / "live.db"
    writer = StoreWriter(path)
    writer.run("c", "efficiency")
    writer.result("c", "efficiency", "gradcam", "item-0", "seconds", 0.5)
    writer.db.commit()
    writer.result("c", "efficiency", "gradcam", "item-1", "seconds", 1.5)  # not committed yet
    try:
        assert main(["report", str(path), "--out", str(tmp_path / "out"), "--quiet", "--gallery", "0"]) == 0
    finally:
        writer.close()
    assert read_csv(tmp_path / "out" / "efficiency.csv")[LITE0, OFFLINE, "gradcam", "seconds"] == (0.5, 1)


def test_a_store_written_by_bench_is_read_without_side_files_and_counted_in_words(tmp_path, capsys):
    """A WAL store as `jittercam bench` leaves it: `report` creates no -wal/-shm beside it, while it is being
    written or after; one table is "1 table"."""
    from jittercam.bench.store import Batch, Row, Run, Store

    run = Run("c", "efficiency", LITE0, "pretrained", OFFLINE, {"experiment": "efficiency"}, 0, 1, "test CPU")
    with Store(tmp_path / "r.db") as store:
        store.register(run)
        store.commit(run, Batch([Row("gradcam", "", "", None, "item-0", 1, "seconds", 0.5, None, 0.5)], [],
                                [("gradcam", "", "item-0")], []))
        writing = sorted(path.name for path in tmp_path.iterdir())
        assert main(["report", str(tmp_path / "r.db"), "--out", str(tmp_path / "live"), "--gallery", "0"]) == 0
        assert writing == ["r.db", "r.db-shm", "r.db-wal"]
        assert sorted(path.name for path in tmp_path.iterdir()) == ["live", *writing]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["live", "r.db"]
    assert main(["report", str(tmp_path / "r.db"), "--out", str(tmp_path / "out"), "--gallery", "0"]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["live", "out", "r.db"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == lines[1].replace(str(tmp_path / "out"), str(tmp_path / "live"))
    assert lines[1].startswith(f"1 store, 1 result row after merging -> {tmp_path / 'out'}: 1 table, 0 plots, "
                               "0 gallery images; open ")


def test_the_same_key_with_another_value_names_both_files(stores, tmp_path, capsys):
    other = tmp_path / "other.db"
    writer = StoreWriter(other)
    writer.run("cfg-local-accuracy", "local-accuracy")
    writer.result("cfg-local-accuracy", "local-accuracy", "gradcam", "item-0", "deletion", 0.9)
    writer.close()
    assert main(["report", str(stores[0][0]), str(other), "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message
    assert str(stores[0][0]) in message and str(other) in message and "item-0" in message and "0.9" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("text", "is not a readable SQLite file"),
    ("folder", "is a folder"),
    ("other-sqlite", "is not a jittercam results store (it has no table 'runs'"),
    ("old-schema", "table 'results' has no column 'variant'"),
    ("empty", "no results in"),
])
def test_bad_stores_are_one_line_and_exit_2(tmp_path, capsys, case, message):
    path = tmp_path / "store.db"
    if case == "text":
        path.write_text("not a database " * 100)
    elif case == "folder":
        path.mkdir()
    elif case == "other-sqlite":
        sqlite3.connect(path).execute("CREATE TABLE notes (text)").connection.close()
    elif case == "old-schema":
        db = sqlite3.connect(path)
        db.executescript(SCHEMA.replace("variant TEXT NOT NULL DEFAULT '', ", "").replace(
            "method, variant, item, metric", "method, item, metric"))
        db.close()
    elif case == "empty":
        StoreWriter(path).close()
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("jittercam: error: ") and message in error, error
    assert not (tmp_path / "out").exists()


def test_a_missing_rank_store_is_a_warning(stores, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", str(stores[0][0]), "--out", str(out), "--quiet", "--gallery", "0"]) == 0
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 10 and all("but the stores of ranks 1 were not given" in w for w in warnings)
    assert "Warning: efficiency on efficientnet_lite0/offline ran on 2 ranks" in (out / "index.html").read_text()
    assert "(MISSING the stores of ranks 1)" in (out / "efficiency.md").read_text()


def test_rows_without_a_run_and_two_weights_of_one_model(tmp_path):
    path = tmp_path / "store.db"
    writer = StoreWriter(path)
    for weights, hit in (("pretrained", 1.0), ("random", 0.0)):
        for item, target in (("a#3", 3), ("b#7", 7)):
            writer.result(f"c-{weights}", "pointing", "gradcam", item, "all", hit, target=target, model="resnet50",
                          dataset="coco-val2014", weights=weights)
    writer.close()
    out = tmp_path / "out"
    assert main(["report", str(path), "--out", str(out), "--quiet"]) == 0
    rows = read_csv(out / "pointing.csv")
    # no runs row: COCO's 80 classes, the two asked both hit -> 100 %; the model named with its weights
    assert rows["resnet50 (pretrained)", "coco-val2014", "gradcam", "all"] == (100.0, 2)
    assert rows["resnet50 (random)", "coco-val2014", "gradcam", "all"] == (0.0, 2)
    text = (out / "pointing.md").read_text()
    assert ("mean over the 2 classes with a trial, of 80 (coco-val2014's class count (not in the run's "
            "configuration)); 78 classes without a trial are left out") in text
    assert "have no `runs` row" in text
    # the paper's number beside the pretrained model's, never beside random weights
    assert "| 100.00 (53.47) |" in text and "| 0.00 (" not in text
    assert main(["report", str(path), "--out", str(out), "--gallery", "-1"]) == 2


def test_configurations_of_one_experiment_are_pooled_an_item_once(tmp_path):
    path = tmp_path / "store.db"
    writer = StoreWriter(path)
    writer.run("old", "local-accuracy", created="2026-01-01T00:00:00")
    writer.run("new", "local-accuracy", created="2026-02-01T00:00:00")
    for item, value in (("a", 0.1), ("b", 0.3)):
        writer.result("old", "local-accuracy", "gradcam", item, "deletion", value)
    writer.result("new", "local-accuracy", "gradcam", "a", "deletion", 0.2, options="batch_size=8")
    writer.result("new", "local-accuracy", "rise", "a", "deletion", 0.05)
    writer.close()
    out = tmp_path / "out"
    assert main(["report", str(path), "--out", str(out), "--quiet"]) == 0
    rows = read_csv(out / "local-accuracy.csv")
    # item a from the newer run (0.2), item b from the older one: (0.2 + 0.3) / 2
    assert rows[LITE0, OFFLINE, "gradcam", "deletion"] == (pytest.approx(0.25), 2)
    assert rows[LITE0, OFFLINE, "rise", "deletion"] == (0.05, 1)
    text = (out / "local-accuracy.md").read_text()
    assert "n = gradcam 2, rise 1 items" in text and "several option sets pooled for gradcam" in text


def test_one_configuration_for_two_experiments_is_an_error(tmp_path, capsys):
    paths = []
    for experiment in ("efficiency", "consistency"):
        path = tmp_path / f"{experiment}.db"
        writer = StoreWriter(path)
        writer.run("same-hash", experiment)
        writer.result("same-hash", experiment, "gradcam", f"item-{experiment}", "seconds", 0.1)
        writer.close()
        paths.append(path)
    assert main(["report", *map(str, paths), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "name configuration same-hash for different experiments" in error
    assert str(paths[0]) in error and str(paths[1]) in error


def test_curves_of_many_methods_share_one_legend_beside_the_panels():
    """Up to 8 lines each panel has its legend; the 30 methods of a metric-agreement run share one to the
    right of both panels (colour and dash per method, both AUCs), so that it covers no curve."""
    from PIL import Image

    from jittercam.bench import plots

    def figure(count):
        labels = [f"method{i}" for i in range(count)]
        curves = {kind: {label: np.linspace(1, 0, 17) for label in labels} for kind in ("deletion", "insertion")}
        aucs = {kind: dict.fromkeys(labels, 0.5) for kind in curves}
        return plots.curves_figure("t", curves, aucs)

    assert Image.open(io.BytesIO(figure(8))).size == (1040, 400)
    crowded = Image.open(io.BytesIO(figure(30)))
    assert crowded.size == (1270, 620)  # 2.3 in of legend to the right; 30 rows of 0.17 in
    legend = np.asarray(crowded.convert("L"))[:, 1045:]
    assert (legend < 128).any()  # the legend's text is there, beside the panels
    assert Image.open(io.BytesIO(figure(60))).size == (1500, 620)  # two columns of 30


def _two_small_stores(folder: Path) -> tuple[Path, Path]:
    """Store A: efficiency with a gallery item; store B: local accuracy without one."""
    a, b = folder / "a.db", folder / "b.db"
    for path, experiment, metrics in ((a, "efficiency", ("seconds", "passes")), (b, "local-accuracy", ("deletion",))):
        writer = StoreWriter(path)
        writer.run(f"cfg-{experiment}", experiment)
        for metric in metrics:
            writer.result(f"cfg-{experiment}", experiment, "gradcam", "item-0", metric, 0.5)
        if path == a:
            writer.gallery("cfg-efficiency", "gradcam", "item-0", 1, _photos()[0], np.eye(7, dtype=np.float32))
        writer.close()
    return a, b


def _files(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def test_a_report_replaces_the_one_in_its_folder_and_leaves_other_files(tmp_path):
    a, b = _two_small_stores(tmp_path)
    out, alone = tmp_path / "out", tmp_path / "alone"
    assert main(["report", str(a), str(b), "--out", str(out), "--quiet"]) == 0
    first = _files(out)
    assert {"efficiency.md", "efficiency.csv", "local-accuracy.md"} <= first
    assert any(name.startswith("gallery/") for name in first) and any(name.startswith("runs/") for name in first)
    (out / "notes.txt").write_text("mine")
    (out / "runs" / "mine.json").write_text("{}")
    (tmp_path / "outside.txt").write_text("mine")
    manifest = json.loads((out / ".jittercam-report.json").read_text())
    manifest["files"] += ["../outside.txt", "/etc/hostname"]  # an edited manifest reaches nothing outside
    (out / ".jittercam-report.json").write_text(json.dumps(manifest))
    assert main(["report", str(b), "--out", str(out), "--quiet"]) == 0
    assert main(["report", str(b), "--out", str(alone), "--quiet"]) == 0
    # A's tables, configuration and gallery (its emptied folders too) are gone; the user's files stay
    assert _files(out) == _files(alone) | {"notes.txt", "runs/mine.json"}
    assert not (out / "gallery").exists() and (tmp_path / "outside.txt").exists()


def test_a_failed_report_leaves_its_files_for_the_next_to_remove(tmp_path, monkeypatch):
    from jittercam.bench import report as bench_report

    a, b = _two_small_stores(tmp_path)
    out = tmp_path / "out"
    assert main(["report", str(b), "--out", str(out), "--quiet"]) == 0

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_report, "page", interrupted)  # after the tables, before index.html
    with pytest.raises(KeyboardInterrupt):
        bench_report.write_report([a], out)
    assert "efficiency.md" in json.loads((out / ".jittercam-report.json").read_text())["files"]
    monkeypatch.undo()
    assert main(["report", str(b), "--out", str(out), "--quiet"]) == 0
    assert not any(name.startswith(("efficiency", "gallery/")) for name in _files(out))
