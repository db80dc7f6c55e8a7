"""`benchmarks/gpu_check.sh --dry-run`: the GPU session's one command lists its steps, fits its limits in the
5 minutes a lent GPU session gives it, and writes nothing."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("agreement", "tests", "plan-bf16", "plan-bf16-compiled", "plan-fp32", "bf16", "speed")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_dry_run_lists_every_step_within_five_minutes(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--dry-run"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    limits = dict(re.findall(r"^([\w-]+) \(at most (\d+) s\)", done.stdout, flags=re.M))
    assert tuple(limits) == STEPS
    total = int(re.search(r"at most (\d+) s of steps", done.stdout).group(1))
    assert total == sum(map(int, limits.values())) <= 300
    assert "bf16_agreement.py --device cuda" in done.stdout
    assert not out.exists()


def test_help_is_the_header_only():
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--help"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith("#") for line in lines)
    assert any("bf16_agreement.py" in line for line in lines)
