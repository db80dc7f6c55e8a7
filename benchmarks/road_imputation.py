"""Cost of ROAD's noisy linear imputation: the 18 solves one image needs (MoRF and LeRF at 10, 20, ..., 90 %),
one at a time and several at once, against pytorch-grad-cam's imputer (when installed).

The removal orders come from a real map: Grad-CAM of EfficientNet-Lite0 (real weights) on the example photos,
resized bilinearly to 224 × 224 and ranked as `metrics.road` ranks it. Each setting is timed over all photos,
the fastest of `--repeats` kept; the imputed images are checked equal across thread counts.

    python benchmarks/road_imputation.py --photos 4 --threads 1 2 --repeats 3
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import jittercam
from jittercam import metrics, runtime
from jittercam.maps import resize

ROOT = Path(__file__).resolve().parents[1]
PERCENTAGES = range(10, 100, 10)


def masks_and_images(photos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 224, 224) input tensors and (N, 18, 224, 224) removal masks, 18 per photo."""
    model = jittercam.load_model("efficientnet_lite0")
    card = jittercam.model_card(model)
    paths = sorted((ROOT / "examples" / "images").glob("*.JPEG"))[:photos]
    images = torch.cat([jittercam.data.to_input(jittercam.data.load_image(p), card) for p in paths])
    maps = jittercam.create("gradcam", model)(images)
    flat = resize(maps, images.shape[-2:]).flatten(1)
    rank = torch.empty_like(flat, dtype=torch.long)
    rank.scatter_(1, flat.argsort(dim=1, descending=True, stable=True), torch.arange(flat.shape[1]).expand_as(flat))
    rank = rank.view(-1, *images.shape[-2:])
    size = rank[0].numel()
    removed = [torch.stack([rank < int(size * p / 100), rank >= size - int(size * p / 100)], 1)
               for p in PERCENTAGES]
    return images, torch.cat(removed, 1)


def fastest(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, runtime.usable_cpus()])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer", action="store_true", help="also time pytorch-grad-cam's NoisyLinearImputer")
    args = parser.parse_args()

    images, removed = masks_and_images(args.photos)
    n = images.shape[0]
    repeated = images.repeat_interleave(removed.shape[1], 0)
    flat_masks = removed.flatten(0, 1)
    print(f"{runtime.machine()}; {n} photos x {removed.shape[1]} masks, 224 x 224")
    reference = None
    for threads in args.threads:
        seconds, out = fastest(lambda t=threads: metrics.noisy_linear_imputation(
            repeated, flat_masks, 0.01, threads=t, generator=torch.Generator().manual_seed(0)), args.repeats)
        same = "" if reference is None else f"  equal to 1 thread: {torch.equal(out, reference)}"
        reference = out if reference is None else reference
        print(f"jittercam, {threads} thread(s): {seconds / n:.3f} s per image{same}")
    if args.peer:
        from pytorch_grad_cam.metrics.road import NoisyLinearImputer

        imputer = NoisyLinearImputer(noise=0.01)
        seconds, _ = fastest(lambda: [imputer(x, (~m).float()) for x, m in zip(repeated, flat_masks)], 1)
        print(f"pytorch-grad-cam's NoisyLinearImputer: {seconds / n:.3f} s per image")


if __name__ == "__main__":
    main()
