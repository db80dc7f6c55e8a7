"""`jittercam compare`: a grid like the paper's Figure 3 — a row per image (the photo first), a column per
method, each map over the photo, titled with the method, the class explained and the seconds it took."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import load_image, to_input
from .data.output import atomic_write, probe_folder
from .errors import JitterCamError
from .inputs import check_targets, parse_device
from .maps import upsample
from .methods import create, method_options
from .methods.registry import method_list
from .models import load_model, model_card
from .viz import overlay

PANEL_PIXELS = 256  # the longer side of each panel


@dataclass
class Panel:
    method: str
    image: Image.Image  # the photo at panel size, with the map over it
    title: str


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


def method_names(spec: str) -> list[str]:
    """'all' → every registered method and wrapper with its default options; else a checked list."""
    return method_list([spec], "--methods")


def _check_out(out: Path) -> None:
    if out.suffix.lower() != ".png":
        raise JitterCamError(f"--out {out} must end in .png")
    if out.is_dir():
        raise JitterCamError(f"--out {out} is a folder; give a file name ending in .png")
    folder = out.parent
    if not folder.is_dir():
        raise JitterCamError(f"--out {out}: folder {folder} does not exist")
    try:
        probe_folder(folder)
    except OSError as exc:
        raise JitterCamError(f"--out {out}: cannot write in {folder} ({exc.strerror or exc})") from None


def _panel_size(image: Image.Image) -> tuple[int, int]:
    scale = PANEL_PIXELS / max(image.width, image.height)
    return max(1, round(image.width * scale)), max(1, round(image.height * scale))


def run(args: argparse.Namespace) -> int:
    names = method_names(args.methods)
    if args.size is not None and not any("size" in method_options(n) for n in names):
        raise JitterCamError("--size applies to jittercam and upscale methods only")
    _check_out(args.out)
    photos = [(Path(path), load_image(path)) for path in dict.fromkeys(args.images)]
    device = parse_device(args.device)
    model = load_model(args.model, weights=args.weights).to(device)
    card = model_card(model)
    show_progress = not args.quiet and sys.stderr.isatty()
    methods = {}
    for name in names:
        accepted = method_options(name)
        options = {"size": args.size} if "size" in accepted and args.size is not None else {}
        if "progress" in accepted:  # the long ones (RISE, Score-CAM, Ablation-CAM) get their own bar
            options["progress"] = show_progress
        methods[name] = create(name, model, **options)
    if args.target is not None:
        with torch.no_grad():
            classes = model(to_input(photos[0][1], card).to(device)).shape[1]
        check_targets(args.target, 1, classes, device)

    rows = _explain_all(photos, methods, model, card, device, args.target, progress=show_progress)
    _draw(rows, args.out)
    print(f"wrote {args.out} ({len(rows)} images x {len(methods)} methods)")
    return 0


def _explain_all(photos, methods, model, card, device, target, progress: bool):
    from tqdm import tqdm

    bar = tqdm(
        total=len(photos) * len(methods), unit="map", disable=not progress, file=sys.stderr, position=0
    )
    rows = []
    with bar:
        for path, photo in photos:
            batch = to_input(photo, card).to(device)
            with torch.no_grad():
                probabilities = model(batch).softmax(dim=1)[0]
            cls = target if target is not None else int(probabilities.argmax())
            small = photo.resize(_panel_size(photo), Image.Resampling.LANCZOS)
            label = f"{card.class_name(cls)} ({cls}), p={float(probabilities[cls]):.2f}"
            panels = [Panel("photo", small, f"{path.name}\n{label}")]
            for name, method in methods.items():
                bar.set_description(f"{path.name} {name}")
                start = time.perf_counter()
                raw = method(batch, cls)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - start
                heat = upsample(raw, (small.height, small.width))[0].cpu().numpy().astype(np.float32)
                short_class = card.class_name(cls).split(",")[0]
                panels.append(Panel(name, overlay(small, heat), f"{name}\n{short_class}, {seconds:.2f} s"))
                bar.update()
            rows.append(panels)
    return rows


def _draw(rows: list[list[Panel]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(rows[0])
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(2.1 * columns, 2.35 * len(rows)), squeeze=False, layout="constrained"
    )
    for row, panels in zip(axes, rows):
        for axis, panel in zip(row, panels):
            axis.imshow(panel.image)
            axis.set_title(panel.title, fontsize=7)
            axis.set_axis_off()
    try:  # written beside the target and renamed, so that an interruption never leaves half a PNG
        atomic_write(out, lambda handle: figure.savefig(handle, format="png", dpi=110))
    except OSError as exc:
        raise JitterCamError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
