"""The README's Python example runs as written."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_python_example_runs(monkeypatch):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - our own documentation
    assert tuple(scope["maps"].shape) == (1, 14, 14)
    assert tuple(scope["heat"].shape) == (1, 375, 500)
    assert float(scope["heat"].max()) == 1.0
