"""The fastest way to run a model's forward passes on a device, measured once and remembered.

A `Plan` is a batch size and a memory layout (contiguous or channels-last), chosen by timing plain
`inference_mode` forward passes of the model at its input size on the device itself: on 2 CPU cores small
batches that stay in cache win, on a GPU large ones do, and channels-last helps convolutions where the
backend has kernels for it. `tune` measures (a few seconds) and stores the plan in a JSON file keyed by
the model, the device's name, the input size, the thread count and the torch version;
`cached_plan` only reads it. Methods and metrics use a cached plan when `batch_size` is None and
nothing else was asked for, and fall back to the device's static default otherwise.

The cache file is `$JITTERCAM_CACHE_DIR/plans.json` (default `~/.cache/jittercam/plans.json`);
`JITTERCAM_CACHE_DIR=off` disables it.
"""
from __future__ import annotations

import json
import os
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .inputs import resolve_batch_size
from .models import model_card, model_device, model_dtype
from .runtime import device_name, retains_freed_memory, synchronize, timed

CPU_BATCHES = (1, 2, 4, 8, 16, 32)
CUDA_BATCHES = (16, 32, 64, 128, 256, 512, 1024)
CPU_ROUNDS = 2  # sweeps over the candidates on a CPU (one on a GPU, which nothing else shares); each keeps its fastest


@dataclass(frozen=True)
class Plan:
    """How to run a model's forward passes on a device, as `tune` measured it.

    Attributes:
        batch_size: images per forward pass.
        channels_last: whether the images go in the channels-last memory layout.
        seconds_per_image: measured forward time per image at this plan.
        contiguous_seconds_per_image: the best contiguous layout's, for the record.
    """

    batch_size: int
    channels_last: bool
    seconds_per_image: float  # measured forward time per image at this plan
    contiguous_seconds_per_image: float  # the best contiguous layout, for the record

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        """`images` in the plan's memory layout (a copy only when the layout changes).

        Args:
            images: a batch; only a 4-D one is laid out channels-last.

        Returns:
            The images, channels-last where the plan says so.
        """
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images


def cache_path() -> Path | None:
    """Where plans are stored.

    Returns:
        `$JITTERCAM_CACHE_DIR/plans.json` (default `~/.cache/jittercam/plans.json`); None when
            `JITTERCAM_CACHE_DIR=off`.
    """
    root = os.environ.get("JITTERCAM_CACHE_DIR")
    if root == "off":
        return None
    return (Path(root) if root else Path.home() / ".cache" / "jittercam") / "plans.json"


_parameter_counts: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()


def plan_key(model: nn.Module, device: torch.device, input_size: int) -> str:
    """The cache key of a plan: the model (card name, class, parameter count, dtype), the device's name,
    the input size, the thread count and whether freed memory is retained (on CPU:
    `runtime.retain_freed_memory`, which changes which batch is fastest) and the torch version.

    Looked up on every call of a method: the parameter count is counted once per model.

    Args:
        model: the classifier.
        device: where its forward passes run.
        input_size: the square input size in pixels.

    Returns:
        The key, its parts joined by "|".
    """
    card = model_card(model)
    if model not in _parameter_counts:
        _parameter_counts[model] = sum(p.numel() for p in model.parameters())
    parameters = _parameter_counts[model]
    threads = f"{torch.get_num_threads()}{' retained' * retains_freed_memory()}" if device.type == "cpu" else 0
    return "|".join(
        str(part)
        for part in (card.name, type(model).__name__, parameters, model_dtype(model), device_name(device),
                     input_size, threads, torch.__version__)
    )


_memory: dict[str, Plan | None] = {}  # None: looked up, nothing measured


def _read_cache() -> dict[str, dict]:
    path = cache_path()
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a damaged cache is re-measured, never fatal


def _write_cache(key: str, plan: Plan) -> None:
    path = cache_path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = _read_cache()
        entries[key] = asdict(plan)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(entries, indent=1, sort_keys=True))
        os.replace(temporary, path)
    except OSError:
        pass  # a read-only home still gets the in-memory plan


def cached_plan(model: nn.Module, device: torch.device | None = None, input_size: int | None = None) -> Plan | None:
    """The plan measured earlier for this model on this device (this process or the cache file), or None.

    Args:
        model: the classifier.
        device: where its forward passes run; None: the model's device.
        input_size: the square input size in pixels; None: the model card's.

    Returns:
        The plan, or None when none was measured (or the stored one cannot be read).
    """
    device = device or model_device(model)
    key = plan_key(model, device, input_size or model_card(model).input_size)
    if key not in _memory:
        entry = _read_cache().get(key)
        try:
            _memory[key] = None if entry is None else Plan(**entry)
        except TypeError:
            _memory[key] = None
    return _memory[key]


