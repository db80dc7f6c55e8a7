"""`runtime.retain_freed_memory`: freed CPU tensors' pages are kept for the next ones (glibc), and the
command line asks for it in its own process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jittercam import runtime
from jittercam.cli import main


def glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError):
        return False


# Three forward passes of two convolutions over a batch whose activations are 51 MB each (glibc maps every
# buffer above 32 MB on its own), after three of warm-up: the minor page faults of the three.
STEADY_FAULTS = """
import json, resource, sys
import torch
from torch import nn
from jittercam import runtime
taken = runtime.retain_freed_memory() if sys.argv[1] == "retain" else False
net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())
images = torch.randn(16, 3, 112, 112)
with torch.inference_mode():
    for _ in range(3):
        net(images)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        net(images)
print(json.dumps({"taken": taken, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def steady_faults(mode: str) -> dict:
    glibcs_own = {name: value for name, value in os.environ.items()  # thresholds of the caller's would stand
                  if not name.startswith("MALLOC_") and name != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", STEADY_FAULTS, mode], check=True, capture_output=True,
                         text=True, env=glibcs_own).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not glibc(), reason="glibc's malloc only")
def test_forward_passes_reuse_freed_activations_without_faulting_their_pages_in_again():
    activation_pages = 16 * 64 * 112 * 112 * 4 // os.sysconf("SC_PAGE_SIZE")
    default, retained = steady_faults("default"), steady_faults("retain")
    assert default["faults"] > 3 * activation_pages  # each pass faults its activations in again
    assert retained["taken"] is True
    assert retained["faults"] < default["faults"] / 5  # at most a buffer that found no hole of its size


def test_without_glibc_nothing_changes(monkeypatch):
    def no_such_name(name):
        raise ValueError(f"unrecognized configuration name {name!r}")  # as on macOS

    monkeypatch.setattr(os, "confstr", no_such_name)
    assert runtime.retain_freed_memory() is False


@pytest.mark.parametrize("setting", [("MALLOC_TRIM_THRESHOLD_", "131072"), ("MALLOC_MMAP_THRESHOLD_", "65536"),
                                     ("GLIBC_TUNABLES", "glibc.malloc.check=0:glibc.malloc.mmap_threshold=65536")])
def test_the_users_own_thresholds_stand(monkeypatch, setting):
    monkeypatch.setenv(*setting)
    assert runtime.retain_freed_memory() is False


@pytest.mark.skipif(not glibc(), reason="glibc's malloc only")
def test_other_malloc_settings_do_not_stop_it(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # as container images often set
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert runtime.retain_freed_memory() is True


def test_the_command_line_retains_freed_memory_in_its_process(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(runtime, "retain_freed_memory", lambda: calls.append(1) or True)
    assert main(["list"]) == 0
    assert calls == [1]
    assert "gradcam" in capsys.readouterr().out
