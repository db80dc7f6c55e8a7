"""The Python examples of the README and the guides run as written, one after the other."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from jittercam.bench.experiments import base as experiments
from jittercam.data import registry as datasets
from jittercam.methods import registry

ROOT = Path(__file__).resolve().parent.parent
GUIDES = ("python", "metrics", "benchmark")  # the guides with Python examples, in the order they build on


def test_python_examples_run(monkeypatch):
    pages = [ROOT / "README.md", *(ROOT / "docs" / "guide" / f"{name}.md" for name in GUIDES)]
    blocks = [block for page in pages for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]
    assert len(blocks) == 6
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))  # the example registers a method
    monkeypatch.setattr(experiments, "_EXPERIMENTS", dict(experiments._EXPERIMENTS))  # ... and an experiment
    monkeypatch.setattr(datasets, "_SOURCES", dict(datasets._SOURCES))  # ... and a dataset
    scope: dict = {}
    for number, block in enumerate(blocks):
        exec(compile(block, f"python block {number} of the README and guides", "exec"), scope)  # noqa: S102
    assert tuple(scope["sharper"].shape) == (1, 14, 14) and float(scope["sharper"].min()) >= 0
    assert tuple(scope["maps"].shape) == (1, 14, 14)
    assert tuple(scope["heat"].shape) == (1, 375, 500)
    assert float(scope["heat"].max()) == 1.0
    assert 0 <= float(scope["di"].deletion.auc) < float(scope["di"].insertion.auc) <= 1
    assert bool(scope["hit"]) and 0 < float(scope["share"]) <= 1
    assert 0 <= float(scope["ad"]) <= 100 and 0 <= float(scope["iic"]) <= 100
    # the goldfish's probability on the model's own input (0.10 if it were normalised with ImageNet's mean/std)
    assert float(scope["f"].original) == pytest.approx(0.884, abs=0.01)
    table = (scope["folder"] / "report" / "concentration.md").read_text()
    assert "Top mass" in table and "n = 2 items for each of 2 methods" in table
    assert scope["written"].tables == 1
    # the dataset's folder opened by the registered dataset; both classes of the photo asked about
    pointing = (scope["scratch"] / "pointing-report" / "pointing.md").read_text()
    assert "pointing on boxed-photos" in pointing and "mean over the 2 classes with a trial" in pointing, pointing
    assert scope["pointed"].tables == 1
