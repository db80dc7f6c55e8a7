"""`jittercam bench EXPERIMENT ...`: run one experiment of the paper into a results store.

    jittercam bench local-accuracy --dataset offline --model efficientnet_lite0 --db results.db
    torchrun --nproc_per_node 4 -m jittercam bench weak-localisation --dataset /data/imagenet/val \\
        --boxes /data/imagenet/bbox_val --model resnet50 --device cuda --db results.db

Rerunning the same command resumes: what is stored is not computed again (`--drop METHOD` deletes a
method's rows first, to compute it again with other options). Mistakes (an unknown
experiment, method, model or dataset, an option of another experiment) are one line and exit status 2
before any store is written; Ctrl-C commits what is done and exits with status 130.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..data import available_datasets, dataset_source
from ..data.registry import describe_datasets
from ..errors import JitterCamError
from ..frontend import parse_method_options
from .experiments import Option, available_experiments, experiment_class
from .runner import CACHE_MODES, Settings
from .runner import run as run_settings


def _experiment_flags() -> dict[str, list[tuple[str, Option]]]:
    """Each option name -> the experiments that declare it, with their declaration."""
    flags: dict[str, list[tuple[str, Option]]] = {}
    for name in available_experiments():
        for option in experiment_class(name).options:
            flags.setdefault(option.name, []).append((name, option))
    return flags


def _dataset_flags() -> dict[str, list[tuple[str, str]]]:
    """The datasets' own options (each dataset declares them) -> (dataset title, what it takes); options an
    experiment declares for its dataset (the ground truth's) are the experiment's flags."""
    declared = set(_experiment_flags())
    flags: dict[str, list[tuple[str, str]]] = {}
    for name in available_datasets():
        source = dataset_source(name)
        for option in source.options:
            if option not in declared:
                flags.setdefault(option, []).append((source.title, (source.option_help or {}).get(option, "")))
    return flags


def _metavar(name: str, declared: list[tuple[str, Option]]) -> str:
    """The flag's metavar: each declaration's own (else its choices in braces, else NAME), `|` between
    different ones (`--ties {average,first}|{jitter,stable}`)."""
    metavars = [o.metavar or ("{" + ",".join(o.choices) + "}" if o.choices else name.upper()) for _, o in declared]
    return "|".join(dict.fromkeys(metavars))


def _experiment_name(text: str) -> str:
    """EXPERIMENT as typed; `report`, a command of its own, is refused saying how to run it."""
    if text == "report":  # argparse's error line, before its `choices` check
        raise argparse.ArgumentTypeError("`report` is not an experiment: the report is "
                                         "`jittercam report DB ... --out DIR`")
    return text


def add_parser(commands) -> None:
    names = available_experiments()
    experiments = "; ".join(f"{name} ({experiment_class(name).paper})" for name in names)
    parser = commands.add_parser(
        "bench",
        help="run one of the paper's experiments into a results store",
        description=f"Run one experiment over a dataset; one row per item x method x metric in an SQLite "
        f"store. Experiments: {experiments}. The same command resumes an interrupted run.",
    )
    parser.add_argument("experiment", type=_experiment_name, choices=names, metavar="EXPERIMENT",
                        help=f"one of: {', '.join(names)}")
    parser.add_argument("--dataset", metavar="NAME|PATH",
                        help=f"{describe_datasets()} (required, except where the experiment has its own)")
    parser.add_argument("--db", required=True, type=Path, metavar="FILE",
                        help="the results store (SQLite); under torchrun each rank writes FILE's stem.rankR-ofW")
    parser.add_argument("--model", help="model name (default: efficientnet_lite0; groundtruth for the groundtruth "
                        "experiment: the model `jittercam groundtruth train` wrote)")
    parser.add_argument("--methods", "--method", action="append", metavar="all|a,b,c",
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
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="the methods with a compiled path and deletion/insertion through torch.compile "
                        "(default: on a CPU when their forward passes are estimated at 10 minutes or more, where it "
                        "pays; the stored results do not change)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the offline dataset and of the random methods (default: %(default)s)")
    parser.add_argument("--gallery", type=int, default=4, metavar="N",
                        help="store the first N items' input and maps for the report's gallery (default: %(default)s)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's)")
    parser.add_argument("--retry-skipped", action="store_true", help="compute skipped items again")
    parser.add_argument("--drop", action="append", default=[], metavar="METHOD",
                        help="delete the rows the store holds of METHOD for this command's configuration first, so "
                        "that it is computed again (e.g. with other --option values); repeatable")
    parser.add_argument("--cache", choices=CACHE_MODES, default="small",
                        help="explanation cache: maps up to 64x64 (small, default), all maps, or none")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary line")
    data = parser.add_argument_group("dataset options")
    for name, takers in _dataset_flags().items():
        by_text: dict[str, list[str]] = {}
        for title, text in takers:
            by_text.setdefault(text, []).append(title)
        helps = "; ".join(f"{' and '.join(titles)}: {text}" if text else " and ".join(titles)
                          for text, titles in by_text.items())
        data.add_argument("--" + name.replace("_", "-"), dest=name, metavar="FILE", help=helps)
    own = parser.add_argument_group("experiment options")
    for name, declared in _experiment_flags().items():
        # no argparse `choices`: experiments sharing a flag take different values (`--ties`), so the
        # experiment's own declaration checks the text (`_experiment_options`)
        helps = "; ".join(f"{experiment}: {o.help}" for experiment, o in declared)
        own.add_argument(declared[0][1].flag, dest=name, metavar=_metavar(name, declared), help=helps)


def _experiment_options(args: argparse.Namespace) -> dict[str, Any]:
    """The experiment's options given on the command line, parsed by its own declarations."""
    cls = experiment_class(args.experiment)
    options: dict[str, Any] = {}
    for name, declared in _experiment_flags().items():
        text = getattr(args, name)
        if text is None:
            continue
        option = cls.option(name)
        if option is None:
            owners = ", ".join(experiment for experiment, _ in declared)
            raise JitterCamError(f"{declared[0][1].flag} applies to {owners} only, not {args.experiment}")
        options[name] = option.value(text, option.flag)
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
        gallery=args.gallery, input_size=args.input_size, compile=args.compile,
        dataset_options={name: getattr(args, name) for name in _dataset_flags()},
        experiment_options=_experiment_options(args), method_options=_method_options(args.option),
        retry_skipped=args.retry_skipped, cache=args.cache, quiet=args.quiet,
        drop=[name for spec in args.drop for name in spec.split(",") if name],
    )


def _without_drop(arguments: list[str]) -> list[str]:
    """The command line less its `--drop` options: resuming must not delete what this run stored."""
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "--drop":
            skip = True
        elif not argument.startswith("--drop="):
            kept.append(argument)
    return kept


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    summary = run_settings(settings)
    if summary.interrupted:
        if not summary.main:
            return 130
        command = (shlex.join(["jittercam", *_without_drop(sys.argv[1:])]) if sys.argv[1:2] == ["bench"]
                   else "the same command without --drop")
        print(f"jittercam: interrupted; {summary.interrupted_line()}; run {command} again to resume",
              file=sys.stderr)
        return 130
    return 0
