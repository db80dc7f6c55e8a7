"""timm's classifiers: `load_model("timm:NAME")` (`pip install 'jittercam[timm]'`) and timm model objects.

The card comes from the model's pretrained configuration (`model.pretrained_cfg`): input size, mean and
std, interpolation and crop; the class names are timm's where it has them, ImageNet's for 1000 classes.
`weights=None` takes the pretrained weights from Hugging Face's cache or downloads them; when that fails
the error names the file to download and pass as `weights`. timm is imported only when a model is built.
"""
from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..card import IMAGENET_MEAN, IMAGENET_STD, ModelCard, attached_card, imagenet_categories
from ..errors import JitterCamError
from ..models import RANDOM, load_state_file, register_model_adapter, register_model_prefix
from .hub import quiet_downloads, require

__all__ = ["PREFIX", "adapt", "build", "card_of"]

PREFIX = "timm"


@register_model_prefix(PREFIX, summary="timm's classifiers, e.g. timm:resnet50; pip install 'jittercam[timm]'")
def build(name: str, weights: str | Path | None) -> tuple[nn.Module, ModelCard]:
    """The model `load_model("timm:NAME", weights)` builds.

    Args:
        name: a timm model name, optionally with its pretrained tag (`resnet18.a1_in1k`).
        weights: None: the pretrained weights (Hugging Face's cache, else a download); a path: a local state
            dict or `.safetensors` file with timm's keys; `"random"`: random initialisation.

    Returns:
        The model and its card (`card_of`).

    Raises:
        JitterCamError: timm is not installed; an unknown name; no pretrained weights to be had (the message
            names the file and the alternatives); a weights file that is missing or does not fit.
    """
    timm = require("timm", "timm", f"{PREFIX}:{name}")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "timm.list_models('*PATTERN*') lists them"
        raise JitterCamError(f"unknown timm model {name!r}; {hint}")
    if weights is None:
        model = _pretrained(timm, name)
    else:
        model = timm.create_model(name, pretrained=False)
        if weights != RANDOM:
            load_state_file(model, weights, f"{PREFIX}:{name}")
    return model, card_of(model, f"{PREFIX}:{name}")


def _pretrained(timm: Any, name: str) -> nn.Module:
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    url = getattr(cfg, "url", None)
    if not (hub_id or url or getattr(cfg, "file", None)):
        # timm would build it with random weights and a log message: never a silent random model
        raise JitterCamError(f"timm has no pretrained model {name}: pass weights=PATH to a local state dict "
                             f"(or {RANDOM!r} for random weights)", option="weights")
    try:
        with quiet_downloads():
            return timm.create_model(name, pretrained=True)
    except Exception as exc:  # noqa: BLE001 - network, proxy, disk, hub: all mean "no weights"
        source = f"model.safetensors from https://huggingface.co/{hub_id}" if hub_id else url
        raise JitterCamError(
            f"cannot download the pretrained {PREFIX}:{name} ({type(exc).__name__}); download {source} where "
            f"there is a network and pass weights=PATH (or {RANDOM!r} for random weights)", option="weights"
        ) from None


def card_of(model: nn.Module, name: str | None = None) -> ModelCard:
    """The card of a timm model, from its pretrained configuration.

    Args:
        model: a model timm built (it carries `pretrained_cfg`).
        name: the card's name; by default `timm:ARCHITECTURE[.TAG]` of the configuration.

    Returns:
        Its card: the configuration's square input size (the height of a non-square one; a vision
        transformer built for another fixed `img_size`: that one), mean, std, interpolation and crop; the
        class names for ImageNet's 1000 classes or those timm knows for its ImageNet subsets, else none.
    """
    cfg: Mapping[str, Any] = getattr(model, "pretrained_cfg", None) or {}
    tag = cfg.get("tag")
    classes = int(getattr(model, "num_classes", 0) or cfg.get("num_classes") or 0)
    size = cfg.get("input_size")
    pixels = int(size[-2]) if size else 224
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)  # a ViT built at another img_size
    if isinstance(built, (tuple, list)) and built and getattr(model.patch_embed, "strict_img_size", False):
        pixels = int(built[0])
    return ModelCard(
        name=name or f"{PREFIX}:{cfg.get('architecture') or type(model).__name__}" + (f".{tag}" if tag else ""),
        input_size=pixels,
        mean=_triple(cfg.get("mean"), IMAGENET_MEAN),
        std=_triple(cfg.get("std"), IMAGENET_STD),
        categories=_categories(model, classes),
        interpolation=str(cfg.get("interpolation") or "bilinear"),
        crop_pct=float(cfg.get("crop_pct") or 1.0),
    )


def _triple(values: Any, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if values is None or len(values) != 3:  # e.g. a greyscale model's single value
        return default
    return (float(values[0]), float(values[1]), float(values[2]))


def _categories(model: nn.Module, classes: int) -> tuple[str, ...] | None:
    if classes == 1000:
        return imagenet_categories()
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        names = ImageNetInfo(subset).label_descriptions() if subset else None
    except Exception:  # noqa: BLE001 - timm's label files are optional: no names then
        return None
    return tuple(names) if names is not None and len(names) == classes else None


@register_model_adapter
def adapt(model: nn.Module) -> tuple[nn.Module, ModelCard] | None:
    """`load_model(model)` for a model timm built: the model itself, its attached card if it has one, else
    the card of its pretrained configuration; None for any other object (timm not even imported).

    Args:
        model: any module.

    Returns:
        `(model, card)`, or None.
    """
    if "timm" not in sys.modules or not isinstance(getattr(model, "pretrained_cfg", None), Mapping):
        return None
    if not type(model).__module__.startswith("timm."):
        return None
    return model, attached_card(model) or card_of(model)
