"""The report's markdown stays readable with ImageNet's 1,000 class names in the run: the configuration
goes to a linked file beside the tables, without the class names, and no markdown line is long."""
from __future__ import annotations

import json
import re
import sqlite3

from jittercam.bench import Settings, run
from jittercam.bench.report import write_report


def test_configuration_beside_the_tables_without_class_names(tmp_path):
    db = tmp_path / "r.db"
    run(Settings("local-accuracy", "offline", db, methods=["gradcam"], limit=1, gallery=0, quiet=True))
    with sqlite3.connect(db) as store:
        (names,) = store.execute("SELECT class_names FROM runs").fetchone()
    assert len(json.loads(names)) == 1000  # the run knows its class names ...
    out = tmp_path / "report"
    write_report([db], out)
    markdown = (out / "local-accuracy.md").read_text()
    assert max(len(line) for line in markdown.splitlines()) <= 1000
    links = re.findall(r"\[configuration\]\((runs/[0-9a-f]{16}\.json)\)", markdown)
    assert len(links) == 1
    config = json.loads((out / links[0]).read_text())
    # ... which are neither in the configuration file nor anywhere in the markdown
    assert config["experiment"] == "local-accuracy" and config["limit"] == 1 and "class_names" not in config
    assert "tench" not in markdown and "goldfish" not in markdown
