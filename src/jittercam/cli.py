"""The `jittercam` command: `jittercam explain IMAGE|FOLDER ... --out DIR`, `jittercam list`.

`explain` checks everything it can before computing anything (paths, image headers and contents, the
output folder, method and model names, the target), then explains one image at a time and writes each
result as soon as it is computed, atomically, with a row in `DIR/summary.csv`. Errors a user can act on
are one line on stderr and exit status 2; Ctrl-C is one line and exit status 130.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from tqdm import tqdm

from . import __version__, compare, tuning
from .bench import cli as bench_cli
from .bench import report as bench_report
from .groundtruth import cli as groundtruth_cli
from .data import load_image, to_input
from .data.collection import Source, find_images, output_names
from .data.images import check_image
from .data.output import CsvLog, commit, deferred_interrupt, probe_folder
from .errors import JitterCamError
from .inputs import check_targets, parse_device
from .maps import upsample
from .methods import available_methods, create, method_class, method_options
from .methods.registry import method_list
from .models import available_models, load_model, model_card
from .viz import check_colormap, overlay, titled

NPY_MAX_SIDE = 1024  # default longest side of the stored .npy map
SUMMARY = "summary.csv"
SUMMARY_COLUMNS = (
    "image", "model", "method", "class_index", "class_name", "probability", "seconds", "threads", "npy", "png"
)


class _UsageError(Exception):
    """argparse's complaint, printed as one line like every other error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (`{self.prog} --help` shows the usage)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jittercam", description="Class activation maps for image classifiers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_explain(commands)
    compare.add_parser(commands)
    bench_cli.add_parser(commands)
    bench_report.add_parser(commands)
    groundtruth_cli.add_parser(commands)
    commands.add_parser("list", help="list the model and method names")
    _add_tune(commands)
    return parser


def _add_tune(commands) -> None:
    tune = commands.add_parser(
        "tune",
        help="measure the fastest batch size and memory layout for a model on a device, and remember it",
        description="Time plain forward passes at several batch sizes, contiguous and channels-last, and store "
        "the fastest in the plan cache ($JITTERCAM_CACHE_DIR/plans.json, default ~/.cache/jittercam); every "
        "method and metric then uses it when no --batch-size is given.",
    )
    tune.add_argument("--model", default="efficientnet_lite0", help="model name (default: %(default)s)")
    tune.add_argument("--weights", metavar="PATH|random", help="as for explain (default: pretrained)")
    tune.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    tune.add_argument("--input-size", type=int, metavar="PIXELS", help="square input side (default: the model's)")


def _add_explain(commands) -> None:
    explain = commands.add_parser(
        "explain",
        help="explain images (files or folders) and write heat maps",
        description="Explain each image with each method; write DIR/NAME.METHOD.png (the map over the photo), "
        "DIR/NAME.METHOD.npy (the map) and a row per result in DIR/summary.csv, as soon as each is computed.",
    )
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files and folders of images")
    explain.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the outputs")
    explain.add_argument("--recursive", "-r", action="store_true", help="search folders' subfolders too")
    explain.add_argument(
        "--method", action="append", metavar="NAME[,NAME...]",
        help="method(s), comma-separated or repeated (default: jittercam); see `jittercam list`",
    )
    explain.add_argument("--model", default="efficientnet_lite0", help="model name (default: %(default)s)")
    explain.add_argument(
        "--weights", metavar="PATH|random",
        help="a local state dict for the model, or 'random' for random weights (default: pretrained)",
    )
    explain.add_argument("--target", type=int, metavar="CLASS", help="class index to explain (default: top-1)")
    explain.add_argument("--target-layer", metavar="NAME", help="the model's module to take maps from "
                         "(dotted name, e.g. layer4; default: found by a probe)")
    explain.add_argument("--size", type=int, help="Jitter-CAM / Upscale map size m+d (default: 2m)")
    explain.add_argument("--batch-size", type=int, help="images or patches per forward pass "
                         "(default: the plan `jittercam tune` measured, else 4 on CPU, 64 on GPU)")
    explain.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    explain.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                         help="the forward passes' precision, for the methods that offer it (Grad-CAM, Grad-CAM++, "
                         "XGrad-CAM, HiResCAM and Jitter-CAM / Upscale-CAM over them): bf16/fp16 pay off on a GPU, "
                         "not on a CPU (default: %(default)s)")
    explain.add_argument(
        "--threads", type=int, metavar="N",
        help="CPU threads for torch (default: the cores that other work leaves idle, looked at again every 10 s)",
    )
    explain.add_argument("--cmap", default="jet", metavar="NAME",
                         help="matplotlib colour map of the overlays (default: %(default)s)")
    explain.add_argument("--alpha", type=float, default=0.5,
                         help="weight of the map over the photo, 0..1 (default: %(default)s)")
    explain.add_argument("--title", action="store_true",
                         help="add a strip above each overlay: class, probability, method")
    explain.add_argument(
        "--npy-max", type=int, default=NPY_MAX_SIDE, metavar="PIXELS",
        help="longest side of the stored .npy map; smaller photos keep their size (default: %(default)s)",
    )
    explain.add_argument("--skip-existing", action="store_true",
                         help="skip results whose .npy and .png are already in DIR (to finish an interrupted run)")
    explain.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")


