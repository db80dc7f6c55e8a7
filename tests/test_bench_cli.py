"""`jittercam bench` from the command line: every experiment on the shipped offline benchmark with the
real EfficientNet-Lite0 (a few images; the deletion-based ones at 128 px to stay fast), a corrupt image,
and mistakes that exit with status 2 before any store is written."""
from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from conftest import EXAMPLES
from jittercam.bench.cli import settings_from
from jittercam.cli import main, parser

LITE0_RUNS = {  # experiment -> arguments (offline dataset, EfficientNet-Lite0, pretrained)
    "pointing": "--methods gradcam,centre --limit 3",
    "weak-localisation": "--methods gradcam --limit 2",
    "faithfulness": "--methods gradcam,constant --alphas 0,5 --sweep gradcam --limit 2",
    "efficiency": "--methods gradcam,jittercam --option jittercam.size=8 --limit 1",
    "consistency": "--limit 1",
    "local-accuracy": "--methods gradcam,centre --limit 1 --input-size 128",
    "size-sweep": "--sizes 4,5 --limit 1 --input-size 128",
    "layers": "--methods gradcam --limit 1 --input-size 128",
}
METRICS = {
    "pointing": {"all", "difficult"},
    "weak-localisation": {"val", "mean", "eng"},  # each a curve: the hit at each of 20 thresholds
    "faithfulness": {"y", "o"},
    "efficiency": {"seconds", "passes"},
    "consistency": {"spearman"},
    "local-accuracy": {"deletion", "insertion"},
    "size-sweep": {"deletion", "insertion"},
    "layers": {"deletion", "insertion"},
}


def _results(db) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT r.method, r.variant, r.item, r.target, r.metric, r.value, u.model, u.dataset, r.curve "
            "FROM results r JOIN runs u USING (config_hash)"
        ).fetchall()


@pytest.fixture(scope="module")
def lite0_stores(tmp_path_factory, lite0):  # lite0: loaded once for the session, so the timing is the runs'
    folder = tmp_path_factory.mktemp("lite0")
    codes = {}
    for experiment, arguments in LITE0_RUNS.items():
        codes[experiment] = main(["bench", experiment, *arguments.split(), "--dataset", "offline", "--quiet",
                                  "--db", str(folder / f"{experiment}.db")])
    return folder, codes


@pytest.mark.parametrize("experiment", list(LITE0_RUNS))
def test_every_experiment_on_the_offline_benchmark_with_lite0(lite0_stores, experiment):
    folder, codes = lite0_stores
    assert codes[experiment] == 0
    found = _results(folder / f"{experiment}.db")
    assert {row[6] for row in found} == {"efficientnet_lite0"} and {row[7] for row in found} == {"offline"}
    metrics = {row[4] for row in found}
    assert metrics <= METRICS[experiment] and metrics >= METRICS[experiment] - {"difficult"}
    by_method = {}
    for method, variant, item, _, metric, value, *_ in found:
        by_method.setdefault((method, variant), {})[(item, metric)] = value
    if experiment == "pointing":  # pair-000 is two small objects: both classes, both difficult
        gradcam = by_method[("gradcam", "")]
        assert {item for item, _ in gradcam} >= {"photo-matchstick#644"}
        assert sum(1 for _, metric in gradcam if metric == "difficult") == 2
    if experiment == "size-sweep":
        assert set(by_method) == {("jittercam", "size=4"), ("jittercam", "size=5")}
    if experiment == "weak-localisation":
        hits = [np.frombuffer(row[8], "<f4") for row in found]
        assert all(row[5] is None for row in found) and all(h.shape == (20,) and set(h) <= {0.0, 1.0} for h in hits)
    if experiment == "layers":
        assert set(by_method) == {("gradcam", "layer=_swish"), ("gradcam", "layer=_bn1")}
    if experiment == "efficiency":
        passes = {method: values[("photo-matchstick", "passes")] for (method, _), values in by_method.items()}
        assert passes == {"gradcam": 1.0, "jittercam": 4.0}
    if experiment == "faithfulness":
        assert set(by_method) == {("gradcam", ""), ("constant", ""), ("gradcam", "alpha=0"), ("gradcam", "alpha=5")}
    if experiment == "consistency":
        (value,) = by_method[("jittercam", "")].values()
        assert 0.3 < value <= 1  # Jitter-CAM from 160 px against Grad-CAM at 224: similar maps


