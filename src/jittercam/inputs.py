"""What callers pass to methods and metrics: class targets and batch sizes, checked in one place."""
from __future__ import annotations

from collections.abc import Sequence
from typing import cast, overload

import torch

from .errors import JitterCamError

Target = int | Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | None


@overload
def as_target(target: None, batch: int, device: torch.device) -> None: ...
@overload
def as_target(target: int | Sequence[int] | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor: ...
@overload
def as_target(target: Target, batch: int, device: torch.device) -> torch.Tensor | None: ...
def as_target(target: Target, batch: int, device: torch.device) -> torch.Tensor | None:
    """A target as class indices: None stays None; an int or one class per image becomes indices.

    Args:
        target: None, an int, or one class per image (a sequence or tensor; a single one is repeated).
        batch: B, the number of images.
        device: where the indices go.

    Returns:
        `(B,)` long indices on `device`, or None.

    Raises:
        JitterCamError: a bool or non-integer target, a count other than 1 or B, or a negative index.
    """
    if target is None:
        return None
    if isinstance(target, bool):
        raise JitterCamError(f"target must be a class index, got {target!r}")
    if isinstance(target, int):
        indices = torch.full((batch,), target, dtype=torch.long, device=device)
    else:
        indices = torch.as_tensor(target, device=device)
        if indices.is_floating_point() or indices.dtype == torch.bool:
            raise JitterCamError(f"target must hold integer class indices, got {indices.dtype}")
        if indices.dim() == 0 or indices.numel() == 1:
            indices = indices.reshape(1).expand(batch)
        if indices.dim() != 1 or indices.shape[0] != batch:
            raise JitterCamError(f"got {indices.numel()} targets for {batch} images")
        indices = indices.long()
    if (indices < 0).any():
        raise JitterCamError(f"class index {int(indices.min())} is out of range: class indices start at 0")
    return indices


def as_targets(target: Target, batch: int, device: torch.device) -> torch.Tensor | None:
    """A target that may name several classes per image: a `(B, K)` tensor or a list of B lists of K
    classes (a list of K classes per image, the same K for all) gives `(B, K)` indices; a `(1, K)` tensor or
    a one-row list is repeated for every image; anything else goes through `as_target` (`(B,)` or None).

    Args:
        target: None, an int, one class per image, or K classes per image as above.
        batch: B, the number of images.
        device: where the indices go.

    Returns:
        `(B,)` or `(B, K)` long indices on `device`, or None.

    Raises:
        JitterCamError: as `as_target`; rows of different lengths, no class in a row, or a row count other
            than 1 or B.
    """
    if isinstance(target, torch.Tensor) and target.dim() == 2:
        rows = target
    elif isinstance(target, Sequence) and target and all(isinstance(row, (Sequence, torch.Tensor)) for row in target):
        table = cast(Sequence[Sequence[int]], target)
        lengths = {len(row) for row in table}
        if len(lengths) != 1:
            raise JitterCamError(f"every image needs the same number of classes, got rows of {sorted(lengths)}")
        rows = torch.as_tensor([[_index(value) for value in row] for row in table], dtype=torch.long)
    else:
        return as_target(target, batch, device)
    if rows.is_floating_point() or rows.dtype == torch.bool:
        raise JitterCamError(f"target must hold integer class indices, got {rows.dtype}")
    if rows.shape[1] == 0:
        raise JitterCamError("target names no class: give at least one class per image")
    if rows.shape[0] not in (1, batch):
        raise JitterCamError(f"got classes for {rows.shape[0]} images, not {batch}")
    indices = rows.to(device=device, dtype=torch.long).expand(batch, -1)
    if (indices < 0).any():
        raise JitterCamError(f"class index {int(indices.min())} is out of range: class indices start at 0")
    return indices


def _index(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, torch.Tensor)) or (
        isinstance(value, torch.Tensor) and (value.is_floating_point() or value.numel() != 1)
    ):
        raise JitterCamError(f"target must hold integer class indices, got {value!r}")
    return int(value)


def check_target_range(indices: torch.Tensor, classes: int) -> None:
    """Check class indices against the model's number of outputs.

    Args:
        indices: `(B,)` class indices.
        classes: the model's number of outputs.

    Raises:
        JitterCamError: an index is `classes` or above.
    """
    if (indices >= classes).any():
        raise JitterCamError(
            f"class index {int(indices.max())} is out of range: the model has {classes} outputs (0..{classes - 1})"
        )


