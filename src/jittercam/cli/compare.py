"""`jittercam compare IMAGE ... --out FILE.png`: the flags of `jittercam.compare.write_figure`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..compare import MAX_METHODS, MAX_ROWS, figure_files, write_figure
from ..frontend import parse_method_options
from ..models import RANDOM
from ..words import plural
from .common import EXIT_OK, RANDOM_WEIGHTS, on_terminal, say_note, say_warning


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "compare",
        help="draw every method's map for one or more images in one figure (PNG)",
        description="A row per image (the photo first), a column per method, each map over the photo, "
        f"titled with the method, the class explained and the seconds it took. Over {MAX_METHODS} methods are "
        "drawn in blocks (a row per image each, the photo first again) one under the other; over "
        f"{MAX_ROWS} rows of panels go to several files, FILE-1.png, FILE-2.png, ...",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--model", default="efficientnet_lite0", help="model name (default: %(default)s)")
    parser.add_argument(
        "--methods", "--method", action="append", metavar="all|a,b,c",
        help="method names, comma-separated or repeated, or 'all' for every method with its default options "
        "(default: gradcam,jittercam; see `jittercam list`)",
    )
    parser.add_argument("--exclude", action="append", default=[], metavar="a,b,c",
                        help="methods to leave out, e.g. `--methods all --exclude polycam,rise` (the slowest on "
                        "a CPU); repeatable")
    parser.add_argument("--option", action="append", default=[], metavar="METHOD.NAME=VALUE",
                        help="a method option, e.g. rise.masks=1000 or jittercam.size=10 ('*.NAME' for every "
                        "method that has it); repeatable")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE.png",
                        help="the figure to write (missing folders are created)")
    parser.add_argument("--target", type=int, metavar="CLASS", help="class index to explain (default: top-1)")
    parser.add_argument("--size", type=int, help="Jitter-CAM / Upscale-CAM map side m+d in the layer's cells, "
                        "not pixels (default: 2m, 14 on a 7x7 layer; at most 8m)")
    parser.add_argument("--weights", help="local state dict for the model (default: its pretrained weights)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    def started() -> None:
        if args.weights == RANDOM:
            say_warning(RANDOM_WEIGHTS)

    def slow(methods: list[tuple[str, int]]) -> None:
        listed = ", ".join(f"{name} ({passes} passes per image)" for name, passes in methods)
        say_note(f"slow on a CPU: {listed}; `--exclude {','.join(name for name, _ in methods)}` leaves them out")

    def refused(methods: list[tuple[str, str]]) -> None:
        for name, reason in methods:
            say_note(f"{name} left out: {reason}")

    rows = write_figure(args.images, args.out, methods=args.methods or ["gradcam,jittercam"],
                        method_options=parse_method_options(args.option), model=args.model, weights=args.weights,
                        target=args.target, size=args.size, device=args.device,
                        progress=not args.quiet and on_terminal(), exclude=args.exclude, started=started,
                        slow=slow, refused=refused)
    images, methods = len(rows), len(rows[0]) - 1
    files = ", ".join(str(path) for path in figure_files(args.out, images, methods))
    print(f"wrote {files} ({plural(images, 'image')} x {plural(methods, 'method')})")
    return EXIT_OK
