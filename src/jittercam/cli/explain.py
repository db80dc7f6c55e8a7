"""`jittercam explain IMAGE|FOLDER ... --out DIR`: the flags, the lines printed and the progress bar of
`jittercam.explain` (which checks, explains and writes)."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from ..data.collection import Source
from ..errors import JitterCamError
from ..explain import NPY_MAX_SIDE, Explanation, Listener, Result, Settings
from ..frontend import parse_method_options
from ..models import RANDOM
from ..runtime import ThreadGovernor
from ..words import plural
from .common import EXIT_INTERRUPTED, EXIT_OK, RANDOM_WEIGHTS, on_terminal, say_warning

_LAYER_HINT = " (on the command line: --target-layer NAME; module names as in model.named_modules())"


def add_parser(commands) -> None:
    explain = commands.add_parser(
        "explain",
        help="explain images (files or folders) and write heat maps",
        description="Explain each image with each method; write DIR/NAME.METHOD.png (the map over the photo), "
        "DIR/NAME.METHOD.npy (the map) and a row per result in DIR/summary.csv, as soon as each is computed.",
    )
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files and folders of images")
    explain.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the outputs")
    explain.add_argument("--recursive", "-r", action="store_true", help="search folders' subfolders too")
    explain.add_argument(
        "--methods", "--method", action="append", metavar="NAME[,NAME...]",
        help="method(s), comma-separated or repeated (default: jittercam); see `jittercam list`",
    )
    explain.add_argument("--option", action="append", default=[], metavar="METHOD.NAME=VALUE",
                         help="a method option, e.g. rise.masks=1000 or jittercam.size=10 ('*.NAME' for every "
                         "method that has it); repeatable")
    explain.add_argument("--model", default="efficientnet_lite0", help="model name (default: %(default)s)")
    explain.add_argument(
        "--weights", metavar="PATH|random",
        help="a local state dict for the model, or 'random' for random weights (default: pretrained)",
    )
    classes = explain.add_mutually_exclusive_group()
    classes.add_argument("--target", type=class_list, metavar="CLASS[,CLASS...]",
                         help="class index(es) to explain (default: top-1); several give a map per class, "
                         "files named NAME.METHOD.CLASS.png")
    classes.add_argument("--top", type=int, metavar="K",
                         help="explain each image's K most likely classes, files named NAME.METHOD.CLASS.png")
    explain.add_argument("--target-layer", metavar="NAME", help="the model's module to take maps from "
                         "(dotted name, e.g. layer4; default: found by a probe)")
    explain.add_argument("--size", type=int, help="Jitter-CAM / Upscale-CAM map side m+d in the layer's cells, "
                         "not pixels (default: 2m, 14 on a 7x7 layer; at most 8m)")
    explain.add_argument("--batch-size", type=int, help="images or patches per forward pass "
                         "(default: the plan `jittercam tune` measured, else 4 on CPU, 64 on GPU)")
    explain.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    explain.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                         help="the forward passes' precision, for the methods that offer it (Grad-CAM, Grad-CAM++, "
                         "XGrad-CAM, HiResCAM and Jitter-CAM / Upscale-CAM over them): bf16/fp16 pay off on a GPU, "
                         "not on a CPU (default: %(default)s)")
    explain.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                         help="run the forward passes through torch.compile, for the methods that have a compiled "
                         "path (the gradient CAMs, Jitter-CAM / Upscale-CAM over them, Score-CAM, Ablation-CAM, "
                         "RISE): the first image waits for the compilation (minutes on a CPU). Default: on a CPU "
                         "when their passes over all the images are estimated at 10 minutes or more, where it "
                         "pays (docs/guide/speed.md)")
    explain.add_argument(
        "--threads", type=int, metavar="N",
        help="CPU threads for torch (default: the cores that other work leaves idle, looked at again every 10 s)",
    )
    explain.add_argument("--cmap", default="jet", metavar="NAME",
                         help="matplotlib colour map of the overlays (default: %(default)s)")
    explain.add_argument("--alpha", type=float, default=0.5,
                         help="weight of the map over the photo, 0..1 (default: %(default)s)")
    explain.add_argument("--title", action="store_true",
                         help="add a strip above each overlay: class, probability, method")
    explain.add_argument(
        "--npy-max", type=int, default=NPY_MAX_SIDE, metavar="PIXELS",
        help="longest side of the stored .npy map; smaller photos keep their size (default: %(default)s)",
    )
    explain.add_argument("--skip-existing", action="store_true",
                         help="skip results whose .npy and .png are already in DIR (to finish an interrupted run)")
    explain.add_argument("--skip-bad", action="store_true",
                         help="leave out the files that are not images it can explain (corrupt, truncated, too "
                         "small), with a line each, instead of refusing them all")
    explain.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors and warnings")


def class_list(text: str) -> list[int]:
    """`281` or `281,243`: class indices for `--target`."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a class index or a comma list of them") from None


