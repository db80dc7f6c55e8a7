"""Image files to RGB pictures as a viewer displays them, and pictures to the tensors a model takes.

What "as displayed" means here:

* the EXIF orientation (JPEG, PNG, TIFF, WebP) is applied (`PIL.ImageOps.exif_transpose`), so a phone
  photo stored sideways is explained, and overlaid, upright;
* single-channel images of more than 8 bits are scaled to 8 bits by their real range, never clipped:
  16-bit (`I;16`) by 0..65535; 32-bit integers (`I`) by 0..65535 when all values lie there (16-bit data
  in a 32-bit container), else by their own minimum..maximum; floats (`F`) as they are when all finite
  values lie in [0, 1], else by their own minimum..maximum (NaN and ±inf become the minimum / maximum).
  16-bit RGB PNGs are read by Pillow at 8 bits (the high byte), which is the same scaling;
* transparency is composited over white, as a browser shows it on a white page;
* other modes (palette, CMYK, grey, 1-bit) are converted to RGB by Pillow.

Pictures smaller than `MIN_SIDE` pixels on a side are refused: a model input is ~224 px, and a map of a
tiny icon stretched that far explains nothing.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..card import ModelCard
from ..errors import JitterCamError

MIN_SIDE = 32  # pixels, on the shorter side of the picture as displayed
_ORIENTATION = 0x0112  # EXIF tag
_SWAPS_SIDES = {5, 6, 7, 8}  # orientations that rotate by 90 degrees
_ROWS_PER_STRIPE = 512  # high-bit images are scaled this many rows at a time (bounded float memory)
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)


class BadImage(JitterCamError):
    """A file that cannot be explained: empty, not an image, truncated, too small or too large.

    Args:
        path: the file.
        problem: what is wrong, in a few words without the path (`truncated`, `too small (20x200 pixels)`).
        message: the whole one-line message.
    """

    def __init__(self, path: Path, problem: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.problem = problem

    def __reduce__(self):  # keeps path and problem through pickling
        return type(self), (self.path, self.problem, str(self))


def bad_images(errors: Sequence[BadImage], skip_option: str | None = None) -> JitterCamError:
    """One error for several bad files, naming every one with its problem; a single file keeps its own message.

    Args:
        errors: what `check_image` raised, one per file.
        skip_option: the parameter that leaves bad files out, named in the message (None: not offered).
    """
    noun = "it" if len(errors) == 1 else "them"
    hint = f"; {skip_option} leaves {noun} out" if skip_option else ""
    if len(errors) == 1:
        return JitterCamError(f"{errors[0]}{hint}", option=skip_option)
    listed = "; ".join(f"{error.path}: {error.problem}" for error in errors)
    head = f"{len(errors)} images cannot be explained"
    return JitterCamError(f"{head} ({hint[2:]}): {listed}" if hint else f"{head}: {listed}", option=skip_option)


@dataclass(frozen=True)
class ImageInfo:
    """What a header (and a test decode) says about an image file.

    Attributes:
        path: the file.
        width: the width as displayed (after the EXIF orientation), in pixels.
        height: the height as displayed, in pixels.
        format: Pillow's format name (`"JPEG"`), None when Pillow does not say.
        mode: Pillow's pixel mode as stored (`"RGB"`, `"I;16"`, `"CMYK"`).
    """

    path: Path
    width: int
    height: int
    format: str | None
    mode: str


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise JitterCamError(f"no such file: {path}")
    if not path.is_file():
        raise JitterCamError(f"not a file: {path}")
    return path


def _open(path: Path) -> Image.Image:
    """`Image.open` with Pillow's errors turned into one-line `JitterCamError`s."""
    if path.stat().st_size == 0:  # Pillow's "cannot identify image file" would not say why
        raise BadImage(path, "an empty file (0 bytes)", f"empty file: {path} (0 bytes)")
    try:
        with warnings.catch_warnings():
            # photos of 90-180 megapixels are legitimate here (one is held at a time); above that Pillow
            # raises DecompressionBombError, reported below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError:
        limit = Image.MAX_IMAGE_PIXELS
        if limit is None:  # cannot happen: Pillow checks the size against a limit only when there is one
            raise BadImage(path, "too large", f"image too large: {path}") from None
        raise BadImage(path, f"too large (more than {2 * limit} pixels)",
                       f"image too large: {path} (more than {2 * limit} pixels)") from None
    except _DECODE_ERRORS as exc:
        raise _not_an_image(path, exc) from None


