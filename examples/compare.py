"""Grad-CAM next to Jitter-CAM on the example photos, as one figure (the README's picture).

    .venv/bin/python examples/compare.py --out docs/gradcam-vs-jittercam.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import jittercam  # noqa: E402
from jittercam.viz import overlay  # noqa: E402

HERE = Path(__file__).resolve().parent
PHOTOS = ["ILSVRC2012_val_00000262.JPEG", "ILSVRC2012_val_00008828.JPEG", "catdog.png"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["gradcam", "jittercam"])
    parser.add_argument("--out", type=Path, default=Path("gradcam-vs-jittercam.png"))
    args = parser.parse_args()

    model = jittercam.load_model("efficientnet_lite0")
    card = jittercam.model_card(model)
    methods = {name: jittercam.create(name, model) for name in args.methods}
    figure, axes = plt.subplots(len(PHOTOS), len(methods), figsize=(3.2 * len(methods), 2.6 * len(PHOTOS)))
    for row, photo in enumerate(PHOTOS):
        image = jittercam.data.load_image(HERE / "images" / photo)
        batch = jittercam.data.to_input(image, card)
        for col, (name, method) in enumerate(methods.items()):
            raw = method(batch)
            heat = jittercam.upsample(raw, (image.height, image.width))[0].numpy()
            axis = axes[row, col]
            axis.imshow(overlay(image, heat))
            axis.set_axis_off()
            size = raw.shape[-1]
            axis.set_title(f"{name} ({size}×{size})" if row == 0 else "", fontsize=10)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
