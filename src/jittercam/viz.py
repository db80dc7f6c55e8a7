"""Heat maps over photos, in bounded memory: a 48-megapixel photo is blended a stripe of rows at a time."""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from .errors import JitterCamError

_ROWS_PER_STRIPE = 256
_LEVELS = 256  # matplotlib's colormaps have 256 entries: a map value x picks entry min(floor(256 x), 255)


def check_colormap(name: str) -> str:
    """`name` if matplotlib knows the colour map, else a `JitterCamError` naming some that exist."""
    if name not in colormaps:
        raise JitterCamError(
            f"unknown colour map {name!r}; e.g. jet, turbo, viridis, inferno, magma, plasma, gray "
            "(any matplotlib colour map name)", option="cmap"
        )
    return name


def check_alpha(alpha: float) -> float:
    """`alpha` if it is a weight in [0, 1], else a `JitterCamError` (`option="alpha"`)."""
    if not 0.0 <= alpha <= 1.0:
        raise JitterCamError(f"alpha must be between 0 and 1, got {alpha}", option="alpha")
    return alpha


def colour_table(cmap: str) -> np.ndarray:
    """The colour map as a `(256, 3)` float32 table of RGB in [0, 1]."""
    return colormaps[check_colormap(cmap)](np.arange(_LEVELS))[:, :3].astype(np.float32)


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """Blend a map in [0, 1] over the picture: `(1 - alpha) * photo + alpha * cmap(heat)`, at the
    picture's size (Pillow's `Image.blend`: within one grey level of the exact blend).

    `heat` is `(H, W)` — the picture's size — or any smaller size of the same aspect, which is resized
    bilinearly (half-pixel centres, as `jittercam.resize`) to the picture's size one stripe of rows at a
    time, so that memory stays near two pictures' worth of bytes whatever the photo's size.
    """
    check_alpha(alpha)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"map must be 2-D (H, W), got shape {heat.shape}")
    palette = np.rint(colour_table(cmap) * 255).astype(np.uint8).tobytes()
    photo = image if image.mode == "RGB" else image.convert("RGB")
    width, height = photo.size
    rows = _bilinear(heat.shape[0], height)
    columns = _bilinear(heat.shape[1], width)
    if columns is not None:  # the horizontal pass once: (h, W) floats, at most ~1024 rows
        first, second, weight = columns
        heat = heat[:, first] * (1.0 - weight) + heat[:, second] * weight
    result = Image.new("RGB", (width, height))
    for top in range(0, height, _ROWS_PER_STRIPE):
        bottom = min(height, top + _ROWS_PER_STRIPE)
        if rows is None:
            stripe = heat[top:bottom]
        else:
            first, second, weight = (part[top:bottom, None] for part in rows)
            stripe = heat[first[:, 0]] * (1.0 - weight) + heat[second[:, 0]] * weight
        levels = Image.fromarray(np.clip(stripe * _LEVELS, 0, _LEVELS - 1).astype(np.uint8))
        levels.putpalette(palette)
        box = (0, top, width, bottom)
        result.paste(Image.blend(photo.crop(box), levels.convert("RGB"), alpha), box)
    return result


def _bilinear(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """For each of `target` output positions: the two source indices and the weight of the second, with
    torch's `align_corners=False` rule (source = (i + 0.5) * source / target - 0.5, clamped at 0). None
    when the sizes are equal (no resize)."""
    if source == target:
        return None
    position = np.maximum((np.arange(target, dtype=np.float64) + 0.5) * (source / target) - 0.5, 0.0)
    first = np.minimum(np.floor(position).astype(np.intp), source - 1)
    second = np.minimum(first + 1, source - 1)
    return first, second, (position - first).astype(np.float32)


def titled(image: Image.Image, text: str) -> Image.Image:
    """`image` with a black strip above it holding `text` in white (the picture itself is not covered;
    the strip's height scales with the picture's width)."""
    width = image.width
    size = max(11, round(width / 40))
    font = _font(size)
    while size > 8 and ImageDraw.Draw(image).textlength(text, font=font) > width - size:
        size -= 1
        font = _font(size)
    strip = round(size * 1.6)
    result = Image.new("RGB", (width, image.height + strip), (0, 0, 0))
    result.paste(image, (0, strip))
    ImageDraw.Draw(result).text((size // 2, strip // 2), text, fill=(255, 255, 255), font=font, anchor="lm")
    return result


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()
