"""CPU runs with glibc's default memory handling against `runtime.retain_freed_memory()`, each in a process
of its own: wall time, the seconds spent in the kernel (page faults), and the peak resident memory.

    python benchmarks/cpu_memory.py                   # every workload, idle machine
    python benchmarks/cpu_memory.py --load            # again with a process spinning on every core but one

Workloads (EfficientNet-Lite0 with its weights, ResNet50 with random ones, `examples/images/catdog.png`):
`forward-4` and `forward-64`, five `inference_mode` forward passes of a batch (ms per image); `jittercam`,
Jitter-CAM over Grad-CAM on the photo; `deletion`, deletion + insertion of a Grad-CAM map; `resnet50`,
Jitter-CAM on ResNet50; the methods at their default CPU batch (4), no measured plan. The command line retains
freed memory in its own process; this script measures what that buys. Numbers go to stdout as a markdown
table.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "images" / "catdog.png"
WORKLOADS = ("forward-4", "forward-64", "jittercam", "deletion", "resnet50")


def child(workload: str, retain: bool) -> dict[str, float]:
    """Run `workload` in this process (after the warm-up the clocks start) and say what it cost."""
    import torch

    from jittercam import GradCAM, JitterCAM, load_model, runtime
    from jittercam.data.images import load_image, to_input
    from jittercam.metrics import deletion_insertion
    from jittercam.models import model_card

    taken = runtime.retain_freed_memory() if retain else False
    model = load_model("resnet50" if workload == "resnet50" else "efficientnet_lite0",
                       weights="random" if workload == "resnet50" else None)
    image = to_input(load_image(PHOTO), model_card(model))
    if workload.startswith("forward"):
        batch = torch.randn(int(workload.split("-")[1]), 3, 224, 224)

        def work() -> None:
            with torch.inference_mode():
                for _ in range(5):
                    model(batch)
    elif workload == "deletion":
        saliency = GradCAM(model)(image, None)

        def work() -> None:
            deletion_insertion(model, image, saliency)
    else:
        method = JitterCAM(model)

        def work() -> None:
            method(image, None)
    work()  # warm-up: kernels chosen, the first buffers allocated
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    if workload.startswith("forward"):
        seconds = seconds / (5 * batch.shape[0]) * 1000
    return {"taken": float(taken), "seconds": seconds, "kernel": after.ru_stime - before.ru_stime,
            "faults": after.ru_minflt - before.ru_minflt, "peak_mb": after.ru_maxrss / 1024}


def spin(stop) -> None:
    while not stop.is_set():
        pass


def measure(workload: str, retain: bool) -> dict[str, float]:
    environment = {**os.environ, "JITTERCAM_CACHE_DIR": "off"}  # no measured plan: the same batches both ways
    out = subprocess.run([sys.executable, __file__, "--child", workload, "--retain" if retain else "--default"],
                         check=True, capture_output=True, text=True, env=environment).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--load", action="store_true", help="a process spinning on every core but one")
    parser.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--retain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--default", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.retain)))
        return

    from jittercam.runtime import machine

    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=spin, args=(stop,), daemon=True)
                for _ in range(max(1, (os.cpu_count() or 2) - 1) if args.load else 0)]
    for process in spinners:
        process.start()
    try:
        print(f"machine: {machine('cpu')}; {'with' if args.load else 'without'} a busy process per core but one")
        print("| workload | default: time | kernel s | peak MB | retained: time | kernel s | peak MB | speed-up |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for workload in args.workloads:
            default, retained = measure(workload, False), measure(workload, True)
            if not retained["taken"]:
                print(f"| {workload} | glibc did not take the thresholds on this machine |")
                continue
            unit = "ms/image" if workload.startswith("forward") else "s"
            cells = [f"{run['seconds']:.3g} {unit} | {run['kernel']:.1f} | {run['peak_mb']:.0f}"
                     for run in (default, retained)]
            print(f"| {workload} | {' | '.join(cells)} | {default['seconds'] / retained['seconds']:.2f}x |",
                  flush=True)
    finally:
        stop.set()
        for process in spinners:
            process.join()


if __name__ == "__main__":
    main()
