"""`jittercam bench road` on the shipped offline benchmark with the real EfficientNet-Lite0 (2 images at 64 px,
two methods, two percentages), resumed, its values against `metrics.road` by hand, and `jittercam report`."""
from __future__ import annotations

import sqlite3
import zlib
from dataclasses import replace

import numpy as np
import pytest

from jittercam import metrics, model_card
from jittercam.bench.experiments import experiment_class
from jittercam.cli import main
from jittercam.data.registry import open_dataset
from jittercam.errors import JitterCamError
from jittercam.methods import create

ARGUMENTS = ["--dataset", "offline", "--methods", "gradcam,centre", "--percentages", "20,80", "--input-size", "64",
             "--quiet"]


def _rows(db) -> dict[tuple, tuple]:
    with sqlite3.connect(db) as connection:
        found = connection.execute("SELECT method, item, metric, value, curve FROM results").fetchall()
    return {(m, i, k): (v, None if c is None else np.frombuffer(c, "<f4")) for m, i, k, v, c in found}


@pytest.fixture(scope="module")
def store(tmp_path_factory, lite0):  # lite0: loaded once, the run finds it
    db = tmp_path_factory.mktemp("road") / "road.db"
    assert main(["bench", "road", *ARGUMENTS, "--limit", "1", "--db", str(db)]) == 0
    first = _rows(db)
    assert main(["bench", "road", *ARGUMENTS, "--limit", "2", "--db", str(db)]) == 0  # resumed: one more item
    return db, first


def test_rows_resume_and_equal_the_metric(store, lite0):
    db, first = store
    found = _rows(db)
    items = sorted({item for _, item, _ in found})
    assert len(items) == 2 and {m for m, *_ in found} == {"gradcam", "centre"}
    assert {k for *_, k in found} == {"morf", "lerf", "combined", "morf_accuracy", "lerf_accuracy"}
    assert all(found[key][0] == value[0] for key, value in first.items())  # the first item was not redone
    for method in ("gradcam", "centre"):
        for item in items:
            morf, curve = found[(method, item, "morf")]
            assert curve.shape == (2,) and morf == pytest.approx(float(curve.mean()), abs=1e-6)
            combined = found[(method, item, "combined")][0]
            assert combined == pytest.approx((found[(method, item, "lerf")][0] - morf) / 2, abs=1e-6)
            assert set(found[(method, item, "lerf_accuracy")][1].tolist()) <= {0.0, 1.0}
    # by hand: the centre baseline's map on the first item, the item's seed
    card = replace(model_card(lite0), input_size=64)
    sample = open_dataset("offline").load(items[0], card)
    x = sample.image[None]
    maps = create("centre", lite0)(x)
    result = metrics.road(lite0, x, maps, None, [20, 80], std=card.std, seed=zlib.crc32(items[0].encode()),
                          ties="jitter")
    np.testing.assert_allclose(found[("centre", items[0], "morf")][1], result.morf_scores[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(found[("centre", items[0], "lerf")][1], result.lerf_scores[0].numpy(), atol=1e-5)


def test_report_shows_the_table(store, tmp_path):
    db, _ = store
    assert main(["report", str(db), "--out", str(tmp_path / "report"), "--gallery", "0", "--quiet"]) == 0
    text = (tmp_path / "report" / "road.md").read_text()
    assert "MoRF" in text and "LeRF" in text and "Combined" in text
    assert "| gradcam |" in text and "| centre |" in text


def test_bad_percentages_exit_2_with_one_line(tmp_path, capsys):
    db = tmp_path / "r.db"
    assert main(["bench", "road", *ARGUMENTS, "--percentages", "20,120", "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "percentages" in err[0]
    assert not db.exists()
    with pytest.raises(JitterCamError):
        experiment_class("road")(percentages=(-1.0,))
