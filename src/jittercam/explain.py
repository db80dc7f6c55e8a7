"""Explaining image files into a folder: the library behind `jittercam explain`.

`Explanation(settings).run()` checks everything it can before computing anything (the options, paths,
image headers and contents, the output folder, method and model names, the target), then explains one
image at a time and writes each result as soon as it is computed, atomically: `OUT/NAME.METHOD.npy` (the
map at the photo's size, longest side at most `npy_max`), `OUT/NAME.METHOD.png` (the map over the photo,
marked as written by this package so that no later run reads it as a photo) and a row in `OUT/summary.csv`
(its paths relative to OUT). A `Listener` hears about each step (the CLI draws its lines and bar).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from glob import escape as glob_escape
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import compiled, tuning
from .data import load_image, to_input
from .data.collection import Source, find_images, image_suffixes, is_output, output_names
from .data.images import BadImage, bad_images, check_image
from .data.output import CsvLog, commit, deferred_interrupt, nearest_existing, png_mark, probe_folder, remove_empty
from .errors import JitterCamError
from .frontend import build_methods, check_applies, check_method_options, method_names, takes
from .inputs import check_targets, parse_device
from .maps import upsample
from .methods import CAMMethod, available_methods, method_class
from .models import ModelCard, load_model, model_card
from .runtime import ThreadGovernor, slow_precision_note, timed
from .viz import check_alpha, check_colormap, overlay, titled
from .words import plural

NPY_MAX_SIDE = 1024  # default longest side of the stored .npy map
SUMMARY = "summary.csv"
SUMMARY_COLUMNS = (
    "image", "model", "method", "class_index", "class_name", "probability", "seconds", "threads", "npy", "png"
)


@dataclass
class Settings:
    """One run of `explain`: what to explain with what, and how to write it. Names as the CLI's flags."""

    images: Sequence[str | Path]  # image files and folders of images
    out: Path
    methods: Sequence[str] = ("jittercam",)  # names or comma lists, 'all'
    # {METHOD: {NAME: value}}, as `jittercam.frontend.parse_method_options` reads `METHOD.NAME=VALUE`
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    model: str = "efficientnet_lite0"
    weights: str | None = None  # a state dict's path, 'random', or None for the pretrained weights
    target: int | Sequence[int] | None = None  # None: each image's top-1 class; several: a map per class
    top: int | None = None  # explain each image's `top` most likely classes (instead of `target`)
    target_layer: str | None = None
    size: int | None = None  # Jitter-CAM / Upscale-CAM map size
    batch_size: int | None = None
    device: str = "cpu"
    precision: str = "fp32"
    # the methods' compiled path (`jittercam.compiled`), where they have one; None: where it pays (a long run on
    # a CPU, `jittercam.compiled.pays`)
    compile: bool | None = None
    threads: int | None = None  # None: the CPUs other work leaves idle (`ThreadGovernor`)
    cmap: str = "jet"
    alpha: float = 0.5
    title: bool = False
    npy_max: int = NPY_MAX_SIDE
    skip_existing: bool = False
    skip_bad: bool = False  # leave out the files that are not images this package can explain
    recursive: bool = False
    progress: bool = False  # the long methods' own progress bars


@dataclass
class Result:
    """One map written: its image, method, class, the seconds it took and its two files."""

    image: str
    method: str
    class_index: int
    class_name: str
    probability: float
    seconds: float
    threads: int
    npy: Path
    png: Path


class Listener:
    """What a run tells its caller; every method does nothing here. Override the ones you need."""

    def checking(self, sources: list[Source]) -> Iterable[Source]:
        """Wrap the loop that reads every image once before computing (a progress bar)."""
        return sources

    def started(self, run: Explanation) -> None:
        """Everything is checked; computing starts (`run.sources`, `run.methods`, `run.threads` are set;
        `run.bad` holds the files left out by `skip_bad`, `run.outputs` this package's own pictures met in
        the folders and left out)."""

    def skipped(self, count: int) -> None:
        """`count` results were already in the folder (`skip_existing`)."""

    def threads_changed(self, threads: ThreadGovernor) -> None:
        """The load changed and with it torch's thread count."""

    def explaining(self, label: str, method: str) -> None:
        """Method `method` starts on the image labelled `label`."""

    def explained(self, label: str, result: Result) -> None:
        """A result is written."""


