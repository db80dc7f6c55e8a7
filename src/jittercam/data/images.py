"""Image files to RGB pictures, and pictures to the normalised tensors a model takes."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError

from ..errors import JitterCamError
from ..models import ModelCard


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as RGB; a missing path or a file that is not an image is a `JitterCamError`."""
    path = Path(path)
    if not path.exists():
        raise JitterCamError(f"no such file: {path}")
    if not path.is_file():
        raise JitterCamError(f"not a file: {path}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "cannot identify image file" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise JitterCamError(f"not an image: {path} ({reason})") from None


def to_input(image: Image.Image, card: ModelCard) -> torch.Tensor:
    """The whole picture (no crop) resized to the model's square input and normalised: `(1, 3, p, p)`."""
    size = [card.input_size, card.input_size]
    pixels = TF.to_tensor(TF.resize(image, size, antialias=True))
    return TF.normalize(pixels, card.mean, card.std).unsqueeze(0)
