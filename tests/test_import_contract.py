"""The import contract (`.importlinter`, run by `make lint` in CI) holds for the package, and fails as soon
as a lazy import makes a cycle or goes up the layers."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
pytestmark = pytest.mark.skipif(LINT_IMPORTS is None, reason="import-linter is not installed (pip install .[lint])")


def _lint(source: Path, config: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(source)}
    return subprocess.run([str(LINT_IMPORTS), str(config), "--no-cache"], capture_output=True,
                          text=True, env=environment, cwd=source, check=False)


@pytest.fixture
def copy(tmp_path) -> Path:
    shutil.copytree(ROOT / "src" / "jittercam", tmp_path / "jittercam",
                    ignore=shutil.ignore_patterns("__pycache__", "*.JPEG"))
    return tmp_path


def test_the_package_keeps_its_contracts(copy):
    result = _lint(copy, ROOT / ".importlinter")
    assert result.returncode == 0, result.stdout
    assert "Contracts: 2 kept, 0 broken." in result.stdout and _verdicts(result.stdout) == ["KEPT", "KEPT"]


def _verdicts(output: str) -> list[str]:
    """KEPT / BROKEN per contract, in the order of `.importlinter` (names may wrap over lines)."""
    return [word for word in output.split() if word in ("KEPT", "BROKEN")]


@pytest.mark.parametrize(("module", "added", "verdicts"), [
    # a lazy import from data up into bench: against the layers, and a cycle between bench and data
    ("data/base.py", "def _upwards():\n    from ..bench import runner  # noqa\n", ["BROKEN", "BROKEN"]),
    # a lazy import between two modules of one layer that makes a cycle (offline imports the registry)
    ("data/registry.py", "def _sideways():\n    from . import offline  # noqa\n", ["KEPT", "BROKEN"]),
])
def test_a_new_lazy_import_that_breaks_a_contract_fails(copy, module, added, verdicts):
    path = copy / "jittercam" / module
    path.write_text(path.read_text() + "\n\n" + added)
    result = _lint(copy, ROOT / ".importlinter")
    assert result.returncode != 0
    assert _verdicts(result.stdout) == verdicts, result.stdout
