"""`jittercam bench relevance`: the rows against the metrics called by hand, the offline set and the ground truth
from the command line, resume, the report, and a wrong option."""
from __future__ import annotations

import sqlite3

import pytest
import torch

from jittercam import metrics
from jittercam.cli import main
from jittercam.groundtruth.benchmark import for_model
from jittercam.methods import create
from jittercam.models import load_model, model_card
from test_bench_experiments import StandIn, bench, rows
from test_bench_experiments import model as model


def _rows(db) -> dict[tuple, float]:
    with sqlite3.connect(db) as connection:
        return {tuple(key): value for *key, value in connection.execute(
            "SELECT method, variant, item, metric, value FROM results")}


def test_rows_are_the_metrics_on_the_class_mask(model, tmp_path):
    bench(model, tmp_path / "r.db", "relevance", ["gradcam"], experiment_options={"relevance": "abs",
                                                                                   "ties": "first"})
    found = rows(tmp_path / "r.db")
    assert not [key for key in found if key[2].startswith("item-003")]  # the unreadable image is a skip
    sample = StandIn().load("item-001", model.jittercam_card)  # two labels: one item per class
    for label in sample.labels:
        one = create("gradcam", model)(sample.image[None], label)
        mask = sample.masks[label][None]
        item = f"item-001#{label}"
        assert found[("gradcam", "", item, "mass")] == pytest.approx(
            float(metrics.relevance_mass(one, mask, relevance="abs")), abs=1e-6)
        assert found[("gradcam", "", item, "rank")] == pytest.approx(
            float(metrics.relevance_rank(one, mask, relevance="abs", ties="first")), abs=1e-6)
        assert found[("gradcam", "", item, "share")] == pytest.approx(float(mask.float().mean()))


def test_offline_set_from_the_command_line_resumes_and_reports(tmp_path, capsys):
    db, out = tmp_path / "rel.db", tmp_path / "report"
    command = ["bench", "relevance", "--dataset", "offline", "--input-size", "64", "--batch-size", "8",
               "--limit", "2", "--methods", "gradcam,jittercam", "--db", str(db)]
    assert main([*command, "--quiet"]) == 0
    found = _rows(db)
    items = {item for _, _, item, _ in found}
    assert len(items) == 2 and {m for m, *_ in found} == {"gradcam", "jittercam"}
    assert {metric for *_, metric in found} == {"mass", "rank", "share"} and len(found) == 2 * 2 * 3
    assert all(0 <= value <= 1 for value in found.values())
    assert main(command) == 0  # resumed: nothing to compute
    assert "0 explanations computed, 4 already stored" in capsys.readouterr().err
    assert main(["report", str(db), "--out", str(out), "--quiet"]) == 0
    text = (out / "relevance.md").read_text()
    assert "| Method | efficientnet_lite0 Mass accuracy | efficientnet_lite0 Rank accuracy |" in text
    assert "\n| gradcam |" in text and "\n| jittercam |" in text and "relevance counted: positive" in text


def test_ground_truth_evidence_masks(tmp_path):
    # random weights (seeded by the run's seed, 0) are enough to check that the masks are the exact evidence
    db = tmp_path / "gt.db"
    assert main(["bench", "relevance", "--dataset", "groundtruth", "--model", "groundtruth", "--weights", "random",
                 "--methods", "gradcam,jittercam", "--limit", "3", "--db", str(db), "--quiet"]) == 0
    found = _rows(db)
    torch.manual_seed(0)
    model = load_model("groundtruth", weights="random")
    data, card = for_model(model), model_card(model)
    keys = data.keys()[:3]
    assert {item for _, _, item, _ in found} == set(keys)
    assert {key.split("-")[0] for key in keys} == {"single", "pair"}  # one patch, or both of a pair
    for key in keys:
        sample = data.load(key, card)
        label = sample.labels[0]
        one = create("gradcam", model)(sample.image[None], label)
        mask = sample.masks[label][None]
        assert found[("gradcam", "", key, "mass")] == pytest.approx(float(metrics.energy_in_mask(one, mask)),
                                                                    abs=1e-6)
        assert found[("gradcam", "", key, "rank")] == pytest.approx(float(metrics.relevance_rank(one, mask)),
                                                                    abs=1e-6)


def test_a_wrong_option_is_one_line(tmp_path, capsys):
    db = tmp_path / "x.db"
    assert main(["bench", "relevance", "--dataset", "offline", "--relevance", "negative", "--db", str(db)]) == 2
    error = capsys.readouterr().err.strip()
    assert "--relevance" in error and "positive" in error and len(error.splitlines()) == 1 and not db.exists()


def test_the_note_says_the_chance_level_and_the_relevance_counted():
    from jittercam.bench.experiments.relevance import Relevance
    from jittercam.bench.stats import Stat

    stats = {"gradcam": {"mass": Stat(0.5, 4), "share": Stat(0.25, 4)}, "centre": {"mass": Stat(0.3, 4)}}
    (note,) = Relevance.notes("lite0", stats, {}, {"options": {"relevance": "abs"}})
    assert "(25.0 % on average over these 4 pairs)" in note and "relevance counted: abs" in note
    assert Relevance.notes("lite0", {"centre": {"mass": Stat(0.3, 4)}}, {}, {}) == []