def _not_an_image(path: Path, exc: Exception) -> BadImage:
    """The error for a file Pillow cannot read: `truncated` when the file ends early (Pillow says "image file
    is truncated" once it knows the format), else `not an image` with Pillow's reason."""
    reason = "cannot identify image file" if isinstance(exc, UnidentifiedImageError) else str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and "truncated" in reason.lower():
        return BadImage(path, "truncated", f"truncated image: {path} (the file ends before the picture does)")
    return BadImage(path, f"not an image ({reason})", f"not an image: {path} ({reason})")


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) after the EXIF orientation is applied, read from the header only."""
    width, height = image.size
    try:
        orientation = image.getexif().get(_ORIENTATION)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as exif_transpose ignores it
        orientation = None
    return (height, width) if orientation in _SWAPS_SIDES else (width, height)


def _check_size(path: Path, size: tuple[int, int], min_side: int) -> None:
    if min(size) < min_side:
        raise BadImage(
            path, f"too small ({size[0]}x{size[1]} pixels, under {min_side} on a side)",
            f"image too small: {path} is {size[0]}x{size[1]} pixels; at least {min_side} on each side is needed"
        )


def check_image(path: str | Path, min_side: int = MIN_SIDE) -> ImageInfo:
    """Check that `path` is an image this package can explain, without keeping its pixels: the header is
    read, the size checked, and the file decoded once (JPEGs at 1/8 scale), so that a truncated or
    corrupt file is found before any computing.

    Args:
        path: the image file.
        min_side: the smallest side accepted, in pixels.

    Returns:
        The file's size as displayed, format and mode.

    Raises:
        BadImage: empty, not an image, truncated, too small or too large (one line, with the file's path).
        JitterCamError: no such file, or not a file.
    """
    path = _check_path(path)
    image = _open(path)
    with image:
        size = displayed_size(image)
        _check_size(path, size, min_side)
        format_, mode = image.format, image.mode
        try:
            if format_ == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        except _DECODE_ERRORS as exc:
            raise _not_an_image(path, exc) from None
    return ImageInfo(path, size[0], size[1], format_, mode)


def load_image(path: str | Path, min_side: int = MIN_SIDE) -> Image.Image:
    """Read an image file as an 8-bit RGB picture the way a viewer displays it (see the module's
    docstring: EXIF orientation, high-bit scaling, transparency over white).

    Args:
        path: the image file.
        min_side: the smallest side accepted, in pixels.

    Returns:
        The picture, 8-bit RGB, upright.

    Raises:
        BadImage: empty, not an image, truncated, or under `min_side` pixels (one line, with the file's path).
        JitterCamError: no such file, or not a file.
    """
    path = _check_path(path)
    image = _open(path)
    with image:
        _check_size(path, displayed_size(image), min_side)
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
        except _DECODE_ERRORS as exc:
            raise _not_an_image(path, exc) from None
    return as_rgb(upright)


def as_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB: high-bit grey scaled by its real range, alpha composited over white.

    Args:
        image: a picture in any of Pillow's modes.

    Returns:
        An RGB picture; `image` itself when it already is one.
    """
    mode = image.mode
    if mode.startswith("I;16"):
        return _grey_to_rgb(np.asarray(image), 0.0, 65535.0)
    if mode == "I":
        pixels = np.asarray(image)
        low, high = float(pixels.min()), float(pixels.max())
        if low >= 0 and high <= 65535:
            low, high = 0.0, 65535.0
        return _grey_to_rgb(pixels, low, high)
    if mode == "F":
        pixels = np.asarray(image)
        finite = pixels[np.isfinite(pixels)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if low >= 0 and high <= 1:
            low, high = 0.0, 1.0
        return _grey_to_rgb(pixels, low, high)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return white.convert("RGB")
    return image.convert("RGB") if mode != "RGB" else image


def _grey_to_rgb(pixels: np.ndarray, low: float, high: float) -> Image.Image:
    """Grey values scaled from [low, high] to 0..255 (rounded), a stripe of rows at a time; a constant
    image (high == low) becomes black."""
    out = np.empty(pixels.shape, dtype=np.uint8)
    span = high - low
    for start in range(0, pixels.shape[0], _ROWS_PER_STRIPE):
        stripe = pixels[start : start + _ROWS_PER_STRIPE].astype(np.float64)
        stripe = np.nan_to_num(stripe, nan=low, posinf=high, neginf=low)
        scaled = (stripe - low) * (255.0 / span) if span > 0 else np.zeros_like(stripe)
        out[start : start + _ROWS_PER_STRIPE] = np.clip(np.rint(scaled), 0, 255)
    return Image.fromarray(out).convert("RGB")


def to_input(image: Image.Image, card: ModelCard) -> torch.Tensor:
    """The whole picture (no crop) resized to the model's square input and normalised.

    Args:
        image: an RGB picture (`load_image`).
        card: the model's card: its input size p, mean and std.

    Returns:
        `(1, 3, p, p)` float32, normalised with the card's mean and std.
    """
    import torchvision.transforms.functional as TF  # here: seconds to import, which a refused path never needs

    size = [card.input_size, card.input_size]
    pixels = TF.to_tensor(TF.resize(image, size, antialias=True))
    return TF.normalize(pixels, card.mean, card.std).unsqueeze(0)
