"""The model card: what the library needs to know to feed a classifier, carried by the model itself.

A `ModelCard` is recorded when a model source builds a model (`jittercam.models.load_model`) and attached
to the module as a plain attribute, so copies and pickles keep it. A user's own model without a card gets
ImageNet defaults at 224 px from `model_card`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CARD_ATTRIBUTE = "jittercam_card"


@dataclass(frozen=True)
class ModelCard:
    """How to feed a model (square input size, normalisation of [0, 1] pixels, class names), and what a
    model source knows of it beyond its weights.

    Attributes:
        name: the model's name (a registered or torchvision name; a user's model: its class name).
        input_size: the square input size S in pixels (224 by default).
        mean: the per-channel mean that normalises [0, 1] pixels (ImageNet's by default).
        std: the per-channel standard deviation, likewise.
        categories: the class names, one per output; None when unknown.
        weights_file: the file the source read the weights from (the ground-truth model's file, by default
            the one in its cache), so that a run identifies the weights even when the source chose the file.
        heldout: the configuration of the held-out data a model was trained to be evaluated on (the
            ground-truth model's `GroundTruthDataset.config()`); not part of the card's hash.
        fusion_layers: the stage outputs a multi-layer method (LayerCAM) fuses by default.
        interpolation: the resize the model's weights were evaluated with (timm's pretrained configuration,
            a Hugging Face image processor's `resample`), as the source states it; recorded, not applied:
            `jittercam.data.to_input` resizes the whole picture bilinearly.
        crop_pct: the centre crop the weights were evaluated with (1.0: none); recorded, not applied: the
            methods explain the whole picture, so that a map covers every pixel.
        multi_label: the outputs are independent labels, each read through a sigmoid (a Hugging Face
            configuration's `problem_type` "multi_label_classification"), not classes sharing a softmax:
            `explain` reports each label's sigmoid as its probability.
    """

    name: str
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    categories: tuple[str, ...] | None = None
    weights_file: str | None = None
    heldout: Mapping[str, Any] | None = field(default=None, hash=False)  # a dict: not part of the hash
    fusion_layers: tuple[str, ...] = ()
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    multi_label: bool = False

    def class_name(self, index: int) -> str:
        """The name of class `index`.

        Args:
            index: a class index.

        Returns:
            Its entry in `categories`, else "class N".
        """
        if self.categories and 0 <= index < len(self.categories):
            return self.categories[index]
        return f"class {index}"


def model_card(model: nn.Module) -> ModelCard:
    """The card attached to `model`, or ImageNet defaults at 224 px for a user's own model.

    Args:
        model: any classifier.

    Returns:
        The attached card, else a `ModelCard` named after the model's class with the defaults.
    """
    return getattr(model, CARD_ATTRIBUTE, None) or ModelCard(name=type(model).__name__)


def attached_card(model: nn.Module) -> ModelCard | None:
    """The card attached to `model` (by `load_model` or `attach_card`), or None: no default is made up.

    Args:
        model: any classifier.

    Returns:
        The attached card, or None.
    """
    return getattr(model, CARD_ATTRIBUTE, None)


def attach_card(model: nn.Module, card: ModelCard) -> nn.Module:
    """Record how to feed `model` on the model itself (a plain attribute: no parameter, no buffer).

    Args:
        model: the classifier.
        card: its card, replacing any attached one.

    Returns:
        `model`, for chaining.
    """
    object.__setattr__(model, CARD_ATTRIBUTE, card)
    return model


def update_card(model: nn.Module, **changes: Any) -> ModelCard:
    """Attach to `model` its card (`model_card`) with the fields `changes` replaced, and return it.

    Args:
        model: the classifier.
        **changes (Any): `ModelCard` fields and their new values.

    Returns:
        The new card, now attached.

    Raises:
        TypeError: a name in `changes` is not a `ModelCard` field.
    """
    card = dataclasses.replace(model_card(model), **changes)
    attach_card(model, card)
    return card


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet class names, from torchvision's weights metadata (no download).

    Returns:
        The names, in class-index order.
    """
    import torchvision  # here: importing it costs seconds (it imports torch._dynamo), `jittercam --help` none

    return tuple(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither.

    Args:
        model: the classifier.

    Returns:
        The device.
    """
    tensor: torch.Tensor | None = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating-point type the model computes in (its first floating parameter's; float32 if none).

    Args:
        model: the classifier.

    Returns:
        The dtype.
    """
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
