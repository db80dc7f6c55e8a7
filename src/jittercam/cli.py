"""The `jittercam` command: `jittercam explain IMAGE ... --out DIR`."""
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
from .errors import JitterCamError
from .maps import upsample
from .inputs import check_targets
from .methods import available_methods, check_method_name, create, method_options
from .models import available_models, load_model, model_card
from .viz import overlay


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jittercam", description="Class activation maps for image classifiers.")
    commands = parser.add_subparsers(dest="command", required=True)

    explain = commands.add_parser("explain", help="explain images and write heat maps")
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    explain.add_argument("--model", default="efficientnet_lite0", help="model name (default: %(default)s)")
    explain.add_argument("--method", nargs="+", default=["jittercam"], metavar="NAME",
                         help="one or more methods (default: jittercam); see `jittercam list`")
    explain.add_argument("--size", type=int, help="Jitter-CAM map size m+d (default: 2m)")
    explain.add_argument("--target", type=int, metavar="CLASS", help="class index to explain (default: top-1)")
    explain.add_argument("--weights", help="local state dict for the model (default: its pretrained weights)")
    explain.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="(default: %(default)s)")
    explain.add_argument("--batch-size", type=int, help="patches per forward pass (default: 4 on CPU, 64 on GPU)")
    explain.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the outputs")

    commands.add_parser("list", help="list the model and method names")
    return parser


@dataclass
class _Explanation:
    stem: str
    method: str
    image: Image.Image
    heat: np.ndarray  # float32, the image's H x W, in [0, 1]


def _explain(args: argparse.Namespace) -> list[_Explanation]:
    for name in args.method:
        check_method_name(name)
    if args.size is not None and not any("size" in method_options(name) for name in args.method):
        raise JitterCamError("--size applies to jittercam and upscale methods only")
    if args.batch_size is not None and args.batch_size < 1:
        raise JitterCamError("--batch-size must be at least 1")
    images = [(Path(path), load_image(path)) for path in args.images]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise JitterCamError("--device cuda: no CUDA device is available")
    device = torch.device(args.device)

    model = load_model(args.model, weights=args.weights).to(device)
    card = model_card(model)
    methods = {}
    for name in args.method:
        options = {"batch_size": args.batch_size}
        if "size" in method_options(name):
            options["size"] = args.size
        methods[name] = create(name, model, **options)
    classes = next(iter(methods.values())).layer.num_classes
    if args.target is not None:
        check_targets(args.target, 1, classes, device)

    results = []
    for path, image in images:
        batch = to_input(image, card).to(device)
        with torch.no_grad():
            probabilities = model(batch).softmax(dim=1)[0]
        target = args.target if args.target is not None else int(probabilities.argmax())
        for name, method in methods.items():
            start = time.perf_counter()
            raw = method(batch, target)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            heat = upsample(raw, (image.height, image.width))[0].cpu().numpy().astype(np.float32)
            results.append(_Explanation(path.stem, name, image, heat))
            print(
                f"{path.name}  {name}  class {target} ({card.class_name(target)})  "
                f"p={float(probabilities[target]):.3f}  {seconds:.2f} s",
                flush=True,
            )
    return results


def _write(results: list[_Explanation], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for result in results:
        base = out / f"{result.stem}.{result.method.replace(':', '-')}"
        np.save(base.with_name(base.name + ".npy"), result.heat)
        overlay(result.image, result.heat).save(base.with_name(base.name + ".png"))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            print("models: efficientnet_lite0 (offline default) and torchvision classifiers:")
            print("  " + ", ".join(name for name in available_models() if name != "efficientnet_lite0"))
            print("methods: " + ", ".join(available_methods()))
            return 0
        if args.out.exists() and not args.out.is_dir():
            raise JitterCamError(f"--out {args.out} exists and is not a folder")
        results = _explain(args)  # everything is computed before the first file is written
        _write(results, args.out)
        print(f"wrote {2 * len(results)} files to {args.out}")
        return 0
    except JitterCamError as exc:
        print(f"jittercam: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
