"""Whether a benchmark run compiles its forward passes when the command leaves it open (`compile=None`).

`torch.compile` costs a long first call and then runs the forward passes faster. Measured on the dev
machine (2 AMD EPYC cores, torch 2.14.1, idle, `benchmarks/speed.py --compile`, 2026-12-07): Jitter-CAM
1.44x (Lite0) and 1.37x (ResNet50), deletion + insertion 1.57x and 1.34x, Grad-CAM 1.44x and 1.00x, after
20-60 s of compiling per piece (two to three times that under load, a few seconds from inductor's on-disk
cache). So on a CPU it pays where the passes it speeds up take many minutes, and loses on short runs: a
run compiles by itself when they are estimated at `AUTO_SECONDS` or more. Not on a GPU yet: the compiled
path there is unmeasured (`benchmarks/gpu_check.sh` measures it); `--compile` turns it on.
"""
from __future__ import annotations

import torch

from .. import compiled

AUTO_SECONDS = 600.0  # eager seconds of compilable passes from which a CPU run compiles by itself


def wants_compile(device: torch.device, seconds: float) -> bool:
    """Whether a run whose compilable forward passes take `seconds` eagerly on `device` compiles them.

    Args:
        device: where the run's passes go.
        seconds: the estimate of those passes, eager.

    Returns:
        True on a CPU from `AUTO_SECONDS` on.
    """
    return device.type == "cpu" and seconds >= AUTO_SECONDS


def compiler_problem() -> str | None:
    """Why torch.compile cannot run on this machine's CPU (no C++ compiler, no Python headers, ...), in
    one line, or None when a tiny function compiles and runs (a few seconds, once per process)."""
    global _problem
    if _problem is None:
        try:
            probe = torch.compile(lambda x: (x * 2).sin().sum(), backend=compiled.BACKEND, dynamic=False)
            ok = float(probe(torch.ones(4))) == float((torch.ones(4) * 2).sin().sum())
            _problem = "" if ok else "a compiled test function gave a wrong value"
        except Exception as exc:  # noqa: BLE001 - whatever inductor raises here means: run eagerly
            text = str(exc).strip().splitlines()
            _problem = f"{type(exc).__name__}: {text[0] if text else ''}"[:200]
    return _problem or None


_problem: str | None = None
