"""`jittercam bench` as separate processes: killed midway (Ctrl-C, then kill -9) and resumed, the rows
equal an uninterrupted run's; under torchrun with 2 CPU processes, the merged rank stores equal a
one-process run. A tiny CNN registered as model 'tiny-bench' (in a wrapper script that then runs the
`jittercam` command) keeps the runs short; the offline benchmark is the data."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jittercam import models
from jittercam.cli import main

TINY = '''
import sys

from torch import nn

from jittercam.models import ModelCard, imagenet_categories, register_model


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(3, 8, 4, 4), nn.ReLU(), nn.Linear(8, 1000)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


@register_model("tiny-bench")
def build(weights):
    return Tiny(), ModelCard("tiny-bench", 32, (0.5,) * 3, (0.5,) * 3, imagenet_categories())


if __name__ == "__main__":
    import os
    import time

    from jittercam.bench.store import Store
    from jittercam.cli import main
    from jittercam.methods.gradient import GradCAM

    if os.environ.get("TINY_BENCH_HOLD"):  # once a batch is committed, the next Grad-CAM waits to be stopped
        committed, commit, explain = [], Store.commit, GradCAM._explain

        def noted(self, run, batch):
            commit(self, run, batch)
            committed.append(None)

        def held(self, images, target):
            if committed:
                time.sleep(600)
            return explain(self, images, target)

        Store.commit, GradCAM._explain = noted, held
    sys.exit(main())
'''


@pytest.fixture
def tiny_bench(tmp_path):
    """The wrapper script, and 'tiny-bench' registered in this process too (removed afterwards)."""
    script = tmp_path / "tiny_bench.py"
    script.write_text(TINY)
    namespace: dict = {}
    exec(compile(TINY, str(script), "exec"), namespace)  # noqa: S102 - registers the model here
    yield script
    models._BUILDERS.pop("tiny-bench", None)


def _env(hold: bool = False) -> dict[str, str]:
    """The runs' environment; `hold`: a run stops computing after its first committed batch until a signal
    ends it, so that a test that interrupts it on seeing that batch finds it unfinished however busy the
    machine."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    env.pop("TINY_BENCH_HOLD", None)
    if hold:
        env["TINY_BENCH_HOLD"] = "1"
    return env


def _rows(*dbs: Path) -> dict[tuple, float]:
    found: dict[tuple, float] = {}
    for db in dbs:
        with sqlite3.connect(db) as connection:
            for *key, value, blob in connection.execute(
                "SELECT config_hash, method, variant, item, metric, value, curve FROM results"
            ):
                assert tuple(key) not in found, f"row {key} stored twice"
                found[tuple(key)] = value
                if blob is not None:
                    found[("curve", *key)] = blob
    return found


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def _stop_after(process: subprocess.Popen, db: Path, rows: int, signal_number: int, timeout: float = 180) -> None:
    """Send `signal_number` once the store holds more than `rows` result rows."""
    deadline = time.monotonic() + timeout
    while _count(db) <= rows:
        assert process.poll() is None, f"the run ended before it could be interrupted: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no rows were committed in time"
        time.sleep(0.05)
    process.send_signal(signal_number)


ARGUMENTS = ["bench", "local-accuracy", "--dataset", "offline", "--model", "tiny-bench", "--methods",
             "gradcam,rise", "--option", "rise.masks=1500", "--batch-size", "1", "--limit", "8", "--quiet"]


