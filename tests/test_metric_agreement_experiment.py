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


def test_the_bias_corrected_interval_by_hand():
    """BC percentiles Φ(2 z0 ∓ 1.96), z0 = Φ⁻¹(share below the estimate): the plain percentile interval for a
    centred bootstrap; for an estimate at the 80th percentile, z0 = 0.8416, the percentiles 39.1 % and 99.99 %."""
    import numpy as np

    from jittercam.bench.experiments.metric_agreement import bias_corrected_interval

    samples = (np.arange(10_000) + 0.5) / 10_000  # uniform on (0, 1): quantile q is q
    low, high = bias_corrected_interval(samples, 0.5)
    assert (low, high) == pytest.approx((0.025, 0.975), abs=2e-4)
    low, high = bias_corrected_interval(samples, 0.8)
    assert low == pytest.approx(0.3909, abs=2e-4) and high == pytest.approx(0.99987, abs=2e-4)
    assert low <= 0.8 <= high
    # every sample below the estimate: z0 stays finite, the interval the samples' top
    low, high = bias_corrected_interval(np.linspace(0, 1, 100), 2.0)
    assert 0.9 < low <= high <= 1.0
    assert all(math.isnan(v) for v in bias_corrected_interval(np.array([]), 0.3))


def test_agreement_intervals_are_bias_corrected_by_default():
    """A metric equal to the truth up to noise: the default interval is BC's on the same resamples as the
    percentile one, and holds the estimate."""
    import numpy as np

    rng = np.random.default_rng(0)
    items = [f"single-{i}" for i in range(30)]
    quality = {f"m{k}": 0.05 * k for k in range(12)}
    truth_items = {m: {item: q + rng.normal(0, 0.3) for item in items} for m, q in quality.items()}
    noisy = {m: {item: v + rng.normal(0, 0.3) for item, v in values.items()} for m, values in truth_items.items()}

    def truth(chosen):
        return {"energy": {m: float(np.mean([v[i] for i in chosen["singles"]])) for m, v in truth_items.items()}}

    strata = {"singles": items, "pairs": []}
    bc = agreement({"insertion": noisy}, truth, strata, boots=200, seed=2)[("insertion", "energy")]
    plain = agreement({"insertion": noisy}, truth, strata, boots=200, seed=2, interval="percentile")[
        ("insertion", "energy")]
    assert bc[0] == plain[0] and bc[1] <= bc[0] <= bc[2] and plain[1] <= plain[2]
