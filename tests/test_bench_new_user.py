"""What a new user hit with `jittercam bench` on a CPU (issue 21, items 2-4): a method stopped before its first
result takes new options; one with results is refused with its counts and a way out (`--drop`); Ctrl-C says
what this run stored and what the store holds; the cost is said before the run starts; the bar's time left
follows the measured pace; a slow method's finished items survive Ctrl-C. And the repository's own files
(`Makefile`, `.gitignore`) say nothing false. A tiny CNN registered as model 'tiny-new-user' keeps it fast."""
from __future__ import annotations

import io
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from tqdm import tqdm

from jittercam import models
from jittercam.bench import progress, runner
from jittercam.bench.experiments import Arm
from jittercam.cli import main
from jittercam.methods import create
from jittercam.models import ModelCard, imagenet_categories, register_model

ROOT = Path(__file__).resolve().parent.parent


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(3, 8, 4, 4), nn.ReLU(), nn.Linear(8, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


@pytest.fixture(autouse=True)
def tiny_model():
    @register_model("tiny-new-user")
    def build(weights):
        torch.manual_seed(0)
        return Tiny().eval(), ModelCard("tiny-new-user", 32, (0.5,) * 3, (0.5,) * 3, imagenet_categories())

    yield
    models._BUILDERS.pop("tiny-new-user", None)


def bench(db: Path, methods: str, *extra: str, limit: int = 2) -> list[str]:
    return ["bench", "local-accuracy", "--dataset", "offline", "--model", "tiny-new-user", "--methods", methods,
            "--batch-size", "4", "--limit", str(limit), "--db", str(db), *extra]


@pytest.fixture
def ctrl_c_at(monkeypatch):
    """`ctrl_c_at(method, n)`: Ctrl-C when `method` starts its n-th explanation call of the run."""

    def arm(method: str, call: int) -> None:
        explain = runner._Worker._explain
        calls = []

        def explain_or_stop(self, arm, images, units):
            if arm.method == method:
                calls.append(len(units))
                if len(calls) == call:
                    raise KeyboardInterrupt
            return explain(self, arm, images, units)

        monkeypatch.setattr(runner._Worker, "_explain", explain_or_stop)

    return arm


def _done(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as connection:
        return dict(connection.execute("SELECT method, count(*) FROM done GROUP BY method").fetchall())


def _arm_options(db: Path, method: str) -> dict:
    with sqlite3.connect(db) as connection:
        (description,), = connection.execute("SELECT description FROM arms WHERE method = ?", (method,))
    return json.loads(description)


# --------------------------------------------------------------------------------- item 2: the store's way out
def test_a_method_stopped_before_its_first_result_takes_other_options(tmp_path, capsys, ctrl_c_at):
    """RISE too slow, Ctrl-C before its first item, rerun with fewer masks: accepted."""
    db = tmp_path / "r.db"
    ctrl_c_at("rise", 1)
    assert main(bench(db, "gradcam,rise", "--option", "rise.masks=80")) == 130
    assert _done(db) == {"gradcam": 2} and _arm_options(db, "rise")["masks"] == 80
    ctrl_c_at("rise", 0)  # no more Ctrl-C
    assert main(bench(db, "gradcam,rise", "--option", "rise.masks=40", "--quiet")) == 0
    assert _done(db) == {"gradcam": 2, "rise": 2} and _arm_options(db, "rise")["masks"] == 40


def test_a_method_with_results_is_refused_with_counts_and_dropped_on_request(tmp_path, capsys, ctrl_c_at,
                                                                             monkeypatch):
    db = tmp_path / "r.db"
    assert main(bench(db, "gradcam,rise", "--option", "rise.masks=80", "--quiet")) == 0
    capsys.readouterr()
    assert main(bench(db, "gradcam,rise", "--option", "rise.masks=40", "--quiet")) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(
        "jittercam: error: rise was computed with other options (masks 80, now 40) for 2 items (4 result rows) of "
        "this configuration: --drop rise deletes rise's rows so that it is computed again with the new options, "
        f"or another store file than {db} keeps both")
    assert _arm_options(db, "rise")["masks"] == 80  # nothing changed

    with sqlite3.connect(db) as connection:
        gradcam = connection.execute("SELECT item, metric, value FROM results WHERE method='gradcam'").fetchall()
    ctrl_c_at("rise", 2)  # Ctrl-C in the second RISE item: the first is kept, under the new options
    arguments = bench(db, "gradcam,rise", "--option", "rise.masks=40", "--drop", "rise")
    monkeypatch.setattr(sys, "argv", ["jittercam", *arguments])  # the command line the resume hint repeats
    assert main(arguments) == 130
    error = capsys.readouterr().err
    assert "dropped 4 result rows of rise from" in error
    resume = error.strip().splitlines()[-1]
    assert "--drop" not in resume and resume.endswith("--option rise.masks=40 again to resume")  # it keeps what
    assert _done(db) == {"gradcam": 2, "rise": 1} and _arm_options(db, "rise")["masks"] == 40
    ctrl_c_at("rise", 0)
    assert main(bench(db, "gradcam,rise", "--option", "rise.masks=40", "--quiet")) == 0
    assert _done(db) == {"gradcam": 2, "rise": 2}
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT item, metric, value FROM results WHERE method='gradcam'").fetchall() \
            == gradcam  # another method's rows are left as they were
        assert connection.execute("SELECT count(*) FROM results WHERE method='rise'").fetchone() == (4,)


def test_drop_names_a_method_of_the_run(tmp_path, capsys):
    assert main(bench(tmp_path / "r.db", "gradcam", "--drop", "rise")) == 2
    error = capsys.readouterr().err
    assert error == ("jittercam: error: --drop rise: not one of this run's methods (gradcam); drop deletes a "
                     "method's stored rows so that the run computes it again\n")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ item 3: what Ctrl-C leaves
def test_ctrl_c_says_what_this_run_stored_and_what_the_store_holds(tmp_path, capsys, ctrl_c_at):
    db = tmp_path / "r.db"
    assert main(bench(db, "gradcam", "--quiet")) == 0  # 2 explanations, 4 rows
    ctrl_c_at("rise", 2)
    assert main(bench(db, "gradcam,rise", "--option", "rise.masks=80")) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"jittercam: interrupted; this run stored 1 explanation (2 rows); {db} now holds 3 of "
                           "this command's 4 explanations (6 result rows of this configuration); run ")


# -------------------------------------------------------------- item 4: cost said, pace shown, items kept
def test_a_slow_methods_finished_items_survive_ctrl_c(tmp_path, ctrl_c_at):
    """RISE fills the forward batches with one image's masks: it is explained and committed item by item, so
    Ctrl-C in the third item of a chunk of four keeps the first two; Grad-CAM is explained a chunk at once."""
    db = tmp_path / "r.db"
    ctrl_c_at("rise", 3)
    assert main(bench(db, "gradcam,rise", "--option", "rise.masks=80", "--quiet", limit=4)) == 130
    assert _done(db) == {"gradcam": 4, "rise": 2}
    assert main(bench(db, "gradcam,rise", "--option", "rise.masks=80", "--quiet", limit=4)) == 0
    assert main(bench(tmp_path / "whole.db", "gradcam,rise", "--option", "rise.masks=80", "--quiet", limit=4)) == 0
    query = "SELECT method, item, metric, value FROM results ORDER BY method, item, metric"
    with sqlite3.connect(db) as resumed, sqlite3.connect(tmp_path / "whole.db") as whole:
        assert resumed.execute(query).fetchall() == whole.execute(query).fetchall()


def test_the_cost_is_said_before_the_run_starts(tmp_path, capsys):
    assert main(bench(tmp_path / "r.db", "gradcam,rise", "--option", "rise.masks=80")) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert re.fullmatch(r"local-accuracy: 4 explanations to compute; at [\d.]+ ms per forward pass \(measured on "
                        r".+, \d+ threads?\) their forward passes take about \d+ s and the metrics about \d+ s "
                        r"\([\d.e-]+ s per map, timed on one\): (.+); the bar's time left follows the measured "
                        r"pace", first), first
    # the arms, the costliest first: their order follows timings, which another busy process can swap
    arms = re.fullmatch(r".*timed on one\): (.+); the bar's .*", first).group(1).split("; ")
    assert sorted(re.sub(r"\(\d+ s with", "(N s with", arm) for arm in arms) == [
        "gradcam 1 pass per item (N s with the metrics)", "rise 80 passes per item (N s with the metrics)"]


def test_timing_the_metrics_ahead_stores_nothing_and_changes_no_result(tmp_path, capsys):
    """The timed item (the centre baseline's map, under the first arm) leaves no row, cache entry or skip:
    a run that said its cost stores what a quiet one stores."""
    said, quiet = tmp_path / "said.db", tmp_path / "quiet.db"
    for name in ("road", "sanity"):
        args = ["bench", name, "--dataset", "offline", "--model", "tiny-new-user", "--methods", "gradcam",
                "--limit", "2"]
        assert main([*args, "--db", str(said)]) == 0
        err = capsys.readouterr().err
        timed = "and the metrics about" in err
        assert timed == (name == "road"), err  # the sanity check's cost is its maps, counted as passes
        assert main([*args, "--db", str(quiet), "--quiet"]) == 0
    for table, columns in (("results", "method, item, metric, value"), ("explanations", "key, method, item, map"),
                           ("skips", "method, item, reason")):
        query = f"SELECT {columns} FROM {table} ORDER BY 1, 2, 3"
        with sqlite3.connect(said) as a, sqlite3.connect(quiet) as b:
            assert a.execute(query).fetchall() == b.execute(query).fetchall(), table
    with sqlite3.connect(said) as a:
        assert a.execute("SELECT count(*) FROM results WHERE metric LIKE '%morf%'").fetchone()[0] > 0


def test_the_metrics_cost_is_timed_before_the_run(tiny):
    """Each arm's items x (its passes x one pass + the metrics' seconds on one map); said apart."""
    rise, gradcam = Arm("rise", create("rise", tiny)), Arm("gradcam", create("gradcam", tiny))
    passes = {rise: 8000, gradcam: 1}
    line = progress.estimate_line("road", {rise: 10, gradcam: 10}, passes.get, 0.01, torch.device("cpu"), 1.5)
    assert "their forward passes take about 13 min and the metrics about 30 s (1.5 s per map, timed on one): " \
           "rise 8000 passes per item (14 min with the metrics); 1 other method 15 s; the bar's time left" in line, line


def test_a_long_run_says_how_to_shorten_it(tiny):
    """The README's first command on a 2-core CPU: RISE's 8000 passes and Score-CAM's 1280 per item."""
    rise, scorecam, gradcam = (Arm(name, create(name, tiny)) for name in ("rise", "scorecam", "gradcam"))
    passes = {rise: 8000, scorecam: 1280, gradcam: 1}
    line = progress.estimate_line("local-accuracy", {rise: 48, scorecam: 48, gradcam: 48}, passes.get, 0.0189,
                                 torch.device("cpu"))
    estimate, advice = line.split("\n")
    assert estimate.startswith("local-accuracy: 144 explanations to compute; at 18.9 ms per forward pass (measured on")
    assert estimate.endswith("their forward passes alone take about 2 h 20 min: rise 8000 passes per item (2 h 01 min)"
                             "; scorecam 1280 passes per item (19 min); 1 other method 1 s; the metrics add to it; "
                             "the bar's time left follows the measured pace")
    # the methods to keep, as a flag one can paste (not a phrase to type)
    assert advice.startswith("to shorten it: --option rise.masks=1000 (8x fewer passes); --methods gradcam (without "
                             "rise and scorecam); --limit N")
    assert advice.endswith("Ctrl-C keeps every finished item; the same command resumes")


def test_a_one_pass_method_is_said_in_the_singular(tiny):
    gradcam = Arm("gradcam", create("gradcam", tiny))
    line = progress.estimate_line("relevance", {gradcam: 1}, {gradcam: 1}.get, 0.02, torch.device("cpu"))
    assert "take about 1 s: gradcam 1 pass per item (1 s); the metrics add to it" in line, line


def test_the_time_left_follows_the_measured_pace(tiny):
    """From the start: passes x one pass's seconds; then each arm's measured seconds per item, and for an arm
    not measured yet its passes plus what the measured ones spent beyond theirs (the metrics)."""
    slow, fast = Arm("rise", create("rise", tiny)), Arm("gradcam", create("gradcam", tiny))
    screen = io.StringIO()
    bar = tqdm(total=8, file=screen, disable=False, bar_format="{n_fmt}/{total_fmt}{postfix}", mininterval=0)
    with progress.Progress(bar, {fast: 4, slow: 4}, {fast: 0.5, slow: 100.0}) as bar_progress:
        assert bar_progress.seconds_left() == pytest.approx(4 * 0.5 + 4 * 100.0)
        bar_progress.finished(fast, 4, 10.0)  # 2.5 s per item measured, 2 s beyond its passes
        assert bar_progress.seconds_left() == pytest.approx(4 * (100.0 + 2.0))
        bar_progress.finished(slow, 1, 150.0)
        assert bar_progress.seconds_left() == pytest.approx(3 * 150.0)
        bar_progress.skipped([slow])
        assert bar_progress.seconds_left() == pytest.approx(2 * 150.0)
    bar.close()
    assert screen.getvalue().replace("\r", "\n").splitlines()[-1].startswith("6/8, ~0")  # 05:00 minus time gone


def test_a_run_logged_to_a_file_says_its_progress(tmp_path, capsys, monkeypatch):
    """stderr no terminal (nohup, a job's log): no bar, but a line every LOG_EVERY seconds; none with --quiet."""
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    assert main(bench(tmp_path / "r.db", "gradcam,centre", limit=3)) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if " maps in " in line]
    assert lines == [re.fullmatch(r"local-accuracy: 3/6 maps in \d+ s, about \d+ s left", line)[0]
                     for line in lines], lines  # one method's 3 items at a time; none at the end
    assert len(lines) == 1, lines
    assert main(bench(tmp_path / "q.db", "gradcam,centre", "--quiet", limit=3)) == 0
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------- item 15: the repository's own files
def test_every_phony_make_target_has_a_rule():
    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE).group(1).split()
    rules = set(re.findall(r"^([\w.-]+):", makefile, re.MULTILINE))
    assert phony and [target for target in phony if target not in rules] == []


def test_gitignore_ignores_no_tracked_file():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run([git, "-C", str(ROOT), "ls-files", "-i", "-c", "--exclude-standard"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert ignored == []