# ------------------------------------------------------------------------------------------------- checks
def _check_options(args: argparse.Namespace, names: list[str]) -> None:
    if args.size is not None and not any("size" in method_options(name) for name in names):
        raise JitterCamError("--size applies to jittercam and upscale methods only")
    if args.target_layer is not None and not any(_uses_layer(name) for name in names):
        raise JitterCamError("--target-layer applies to methods that take a layer's maps (gradcam, jittercam, ...)")
    for option, value, low in (("--batch-size", args.batch_size, 1), ("--threads", args.threads, 1),
                               ("--npy-max", args.npy_max, 8)):
        if value is not None and value < low:
            raise JitterCamError(f"{option} must be at least {low}")
    if not 0.0 <= args.alpha <= 1.0:
        raise JitterCamError(f"--alpha must be between 0 and 1, got {args.alpha}")
    check_colormap(args.cmap)


def _uses_layer(name: str) -> bool:
    """Whether the innermost method of `name` (`jittercam:rise` → rise) reads a layer's activations."""
    return bool(getattr(method_class(name.split(":")[-1]), "uses_layer", True))


def _check_out(out: Path, folders: list[Path]) -> None:
    """Cheap checks of --out before the images are read; the real write check comes before computing."""
    if out.exists() and not out.is_dir():
        raise JitterCamError(f"--out {out} exists and is not a folder")
    existing = next(parent for parent in [out, *out.absolute().parents] if parent.exists())
    if not existing.is_dir():
        raise JitterCamError(f"--out {out} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise JitterCamError(f"--out {out} is not writable ({existing} does not allow writing)")
    for folder in folders:
        if os.path.realpath(folder) == os.path.realpath(out):
            raise JitterCamError(
                f"--out {out} is one of the image folders: its maps would be read as images next time; "
                f"choose another folder (e.g. {folder / 'maps'})"
            )


def _check_images(sources: list[Source], quiet: bool) -> None:
    """Read every image once before computing (a bar on a terminal: a big folder takes a while)."""
    for source in tqdm(sources, desc="checking images", unit="image", file=sys.stderr, leave=False,
                       disable=quiet or not sys.stderr.isatty() or len(sources) < 20):
        check_image(source.path)


def _build_methods(names: list[str], model: torch.nn.Module, args: argparse.Namespace) -> dict:
    methods = {}
    for name in names:
        options = {"batch_size": args.batch_size}
        if "size" in method_options(name) and args.size is not None:
            options["size"] = args.size
        if args.target_layer is not None and _uses_layer(name):
            options["target_layer"] = args.target_layer
        if args.precision != "fp32":
            if "precision" not in method_options(name):
                offered = [n for n in available_methods() if ":" not in n
                           and args.precision in getattr(method_class(n), "precisions", ())]
                raise JitterCamError(f"--precision {args.precision}: {name} computes in fp32 only; "
                                     f"{', '.join(offered)} (and jittercam/upscale over them) offer it")
            options["precision"] = args.precision
        if "progress" in method_options(name):  # the long ones (RISE, Score-CAM, ...) have a bar of their own
            options["progress"] = not args.quiet and sys.stderr.isatty()
        try:
            methods[name] = create(name, model, **options)
        except JitterCamError as exc:
            message = str(exc)
            if "target_layer" in message:
                message += " (on the command line: --target-layer NAME; module names as in model.named_modules())"
            raise JitterCamError(message) from None
    return methods


# ------------------------------------------------------------------------------------------------ threads
def _usable_cpus() -> int:
    """CPUs this process may run on: torch's default thread count (physical cores, or OMP_NUM_THREADS),
    capped by the CPU affinity mask and a cgroup CPU quota (containers)."""
    count = torch.get_num_threads()
    if hasattr(os, "sched_getaffinity"):
        count = min(count, len(os.sched_getaffinity(0)))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def _busy_cpus(seconds: float = 0.2) -> float | None:
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


class _Threads:
    """Torch's intra-op threads for one run: `--threads N`, or (on the CPU) the usable CPUs that other
    processes leave idle, looked at when the run starts and again before an image once `RECHECK` seconds
    have passed, so that load starting mid-run is followed image by image (a look costs 0.2 s)."""

    RECHECK = 10.0

    def __init__(self, fixed: int | None, device: torch.device) -> None:
        self.previous = torch.get_num_threads()
        self.usable = _usable_cpus()
        self.adaptive = fixed is None and device.type == "cpu" and self.usable > 1
        self.count = fixed or (self.usable if device.type == "cpu" else self.previous)
        self.busy: float | None = None
        self.checked = -math.inf
        self.update()
        torch.set_num_threads(self.count)

    def update(self) -> bool:
        """Look at the load again if it is time; True when the thread count changed."""
        if not self.adaptive or time.monotonic() - self.checked < self.RECHECK:
            return False
        self.busy = _busy_cpus()
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
        torch.set_num_threads(self.previous)


def threads_for(usable: int, busy: float | None, cpus: int) -> int:
    """The usable CPUs that other processes leave idle, at least 1 (all usable ones when the load is
    unknown). More threads than idle cores is what collapses: torch's OpenMP threads wait for each other
    at every operation, and one of them is always descheduled (the README has the numbers)."""
    if busy is None:
        return usable
    return max(1, min(usable, int(cpus - busy + 0.2)))


# ------------------------------------------------------------------------------------------------ explain
@dataclass
class _Result:
    image: str
    method: str
    class_index: int
    class_name: str
    probability: float
    seconds: float
    threads: int
    npy: Path
    png: Path


def _stored_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """(height, width) of the .npy map: the photo's size, scaled down to `longest` on its longer side."""
    scale = min(1.0, longest / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _run_explain(args: argparse.Namespace) -> int:
    names = method_list(args.method or ["jittercam"], "--method")
    _check_options(args, names)
    device = parse_device(args.device)
    # chosen before the model's first forward (the probe), which would itself collapse under load
    threads = _Threads(args.threads, device)
    try:
        return _checked_run(args, names, device, threads)
    finally:
        threads.restore()


def _checked_run(args: argparse.Namespace, names: list[str], device: torch.device, threads: _Threads) -> int:
    folders = [Path(path) for path in args.images if Path(path).is_dir()]
    _check_out(args.out, folders)
    sources = find_images(args.images, recursive=args.recursive, exclude=[args.out])
    _check_images(sources, quiet=args.quiet)
    model = load_model(args.model, weights=args.weights).to(device)
    methods = _build_methods(names, model, args)
    card = model_card(model)
    if args.target is not None:
        layer = next((method.layer for method in methods.values() if method.layer is not None), None)
        if layer is not None:
            check_targets(args.target, 1, layer.num_classes, device)
        else:
            with torch.no_grad():
                classes = model(torch.zeros(1, 3, card.input_size, card.input_size, device=device)).shape[1]
            check_targets(args.target, 1, classes, device)
    try:
        probe_folder(args.out)
    except OSError as exc:
        raise JitterCamError(f"--out {args.out} is not writable: {exc.strerror or exc}") from None

    return _stream(args, sources, methods, model, card, device, threads)


def _stream(args, sources: list[Source], methods: dict, model, card, device: torch.device,
            threads: _Threads) -> int:
    """Explain and write, one result at a time. Returns the exit status."""
    out: Path = args.out
    names = output_names(sources)
    summary = CsvLog(out / SUMMARY, SUMMARY_COLUMNS)
    total = len(sources) * len(methods)
    say = (lambda line: None) if args.quiet else print
    engine = f"{device.type}, {threads}" if device.type == "cpu" else str(device)
    say(f"{len(sources)} image{'s' * (len(sources) != 1)} x {len(methods)} method{'s' * (len(methods) != 1)}, "
        f"{args.model} on {engine} -> {out}")
    written, skipped = [], 0
    bar = tqdm(total=total, unit="map", file=sys.stderr, disable=args.quiet or not sys.stderr.isatty(),
               dynamic_ncols=True)
    if not bar.disable:
        say = lambda line: tqdm.write(line, file=sys.stdout)  # noqa: E731 - keeps the bar below the lines
    started = time.perf_counter()
    try:
        with bar:
            for source, name in zip(sources, names, strict=True):
                label = _label(name, source)
                files = {method: _files(out, name, method) for method in methods}
                todo = [m for m in methods if not (args.skip_existing and all(f.exists() for f in files[m]))]
                skipped += len(methods) - len(todo)
                bar.update(len(methods) - len(todo))
                if not todo:
                    continue
                if threads.update():
                    say(f"now {threads}")
                image = load_image(source.path)
                batch = to_input(image, card).to(device)
                with torch.no_grad():
                    probabilities = model(batch).softmax(dim=1)[0].float().cpu()
                target = args.target if args.target is not None else int(probabilities.argmax())
                height, width = _stored_size(image.width, image.height, args.npy_max)
                for method_name in todo:
                    bar.set_description(f"{label} {method_name}", refresh=False)
                    start = time.perf_counter()
                    raw = methods[method_name](batch, target)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    seconds = time.perf_counter() - start
                    heat = upsample(raw, (height, width))[0].float().cpu().numpy()
                    result = _Result(str(source.path), method_name, target, card.class_name(target),
                                     float(probabilities[target]), seconds, threads.count, *files[method_name])
                    _write(result, image, heat, args, summary)
                    written.append(result)
                    say(f"{label}  {method_name}  class {target} ({result.class_name})  "
                        f"p={result.probability:.3f}  {seconds:.2f} s")
                    bar.update()
                del image, batch
    except KeyboardInterrupt:
        print(f"jittercam: interrupted: {_progress(written, skipped, total, out)}; run the same command with "
              "--skip-existing to finish", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a folder made read-only during the run
        where = f" {exc.filename}" if exc.filename else ""
        raise JitterCamError(f"cannot write{where}: {exc.strerror or exc} "
                             f"({_progress(written, skipped, total, out)})") from None
    except torch.OutOfMemoryError:
        raise JitterCamError(f"out of memory on {device}; try a smaller --batch-size "
                             f"({_progress(written, skipped, total, out)})") from None
    except JitterCamError as exc:
        raise JitterCamError(f"{exc} ({_progress(written, skipped, total, out)})") from None
    elapsed = time.perf_counter() - started
    extra = f", {skipped} already there" if skipped else ""
    say(f"wrote {2 * len(written)} files to {out} ({len(written)} maps{extra}) in {elapsed:.1f} s")
    return 0


def _label(name: str, source: Source) -> str:
    """How the lines name an image: its output name's folders and its file name (`a/x.png`)."""
    folder = PurePosixPath(name).parent
    return source.path.name if str(folder) == "." else f"{folder}/{source.path.name}"


def _files(out: Path, name: str, method: str) -> tuple[Path, Path]:
    base = f"{name}.{method.replace(':', '-')}"
    return out / f"{base}.npy", out / f"{base}.png"


def _progress(written: list, skipped: int, total: int, out: Path) -> str:
    done = f"{len(written)} of {total} maps written to {out}"
    return done + (f", {skipped} were there" if skipped else "")


def _write(result: _Result, image, heat: np.ndarray, args: argparse.Namespace, summary: CsvLog) -> None:
    """The map, its overlay and the summary row; Ctrl-C waits until all three are there."""
    picture = overlay(image, heat, alpha=args.alpha, cmap=args.cmap)
    if args.title:
        picture = titled(picture, f"{result.class_name} ({result.class_index})  p={result.probability:.3f}  "
                                  f"{result.method}")
    out: Path = args.out
    with deferred_interrupt():
        commit([
            (result.npy, lambda stream: np.save(stream, heat)),
            (result.png, lambda stream: picture.save(stream, format="PNG", compress_level=1)),
        ])
        summary.append([
            result.image, args.model, result.method, result.class_index, result.class_name,
            f"{result.probability:.6f}", f"{result.seconds:.3f}", result.threads,
            result.npy.relative_to(out).as_posix(), result.png.relative_to(out).as_posix(),
        ])


# ------------------------------------------------------------------------------------------------- tune
def _run_tune(args: argparse.Namespace) -> int:
    device = parse_device(args.device)
    if args.input_size is not None and args.input_size < 32:
        raise _UsageError(f"--input-size must be at least 32, got {args.input_size}")
    model = load_model(args.model, weights=args.weights).to(device).eval()
    plan = tuning.tune(model, device, args.input_size)
    layout = "channels-last" if plan.channels_last else "contiguous"
    where = tuning.cache_path() or "this process only (JITTERCAM_CACHE_DIR=off)"
    print(f"{args.model} on {tuning.device_name(device)} ({torch.get_num_threads()} threads): batch {plan.batch_size}, "
          f"{layout}, {plan.seconds_per_image * 1000:.2f} ms per image "
          f"(best contiguous {plan.contiguous_seconds_per_image * 1000:.2f} ms); saved in {where}")
    return 0


# ------------------------------------------------------------------------------------------------- list
def _run_list(args: argparse.Namespace) -> int:
    print("models: efficientnet_lite0 (offline default), groundtruth (the ground-truth benchmark's model, "
          "made by `jittercam groundtruth train`) and torchvision classifiers:")
    print("  " + ", ".join(name for name in available_models() if name not in ("efficientnet_lite0", "groundtruth")))
    print("methods: " + ", ".join(available_methods()))
    return 0


HANDLERS = {
    "explain": _run_explain,
    "compare": compare.run,
    "bench": bench_cli.run,
    "report": bench_report.run,
    "groundtruth": groundtruth_cli.run,
    "list": _run_list,
    "tune": _run_tune,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        return HANDLERS[args.command](args)
    except (_UsageError, JitterCamError) as exc:
        print(f"jittercam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jittercam: interrupted before anything was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `jittercam list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
