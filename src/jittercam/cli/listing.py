"""`jittercam list`: the model and method names."""
from __future__ import annotations

import argparse

from ..methods import available_methods
from ..models import available_models, registered_models
from .common import EXIT_OK


def add_parser(commands) -> None:
    commands.add_parser("list", help="list the model and method names")


def run(args: argparse.Namespace) -> int:
    registered = registered_models()
    print("models: " + "; ".join(f"{name} ({summary})" if summary else name for name, summary in registered.items())
          + "; and torchvision's classifiers:")
    print("  " + ", ".join(name for name in available_models() if name not in registered))
    print("methods: " + ", ".join(available_methods()))
    return EXIT_OK
