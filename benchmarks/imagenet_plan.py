"""How long Jitter-CAM + deletion + insertion take for all 50,000 ImageNet validation images, measured
on a slice: real JPEGs decoded and resized by DataLoader workers, explained and scored in batches.

    python benchmarks/imagenet_plan.py --device cuda --images 512 [--precision bf16] [--model resnet50] [--compile]

The slice is the project's example photos repeated (decoding is part of the cost; the photos' content
is not). Random weights are fine for timing. Prints seconds per image for each stage and the whole, the
extrapolation to 50,000 images, and, for reduced precision, how far maps and AUCs are from fp32.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from functools import partial
from pathlib import Path

import jittercam  # before torch: it makes OpenMP wait passively

# isort: split
import torch
from torch.utils.data import DataLoader, Dataset

import jittercam.metrics as metrics
from jittercam import tuning
from jittercam.data import load_image, to_input
from jittercam.methods import create
from jittercam.models import model_card
from jittercam.runtime import synchronize, timed

PHOTOS = sorted((Path(__file__).resolve().parent.parent / "examples" / "images").glob("ILSVRC2012_val_*.JPEG"))
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Repeated(Dataset):
    def __init__(self, count: int, card) -> None:
        self.count, self.card = count, card

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_input(load_image(PHOTOS[index % len(PHOTOS)]), self.card)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=512, help="images in the slice")
    parser.add_argument("--batch-images", type=int, default=16, help="images per step")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--compile", action="store_true",
                        help="Jitter-CAM and deletion/insertion through torch.compile (compiled in the warm-up)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    jittercam.runtime.retain_freed_memory()  # as the command line does (benchmarks/cpu_memory.py)
    device = torch.device(args.device)
    weights = None if args.model == "efficientnet_lite0" else "random"
    model = jittercam.load_model(args.model, weights=weights).to(device).eval()
    card = model_card(model)
    plan = tuning.tune(model, device)
    print(f"plan: batch {plan.batch_size}, channels_last={plan.channels_last}, "
          f"{plan.seconds_per_image * 1e3:.3f} ms/forward (contiguous {plan.contiguous_seconds_per_image * 1e3:.3f})")
    jitter = create("jittercam", model, precision=args.precision, compile=args.compile)
    amp = DTYPES[args.precision]
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
    loader = DataLoader(Repeated(args.images, card), batch_size=args.batch_images, num_workers=args.workers,
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)

    def step(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maps = jitter(images)
        with autocast():
            scores = metrics.deletion_insertion(model, images, maps, compile=args.compile)
        return maps, scores.deletion.auc, scores.insertion.auc

    first = next(iter(loader)).to(device)
    step(first)  # warm-up (kernels, allocator)
    synchronize(device)

    def scored(images: torch.Tensor, maps: torch.Tensor) -> None:
        with autocast():
            metrics.deletion_insertion(model, images, maps, compile=args.compile)

    explain = score = 0.0
    start = time.perf_counter()
    for images in loader:
        images = images.to(device, non_blocking=True)
        maps, seconds = timed(partial(jitter, images), device)
        explain += seconds
        score += timed(partial(scored, images, maps), device)[1]
    total = time.perf_counter() - start
    per_image = total / args.images
    result = {
        "model": args.model, "device": tuning.device_name(device), "precision": args.precision,
        "images": args.images, "batch_images": args.batch_images, "plan_batch": plan.batch_size,
        "channels_last": plan.channels_last, "jittercam_ms": explain / args.images * 1e3,
        "deletion_insertion_ms": score / args.images * 1e3, "total_ms": per_image * 1e3,
        "imagenet_val_minutes": per_image * 50_000 / 60, "torch": torch.__version__, "compile": args.compile,
    }
    if amp is not None:  # distance from fp32 on the first batch
        full = create("jittercam", model)
        with torch.no_grad():
            ref_maps = full(first)
            ref = metrics.deletion_insertion(model, first, ref_maps)
            maps, deletion, insertion = step(first)
        scale = ref_maps.flatten(1).amax(1).clamp_min(1e-12)
        result["map_max_rel_diff"] = float(((maps - ref_maps).flatten(1).abs().amax(1) / scale).max())
        result["deletion_max_abs_diff"] = float((deletion - ref.deletion.auc).abs().max())
        result["insertion_max_abs_diff"] = float((insertion - ref.insertion.auc).abs().max())
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
