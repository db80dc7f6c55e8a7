"""How far each method's bf16 map is from its fp32 map on EfficientNet-Lite0 (real weights), issue 25.

    python benchmarks/bf16_agreement.py [--device cpu|cuda] [--images N] [--methods all|NAME,...]
                                        [--precision bf16|fp16] [--full] [--auc] [--threads N]

The first N photos of the offline set (examples/images, the same files as its real photos), each method
built with `create(name, lite0)`, called on the batch for its top-1 class (taken once from the fp32
model and given explicitly, so both precisions explain the same class) in fp32 and in `--precision`. The
number printed is the relative max difference max|m_bf16 − m_fp32| / max|m_fp32| of each image's map,
the worst image's (and the mean over images). Issue 25's rule: a method takes bf16 where it stays
within 1 %.

A method that takes the precision is built with it (Guided Backprop ⊙ a base, `guided`, gives it to its base
only). One that refuses it is *probed*: built
in fp32 and called with the model's forward under autocast (its output cast back to float32), so every
network pass runs in bf16 while the method's own arithmetic sees bf16 activations (row `probe`): what it
would give if it took the precision, a little pessimistic.

Every registered method and the wrappers Jitter-CAM and Upscale-CAM over Grad-CAM; not Attention
Rollout and LeGrad (they refuse CNNs), nor the baselines. The expensive ones run with reduced options
unless `--full` (row `reduced`). Score-CAM (one pass per channel: 1280 on Lite0), SS-CAM, IS-CAM and
Poly-CAM take minutes per photo on a CPU; name them with `--methods` and `--images 1` or 2. On the 2-core
AMD EPYC this was measured on (avx512_bf16), bf16 ran about as fast as fp32; fp16 about 10x slower.

`--auc`: the deletion and insertion AUCs (`jittercam.metrics.deletion_insertion`, the model in fp32) of
the bf16 map beside the fp32 map's, max |ΔAUC| over images. The metrics themselves take no precision.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

import jittercam
from jittercam.errors import JitterCamError
from jittercam.methods.base import autocast
from jittercam.methods.registry import create, default_names

PHOTOS = Path(__file__).resolve().parent.parent / "examples" / "images"
SKIPPED = {"rollout", "legrad", "centre", "random", "constant"}
EXTRA = ["jittercam", "upscale"]  # over Grad-CAM
# what the expensive methods run with unless --full
REDUCED = {
    "rise": {"masks": 500},
    "sscam": {"num_samples": 2},
    "iscam": {"num_samples": 2},
    "smoothgradcam++": {"num_samples": 2},
}


def photos(count: int, card) -> torch.Tensor:
    """The first `count` photos of the offline set, as Lite0 takes them."""
    files = sorted(PHOTOS.glob("*.JPEG"))[:count]
    return torch.cat([jittercam.data.to_input(jittercam.data.load_image(f), card) for f in files])


@contextmanager
def forward_under(model: torch.nn.Module, device: torch.device, precision: str):
    """The model's forward under autocast, and every module's output cast back to float32 (the probe): the
    convolutions and linear layers compute in `precision`, what the method captures or computes is float32."""
    plain = model.forward

    def forward(*args, **kwargs):
        with autocast(device, precision):
            return plain(*args, **kwargs).float()

    def to_float(module, inputs, output):
        return output.float() if isinstance(output, torch.Tensor) and output.is_floating_point() else None

    model.forward = forward
    handle = torch.nn.modules.module.register_module_forward_hook(to_float)
    try:
        yield
    finally:
        handle.remove()
        del model.forward


def relative_max(low: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """(B,) max|low − full| / max|full| per image (0 where the fp32 map is all zero and so is low)."""
    diff = (low.float() - full.float()).abs().flatten(1).amax(1)
    scale = full.float().abs().flatten(1).amax(1)
    return torch.where(scale > 0, diff / scale.clamp_min(1e-30), diff)


def one(name: str, model, images, target, precision: str, full: bool, auc: bool) -> dict:
    options = {} if full else REDUCED.get(name, {})
    fp32 = create(name, model, **options)
    try:
        low = create(name, model, precision=precision, **options)
    except JitterCamError:  # the method refuses the precision: probed
        low = None
    start = time.perf_counter()
    full_maps = fp32(images, target)
    t32 = time.perf_counter() - start
    start = time.perf_counter()
    if low is not None:
        low_maps = low(images, target)
    else:
        with forward_under(model, images.device, precision):
            low_maps = fp32(images, target)
    tlow = time.perf_counter() - start
    rel = relative_max(low_maps, full_maps)
    row = {"method": name, "path": "probe" if low is None else "native", "options": options,
           "max": rel.max().item(), "mean": rel.mean().item(), "t32": t32, "tlow": tlow}
    if auc:
        from jittercam.metrics import deletion_insertion

        a = deletion_insertion(model, images, full_maps, target)
        b = deletion_insertion(model, images, low_maps, target)
        row["ddel"] = (a.deletion.auc - b.deletion.auc).abs().max().item()
        row["dins"] = (a.insertion.auc - b.insertion.auc).abs().max().item()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--methods", default="all", help="all, or names separated by commas")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--full", action="store_true", help="the expensive methods with their default options")
    parser.add_argument("--auc", action="store_true", help="also deletion/insertion AUCs of both maps")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = jittercam.load_model("efficientnet_lite0").to(device)
    images = photos(args.images, jittercam.model_card(model)).to(device)
    with torch.no_grad():
        target = model(images).argmax(1)
    names = ([n for n in default_names() if n not in SKIPPED and n != "guided"] + ["guided"]
             if args.methods == "all" else args.methods.split(","))
    print(f"# {args.precision} vs fp32, efficientnet_lite0, {images.shape[0]} photos, {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    print(f"{'method':<18} {'path':<7} {'max':>8} {'mean':>8} {'t_fp32':>8} {'t_low':>8}  options", flush=True)
    for name in names:
        try:
            row = one(name, model, images, target, args.precision, args.full, args.auc)
        except Exception as exc:  # noqa: BLE001 - one method failing must not end the table
            print(f"{name:<18} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                  flush=True)
            continue
        reduced = f"reduced {row['options']}" if row["options"] else ""
        aucs = f" ΔAUC del {row['ddel']:.4f} ins {row['dins']:.4f}" if "ddel" in row else ""
        verdict = "ok" if row["max"] <= 0.01 else "OVER 1%"
        print(f"{name:<18} {row['path']:<7} {row['max']:8.2%} {row['mean']:8.2%} {row['t32']:7.1f}s "
              f"{row['tlow']:7.1f}s  {verdict} {reduced}{aucs}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
