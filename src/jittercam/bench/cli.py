"""`jittercam bench EXPERIMENT ...`: run one experiment of the paper into a results store.

    jittercam bench local-accuracy --dataset offline --model efficientnet_lite0 --db results.db
    torchrun --nproc_per_node 4 -m jittercam bench weak-localisation --dataset /data/imagenet/val \\
        --boxes /data/imagenet/bbox_val --model resnet50 --device cuda --db results.db

Rerunning the same command resumes: what is stored is not computed again. Mistakes (an unknown
experiment, method, model or dataset, an option of another experiment) are one line and exit status 2
before any store is written; Ctrl-C commits what is done and exits with status 130.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import JitterCamError
from ..frontend import parse_method_options
from .experiments import EXPERIMENTS
from .runner import CACHE_MODES, Settings, run as run_settings

# per-experiment options: argparse destination -> the experiments that take it
EXPERIMENT_OPTIONS = {
    "alphas": ("faithfulness",),
    "sweep": ("faithfulness",),
    "box": ("weak-localisation",),
    "tolerance": ("pointing",),
    "sizes": ("size-sweep", "groundtruth"),
    "low_size": ("consistency",),
    "reference": ("consistency",),
    "layers": ("layers",),
    "singles": ("groundtruth",),
    "separations": ("groundtruth",),
    "replicates": ("groundtruth",),
    "angle": ("groundtruth",),
    "dip": ("groundtruth",),
    "floor": ("groundtruth",),
    "fused": ("groundtruth",),
}
DATASET_OPTIONS = ("labels", "boxes", "annotations", "difficult")


def add_parser(commands) -> None:
    experiments = "; ".join(f"{name} ({cls.paper})" for name, cls in EXPERIMENTS.items())
    parser = commands.add_parser(
        "bench",
        help="run one of the paper's experiments into a results store",
        description=f"Run one experiment over a dataset; one row per item x method x metric in an SQLite "
        f"store. Experiments: {experiments}. The same command resumes an interrupted run.",
    )
    parser.add_argument("experiment", choices=list(EXPERIMENTS), metavar="EXPERIMENT",
                        help=f"one of: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--dataset", metavar="NAME|PATH",
                        help="'offline' (shipped), 'groundtruth' (synthetic, with --model groundtruth), an ImageNet "
                        "val folder, a COCO 2014 or VOC 2007 root (required, except for groundtruth)")
    parser.add_argument("--db", required=True, type=Path, metavar="FILE",
                        help="the results store (SQLite); under torchrun each rank writes FILE's stem.rankR-ofW")
    parser.add_argument("--model", help="model name (default: efficientnet_lite0; groundtruth for the groundtruth "
                        "experiment: the model `jittercam groundtruth train` wrote)")
    parser.add_argument("--methods", action="append", metavar="all|a,b,c",
                        help="methods, comma-separated or repeated (default: the paper's rows for the experiment)")
    parser.add_argument("--option", action="append", default=[], metavar="METHOD.NAME=VALUE",
                        help="a method option, e.g. rise.masks=1000 or jittercam.size=10 ('*.NAME' for every "
                        "method that has it); repeatable")
    parser.add_argument("--limit", type=int, metavar="N", help="the first N items of the dataset only")
    parser.add_argument("--weights", metavar="PATH|random", help="a local state dict (default: pretrained)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="images per forward pass, for the methods and metrics too (default: the plan measured "
                        "once per model and device, see `jittercam tune`)")
    parser.add_argument("--input-size", type=int, metavar="PIXELS", help="square input size (default: the model's)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the offline dataset and of the random methods (default: %(default)s)")
    parser.add_argument("--gallery", type=int, default=4, metavar="N",
                        help="store the first N items' input and maps for the report's gallery (default: %(default)s)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's)")
    parser.add_argument("--retry-skipped", action="store_true", help="compute skipped items again")
    parser.add_argument("--cache", choices=CACHE_MODES, default="small",
                        help="explanation cache: maps up to 64x64 (small, default), all maps, or none")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary line")
    data = parser.add_argument_group("dataset options")
    data.add_argument("--labels", metavar="FILE",
                      help="ImageNet labels (CSV file,class_index) instead of the packaged ones")
    data.add_argument("--boxes", metavar="DIR", help="ImageNet ILSVRC2012_bbox_val_v3 XML folder")
    data.add_argument("--annotations", metavar="FILE", help="COCO instances_val2014.json")
    data.add_argument("--difficult", metavar="FILE",
                      help="TorchRay's EBP difficult-pairs file (.txt or the sdist .tar.gz)")
    own = parser.add_argument_group("experiment options")
    own.add_argument("--alphas", metavar="A,B,...", help="faithfulness: expansion factors (default: 0,0.5,...,10)")
    own.add_argument("--sweep", metavar="a,b|none",
                     help="faithfulness: methods of the expansion sweep (default: gradcam,random)")
    own.add_argument("--box", choices=("all", "largest"), help="weak-localisation: box around all kept pixels "
                     "(default, Fong & Vedaldi) or the largest connected component")
    own.add_argument("--tolerance", type=float, metavar="PIXELS", help="pointing: hit tolerance (default: 15)")
    own.add_argument("--sizes", metavar="N,N|A-B", help="size-sweep: Jitter-CAM sizes (default: m..m+13); "
                     "groundtruth: Jitter-CAM and Upscale-CAM sizes (default: m+2, m+4, 1.5m, 2m)")
    own.add_argument("--low-size", type=int, metavar="PIXELS", help="consistency: the small input (default: 160)")
    own.add_argument("--reference", metavar="METHOD", help="consistency: the method at full size (default: gradcam)")
    own.add_argument("--singles", type=int, metavar="N",
                     help="groundtruth: single-patch images (default: 64)")
    own.add_argument("--separations", metavar="N,N|A-B[:STEP]",
                     help="groundtruth: centre separations of the pairs in pixels (default: touching to 4 sides, "
                     "step 2: 16-64:2 at 128 px)")
    own.add_argument("--replicates", type=int, metavar="N",
                     help="groundtruth: pairs per separation (default: 8)")
    own.add_argument("--angle", type=float, metavar="DEGREES",
                     help="groundtruth: the direction of the line through a pair's centres (default: 0, horizontal)")
    own.add_argument("--dip", type=float, metavar="FRACTION",
                     help="groundtruth: the dip two peaks need between them to count as resolved (default: 0.2)")
    own.add_argument("--floor", type=float, metavar="FRACTION",
                     help="groundtruth: the height both peaks must reach, of the map's range (default: 0.5)")
    own.add_argument("--fused", metavar="A,B|none",
                     help="groundtruth: the layers LayerCAM fuses (default: the model's stage outputs)")
    own.add_argument("--layers", metavar="A,B", help="layers: module names (default: the probe's layer and the "
                     "one feeding its activation)")


def _numbers(text: str, option: str, kind=float) -> tuple:
    """`1,2,5` or, for integers, ranges `A-B` and `A-B:STEP` (both ends included when on the step)."""
    values, bad_step = [], False
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            if kind is int and "-" in part[1:]:
                span, _, step = part.partition(":")
                low, high = (int(x) for x in span.split("-", 1))
                values += list(range(low, high + 1, max(1, int(step or 1))))
                if int(step or 1) < 1:
                    bad_step = True
            else:
                values.append(kind(part))
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise JitterCamError(f"{option} {text!r}: {part!r} is not {what}") from None
    if bad_step:
        raise JitterCamError(f"{option} {text!r}: the step must be at least 1")
    if not values:
        raise JitterCamError(f"{option} names no value")
    return tuple(values)


def _names(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _experiment_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for dest, experiments in EXPERIMENT_OPTIONS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if args.experiment not in experiments:
            flag = "--" + dest.replace("_", "-")
            raise JitterCamError(f"{flag} applies to {', '.join(experiments)} only, not {args.experiment}")
        if dest == "alphas":
            value = _numbers(value, "--alphas")
            if any(a < 0 for a in value):
                raise JitterCamError("--alphas must not be negative")
        elif dest in ("sizes", "separations"):
            value = _numbers(value, "--" + dest, int)
        elif dest in ("singles", "replicates") and value < 0:
            raise JitterCamError(f"--{dest} must be 0 or more")
        elif dest in ("dip", "floor") and not 0 <= value <= 1:
            raise JitterCamError(f"--{dest} must be between 0 and 1")
        elif dest == "fused":
            value = _names(value)
        elif dest in ("sweep", "layers"):
            value = _names(value)
            if dest == "sweep":
                from ..methods.registry import check_method_name

                for name in value:
                    check_method_name(name)
            elif not value:
                raise JitterCamError("--layers names no layer")
        elif dest == "tolerance" and value < 0:
            raise JitterCamError("--tolerance must be 0 or more")
        elif dest == "low_size" and value < 32:
            raise JitterCamError("--low-size must be at least 32")
        elif dest == "reference":
            from ..methods.registry import check_method_name

            check_method_name(value)
        options[dest] = value
    return options


def _method_options(specs: list[str]) -> dict[str, dict[str, Any]]:
    """`METHOD.NAME=VALUE` → {METHOD: {NAME: value}}; the value is a Python literal, else a string."""
    return parse_method_options(specs)


def settings_from(args: argparse.Namespace) -> Settings:
    for option, value, low in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1),
                               ("--threads", args.threads, 1), ("--input-size", args.input_size, 32),
                               ("--gallery", args.gallery, 0)):
        if value is not None and value < low:
            raise JitterCamError(f"{option} must be at least {low}")
    return Settings(
        experiment=args.experiment, dataset=args.dataset, db=args.db, model=args.model, methods=args.methods,
        weights=args.weights, device=args.device, batch_size=args.batch_size, seed=args.seed, limit=args.limit,
        gallery=args.gallery, input_size=args.input_size,
        dataset_options={name: getattr(args, name) for name in DATASET_OPTIONS},
        experiment_options=_experiment_options(args), method_options=_method_options(args.option),
        retry_skipped=args.retry_skipped, cache=args.cache, quiet=args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    summary = run_settings(settings)
    if summary.interrupted:
        if not summary.main:
            return 130
        command = shlex.join(["jittercam", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else "the same command"
        print(f"jittercam: interrupted; {summary.computed} explanations and {summary.rows} rows are stored in "
              f"{settings.db}; run {command} again to resume", file=sys.stderr)
        return 130
    return 0
