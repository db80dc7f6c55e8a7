"""Shared fixtures: the real EfficientNet-Lite0, the example photos, and a tiny CNN."""
from __future__ import annotations

import os

# Before torch loads OpenMP (as `import jittercam` does when it comes first): waiting threads that spin starve
# the working one whenever another process holds a core. Measured here, tests/test_readme.py beside other work
# and one busy loop on the 2 cores: 197 s spinning, 22 s passive.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import csv
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import jittercam

# measured forward plans (jittercam.tuning) live in the user's cache: the suite must not read or write it
os.environ["JITTERCAM_CACHE_DIR"] = "off"

# as the command line runs (and the in-process CLI tests would switch it on half-way through a worker anyway)
jittercam.runtime.retain_freed_memory()

# A shell that starts the suite in the background (`bash .ci/run &`) hands it SIGINT ignored, and the ignoring
# passes on to the subprocesses: the Ctrl-C tests need Python's own handler here and in them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def steady_load(monkeypatch):
    """`jittercam explain` picks its threads from the load of the other processes (`runtime.busy_cpus`), and
    maps and overlays differ in their last bits between 1 and 2 threads: with the other test process going
    idle or busy, two runs compared pixel for pixel could differ. Here the others keep all but one CPU
    busy, always (tests of the load rule set their own)."""
    monkeypatch.setattr("jittercam.runtime.busy_cpus", lambda seconds=0.2: float((os.cpu_count() or 1) - 1))


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GOLDFISH = EXAMPLES / "images" / "ILSVRC2012_val_00000262.JPEG"
GOLDFISH_BOX = (225, 175, 325, 250)  # x0, y0, x1, y1 around the fish's body, drawn by hand


@pytest.fixture(scope="session")
def lite0() -> nn.Module:
    return jittercam.load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def example_labels() -> dict[str, int]:
    with open(EXAMPLES / "labels.csv", newline="") as handle:
        return {row["file"]: int(row["class_index"]) for row in csv.DictReader(handle)}


@pytest.fixture(scope="session")
def goldfish_batch(lite0) -> torch.Tensor:
    image = jittercam.data.load_image(GOLDFISH)
    return jittercam.data.to_input(image, jittercam.model_card(lite0))


class TinyCNN(nn.Module):
    """conv(stride 4) -> ReLU -> 8x8 map at 32 px -> global average pool -> linear: CAMs by hand."""

    def __init__(self, channels: int = 3, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, kernel_size=4, stride=4)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    """torchvision's ResNet18 with seeded random weights, one per test module."""
    torch.manual_seed(0)
    return jittercam.load_model("resnet18", weights="random")


def model_state(model: nn.Module) -> tuple:
    """What a method must leave as it was: mode, requires_grad, .grad and forward hooks."""
    return (model.training, [p.requires_grad for p in model.parameters()],
            [p.grad for p in model.parameters()], dict(model._forward_hooks))


@pytest.fixture
def tiny() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


def write_png16(path, pixels: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def quick_groundtruth(tmp_path_factory):
    """`jittercam groundtruth train --quick`'s model (2 classes at 64 px, about 10 s): a TrainResult."""
    from jittercam.groundtruth import train
    from jittercam.groundtruth.cli import QUICK

    path = tmp_path_factory.mktemp("groundtruth") / "quick.pt"
    return train(0, out_path=path, **QUICK)