def test_gradcam_points_at_the_matchstick(lite0_stores):
    """A sanity check on real weights: Grad-CAM's maximum on the matchstick photo lies within 15 pixels
    of its hand-drawn box."""
    folder, _ = lite0_stores
    with sqlite3.connect(folder / "pointing.db") as connection:
        (hit,) = connection.execute("SELECT value FROM results WHERE item='photo-matchstick#644' AND "
                                    "method='gradcam' AND metric='all'").fetchone()
    assert hit == 1.0


def test_a_corrupt_image_is_a_skip_and_the_run_goes_on(tmp_path, capsys, lite0):
    folder = tmp_path / "val"
    folder.mkdir()
    for name in ("ILSVRC2012_val_00000262.JPEG", "ILSVRC2012_val_00002278.JPEG"):
        shutil.copy(EXAMPLES / "images" / name, folder / name)
    (folder / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    db = tmp_path / "r.db"
    assert main(["bench", "faithfulness", "--dataset", str(folder), "--methods", "gradcam", "--sweep", "none",
                 "--db", str(db)]) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "2 explanations computed" in line and "1 item skipped" in line
    with sqlite3.connect(db) as connection:
        skips = connection.execute("SELECT method, item, reason FROM skips").fetchall()
    assert len(skips) == 1 and skips[0][:2] == ("", "ILSVRC2012_val_00000001") and "truncated image" in skips[0][2]
    assert {row[2] for row in _results(db)} == {"ILSVRC2012_val_00000262", "ILSVRC2012_val_00002278"}
    assert main(["bench", "faithfulness", "--dataset", str(folder), "--methods", "gradcam", "--sweep", "none",
                 "--db", str(db)]) == 0  # resumed: nothing to do, the corrupt image not retried
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "0 explanations computed, 2 already stored, 1 skipped before" in line


@pytest.mark.parametrize("arguments, message", [
    ("nonsense --dataset offline", "invalid choice: 'nonsense'"),
    ("local-accuracy --dataset offline --methods gradcam,nope", "unknown method 'nope'"),
    ("local-accuracy --dataset /no/such/folder", "no such dataset"),
    ("local-accuracy --dataset offline --model nonet", "unknown model 'nonet'"),
    ("local-accuracy --dataset offline --sizes 8", "--sizes applies to size-sweep, groundtruth only"),
    ("size-sweep --dataset offline --methods gradcam", "gradcam has no map size to vary"),
    ("local-accuracy --dataset offline --methods rise --option rise.mask=3", "has no option 'mask'"),
    ("local-accuracy --dataset offline --methods gradcam --option rise.masks=3", "rise is not among the methods"),
    ("local-accuracy --dataset offline --option masks", "is not METHOD.NAME=VALUE"),
    ("local-accuracy --dataset offline --limit 0", "--limit must be at least 1"),
    ("faithfulness --dataset offline --alphas 1,x", "'x' is not a number"),
    ("layers --dataset offline --layers nolayer --methods gradcam", "no module named 'nolayer'"),
    ("weak-localisation --dataset offline --labels x.csv", "--labels does not apply"),
    ("road --dataset offline --ties first", "--ties 'first': choose from jitter, stable"),
    ("relevance --dataset offline --ties stable", "--ties 'stable': choose from average, first"),
    ("report a.db --out r", "`report` is not an experiment: the report is `jittercam report DB ... --out DIR`"),
    (f"weak-localisation --dataset {EXAMPLES / 'images'}", "--boxes (the ILSVRC2012_bbox_val_v3 XML folder) is "
     "needed: weak-localisation needs boxes, which dataset imagenet-val does not have"),
    (f"relevance --dataset {EXAMPLES / 'images'}", "--boxes (the ILSVRC2012_bbox_val_v3 XML folder) is needed: "
     "relevance needs masks"),
])
def test_mistakes_exit_2_with_one_line_and_write_no_store(tmp_path, capsys, arguments, message):
    db = tmp_path / "r.db"
    assert main(["bench", *arguments.split(), "--db", str(db)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("jittercam: error: ") and message in error
    assert list(tmp_path.iterdir()) == []


def test_a_flag_two_experiments_share_takes_each_ones_values(tmp_path, capsys):
    """`--ties` is relevance's (average, first) and ROAD's (jitter, stable): each experiment checks its own."""
    for experiment, value in (("relevance", "first"), ("road", "stable")):
        args = parser().parse_args(["bench", experiment, "--ties", value, "--db", str(tmp_path / "r.db")])
        assert settings_from(args).experiment_options == {"ties": value}
    with pytest.raises(SystemExit):
        parser().parse_args(["bench", "--help"])
    assert "--ties {average,first}|{jitter,stable}" in capsys.readouterr().out
