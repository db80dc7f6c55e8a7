"""A comparison figure like the paper's Figure 3: a row per image (the photo first), a column per method, each
map over the photo, titled with the method, the class explained and the seconds it took.

Up to `MAX_METHODS` methods make one row per image, as the paper draws it. More methods (`all` is over 25)
are cut into blocks of at most `MAX_METHODS` (as even as possible, in the order given), each block a row per
image with the photo first again, blocks one under the other; when the blocks would take more than
`MAX_ROWS` rows of panels, they go to several files, `NAME-1.png`, `NAME-2.png`, ... (`figure_files`).

`write_figure(images, out, methods=...)` is the library behind `jittercam compare`.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import load_image, to_input
from .data.collection import is_output
from .data.images import BadImage, bad_images
from .data.output import MARK, atomic_write, nearest_existing, probe_folder, remove_empty
from .errors import JitterCamError
from .frontend import MethodOptions, build_methods, check_applies, check_method_options
from .frontend import method_names as _method_names
from .inputs import check_targets, parse_device
from .maps import upsample
from .methods import CAMMethod
from .models import ModelCard, load_model, model_card
from .runtime import timed
from .viz import overlay

PANEL_PIXELS = 256  # the longer side of each panel
MAX_METHODS = 8  # methods in one row of panels (after the photo): 9 panels, about 2,100 px wide
MAX_ROWS = 8  # rows of panels in one file
SLOW_PASSES = 1000  # forward passes per image over which `write_figure` says a method is slow


@dataclass
class Panel:
    """One cell of the figure."""

    method: str
    image: Image.Image  # the photo at panel size, with the map over it
    title: str


def method_names(spec: str | Sequence[str], exclude: str | Sequence[str] = ()) -> list[str]:
    """'all' → every registered method and wrapper with its default options; else a checked list.

    Args:
        spec: names, comma lists or 'all'.
        exclude: names to leave out (comma lists too), each a method `spec` names.

    Returns:
        The names, in order.

    Raises:
        JitterCamError: an unknown name, no name left, or an excluded name that is not among `spec`'s.
    """
    names = _method_names(spec)
    if not exclude:
        return names
    left_out = _method_names(exclude, option="exclude")
    for name in left_out:
        if name not in names:
            raise JitterCamError(f"exclude {name}: not among the methods ({', '.join(names)})", option="exclude")
    kept = [name for name in names if name not in left_out]
    if not kept:
        raise JitterCamError("exclude leaves no method", option="exclude")
    return kept


def _is_all(spec: str | Sequence[str]) -> bool:
    parts = [spec] if isinstance(spec, str) else list(spec)
    return [name.strip() for part in parts for name in part.split(",") if name.strip()] == ["all"]


def blocks(count: int, most: int = MAX_METHODS) -> list[int]:
    """How many methods each block of a figure has: `count` cut into as few blocks of at most `most` as
    possible, as even as possible, the larger first (27 -> [7, 7, 7, 6]).

    Args:
        count: the number of methods.
        most: the most methods in one block.

    Returns:
        The block sizes, summing to `count`.
    """
    parts = max(1, -(-count // most))
    return [count // parts + (index < count % parts) for index in range(parts)]


def figure_files(out: Path, images: int, methods: int) -> list[Path]:
    """The files a figure of `images` rows and `methods` methods is written to: `out` itself when it fits in
    `MAX_ROWS` rows of panels, else `out` with `-1`, `-2`, ... before `.png`, one per file drawn.

    Args:
        out: the path given (`grid.png`).
        images: the number of images (rows per block).
        methods: the number of methods.

    Returns:
        The paths, in order.
    """
    pages = len(_pages(images, blocks(methods)))
    if pages == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{page}{out.suffix}") for page in range(1, pages + 1)]


def _pages(images: int, sizes: list[int]) -> list[list[int]]:
    """The blocks (their sizes) of each file: as many as fit in `MAX_ROWS` rows, at least one."""
    per_page = max(1, MAX_ROWS // max(1, images))
    return [sizes[start:start + per_page] for start in range(0, len(sizes), per_page)]


def check_out(out: Path) -> None:
    """Refuse a figure path that is not a `.png` file name, or whose folder is not writable or cannot be
    created (`option="out"`). Nothing is created here: `_make_folder` does that once all else is checked."""
    if out.suffix.lower() != ".png":
        raise JitterCamError(f"out {out} must end in .png", option="out")
    if out.is_dir():
        raise JitterCamError(f"out {out} is a folder; give a file name ending in .png", option="out")
    existing = nearest_existing(out.parent)
    if not existing.is_dir():
        raise JitterCamError(f"out {out} cannot be written: {existing} is not a folder", option="out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise JitterCamError(f"out {out}: cannot write in {existing}", option="out")


def _make_folder(out: Path) -> list[Path]:
    """Create the figure's missing folders and check that a file can be written there (`option="out"`);
    the folders created are removed again when it cannot. Returns the folders created, deepest first."""
    try:
        return probe_folder(out.parent)
    except OSError as exc:
        raise JitterCamError(f"out {out}: cannot write in {out.parent} ({exc.strerror or exc})",
                             option="out") from None


def write_figure(images: Sequence[str | Path], out: Path, *, methods: str | Sequence[str] = "gradcam,jittercam",
                 method_options: MethodOptions | None = None, model: str = "efficientnet_lite0",
                 weights: str | None = None, target: int | None = None, size: int | None = None,
                 device: str = "cpu", progress: bool = False, exclude: str | Sequence[str] = (),
                 started: Callable[[], None] | None = None,
                 slow: Callable[[list[tuple[str, int]]], None] | None = None,
                 refused: Callable[[list[tuple[str, str]]], None] | None = None) -> list[list[Panel]]:
    """Explain each image with each method and write the figure to `out` (or, for many methods and images,
    to the files `figure_files` names).

    Args:
        images: image files; a file given twice is drawn once.
        out: the PNG to write (written beside and renamed: never half a file; marked as this package's, so
            that `explain` never takes it for a photo); its missing folders are created once all else is
            checked.
        methods: names, comma lists or 'all' (see `jittercam.frontend.method_names`).
        method_options: `{METHOD: {NAME: value}}` (see `jittercam.frontend`), e.g. `{"rise": {"masks": 500}}`.
        model, weights: as for `jittercam.load_model`.
        target: the class to explain; None: each image's top-1 class.
        size: Jitter-CAM / Upscale-CAM map size.
        device: where to compute.
        progress: a progress bar on stderr.
        exclude: names to leave out of `methods` (`methods="all", exclude="polycam,rise"`).
        started: called once everything is checked, before the first map is computed.
        slow: called, before the first map, with `[(name, passes per image), ...]` of the methods that take
            over `SLOW_PASSES` forward passes per image, slowest first, if any.
        refused: with `methods="all"` only, called with `[(name, reason), ...]` of the methods that refuse
            this model (rollout and LeGrad on a CNN, a multi-layer method on a one-layer network), which the
            figure leaves out; methods named one by one are never left out: their refusal is the error.

    Returns:
        The figure's panels, a row per image.

    Raises:
        JitterCamError: a bad option, path, image (every bad one named), name or class index (before anything
            is computed), or a figure that cannot be written.
    """
    names = method_names(methods, exclude)
    check_applies(names, size=size)
    check_method_options(method_options or {}, names)
    check_out(out)
    photos, bad = [], []
    for path in dict.fromkeys(Path(image) for image in images):
        if is_output(path):
            raise JitterCamError(f"{path} was written by jittercam (a map over a photo, or a figure), not a "
                                 "photo: give the photo itself")
        try:
            photos.append((path, load_image(path)))
        except BadImage as exc:
            bad.append(exc)
    if bad:
        raise bad_images(bad)
    where = parse_device(device)
    network = load_model(model, weights=weights).to(where)
    card = model_card(network)
    shared = {"size": size, "progress": progress}
    if _is_all(methods):
        built, left_out = {}, []
        for name in names:
            try:
                built.update(build_methods([name], network, shared, method_options))
            except JitterCamError as exc:
                left_out.append((name, str(exc)))
        if not built:
            raise JitterCamError(f"every method refuses {model}: {left_out[0][1]}")
        if left_out and refused is not None:
            refused(left_out)
    else:
        built = build_methods(names, network, shared, method_options)
    if target is not None:
        with torch.no_grad():
            classes = network(to_input(photos[0][1], card).to(where)).shape[1]
        check_targets(target, 1, classes, where)
    created = _make_folder(out)
    try:
        if started is not None:
            started()
        passes = {name: method.passes() for name, method in built.items()}
        slowest = sorted((name for name in passes if passes[name] > SLOW_PASSES), key=lambda name: -passes[name])
        if slowest and slow is not None:
            slow([(name, passes[name]) for name in slowest])
        rows = panels(photos, built, network, card, where, target, progress=progress)
        draw(rows, out)
    except BaseException:
        remove_empty(created)  # stopped before the figure (Ctrl-C): no empty folder left behind
        raise
    return rows


def panels(photos: Sequence[tuple[Path, Image.Image]], methods: Mapping[str, CAMMethod], model: torch.nn.Module,
           card: ModelCard, device: torch.device, target: int | None, progress: bool = False) -> list[list[Panel]]:
    """The figure's panels: per photo, the photo and each method's map over it, timed."""
    from tqdm import tqdm

    bar = tqdm(total=len(photos) * len(methods), unit="map", disable=not progress, file=sys.stderr, position=0)
    rows = []
    with bar:
        for path, photo in photos:
            batch = to_input(photo, card).to(device)
            with torch.no_grad():
                probabilities = model(batch).softmax(dim=1)[0]
            cls = target if target is not None else int(probabilities.argmax())
            small = photo.resize(_panel_size(photo), Image.Resampling.LANCZOS)
            label = f"{card.class_name(cls)} ({cls}), p={float(probabilities[cls]):.2f}"
            row = [Panel("photo", small, f"{path.name}\n{label}")]
            for name, method in methods.items():
                bar.set_description(f"{path.name} {name}")
                raw, seconds = timed(partial(method, batch, cls), device)
                heat = upsample(raw, (small.height, small.width))[0].cpu().numpy().astype(np.float32)
                short_class = card.class_name(cls).split(",")[0]
                row.append(Panel(name, overlay(small, heat), f"{name}\n{short_class}, {seconds:.2f} s"))
                bar.update()
            rows.append(row)
    return rows


def _panel_size(image: Image.Image) -> tuple[int, int]:
    scale = PANEL_PIXELS / max(image.width, image.height)
    return max(1, round(image.width * scale)), max(1, round(image.height * scale))


def draw(rows: list[list[Panel]], out: Path) -> list[Path]:
    """Draw the panels as a grid (in blocks and files, as the module's docstring says) and write each PNG
    atomically.

    Args:
        rows: per image, the photo's panel then a panel per method.
        out: the figure's path, as `figure_files` reads it.

    Returns:
        The files written.

    Raises:
        JitterCamError: a file cannot be written.
    """
    files = figure_files(out, len(rows), len(rows[0]) - 1)
    start = 1
    for path, sizes in zip(files, _pages(len(rows), blocks(len(rows[0]) - 1)), strict=True):
        grid = []
        for size in sizes:
            grid += [[row[0], *row[start:start + size]] for row in rows]
            start += size
        _draw_grid(grid, path)
    _remove_stale_pages(out, files)
    return files


def _remove_stale_pages(out: Path, files: list[Path]) -> None:
    """Delete the pages an earlier figure at `out` left that this one did not write (`grid.png` once the
    figure is split into `grid-1.png`, `grid-2.png`, or a `grid-3.png` beyond this figure's pages), so the
    folder never shows an old figure beside the new one; only PNGs this package wrote (`is_output`) go."""
    written = set(files)
    candidates = [out, *(path for path in out.parent.glob(f"{glob.escape(out.stem)}-*{out.suffix}")
                         if re.fullmatch(rf"{re.escape(out.stem)}-\d+", path.stem))]
    for path in candidates:
        if path not in written and path.is_file() and is_output(path):
            with contextlib.suppress(OSError):  # an old page that cannot go is not worth failing the figure
                path.unlink()


def _draw_grid(rows: list[list[Panel]], out: Path) -> None:
    """One PNG of rows of panels, a row shorter than the longest left blank at its end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(2.1 * columns, 2.35 * len(rows)), squeeze=False, layout="constrained"
    )
    for row, cells in zip(axes, rows, strict=True):
        for axis in row[len(cells):]:
            axis.set_axis_off()
        for axis, panel in zip(row, cells, strict=False):
            axis.imshow(panel.image)
            axis.set_title(panel.title, fontsize=7)
            axis.set_axis_off()
    try:  # written beside the target and renamed, so that an interruption never leaves half a PNG
        atomic_write(out, lambda handle: figure.savefig(handle, format="png", dpi=110, metadata=dict([MARK])))
    except OSError as exc:
        raise JitterCamError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
