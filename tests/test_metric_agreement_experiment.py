"""`jittercam bench metric-agreement`: Kendall's tau of each metric's ranking of the methods against the ground
truth's, its paired bootstrap, and the experiment end to end on the ground-truth model."""
from __future__ import annotations

import math
import sqlite3

import pytest

from jittercam.bench.experiments.metric_agreement import PROXIES, agreement, kendall
from jittercam.cli import main


def test_kendall_turns_both_sides_so_that_higher_is_better():
    truth = {"a": 0.9, "b": 0.5, "c": 0.1}
    assert kendall({"a": 3, "b": 2, "c": 1}, truth, 1, 1) == pytest.approx(1.0)
    assert kendall({"a": 1, "b": 2, "c": 3}, truth, -1, 1) == pytest.approx(1.0)  # lower is better (deletion)
    assert kendall({"a": 1, "b": 2, "c": 3}, truth, 1, 1) == pytest.approx(-1.0)
    # a resolving power never reached (NaN, lower is better) ranks last
    assert kendall({"a": 3, "b": 2, "c": 1}, {"a": 16, "b": 30, "c": math.nan}, 1, -1) == pytest.approx(1.0)
    assert math.isnan(kendall({"a": 1, "b": 1, "c": 1}, truth, 1, 1))  # a constant metric says nothing
    assert math.isnan(kendall({"a": 1}, truth, 1, 1))


def test_agreement_of_a_metric_that_is_the_truth_and_one_that_reverses_it():
    items = [f"single-{i}" for i in range(12)]
    quality = {"m1": 0.2, "m2": 0.5, "m3": 0.8}
    truth_items = {m: {item: q + 0.01 * (i % 3) for i, item in enumerate(items)} for m, q in quality.items()}
    per_item = {"insertion": truth_items, "deletion": truth_items}  # deletion: lower is better, so reversed

    def truth(chosen):
        return {"energy": {m: sum(v[i] for i in chosen["singles"]) / len(chosen["singles"])
                           for m, v in truth_items.items()}}

    found = agreement(per_item, truth, {"singles": items, "pairs": []}, boots=50, seed=1)
    assert found[("insertion", "energy")] == pytest.approx((1.0, 1.0, 1.0))
    assert found[("deletion", "energy")] == pytest.approx((-1.0, -1.0, -1.0))
    assert set(PROXIES) >= {"deletion", "insertion", "ad", "iic", "pointing", "energy_boxes", "mass", "rank",
                            "road_morf", "road_lerf"}


def test_end_to_end_on_the_ground_truth_model(tmp_path):
    db, out = tmp_path / "agree.db", tmp_path / "report"
    assert main(["bench", "metric-agreement", "--model", "groundtruth", "--weights", "random", "--limit", "6",
                 "--methods", "gradcam,gradcam++,centre,random", "--boots", "20", "--batch-size", "8",
                 "--db", str(db), "--quiet"]) == 0
    with sqlite3.connect(db) as connection:
        metrics = {metric for (metric,) in connection.execute("SELECT DISTINCT metric FROM results")}
    assert {"deletion", "insertion", "ad", "iic", "pointing", "energy_boxes", "mass", "rank", "energy", "auc",
            "separation", "resolved"} <= metrics
    assert main(["report", str(db), "--out", str(out), "--quiet"]) == 0
    text = (out / "metric-agreement.md").read_text()
    assert "| Metric | τ vs energy on evidence | τ vs evidence AUC | τ vs resolving power |" in text
    for label in ("Deletion", "Insertion", "AD", "Pointing", "Energy in boxes", "Relevance mass", "Relevance rank"):
        assert f"\n| {label} |" in text
    assert "20 paired bootstrap resamples" in text and "ROAD MoRF / LeRF: `jittercam.metrics.road`" in text


def test_only_the_ground_truth(tmp_path, capsys):
    assert main(["bench", "metric-agreement", "--dataset", "offline", "--db", str(tmp_path / "x.db")]) == 2
    error = capsys.readouterr().err.strip()
    assert "groundtruth" in error and len(error.splitlines()) == 1
