"""`jittercam compare IMAGE ... --out FILE.png`: the flags of `jittercam.compare.write_figure`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..compare import write_figure
from .common import EXIT_OK, on_terminal


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "compare",
        help="draw every method's map for one or more images in one figure (PNG)",
        description="A row per image (the photo first), a column per method, each map over the photo, "
        "titled with the method, the class explained and the seconds it took.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--model", default="efficientnet_lite0", help="model name (default: %(default)s)")
    parser.add_argument(
        "--methods", default="gradcam,jittercam", metavar="all|a,b,c",
        help="comma-separated method names, or 'all' for every method with its default options "
        "(default: %(default)s; see `jittercam list`)",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="FILE.png", help="the figure to write")
    parser.add_argument("--target", type=int, metavar="CLASS", help="class index to explain (default: top-1)")
    parser.add_argument("--size", type=int, help="Jitter-CAM / Upscale-CAM map size m+d (default: 2m)")
    parser.add_argument("--weights", help="local state dict for the model (default: its pretrained weights)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    rows = write_figure(args.images, args.out, methods=args.methods, model=args.model, weights=args.weights,
                        target=args.target, size=args.size, device=args.device,
                        progress=not args.quiet and on_terminal())
    print(f"wrote {args.out} ({len(rows)} images x {len(rows[0]) - 1} methods)")
    return EXIT_OK