def check(settings: Settings) -> list[str]:
    """Check the options that need no file, model or device. Returns the method names.

    Raises:
        JitterCamError: naming the option (`option=` the `Settings` field).
    """
    names = method_names(settings.methods)
    check_applies(names, size=settings.size, target_layer=settings.target_layer, compile=settings.compile or None)
    check_method_options(settings.method_options, names)
    for option, value, low in (("batch_size", settings.batch_size, 1), ("threads", settings.threads, 1),
                               ("npy_max", settings.npy_max, 8)):
        if value is not None and value < low:
            raise JitterCamError(f"{option} must be at least {low}", option=option)
    _check_classes(settings)
    check_alpha(settings.alpha)
    check_colormap(settings.cmap)
    if settings.precision != "fp32":
        for name in names:
            if not takes(name, "precision"):
                offered = [n for n in available_methods() if ":" not in n
                           and settings.precision in getattr(method_class(n), "precisions", ())]
                raise JitterCamError(f"precision {settings.precision}: {name} computes in fp32 only; "
                                     f"{', '.join(offered)} (and jittercam/upscale over them) offer it",
                                     option="precision")
    return names


def _check_classes(settings: Settings) -> None:
    if settings.top is not None:
        if settings.target is not None:
            raise JitterCamError("top and target both choose the classes: give one of them", option="top")
        if settings.top < 1:
            raise JitterCamError("top must be at least 1", option="top")
    if settings.target is not None and not isinstance(settings.target, int):
        classes = list(settings.target)
        if not classes:
            raise JitterCamError("target names no class", option="target")
        twice = sorted({c for c in classes if classes.count(c) > 1})
        if twice:
            raise JitterCamError(f"target names class {twice[0]} twice", option="target")


def several_classes(settings: Settings) -> bool:
    """Whether each image gets a map per class (`top`, or more than one `target`): the files then carry the
    class index in their names (`NAME.METHOD.CLASS.png`)."""
    return settings.top is not None or (settings.target is not None and not isinstance(settings.target, int)
                                        and len(list(settings.target)) > 1)