def _one_or_list(classes: list[int] | None) -> int | list[int] | None:
    return classes[0] if classes is not None and len(classes) == 1 else classes


def settings_from(args: argparse.Namespace) -> Settings:
    """The library's settings for the parsed command line."""
    return Settings(
        images=args.images, out=args.out, methods=args.methods or ["jittercam"],
        method_options=parse_method_options(args.option), model=args.model,
        weights=args.weights, target=_one_or_list(args.target), top=args.top,
        target_layer=args.target_layer, size=args.size,
        batch_size=args.batch_size, device=args.device, precision=args.precision,
        compile=args.compile, threads=args.threads,
        cmap=args.cmap, alpha=args.alpha, title=args.title, npy_max=args.npy_max,
        skip_existing=args.skip_existing, skip_bad=args.skip_bad, recursive=args.recursive,
        progress=not args.quiet and on_terminal(),  # the long ones (RISE, Score-CAM, ...) have a bar of their own
    )


def run(args: argparse.Namespace) -> int:
    lines = _Lines(quiet=args.quiet)
    explanation = Explanation(settings_from(args), lines)
    try:
        with lines:
            written = explanation.run()
    except KeyboardInterrupt:
        if not explanation.streaming:
            raise
        print(f"jittercam: interrupted: {explanation.progress()}; run the same command with --skip-existing "
              "to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    except JitterCamError as exc:
        if exc.option is None and not explanation.streaming and "target_layer" in str(exc):
            raise JitterCamError(f"{exc}{_LAYER_HINT}") from None
        raise
    elapsed = time.perf_counter() - lines.started_at
    maps, bad = len(written), len(explanation.bad)
    extra = f", {explanation.skipped} already there" if explanation.skipped else ""
    extra += f", {plural(bad, 'bad image')} skipped" if bad else ""
    files = 2 * maps
    lines.say(f"wrote {plural(files, 'file')} to {args.out} ({plural(maps, 'map')}{extra}) "
              f"in {elapsed:.1f} s")
    return EXIT_OK


class _Lines(Listener):
    """A line per result on stdout and, on a terminal, a progress bar below them on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: tqdm | None = None
        self.started_at = time.perf_counter()

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()

    def say(self, line: str) -> None:
        if self.quiet:
            return
        if self.bar is not None and not self.bar.disable:
            tqdm.write(line, file=sys.stdout)  # keeps the bar below the lines
        else:
            print(line)

    def checking(self, sources: list[Source]) -> Iterable[Source]:
        # a big folder takes a while to read
        return tqdm(sources, desc="checking images", unit="image", file=sys.stderr, leave=False,
                    disable=self.quiet or not on_terminal() or len(sources) < 20)

    def started(self, run: Explanation) -> None:
        if run.settings.weights == RANDOM:
            say_warning(RANDOM_WEIGHTS)
        for error in run.bad:
            say_warning(f"skipped {error.path}: {error.problem}")
        if run.outputs:
            count = len(run.outputs)
            self.say(f"left out {plural(count, 'picture')} that jittercam wrote (maps, figures) "
                     "in the image folders")
        images, methods, device = len(run.sources), len(run.methods), run.device
        engine = f"{device.type}, {run.threads}" if device.type == "cpu" else str(device)
        self.say(f"{plural(images, 'image')} x {plural(methods, 'method')}, "
                 f"{run.settings.model} on {engine} -> {run.settings.out}")
        if run.compile_note:
            self.say(run.compile_note)
        if run.precision_note:  # the outputs do not show it: said with --quiet too
            say_warning(run.precision_note)
        self.bar = tqdm(total=run.total, unit="map", file=sys.stderr, disable=self.quiet or not on_terminal(),
                        dynamic_ncols=True)
        self.started_at = time.perf_counter()

    def skipped(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def threads_changed(self, threads: ThreadGovernor) -> None:
        self.say(f"now {threads}")

    def explaining(self, label: str, method: str) -> None:
        if self.bar is not None:
            self.bar.set_description(f"{label} {method}", refresh=False)

    def explained(self, label: str, result: Result) -> None:
        self.say(f"{label}  {result.method}  class {result.class_index} ({result.class_name})  "
                 f"p={result.probability:.3f}  {result.seconds:.2f} s")
        if self.bar is not None:
            self.bar.update()
