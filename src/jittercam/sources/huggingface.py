"""Hugging Face image classifiers: model objects (`load_model(model)`) and `load_model("hf:NAME")`
(`pip install 'jittercam[hf]'`).

A Hugging Face classifier returns an output object; the methods need a `(B, classes)` tensor, so it is
wrapped in `HuggingFaceClassifier`, whose forward returns the logits and which holds the model itself (not
a copy) as its submodule `model`: a target layer is the model's module, or its dotted name with `model.`
in front. The card: class names from the configuration's `id2label`; normalisation, input size,
interpolation and crop from the model's image processor when it is on this machine (Hugging Face's cache or
the model's folder); offline without it, the input size is the configuration's `image_size` (else 224 px)
and the rest the defaults of the image processor class transformers pairs with the architecture (as
`ConvNextImageProcessor()` has them; a checkpoint's own processor may differ, e.g. ImageNet's mean where the
class has 0.5), else ImageNet's; `multi_label` from the configuration's `problem_type`. transformers is
imported only when such a model is built or recognised.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..card import IMAGENET_MEAN, IMAGENET_STD, ModelCard, attached_card, imagenet_categories
from ..errors import JitterCamError
from ..models import RANDOM, load_state_file, register_model_adapter, register_model_prefix
from .hub import quiet_downloads, require

__all__ = ["PREFIX", "HuggingFaceClassifier", "adapt", "build", "card_of"]

PREFIX = "hf"


class HuggingFaceClassifier(nn.Module):
    """A Hugging Face image classifier as the methods call it: `forward(images)` returns the logits.

    Args:
        model: the classifier (e.g. `AutoModelForImageClassification.from_pretrained(...)`); held, not copied.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training  # a new module says True: `train(self.training)` would flip the model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The logits.

        Args:
            images: `(B, 3, H, W)` normalised pixels.

        Returns:
            `(B, classes)` logits.

        Raises:
            JitterCamError: the model's output has no logits (a backbone, not an image classifier).
        """
        logits = getattr(self.model(pixel_values=images), "logits", None)
        if not isinstance(logits, torch.Tensor):
            raise JitterCamError(f"{type(self.model).__name__} gives no logits: explain an image classifier "
                                 "(e.g. AutoModelForImageClassification), not a backbone")
        return logits


@register_model_prefix(PREFIX, summary="Hugging Face image classifiers, e.g. hf:ORG/NAME; pip install 'jittercam[hf]'")
def build(name: str, weights: str | Path | None) -> tuple[nn.Module, ModelCard]:
    """The model `load_model("hf:NAME", weights)` builds.

    Args:
        name: a model id on the Hugging Face hub (`ORG/NAME`), a folder saved with `save_pretrained`, or (for
            `weights="random"` only) an architecture's model type such as `resnet`, `convnext`, `vit` (its
            default configuration).
        weights: None: the pretrained model (Hugging Face's cache, else a download); a folder saved with
            `save_pretrained`; a state dict or `.safetensors` file for the configuration of `name`;
            `"random"`: random initialisation from the configuration of `name`.

    Returns:
        The wrapped model (`HuggingFaceClassifier`) and its card (`card_of`).

    Raises:
        JitterCamError: transformers is not installed; the model or its configuration cannot be had (the
            message says what to pass instead); a weights file that is missing or does not fit.
    """
    transformers = require("transformers", "hf", f"{PREFIX}:{name}")
    auto = transformers.AutoModelForImageClassification
    if weights is None or (weights != RANDOM and Path(weights).is_dir()):
        source = name if weights is None else str(weights)
        try:
            with quiet_downloads():
                model, info = auto.from_pretrained(source, output_loading_info=True)
        except Exception as exc:  # noqa: BLE001 - network, hub, disk, not a classifier: no model
            raise JitterCamError(
                f"cannot get the pretrained {PREFIX}:{name} ({type(exc).__name__}: {_first_line(exc)}); save it "
                f"with save_pretrained(FOLDER) where there is a network and pass weights=FOLDER (or {RANDOM!r} "
                f"for random weights)", option="weights"
            ) from None
        missing = list(info.get("missing_keys") or [])
        if missing:  # e.g. a backbone's checkpoint: transformers would add a random head, and only log it
            raise JitterCamError(f"the pretrained {PREFIX}:{name} is not a complete image classifier: {len(missing)} "
                                 f"of its weights are missing (e.g. {sorted(missing)[0]!r}), they would be random")
    else:
        if weights != RANDOM and not Path(weights).is_file():  # before the configuration is looked for
            raise JitterCamError(f"weights file not found: {weights}")
        model = auto.from_config(_config(transformers, name))
        if weights != RANDOM:
            load_state_file(model, weights, f"{PREFIX}:{name}")
    wrapped = HuggingFaceClassifier(model)
    return wrapped, card_of(model, f"{PREFIX}:{name}")


def _config(transformers: Any, name: str) -> Any:
    mapping = transformers.models.auto.configuration_auto.CONFIG_MAPPING
    if name in mapping:
        return transformers.AutoConfig.for_model(name)
    try:
        with quiet_downloads():
            return transformers.AutoConfig.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - as for the model: no configuration to build from
        raise JitterCamError(
            f"cannot get the configuration of {PREFIX}:{name} ({type(exc).__name__}); name a model in Hugging "
            f"Face's cache, a folder saved with save_pretrained, or a model type such as resnet, convnext, vit"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no detail"


def card_of(model: nn.Module, name: str | None = None) -> ModelCard:
    """The card of a Hugging Face image classifier (see the module's docstring for where each part comes
    from).

    Args:
        model: the classifier (not wrapped): it carries `config`.
        name: the card's name; by default `hf:` and the configuration's `name_or_path`, else the class name.

    Returns:
        Its card.
    """
    config = getattr(model, "config", None)
    processor, own = _processor(config)
    size = (_size(getattr(processor, "size", None)) if own else None) or _int(getattr(config, "image_size",
                                                                                       None)) or 224
    where = getattr(config, "name_or_path", "") or ""
    return ModelCard(
        name=name or (f"{PREFIX}:{where}" if where else type(model).__name__),
        input_size=size,
        mean=_triple(getattr(processor, "image_mean", None), IMAGENET_MEAN),
        std=_triple(getattr(processor, "image_std", None), IMAGENET_STD),
        categories=_categories(config),
        interpolation=_resample_name(getattr(processor, "resample", None)),
        crop_pct=float(getattr(processor, "crop_pct", None) or 1.0),
        multi_label=getattr(config, "problem_type", None) == "multi_label_classification",
    )


def _processor(config: Any) -> tuple[Any, bool]:
    """The model's own image processor from this machine (and True), else the default one of its
    architecture (and False), else None."""
    transformers = sys.modules.get("transformers")
    if transformers is None or config is None:
        return None, False
    where = getattr(config, "name_or_path", "") or ""
    if where:
        try:
            with quiet_downloads():
                return transformers.AutoImageProcessor.from_pretrained(where, local_files_only=True), True
        except Exception:  # noqa: BLE001 - not on this machine: the architecture's defaults then
            pass
    names = transformers.models.auto.image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES.get(
        getattr(config, "model_type", None))
    if isinstance(names, Mapping):
        names = names.get("torchvision") or next(iter(names.values()), None)
    elif isinstance(names, (tuple, list)):
        names = next((n for n in names if n), None)
    try:
        return (getattr(transformers, names)() if isinstance(names, str) else None), False
    except Exception:  # noqa: BLE001 - a processor class that needs arguments or packages: no defaults
        return None, False


def _size(size: Any) -> int | None:
    """The square input a processor's `size` describes (height and width, or the shortest edge)."""
    if size is None:
        return None
    if isinstance(size, int):
        return size
    get = size.get if isinstance(size, Mapping) else lambda key: getattr(size, key, None)
    height, width = get("height"), get("width")
    if height and width:
        return int(height)
    edge = get("shortest_edge")
    return int(edge) if edge else None


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], int):
        return int(value[0])
    return None


