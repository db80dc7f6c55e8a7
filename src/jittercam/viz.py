"""Heat maps over photos."""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """Blend a map in [0, 1] of the picture's size (H × W) over the picture, coloured with `cmap`."""
    if heat.shape != (image.height, image.width):
        raise ValueError(f"map shape {heat.shape} does not match the image's {(image.height, image.width)}")
    colours = colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3]
    photo = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    blended = (1.0 - alpha) * photo + alpha * colours
    return Image.fromarray(np.round(blended * 255.0).astype(np.uint8))
