"""Where and how fast the work runs: timed calls, torch's CPU threads, and the machine's description.

Shared by `explain`, `compare`, the benchmark and the scripts in `benchmarks/`; depends on torch only.
"""
from __future__ import annotations

import ctypes
import functools
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from .words import plural

T = TypeVar("T")


# -------------------------------------------------------------------------------------------- timing
def synchronize(device: torch.device | str | None) -> None:
    """Wait until `device` has run the work queued on it (CUDA); nothing to wait for elsewhere.

    Args:
        device: the device, or None for nothing to wait for.
    """
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device | str | None = None) -> tuple[T, float]:
    """Call `fn` and measure it with `time.perf_counter`, the device synchronised before and after, so that
    the seconds are the GPU's work and not the time to queue it.

    Args:
        fn: what to time, without arguments.
        device: where `fn` computes (None or a CPU: no synchronisation).

    Returns:
        `fn()`'s result and the seconds it took.
    """
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


# ------------------------------------------------------------------------------------------- threads
def allowed_cpus() -> int:
    """The CPUs the affinity mask lets this process run on (`taskset` narrows them), else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def usable_cpus() -> int:
    """CPUs this process may run on: torch's default thread count (physical cores, or OMP_NUM_THREADS),
    capped by the CPU affinity mask and a cgroup CPU quota (containers). At least 1."""
    count = torch.get_num_threads()
    if hasattr(os, "sched_getaffinity"):
        count = min(count, allowed_cpus())
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def busy_cpus(seconds: float = 0.2) -> float | None:
    """How many CPUs other processes keep busy right now: the non-idle CPU time of /proc/stat over
    `seconds`, less this process's own (its threads may still be spinning), in CPUs. None off Linux."""

    def sample() -> tuple[int, int, int]:
        with open("/proc/stat") as stream:
            values = [int(value) for value in stream.readline().split()[1:9]]
        with open("/proc/self/stat") as stream:
            fields = stream.read().rsplit(")", 1)[1].split()
        return sum(values), values[3] + values[4], int(fields[11]) + int(fields[12])  # all, idle, own

    try:
        total_0, idle_0, own_0 = sample()
        time.sleep(seconds)
        total_1, idle_1, own_1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total_1 - total_0
    if total <= 0:
        return None
    others = total - (idle_1 - idle_0) - (own_1 - own_0)
    return max(0.0, others / total) * (os.cpu_count() or 1)


def threads_for(usable: int, busy: float | None, cpus: int) -> int:
    """The usable CPUs that other processes leave idle, at least 1 (all usable ones when the load is
    unknown). More threads than idle cores is what collapses: torch's OpenMP threads wait for each other
    at every operation, and one of them is always descheduled (the Speed guide, docs/guide/speed.md, has the numbers).

    Args:
        usable: CPUs this process may use (`usable_cpus()`).
        busy: CPUs other processes keep busy (`busy_cpus()`), None when unknown.
        cpus: CPUs of the machine.
    """
    if busy is None:
        return usable
    return max(1, min(usable, int(cpus - busy + 0.2)))


class ThreadGovernor:
    """Torch's intra-op threads for one run: a fixed count, or (on the CPU) the usable CPUs that other
    processes leave idle, looked at when the run starts and again at `update()` once `RECHECK` seconds
    have passed, so that load starting mid-run is followed item by item (a look costs 0.2 s).

    Sets the count on construction; `restore()` puts torch's previous count back.

    Args:
        fixed: the thread count to use, or None to follow the load.
        device: where the run computes; off the CPU the count is left as it is unless fixed.
    """

    RECHECK = 10.0

    def __init__(self, fixed: int | None, device: torch.device) -> None:
        self.previous = torch.get_num_threads()
        self.usable = usable_cpus()
        self.adaptive = fixed is None and device.type == "cpu" and self.usable > 1
        self.count = fixed or (self.usable if device.type == "cpu" else self.previous)
        self.busy: float | None = None
        self.checked = -math.inf
        self.update()
        torch.set_num_threads(self.count)

    def update(self) -> bool:
        """Look at the load again if it is time. Returns True when the thread count changed."""
        if not self.adaptive or time.monotonic() - self.checked < self.RECHECK:
            return False
        self.busy = busy_cpus()
        self.checked = time.monotonic()
        count = threads_for(self.usable, self.busy, os.cpu_count() or self.usable)
        changed, self.count = count != self.count, count
        torch.set_num_threads(count)
        return changed

    def __str__(self) -> str:
        text = f"{self.count} thread{'s' * (self.count > 1)}"
        if self.busy is not None and self.count < self.usable:
            text += f", {self.busy:.1f} of {os.cpu_count()} CPUs busy elsewhere"
        return text

    def restore(self) -> None:
        """Put back the thread count torch had before."""
        torch.set_num_threads(self.previous)