def _triple(values: Any, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if values is None or isinstance(values, (int, float)) or len(values) != 3:
        return default
    return (float(values[0]), float(values[1]), float(values[2]))


def _resample_name(resample: Any) -> str:
    if resample is None:
        return "bilinear"
    if hasattr(resample, "value"):  # an enum (PILImageResampling, InterpolationMode)
        resample = resample.value
    if isinstance(resample, str):
        return resample.lower()
    try:
        return Image.Resampling(int(resample)).name.lower()
    except (ValueError, TypeError):
        return "bilinear"


def _categories(config: Any) -> tuple[str, ...] | None:
    """The class names of `id2label`; ImageNet's for 1000 placeholder labels (`LABEL_0`, …); none for
    other placeholders."""
    labels = getattr(config, "id2label", None)
    if not labels:
        return None
    names = [str(labels.get(i, labels.get(str(i), f"class {i}"))) for i in range(len(labels))]
    if all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        return imagenet_categories() if len(names) == 1000 else None
    return tuple(names)


@register_model_adapter
def adapt(model: nn.Module) -> tuple[nn.Module, ModelCard] | None:
    """`load_model(model)` for a Hugging Face classifier: wrapped (`HuggingFaceClassifier`), with its card
    (the attached one if it has one); None for any other object (transformers not even imported).

    Args:
        model: any module.

    Returns:
        `(wrapped model, card)`, or None.
    """
    transformers = sys.modules.get("transformers")
    if transformers is None or not isinstance(model, transformers.PreTrainedModel):
        return None
    return HuggingFaceClassifier(model), attached_card(model) or card_of(model)
