"""Image collections: files and folders given on a command line, expanded, de-duplicated, and named.

Naming rule (`output_names`): every image is named by its path relative to the deepest folder that
contains all the images, without its extension — so the images of one folder (or files from one folder)
get flat names (`x`), and images from several folders keep their folders (`a/x`, `b/x`). Two images of one
folder whose names differ only in their extension (`x.jpg`, `x.png`) keep their extension (`x.jpg`,
`x.png`); names that still clash when upper and lower case are not told apart (a macOS or Windows disk)
get `~2`, `~3`, ... in the sorted order of their paths. The rule depends only on the set of images, not
on the order they are given in.
"""
from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import JitterCamError
from ..methods import check_method_name
from ..words import plural
from .output import MARK

# the extensions a folder is searched for: common photo and image formats Pillow reads (a file given by
# name is tried whatever its extension)
_PHOTO_SUFFIXES = {
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k", ".jpx", ".avif", ".heic", ".heif",
}


def image_suffixes() -> set[str]:
    """The photo extensions that this Pillow can open.

    Returns:
        Lower-case suffixes with the dot (`.jpg`, `.png`, ...).
    """
    Image.init()
    readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return _PHOTO_SUFFIXES & readable


@dataclass(frozen=True)
class Source:
    """One image to explain.

    Attributes:
        path: its path as found (given, or joined under a given folder).
    """

    path: Path

    @property
    def key(self) -> str:
        """What makes two paths the same file: the real path (symbolic links and `..` resolved)."""
        return os.path.realpath(self.path)


def is_output(path: Path) -> bool:
    """Whether `path` is a picture this package wrote (`explain`'s overlays, `compare`'s figures), not a photo:
    a PNG carrying `jittercam.data.output.MARK`, or — written before the mark existed — `NAME.METHOD.png`
    beside its `NAME.METHOD.npy`, METHOD a method's name as `explain` spells it in files."""
    if path.suffix.lower() != ".png":
        return False
    key, value = MARK
    try:
        with Image.open(path) as image:
            if str(image.info.get(key, "")).split(" ")[0] == value:
                return True
    except Exception:  # noqa: BLE001 - not readable as a PNG: the image check says why
        return False
    method = Path(path.stem).suffix[1:]
    if not method or not path.with_suffix(".npy").is_file():
        return False
    try:
        check_method_name(method.replace("-", ":"))
    except JitterCamError:
        return False
    return True


def find_images(
    arguments: Sequence[str | Path], recursive: bool = False, exclude: Iterable[str | Path] = (),
    outputs: list[Path] | None = None,
) -> list[Source]:
    """The images named by `arguments` — files, and the image files of folders (their subfolders too
    when `recursive`) — in the order given, folders sorted by path, each file once.

    In folders, only files with a photo extension (`image_suffixes()`) are taken, hidden files and
    folders (a name starting with '.') are skipped, and so is everything under an `exclude` folder
    (the output folder) and every picture this package wrote (`is_output`).

    Args:
        arguments: image files and folders.
        recursive: search the folders' subfolders too.
        exclude: folders whose files are never taken.
        outputs: when given, the pictures this package wrote that were met in folders and left out are
            appended to it.

    Returns:
        One `Source` per image file, in the order described.

    Raises:
        JitterCamError: a missing path, a folder without images, or a file given by name that this package
            wrote.
    """
    suffixes = image_suffixes()
    excluded = [os.path.realpath(folder) for folder in exclude]
    found: dict[str, Source] = {}
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            images = _folder_images(path, recursive, suffixes, excluded)
            written = {image for image in images if is_output(image)}
            if outputs is not None:
                outputs += [image for image in images if image in written]
            images = [image for image in images if image not in written]
            if not images:
                raise _empty_folder(path, recursive, len(written))
        elif path.is_file():
            if is_output(path):
                raise JitterCamError(f"{path} was written by jittercam (a map over a photo, or a figure), "
                                     "not a photo: give the photo itself")
            images = [path]
        elif path.exists():
            raise JitterCamError(f"not a file or folder: {path}")
        else:
            raise JitterCamError(f"no such file: {path}")
        for image in images:
            source = Source(image)
            found.setdefault(source.key, source)
    return list(found.values())


def _folder_images(folder: Path, recursive: bool, suffixes: set[str], excluded: list[str]) -> list[Path]:
    images = []
    for root, folders, files in os.walk(folder):
        real = os.path.realpath(root)
        if any(real == out or real.startswith(out + os.sep) for out in excluded):
            folders.clear()
            continue
        folders[:] = sorted(name for name in folders if not name.startswith(".")) if recursive else []
        images += [
            Path(root) / name
            for name in sorted(files)
            if not name.startswith(".") and Path(name).suffix.lower() in suffixes and (Path(root) / name).is_file()
        ]
    return sorted(images, key=lambda p: p.parts)


def _empty_folder(folder: Path, recursive: bool, written: int) -> JitterCamError:
    message = f"no images in folder {folder}"
    if written:
        message += f" (only {plural(written, 'picture')} that jittercam wrote)"
    option = None
    if not recursive and any(child.is_dir() and not child.name.startswith(".") for child in folder.iterdir()):
        message += " (recursive searches its subfolders too)"
        option = "recursive"
    return JitterCamError(message + f"; image files end in {', '.join(sorted(image_suffixes()))}", option=option)


def output_names(sources: Sequence[Source]) -> list[str]:
    """A unique output name per source, by the module's naming rule.

    Args:
        sources: the images, as `find_images` gives them.

    Returns:
        One name per source, in order: '/'-separated, relative to the sources' common folder, without
        the extension (kept where two files differ only by it).
    """
    if not sources:
        return []
    absolute = [os.path.abspath(source.path) for source in sources]
    base = os.path.commonpath([os.path.dirname(path) for path in absolute])
    relative = [Path(os.path.relpath(path, base)) for path in absolute]
    names = [path.with_suffix("").as_posix() for path in relative]

    # the same folder and stem, different extensions: keep the extension
    groups: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(names):
        groups[name.casefold()].append(index)
    for members in groups.values():
        if len(members) > 1:
            for index in members:
                names[index] = relative[index].as_posix()

    # still equal without regard to case: number them in the order of their paths
    groups = defaultdict(list)
    for index, name in enumerate(names):
        groups[name.casefold()].append(index)
    for members in groups.values():
        if len(members) > 1:
            for number, index in enumerate(sorted(members, key=lambda i: absolute[i])[1:], start=2):
                names[index] = f"{names[index]}~{number}"
    return names