def check_targets(target: Target, batch: int, classes: int, device: torch.device) -> torch.Tensor:
    """`target` as class indices, each checked against the model's outputs.

    Args:
        target: an int, or one class per image; None is refused.
        batch: B, the number of images.
        classes: the model's number of outputs.
        device: where the indices go.

    Returns:
        `(B,)` long indices on `device`.

    Raises:
        JitterCamError: `target` is None, not a valid class index (or one per image), or out of range.
    """
    if target is None:
        raise JitterCamError("a class index is needed here")
    indices = as_target(target, batch, device)
    assert indices is not None
    check_target_range(indices, classes)
    return indices


def resolve_targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """The classes a batch is explained for.

    Args:
        target: an int, one class per image, `(B, K)` classes per image (`as_targets`), or None for each
            image's top-1 class.
        logits: `(B, N)` the model's outputs on the batch.

    Returns:
        `(B,)` (or `(B, K)`) long class indices on the logits' device.

    Raises:
        JitterCamError: `target` is not a valid class index (or one per image), or is out of range.
    """
    if target is None:
        return logits.argmax(dim=1)
    indices = as_targets(target, logits.shape[0], logits.device)
    assert indices is not None
    check_target_range(indices, logits.shape[1])
    return indices


def check_images(images: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    """Check that `images` is a non-empty `(B, 3, H, W)` floating-point batch (of `dtype` when given).

    Args:
        images: the batch to check.
        dtype: the dtype the model computes in; None: any floating-point dtype.

    Raises:
        JitterCamError: saying what was expected, when it is not.
    """
    if not isinstance(images, torch.Tensor):
        raise JitterCamError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise JitterCamError(f"images must be a (B, 3, H, W) batch of RGB images, got shape {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise JitterCamError(f"images is an empty batch, shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise JitterCamError(
            f"images are {images.dtype}; expected normalised floats (jittercam.data.to_input makes them)"
        )
    if dtype is not None and images.dtype != dtype:
        raise JitterCamError(f"images are {images.dtype} but the model computes in {dtype}; convert with .to({dtype})")


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass. On CPU small batches are faster (cache-sized activations: 64 patches of
    EfficientNet-Lite0 took 4.1 s in one batch and 0.9 s in batches of 4 on 2 cores); GPUs want many.

    Args:
        device: where the forward passes run.

    Returns:
        64 on CUDA, 4 elsewhere.
    """
    return 64 if device.type == "cuda" else 4


def resolve_batch_size(batch_size: int | None, device: torch.device) -> int:
    """`batch_size` checked, or the device's default when None.

    Args:
        batch_size: a positive integer, or None.
        device: where the forward passes run (for the default).

    Returns:
        The batch size.

    Raises:
        JitterCamError: with `option="batch_size"`, `batch_size` is not a positive integer.
    """
    if batch_size is None:
        return default_batch_size(device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise JitterCamError(f"batch_size must be a positive integer, got {batch_size!r}",
                             option="batch_size")
    return batch_size


def parse_device(name: str) -> torch.device:
    """A device name (`cpu`, `cuda`, `cuda:N`) as a torch device that exists here.

    Args:
        name: the device's name, as torch spells it.

    Returns:
        The device.

    Raises:
        JitterCamError: with `option="device"`, saying why not.
    """
    try:
        device = torch.device(name)
    except RuntimeError:
        message = f"device {name!r} is not a torch device (cpu, cuda, cuda:N)"
        raise JitterCamError(message, option="device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise JitterCamError(f"device {name}: no CUDA device is available (this torch: {torch.__version__})",
                                 option="device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise JitterCamError(f"device {name}: there are {torch.cuda.device_count()} CUDA devices",
                                 option="device")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise JitterCamError(f"device {name}: MPS is not available", option="device")
    return device


def check_flag(value: object, option: str) -> bool:
    """A yes/no option as a bool, refused when it is anything else (`bool("false")` would be True).

    Args:
        value: what the caller gave; a bool (numpy's and torch's one-element bools included).
        option: the parameter's name, for the error.

    Returns:
        The bool.

    Raises:
        JitterCamError: `value` is not a bool (`option=option`).
    """
    if isinstance(value, bool):
        return value
    if type(value).__name__ in ("bool_", "bool") or (isinstance(value, torch.Tensor) and value.dtype == torch.bool
                                                    and value.numel() == 1):
        return bool(value)
    raise JitterCamError(f"{option} must be True or False, not {value!r}", option=option)
