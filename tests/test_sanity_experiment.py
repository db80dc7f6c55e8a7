"""`jittercam bench sanity` end to end on EfficientNet-Lite0 (real weights) and the offline set: the rows, the
curves, resume, the report's verdicts and plot, and a wrong option."""
from __future__ import annotations

import io
import sqlite3

import numpy as np
import pytest

from jittercam.bench.experiments.sanity import THRESHOLD
from jittercam.cli import main

# the top 4 blocks of Lite0 from the output: _fc, _bn1, _conv_head, _blocks.15
QUICK = ["--limit", "1", "--methods", "gradcam,guidedbackprop", "--steps", "4", "--quiet"]


def _rows(db):
    with sqlite3.connect(db) as connection:
        return {(method, metric): (value, None if curve is None else np.frombuffer(curve, "<f4"))
                for method, metric, value, curve in connection.execute(
                    "SELECT method, metric, value, curve FROM results")}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sanity")
    db = folder / "sanity.db"
    assert main(["bench", "sanity", "--db", str(db), *QUICK]) == 0
    return folder, db


def test_rows_and_curves(run):
    _, db = run
    rows = _rows(db)
    for method in ("gradcam", "guidedbackprop"):
        value, curve = rows[(method, "spearman")]
        assert curve.shape == (5,) and curve[0] == pytest.approx(1.0) and value == pytest.approx(curve[-1])
        assert rows[(method, "ssim")][1].shape == (5,)
        assert rows[(method, "average")][0] == pytest.approx(float(curve[1:].mean()), abs=1e-6)
        assert np.isfinite(rows[(method, "emprt")][0])
    # Adebayo et al.: Guided Backprop does not see the top layers go; Grad-CAM does
    assert rows[("guidedbackprop", "average")][0] > 0.9
    assert rows[("gradcam", "average")][0] < THRESHOLD


def test_resume_computes_nothing_again(run, capsys):
    _, db = run
    before = _rows(db)
    assert main(["bench", "sanity", "--db", str(db), *QUICK[:-1]]) == 0
    assert "0 explanations computed" in capsys.readouterr().err
    assert _rows(db).keys() == before.keys()


def test_report_shows_verdicts_and_curves(run):
    folder, db = run
    out = folder / "report"
    assert main(["report", str(db), "--out", str(out)]) == 0
    text = (out / "sanity.md").read_text()
    assert "gradcam passes" in text and "guidedbackprop FAILS" in text
    assert "_blocks.15" in text  # the layer of each step
    assert (out / "sanity-efficientnet_lite0-offline-curves.png").stat().st_size > 10_000


def test_a_wrong_option_is_one_line(tmp_path, capsys):
    assert main(["bench", "sanity", "--db", str(tmp_path / "x.db"), "--order", "sideways", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "sideways" in err and len(err.splitlines()) <= 3


def test_verdict_figure_is_a_panel_per_method():
    from PIL import Image

    from jittercam.bench.experiments.sanity import _verdict
    from jittercam.bench.plots import verdict_figure
    from jittercam.bench.stats import Stat

    steps = list(range(5))
    lines = {f"m{i}": (steps, [1.0, 0.9 - 0.1 * i, 0.5, 0.2, 0.1]) for i in range(7)}
    verdicts = {"m0": (True, 0.4), "m1": (False, 0.7)}  # the others: no verdict
    png = verdict_figure("t", "steps", lines, verdicts, THRESHOLD)
    image = Image.open(io.BytesIO(png))
    assert image.size == (1380, 470)  # 6 columns of 230 px, 2 rows of 190 px and 90 px of titles and labels
    # one method: two panels wide, so that the report's title (a sentence) is wrapped, not cropped
    title = "Sanity check: Spearman |maps| to the original map, efficientnet_lite0 on offline"
    one = Image.open(io.BytesIO(verdict_figure(title, "steps", {"m0": lines["m0"]}, verdicts, THRESHOLD)))
    assert one.size == (460, 305)  # 2 lines of title

    assert _verdict({"average": Stat(0.3, 8), "passes": Stat(1.0, 8)}) == (True, 0.3)
    assert _verdict({"average": Stat(0.7, 8), "passes": Stat(0.0, 8)}) == (False, 0.7)
    passed, value = _verdict({"average": Stat(float("nan"), 8), "passes": Stat(float("nan"), 8)})
    assert passed is None and np.isnan(value)


def test_the_cost_estimate_counts_the_randomised_maps(tmp_path, capsys):
    """Per item: the map, one per randomised step (4), one for eMPRT, and smooth MPRT's 2 noisy maps for the
    original and each step (10): 16 Grad-CAM passes, not the 1 of its own map."""
    db = tmp_path / "estimate.db"
    assert main(["bench", "sanity", "--db", str(db), "--limit", "1", "--methods", "gradcam", "--steps", "4",
                 "--smooth", "2"]) == 0
    assert "gradcam 16 passes per item" in capsys.readouterr().err