def _seconds_per_image(model: nn.Module, batch: torch.Tensor, images: int) -> float:
    with torch.inference_mode():
        model(batch)  # warm-up: allocator, kernel choice
        synchronize(batch.device)
        rounds = max(1, -(-images // batch.shape[0]))

        def passes() -> None:
            for _ in range(rounds):
                model(batch)

        _, seconds = timed(passes, batch.device)
    return seconds / (rounds * batch.shape[0])


def tune(
    model: nn.Module,
    device: torch.device | None = None,
    input_size: int | None = None,
    batch_sizes: tuple[int, ...] | None = None,
    images: int | None = None,
) -> Plan:
    """Time forward passes at each batch size in both layouts, in `CPU_ROUNDS` sweeps over the candidates on a
    CPU (each keeps its fastest; one sweep on a GPU), and remember the fastest per image.

    A batch size that runs out of device memory ends the search upwards. The plan is kept for this
    process and written to the cache file (`cache_path`).

    Args:
        model: the classifier.
        device: where to time it; None: the model's device.
        input_size: the square input size in pixels; None: the model card's.
        batch_sizes: the candidates; None: 1 to 32 on CPU, 16 to 1024 on CUDA (powers of 2).
        images: forward passes timed per candidate and sweep (after one warm-up batch); None: 16 on CPU,
            1024 on CUDA.

    Returns:
        The fastest plan per image.
    """
    device = device or model_device(model)
    size = input_size or model_card(model).input_size
    batch_sizes = batch_sizes or (CUDA_BATCHES if device.type == "cuda" else CPU_BATCHES)
    images = images or (1024 if device.type == "cuda" else 16)
    dtype = model_dtype(model)
    times: dict[tuple[int, bool], float] = {}
    candidates = sorted(batch_sizes)
    # on a CPU every candidate is timed in each sweep, its fastest kept: a load that passes during one sweep
    # (another process starting) does not decide the plan that is then cached for good
    for _ in range(CPU_ROUNDS if device.type == "cpu" else 1):
        for batch_size in candidates:
            try:
                batch = torch.randn(batch_size, 3, size, size, device=device, dtype=dtype)
                for channels_last in (False, True):
                    layout = batch.contiguous(memory_format=torch.channels_last) if channels_last else batch
                    seconds = _seconds_per_image(model, layout, images)
                    times[batch_size, channels_last] = min(seconds, times.get((batch_size, channels_last), seconds))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                candidates = [b for b in candidates if b < batch_size]
                break
    (batch_size, channels_last), best = min(times.items(), key=lambda item: item[1])
    contiguous = min(seconds for (_, layout), seconds in times.items() if not layout)
    plan = Plan(batch_size, channels_last, best, contiguous)
    key = plan_key(model, device, size)
    _memory[key] = plan
    _write_cache(key, plan)
    return plan


def forward_seconds(model: nn.Module, device: torch.device, input_size: int) -> float:
    """Seconds of one image's forward pass: the measured plan's, else timed now at the batch size the methods
    use without a plan (on a CPU batches of 4 cost a third per image of batches of 64), the fastest of three
    after two warm-ups (the first calls pick kernels and allocate).

    Args:
        model: the classifier, on `device`.
        device: where it runs.
        input_size: the square input size in pixels.

    Returns:
        Seconds per image.
    """
    plan = cached_plan(model, device, input_size)
    if plan is not None:
        return plan.seconds_per_image
    count = resolve_batch_size(None, device)
    images = torch.randn(count, 3, input_size, input_size, device=device, dtype=model_dtype(model))
    with torch.inference_mode():
        for _ in range(2):
            model(images)
        seconds = min(timed(lambda: model(images), device)[1] for _ in range(3))
    return seconds / count


def forward_batch(model, images: torch.Tensor, batch_size: int | None) -> int:
    """Images per forward pass for a method or a metric: `batch_size` (checked), else the measured plan's,
    else the device's default.

    Args:
        model (nn.Module | None): the classifier (anything else has no plan).
        images: the `(B, 3, H, W)` batch about to be run (its device and size pick the plan).
        batch_size: a positive integer, or None.

    Returns:
        The number of images per forward pass.

    Raises:
        JitterCamError: `batch_size` is not a positive integer.
    """
    if batch_size is None and isinstance(model, nn.Module):
        plan = cached_plan(model, images.device, images.shape[-1])
        if plan is not None:
            return plan.batch_size
    return resolve_batch_size(batch_size, images.device)


def buffer_layout(model, images: torch.Tensor) -> torch.memory_format:
    """The memory format a metric's perturbed batches are built in: the plan's, else contiguous.

    Args:
        model (nn.Module | None): the classifier (anything else has no plan).
        images: the batch the metric perturbs.

    Returns:
        `torch.channels_last` where the plan says so, else `torch.contiguous_format`.
    """
    plan = cached_plan(model, images.device, images.shape[-1]) if isinstance(model, nn.Module) else None
    return torch.channels_last if plan is not None and plan.channels_last else torch.contiguous_format
