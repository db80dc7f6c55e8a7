"""`jittercam tune`: measure the fastest batch size and memory layout of a model on a device (`jittercam.tuning`)."""
from __future__ import annotations

import argparse

import torch

from .. import tuning
from ..inputs import parse_device
from ..models import load_model
from ..runtime import device_name
from ..words import plural
from .common import EXIT_OK, UsageError


def add_parser(commands) -> None:
    tune = commands.add_parser(
        "tune",
        help="measure the fastest batch size and memory layout for a model on a device, and remember it",
        description="Time plain forward passes at several batch sizes, contiguous and channels-last, and store "
        "the fastest in the plan cache ($JITTERCAM_CACHE_DIR/plans.json, default ~/.cache/jittercam); every "
        "method and metric then uses it when no --batch-size is given.",
    )
    tune.add_argument("--model", default="efficientnet_lite0", help="model name (default: %(default)s)")
    tune.add_argument("--weights", metavar="PATH|random", help="as for explain (default: pretrained)")
    tune.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    tune.add_argument("--input-size", type=int, metavar="PIXELS", help="square input side (default: the model's)")


def run(args: argparse.Namespace) -> int:
    device = parse_device(args.device)
    if args.input_size is not None and args.input_size < 32:
        raise UsageError(f"--input-size must be at least 32, got {args.input_size}")
    model = load_model(args.model, weights=args.weights).to(device).eval()
    plan = tuning.tune(model, device, args.input_size)
    layout = "channels-last" if plan.channels_last else "contiguous"
    where = tuning.cache_path() or "this process only (JITTERCAM_CACHE_DIR=off)"
    threads = plural(torch.get_num_threads(), "thread")
    print(f"{args.model} on {device_name(device)} ({threads}): batch {plan.batch_size}, {layout}, "
          f"{plan.seconds_per_image * 1000:.2f} ms per image "
          f"(best contiguous {plan.contiguous_seconds_per_image * 1000:.2f} ms); saved in {where}")
    return EXIT_OK