class Explanation:
    """One run of `explain` (see the module's docstring).

    Args:
        settings: what to explain and where to write it.
        listener: told about each step (default: nothing).
    """

    def __init__(self, settings: Settings, listener: Listener | None = None) -> None:
        self.settings = settings
        self.listener = listener or Listener()
        self.sources: list[Source] = []
        self.names: list[str] = []  # the sources' output names (`output_names`)
        self.methods: dict[str, CAMMethod] = {}
        self.threads: ThreadGovernor | None = None
        self.device = torch.device("cpu")
        self.written: list[Result] = []
        self.skipped = 0
        self.bad: list[BadImage] = []  # left out (`skip_bad`)
        self.outputs: list[Path] = []  # pictures this package wrote, met in the folders and left out
        self.streaming = False  # True once the checks passed and results may be written
        self.created: list[Path] = []  # the output folders this run created, removed if it writes nothing
        self.compile_note: str | None = None  # whether the run chose to compile, and why
        self.precision_note: str | None = None  # a reduced precision this CPU can only emulate

    @property
    def total(self) -> int:
        """Results this run makes or finds (images x methods x classes)."""
        return len(self.sources) * len(self.methods) * (self.settings.top or len(self._classes_asked()) or 1)

    def progress(self) -> str:
        """How far the run got: `3 of 4 maps written to OUT, 1 was there`."""
        done = f"{len(self.written)} of {plural(self.total, 'map')} written to {self.settings.out}"
        return done + (f", {self.skipped} {'was' if self.skipped == 1 else 'were'} there" if self.skipped else "")

    def run(self) -> list[Result]:
        """Check, then explain and write. Returns the results written now.

        Raises:
            JitterCamError: a mistake in the settings or the inputs, found before anything is written (every
                file that is not an image it can explain, unless `skip_bad`); or a failure while writing (a
                full disk), with how far the run got.
            BrokenPipeError: the reader of the listener's output went away (`explain ... | head -1`).
            KeyboardInterrupt: after the result being written is complete (`progress()` says how far).
        """
        settings = self.settings
        names = check(settings)
        self.device = parse_device(settings.device)
        self.precision_note = slow_precision_note(self.device, settings.precision)
        # chosen before the model's first forward (the probe), which would itself collapse under load
        self.threads = ThreadGovernor(settings.threads, self.device)
        try:
            model, card = self._prepare(names)
            return self._stream(model, card)
        except BaseException:
            remove_empty(self.created)  # a run stopped before its first result leaves no empty folder
            raise
        finally:
            self.threads.restore()

    def _prepare(self, names: list[str]) -> tuple[torch.nn.Module, ModelCard]:
        settings, device = self.settings, self.device
        folders = [Path(path) for path in settings.images if Path(path).is_dir()]
        files = [Path(path) for path in settings.images if Path(path).is_file()]
        check_out(settings.out, folders, files)
        self.sources = find_images(settings.images, recursive=settings.recursive, exclude=[settings.out],
                                   outputs=self.outputs)
        bad: list[BadImage] = []
        for source in self.listener.checking(self.sources):
            try:
                check_image(source.path)
            except BadImage as exc:
                bad.append(exc)
        if bad and not settings.skip_bad:
            raise bad_images(bad, "skip_bad")
        if bad and len(bad) == len(self.sources):
            raise JitterCamError(f"{bad_images(bad)}; no image left to explain")
        self.bad = bad
        left_out = {error.path for error in bad}
        self.sources = [source for source in self.sources if source.path not in left_out]
        self.names = output_names(self.sources)
        check_destinations(settings.out, self.sources, self.names, folders if settings.recursive else [])
        check_overwrites(settings.out, self.names, names,
                         self._classes_asked() if several_classes(settings) else [None], top=settings.top is not None)
        model = load_model(settings.model, weights=settings.weights).to(device)
        shared = {"batch_size": settings.batch_size, "size": settings.size, "target_layer": settings.target_layer,
                  "precision": None if settings.precision == "fp32" else settings.precision,
                  "compile": True if settings.compile else None,
                  "progress": settings.progress}
        self.methods = build_methods(names, model, shared, settings.method_options)
        card = model_card(model)
        if settings.compile is None:
            self._compile_if_it_pays(model, card.input_size, shared)
        if settings.target is not None or settings.top is not None:
            layer = next((method.layer for method in self.methods.values() if method.layer is not None), None)
            if layer is not None:
                classes = layer.num_classes
            else:
                with torch.no_grad():
                    classes = model(torch.zeros(1, 3, card.input_size, card.input_size, device=device)).shape[1]
            for wanted in self._classes_asked():
                check_targets(wanted, 1, classes, device)
            if settings.top is not None and settings.top > classes:
                raise JitterCamError(f"top {settings.top} is more classes than the model's {classes}", option="top")
        try:
            self.created = probe_folder(settings.out)
        except OSError as exc:
            message = f"out {settings.out} is not writable: {exc.strerror or exc}"
            raise JitterCamError(message, option="out") from None
        return model, card

    def _compile_if_it_pays(self, model: torch.nn.Module, size: int, shared: dict[str, Any]) -> None:
        """Build the methods that have a compiled path again compiled where their forward passes over every
        image are long enough for torch.compile to pay and it runs here (`compiled.choose`; `compile_note`
        says what it chose)."""
        compilable = [name for name, method in self.methods.items() if getattr(method, "compiles", False)]
        per_image = self.settings.top or len(self._classes_asked()) or 1
        passes = len(self.sources) * per_image * sum(int(self.methods[name].passes(size)) for name in compilable)
        chosen, self.compile_note = compiled.choose(
            self.device, passes, partial(tuning.forward_seconds, model, self.device, size), compilable,
            compiled.pieces((self.methods[name] for name in compilable), size))
        for name in compilable if chosen else ():
            method = compiled.unless_refused(partial(build_methods, [name], model, {**shared, "compile": True},
                                                     self.settings.method_options))
            if method is not None:
                self.methods[name] = method[name]

    def _stream(self, model: torch.nn.Module, card: ModelCard) -> list[Result]:
        settings, methods, out = self.settings, self.methods, self.settings.out
        assert self.threads is not None
        self.streaming = True
        self.listener.started(self)
        summary = CsvLog(out / SUMMARY, SUMMARY_COLUMNS)
        try:
            for source, name in zip(self.sources, self.names, strict=True):
                label = _label(name, source)
                asked = self._classes_asked()
                todo = self._todo(out, name, asked)
                if asked and not todo:
                    continue
                if self.threads.update():
                    self.listener.threads_changed(self.threads)
                image = load_image(source.path)
                batch = to_input(image, card).to(self.device)
                with torch.no_grad():
                    scores = model(batch)[0].float().cpu()
                probabilities = scores.sigmoid() if card.multi_label else scores.softmax(dim=0)
                if not asked:  # each image's own top class(es)
                    asked = probabilities.topk(settings.top or 1).indices.tolist()
                    todo = self._todo(out, name, asked)
                height, width = _stored_size(image.width, image.height, settings.npy_max)
                for method_name, classes in todo.items():
                    self.listener.explaining(label, method_name)
                    # all the classes in one call: one forward (and a backward per class) for a gradient CAM
                    target = classes[0] if len(classes) == 1 else [classes]
                    raw, seconds = timed(partial(methods[method_name], batch, target), self.device)
                    heats = upsample(raw.reshape(len(classes), *raw.shape[-2:]), (height, width)).float().cpu()
                    for cls, heat in zip(classes, heats.numpy()):
                        result = Result(str(source.path), method_name, cls, card.class_name(cls),
                                        float(probabilities[cls]), seconds / len(classes), self.threads.count,
                                        *self._files(out, name, method_name, cls))
                        self._write(label, result, image, heat, summary)
                del image, batch
        except BrokenPipeError:  # the listener's reader left (`| head -1`): not a disk problem
            raise
        except OSError as exc:  # a full disk, a folder made read-only during the run
            where = f" {exc.filename}" if exc.filename else ""
            raise JitterCamError(f"cannot write{where}: {exc.strerror or exc} ({self.progress()})") from None
        except torch.OutOfMemoryError:
            raise JitterCamError(f"out of memory on {self.device}; try a smaller batch_size ({self.progress()})",
                                 option="batch_size") from None
        except JitterCamError as exc:
            raise JitterCamError(f"{exc} ({self.progress()})", option=exc.option) from None
        return self.written

    def _classes_asked(self) -> list[int]:
        """The classes given by `target` (one or several), or [] when they come from each image (`top`, top-1)."""
        target = self.settings.target
        if target is None:
            return []
        return [target] if isinstance(target, int) else [int(c) for c in target]

    def _files(self, out: Path, name: str, method: str, cls: int) -> tuple[Path, Path]:
        return _files(out, name, method, cls if several_classes(self.settings) else None)

    def _todo(self, out: Path, name: str, classes: list[int]) -> dict[str, list[int]]:
        """{method: the classes still to explain}; the ones whose files are there are counted as skipped."""
        todo: dict[str, list[int]] = {}
        for method in self.methods:
            left = [c for c in classes if not (self.settings.skip_existing
                                                 and all(f.exists() for f in self._files(out, name, method, c)))]
            if len(left) < len(classes):
                self.skipped += len(classes) - len(left)
                self.listener.skipped(len(classes) - len(left))
            if left:
                todo[method] = left
        return todo

    def _write(self, label: str, result: Result, image: Image.Image, heat: np.ndarray, summary: CsvLog) -> None:
        """The map, its overlay and the summary row, then the count and the listener's line; Ctrl-C waits until
        all are there, so every result on disk is also reported."""
        settings = self.settings
        picture = overlay(image, heat, alpha=settings.alpha, cmap=settings.cmap)
        if settings.title:
            picture = titled(picture, f"{result.class_name} ({result.class_index})  p={result.probability:.3f}  "
                                      f"{result.method}")
        with deferred_interrupt():
            commit([
                (result.npy, lambda stream: np.save(stream, heat)),
                (result.png, lambda stream: picture.save(stream, format="PNG", compress_level=1,
                                                         pnginfo=png_mark())),
            ])
            summary.append([
                _from_out(result.image, settings.out), settings.model, result.method, result.class_index,
                result.class_name,
                f"{result.probability:.6f}", f"{result.seconds:.3f}", result.threads,
                result.npy.relative_to(settings.out).as_posix(), result.png.relative_to(settings.out).as_posix(),
            ])
            self.written.append(result)  # inside: a Ctrl-C deferred to the block's end counts this result
            self.listener.explained(label, result)


