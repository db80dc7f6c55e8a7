"""`jittercam groundtruth train [--out PATH] [--seed S] [--steps N] [--quick] [--force]`: train (or load
from the cache) the ground-truth model and print its held-out accuracy and occlusion rates."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import JitterCamError
from ..words import plural
from .train import train, trained_path

# the test's tiny setting: seconds on one core
QUICK: dict[str, Any] = {"steps": 250, "size": 64, "classes": 2, "width": 8, "batch": 16, "lr": 5e-3,
                         "heldout": 128, "patch": (12, 16), "scale": (1.0, 1.0)}


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "groundtruth", help="the synthetic ground-truth dataset and its model",
        description="A synthetic dataset whose class evidence is known exactly, and a small CNN trained on it.")
    actions = parser.add_subparsers(dest="groundtruth_command", required=True, metavar="ACTION")
    fit = actions.add_parser(
        "train", help="train the ground-truth model (or load it from the cache) and check it",
        description="Train on CPU, save to --out (default under $JITTERCAM_CACHE_DIR/groundtruth, else "
        "~/.cache/jittercam/groundtruth) and print held-out accuracy and how often occluding the evidence, "
        "or an equal square elsewhere, changes the decision. A file with the same configuration is reused.")
    fit.add_argument("--out", type=Path, metavar="PATH", help="model file to write (default: in the cache)")
    fit.add_argument("--seed", type=int, default=0, help="seed of data and weights (default: %(default)s)")
    fit.add_argument("--steps", type=int, help="optimiser steps (default: 1200, or 250 with --quick)")
    fit.add_argument("--quick", action="store_true", help="the tiny setting: 2 classes at 64 px, seconds")
    fit.add_argument("--force", action="store_true", help="retrain even when the file holds this model")
    fit.add_argument("--arch", choices=("cnn", "vit"), default="cnn",
                     help="the small CNN (default) or a small class-token vision transformer with the same 16 x 16 "
                     "grid (patch 8 at 128 px)")
    return parser


def run(args: argparse.Namespace) -> int:
    options: dict[str, Any] = dict(QUICK) if args.quick else {}
    if args.steps is not None:
        options["steps"] = args.steps
    if args.arch != "cnn":
        options["arch"] = args.arch
    result = train(args.seed, out_path=args.out, force=args.force,
                   log=lambda line: print(line, file=sys.stderr), **options)
    m = result.metrics
    source = "loaded from" if result.cached else "saved to"
    print(f"model {source} {result.path} (trained in {m['train_seconds']} s on {plural(m['threads'], 'thread')})")
    print(f"held-out accuracy: {percent(m['accuracy'])} of {m['heldout']} images")
    print(f"occluding the evidence changes the decision in {percent(m['flip_evidence'])} of them "
          f"({change(m['drop_evidence'])})")
    print(f"occluding an equal square elsewhere changes it in {percent(m['flip_elsewhere'])} "
          f"({change(m['drop_elsewhere'])})")
    print(f"benchmark it: {benchmark_command(result.path)}")
    return 0


def percent(share: float) -> str:
    """`0.367` -> `36.7 %`."""
    return f"{100 * share:.1f} %"


def change(drop: float) -> str:
    """The mean drop of the true class's probability in words: a negative drop is a rise, and one that
    rounds to 0.000 is said to be below 0.001, never `-0.000`."""
    if abs(drop) < 0.0005:
        return "the true-class probability moves by less than 0.001 on average"
    return f"the true-class probability {'drops' if drop > 0 else 'rises'} by {abs(drop):.3f} on average"


def benchmark_command(path: Path | None) -> str:
    """`jittercam bench groundtruth --db gt.db`, with `--weights PATH` unless the benchmark's default model
    (`trained_path`) is the file at `path`."""
    try:
        found = trained_path()
    except JitterCamError:
        found = None
    same = path is not None and found is not None and found.resolve() == Path(path).resolve()
    weights = "" if same else f" --weights {shlex.quote(str(path))}"
    return f"jittercam bench groundtruth{weights} --db gt.db"