# ---------------------------------------------------------------------------------------- CPU memory
# glibc's `mallopt` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_CEILING = 1 << 30  # bytes: tensors up to this size come from the heap and are kept for reuse
_SET = ("mmap_threshold", "trim_threshold")  # what it sets, as glibc's environment and tunables name them
_retaining = False


def retains_freed_memory() -> bool:
    """Whether `retain_freed_memory` took effect in this process (the measured plans are kept apart)."""
    return _retaining


def retain_freed_memory() -> bool:
    """Keep the memory of freed CPU tensors for the next ones instead of returning it to the system.

    glibc gives every buffer above 32 MB (an activation of a batch of 64 images is 100-400 MB) pages of
    its own and returns them when the tensor is freed, so the next forward pass faults every page in
    again: on the 2-core dev machine EfficientNet-Lite0's forward at batch 64 took 88 ms per image, most
    of it in the kernel zeroing pages, and 25 ms with the memory kept (Jitter-CAM on a photo 1.1-1.7x faster;
    benchmarks/cpu_memory.py). Raising glibc's mmap and trim thresholds keeps the freed memory in the
    heap; the process then holds its peak (up to half above the default's there at batch 64).

    The command line calls it for its own process; a library user opts in with one call. It is
    process-wide and lasts as long as the process; a second call changes nothing. Thresholds the user set
    in the environment (`MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`, or `GLIBC_TUNABLES` with
    `glibc.malloc.trim_threshold` or `glibc.malloc.mmap_threshold`) stand: nothing is changed then.

    Returns:
        True when glibc took the thresholds; False where nothing changed (the user's settings, another C
        library, macOS, Windows).
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(f"MALLOC_{name.upper()}_" in os.environ or f"glibc.malloc.{name}=" in tunables for name in _SET):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, ValueError, OSError):  # no confstr name (macOS, Windows), no libc symbol
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    global _retaining
    _retaining = _retaining or (bool(mallopt(_M_MMAP_THRESHOLD, HEAP_CEILING))
                                and bool(mallopt(_M_TRIM_THRESHOLD, HEAP_CEILING)))
    return _retaining


# ------------------------------------------------------------------------------------------- machine
def _cpuinfo(*keys: str) -> str | None:
    """The value of /proc/cpuinfo's first line that starts with one of `keys`; None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(keys):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


# the instructions that compute in a reduced precision on a CPU: x86 flags, then Arm's "Features" names
_LOW_PRECISION_UNITS = {"bf16": ("avx512_bf16", "amx_bf16", "bf16"), "fp16": ("avx512_fp16", "amx_fp16", "fphp")}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's instruction flags (/proc/cpuinfo's "flags", or "Features" on Arm); None where unknown."""
    flags = _cpuinfo("flags", "Features")
    return None if flags is None else frozenset(flags.split())


def slow_precision_note(device: torch.device, precision: str) -> str | None:
    """A line for asking a reduced `precision` of a CPU that has no instructions for it: torch then emulates
    it, several times slower than fp32 (measured on a 2-core AVX2 EPYC: Jitter-CAM's 64 Lite0 patches
    2.05 s in fp32, 50.5 s in bf16). None where it is not so, or where the CPU's flags are unknown."""
    units = _LOW_PRECISION_UNITS.get(precision)
    flags = cpu_flags() if device.type == "cpu" and units else None
    if flags is None or units is None or flags & set(units):
        return None
    return (f"this CPU has no {precision} instructions ({' or '.join(units[:2])}): {precision} is emulated and "
            "runs several times slower than fp32 here (up to 25x measured)")


@functools.cache
def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


@dataclass(frozen=True)
class Machine:
    """Where seconds were measured. `str()` gives one line: CPU, cores, torch threads, GPU, torch."""

    cpu: str
    cores: int | None  # os.cpu_count()
    allowed_cpus: int  # those the affinity mask allows
    torch_threads: int
    gpu: str | None
    torch: str

    def __str__(self) -> str:
        cores = plural(self.cores, "core") if self.cores else "cores unknown"
        text = f"{self.cpu}, {cores}, {plural(self.torch_threads, 'torch thread')}"
        if self.gpu:
            text += f", {self.gpu}"
        return f"{text}, torch {self.torch}"


def machine(device: torch.device | str | None = None) -> Machine:
    """Describe this machine.

    Args:
        device: the device the work runs on: a CUDA device names its GPU, a CPU none; None names the current
            CUDA device when there is one.
    """
    if device is None:
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    else:
        device = torch.device(device)
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return Machine(cpu_name(), os.cpu_count(), allowed_cpus(), torch.get_num_threads(), gpu, torch.__version__)
