"""The benchmark's experiments. Each module defines one and registers it (`register_experiment`); importing
this package imports them all, so that adding an experiment touches one file."""
from __future__ import annotations

import importlib
import pkgutil

from .base import (
    Arm,
    Column,
    Experiment,
    Option,
    Scores,
    Setting,
    Unit,
    Value,
    Variant,
    available_experiments,
    experiment_class,
    find_experiment,
    register_experiment,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Arm", "Column", "Experiment", "Option", "Scores", "Setting", "Unit", "Value", "Variant",
           "available_experiments", "experiment_class", "find_experiment", "register_experiment"]
