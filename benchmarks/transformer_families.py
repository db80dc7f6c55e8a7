"""Which method works on which transformer family: the README's table, measured.

Builds each family of tests/families.py small with random weights, runs every method on one image at the
model's input size, and prints a markdown table: the map's size, or "refused" with the first words of the
one-line reason. `python benchmarks/transformer_families.py [--methods a,b]`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import jittercam
from families import FAMILIES

FAST = {"rise": {"masks": 64}, "scorecam": {"batch_size": 64}}


def default_methods() -> list[str]:
    return [name for name in jittercam.available_methods() if ":" not in name]


def outcome(family, method: str) -> str:
    model = family.build()
    options = {**FAST.get(method, {})}
    if "input_size" in jittercam.methods.method_options(method):
        options["input_size"] = family.pixels
    try:
        explainer = jittercam.create(method, model, **options)
        maps = explainer(torch.rand(1, 3, family.pixels, family.pixels), 1)
    except jittercam.JitterCamError as exc:
        return f"refused: {exc}"
    return "x".join(map(str, maps.shape[-2:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", help="comma-separated (default: every method, Jitter-CAM, Upscale-CAM)")
    args = parser.parse_args()
    methods = args.methods.split(",") if args.methods else default_methods()
    torch.set_num_threads(1)
    started = time.perf_counter()
    print("| family | layer | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    reasons = {}
    for family in FAMILIES.values():
        cells = []
        for method in methods:
            result = outcome(family, method)
            if result.startswith("refused"):
                reasons.setdefault(result, len(reasons) + 1)
                result = f"no ({reasons[result]})"
            cells.append(result)
        print(f"| {family.title} | `{family.layer or '—'}` | " + " | ".join(cells) + " |")
    for reason, number in reasons.items():
        print(f"\n({number}) {reason}")
    print(f"\n{time.perf_counter() - started:.0f} s, torch {torch.__version__}, 1 thread")


if __name__ == "__main__":
    main()
