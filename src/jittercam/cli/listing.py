"""`jittercam list`: the model and method names."""
from __future__ import annotations

import argparse

from ..methods import available_methods
from ..models import available_models
from .common import EXIT_OK


def add_parser(commands) -> None:
    commands.add_parser("list", help="list the model and method names")


def run(args: argparse.Namespace) -> int:
    print("models: efficientnet_lite0 (offline default), groundtruth (the ground-truth benchmark's model, "
          "made by `jittercam groundtruth train`) and torchvision classifiers:")
    print("  " + ", ".join(name for name in available_models() if name not in ("efficientnet_lite0", "groundtruth")))
    print("methods: " + ", ".join(available_methods()))
    return EXIT_OK