def test_interrupted_and_killed_runs_resume_to_the_same_rows(tiny_bench, tmp_path, capsys):
    db = tmp_path / "r.db"
    command = [sys.executable, str(tiny_bench), *ARGUMENTS, "--db", str(db)]
    first = subprocess.Popen(command, env=_env(hold=True), stderr=subprocess.PIPE, text=True)
    _stop_after(first, db, 0, signal.SIGINT)  # Ctrl-C
    assert first.wait(120) == 130
    message = first.stderr.read()
    assert "interrupted" in message and "again to resume" in message
    after_interrupt = _count(db)

    second = subprocess.Popen(command, env=_env(hold=True), stderr=subprocess.PIPE, text=True)
    _stop_after(second, db, after_interrupt, signal.SIGKILL)  # kill -9
    second.wait(60)
    after_kill = _count(db)
    assert 0 < after_interrupt < after_kill < 32  # 8 items x 2 methods x 2 metrics when complete

    assert main([*ARGUMENTS, "--db", str(db)]) == 0  # the same command resumes
    assert main([*ARGUMENTS, "--db", str(tmp_path / "whole.db")]) == 0
    resumed, whole = _rows(db), _rows(tmp_path / "whole.db")
    assert len(whole) == 32 + 32 and resumed == whole  # rows and curves: none lost, none twice, same values
    with sqlite3.connect(db) as connection:
        done = connection.execute("SELECT count(*) FROM done").fetchone()[0]
    assert done == 16


def test_torchrun_two_processes_equal_one(tiny_bench, tmp_path):
    db = tmp_path / "r.db"
    arguments = ["bench", "local-accuracy", "--dataset", "offline", "--model", "tiny-bench", "--methods",
                 "gradcam,random,jittercam", "--limit", "5", "--batch-size", "2", "--db"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(tiny_bench)]
    result = subprocess.run([*launch, *arguments, str(db)], env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stores = sorted(tmp_path.glob("r.rank*-of2.db"))
    assert [s.name for s in stores] == ["r.rank0-of2.db", "r.rank1-of2.db"] and not db.exists()
    summaries = [line for line in result.stderr.splitlines() if "explanations computed" in line]
    assert len(summaries) == 1 and "15 explanations computed" in summaries[0] and "2 stores" in summaries[0]
    items = [{row[3] for row in _rows(store) if row[0] != "curve"} for store in stores]
    assert not items[0] & items[1] and len(items[0]) == 3 and len(items[1]) == 2  # keys[r::2]

    assert main([*arguments, str(tmp_path / "one.db"), "--quiet"]) == 0
    merged, one = _rows(*stores), _rows(tmp_path / "one.db")
    assert merged.keys() == one.keys() and len(one) == 5 * 3 * 4
    difference = max(abs(merged[key] - one[key]) for key in one if key[0] != "curve")
    assert difference <= 1e-6


def test_groundtruth_run_killed_midway_resumes_to_the_same_rows(quick_groundtruth, tiny_bench, tmp_path):
    db = tmp_path / "gt.db"
    arguments = ["bench", "groundtruth", "--weights", str(quick_groundtruth.path), "--methods", "gradcam,rise",
                 "--option", "rise.masks=1000", "--option", "rise.batch_size=250",  # a commit per item, RISE batched
                 "--singles", "3", "--replicates", "1", "--separations", "14-50:6", "--batch-size", "1", "--quiet"]
    command = [sys.executable, str(tiny_bench), *arguments, "--db", str(db)]  # the jittercam command, held
    first = subprocess.Popen(command, env=_env(hold=True), stderr=subprocess.PIPE, text=True)
    _stop_after(first, db, 0, signal.SIGKILL)  # kill -9 after the first committed batch
    first.wait(60)
    killed_at = _count(db)
    assert 0 < killed_at < 2 * (3 * 4 + 7 * 5)  # 3 singles (4 rows each) and 7 pairs (5 rows each), two methods

    assert main([*arguments, "--db", str(db)]) == 0  # the same command resumes
    assert main([*arguments, "--db", str(tmp_path / "whole.db")]) == 0
    resumed, whole = _rows(db), _rows(tmp_path / "whole.db")
    timing = {key for key in whole if key[4] == "seconds"}  # wall clock differs from run to run
    assert resumed.keys() == whole.keys() and len(whole) == 2 * (3 * 4 + 7 * 5)
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in whole.items() if k not in timing}