def check_out(out: Path, folders: Sequence[Path], files: Sequence[Path] = ()) -> None:
    """Cheap checks of the output folder before the images are read; the real write check comes before
    computing.

    Args:
        out: the output folder.
        folders: the image folders given.
        files: the image files given.

    Raises:
        JitterCamError: `out` is a file, cannot be created or written, or is one of the image `folders` or
            the folder of one of the image `files` (maps and photos would mix).
    """
    if out.exists() and not out.is_dir():
        raise JitterCamError(f"out {out} exists and is not a folder", option="out")
    existing = nearest_existing(out)
    if not existing.is_dir():
        raise JitterCamError(f"out {out} cannot be created: {existing} is not a folder", option="out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise JitterCamError(f"out {out} is not writable ({existing} does not allow writing)", option="out")
    real = os.path.realpath(out)
    for folder in folders:
        if os.path.realpath(folder) == real:
            raise JitterCamError(f"out {out} is one of the image folders: maps and photos would mix; choose "
                                 f"another folder (e.g. {folder / 'maps'})", option="out")
    for file in files:
        if os.path.realpath(file.parent) == real:
            raise JitterCamError(f"out {out} is the folder of the image {file}: maps and photos would mix; "
                                 f"choose another folder (e.g. {file.parent / 'maps'})", option="out")


def check_destinations(out: Path, sources: Sequence[Source], names: Sequence[str],
                       searched: Sequence[Path] = ()) -> None:
    """The maps' folders hold no photo: none is the folder of an image explained (an `out` above the images'
    folders would put each map beside its photo), and no photo lies in `out` where a recursive search of
    one of the `searched` folders left it out because it is in `out`.

    Args:
        out: the output folder.
        sources: the images to explain, as `find_images` found them.
        names: their output names (`output_names`).
        searched: the folders searched recursively.

    Raises:
        JitterCamError: either would happen.
    """
    photos = {os.path.realpath(source.path.parent) for source in sources}
    for source, name in zip(sources, names, strict=True):
        folder = os.path.realpath((out / name).parent)
        if folder in photos:
            raise JitterCamError(f"out {out} would put the maps of {source.path} in {folder}, a folder of the images "
                                 f"given: maps and photos would mix; choose a folder outside the images' folders",
                                 option="out")
    real_out = os.path.realpath(out)
    if not out.is_dir() or not any(real_out.startswith(os.path.realpath(f) + os.sep) for f in searched):
        return
    suffixes = image_suffixes()
    for root, _, files in os.walk(out):
        for file in sorted(files):
            path = Path(root) / file
            if path.suffix.lower() in suffixes and not file.startswith(".") and not is_output(path):
                raise JitterCamError(f"out {out} lies in a folder searched and holds a photo of its own ({path}), "
                                     f"which the search leaves out: choose an output folder without photos",
                                     option="out")


def check_overwrites(out: Path, names: Sequence[str], methods: Sequence[str], classes: Sequence[int | None],
                     top: bool = False) -> None:
    """No picture that jittercam did not write is where an overlay will go (a map's name can be a photo's:
    `x.gradcam.png`).

    Args:
        out: the output folder.
        names: the images' output names (`output_names`).
        methods: the methods' names.
        classes: the classes in the file names ([None]: one map per image, no class in the name).
        top: the classes come from each image (`top`): every `NAME.METHOD.*.png` may be one.

    Raises:
        JitterCamError: such a picture is there.
    """
    for name in names:
        for method in methods:
            pictures = [_files(out, name, method, cls)[1] for cls in classes]
            if top:
                single = _files(out, name, method)[1]
                pictures += sorted(single.parent.glob(f"{glob_escape(single.stem)}.*.png"))
            for picture in pictures:
                if picture.is_file() and not is_output(picture):
                    raise JitterCamError(f"out {out} holds {picture}, which jittercam did not write and explaining "
                                         f"would overwrite; choose another output folder", option="out")


def _from_out(image: str, out: Path) -> str:
    """The image's path as summary.csv holds it: relative to `out`, like the map's (absolute where no relative
    path leads there, e.g. another drive)."""
    try:
        return Path(os.path.relpath(os.path.realpath(image), os.path.realpath(out))).as_posix()
    except ValueError:
        return os.path.abspath(image)


def _stored_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """(height, width) of the .npy map: the photo's size, scaled down to `longest` on its longer side."""
    scale = min(1.0, longest / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _label(name: str, source: Source) -> str:
    """How an image is named in messages: its output name's folders and its file name (`a/x.png`)."""
    folder = PurePosixPath(name).parent
    return source.path.name if str(folder) == "." else f"{folder}/{source.path.name}"


def _files(out: Path, name: str, method: str, cls: int | None = None) -> tuple[Path, Path]:
    base = f"{name}.{method.replace(':', '-')}" + ("" if cls is None else f".{cls}")
    return out / f"{base}.npy", out / f"{base}.png"
