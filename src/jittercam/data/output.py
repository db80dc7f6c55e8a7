"""Writing results so that an interruption or a full disk never leaves a partial file.

Every file is written to a hidden temporary file in its own folder, flushed to disk, and renamed over its
name (`os.replace`, atomic on POSIX and Windows): a reader sees the old file or the new one, never half of
one. A CSV row is appended with one write and cut off again if that write fails. Ctrl-C while a result's
files are being committed is held back until they are all there (`deferred_interrupt`).

Every picture `explain` and `compare` write carries `MARK`, a PNG text chunk (`Software: jittercam`), so
that a later run never takes it for a photo (`jittercam.data.collection.is_output`).
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from PIL.PngImagePlugin import PngInfo

MARK = ("Software", "jittercam")  # the PNG text chunk (key, value) of every picture this package writes


def png_mark() -> PngInfo:
    """`MARK` as Pillow writes it: `image.save(stream, format="PNG", pnginfo=png_mark())`."""
    info = PngInfo()
    info.add_text(*MARK)
    return info


def _creation_mode() -> int:
    """The permissions a plain `open()` would give a new file (0o666 less the umask): `mkstemp` makes
    0o600 files, which would leave the outputs unreadable to others."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace `path` with what `write(stream)` writes, all or nothing. Any exception (a full
    disk's `OSError`, `KeyboardInterrupt`) removes the temporary file and propagates."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, _creation_mode())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _why(exc: OSError) -> str:
    """The reason a write failed, in words: the system's, and numpy's short write (`ndarray.tofile` says
    `187500 requested and 102368 written`) read as the full disk or quota it comes from."""
    text = exc.strerror or str(exc)
    short = re.fullmatch(r"(\d+) requested and (\d+) written", text)
    if short:
        return f"the disk is full or over quota ({short[2]} of {short[1]} bytes written)"
    return text


def commit(files: Sequence[tuple[Path, Callable[[BinaryIO], None]]]) -> None:
    """Write several files that belong together (a map and its overlay): if one fails, the ones already
    written by this call are removed again, so that a result is there completely or not at all."""
    done: list[Path] = []
    try:
        for path, write in files:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, write)
            except OSError as exc:  # named after the file meant, not the temporary one
                raise OSError(exc.errno, _why(exc), str(path)) from exc
            done.append(path)
    except BaseException:
        for path in done:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


class CsvLog:
    """A CSV file that rows are appended to, one complete line per write; the header is written when the
    file is new or empty."""

    def __init__(self, path: Path, header: Sequence[str]) -> None:
        self.path = path
        self.header = list(header)

    def append(self, row: Sequence[object]) -> None:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(descriptor).st_size
            if size == 0:
                writer.writerow(self.header)
            writer.writerow(row)
            data = text.getvalue().encode("utf-8")
            try:
                while data:
                    data = data[os.write(descriptor, data) :]
                os.fsync(descriptor)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(descriptor, size)
                if isinstance(exc, OSError):
                    raise OSError(exc.errno, _why(exc), str(self.path)) from exc
                raise
        finally:
            os.close(descriptor)


def nearest_existing(path: Path) -> Path:
    """`path` if it exists, else its nearest parent that does: where creating it would start."""
    return next(parent for parent in [path, *path.absolute().parents] if parent.exists())


def probe_folder(folder: Path) -> list[Path]:
    """Create `folder` (with its parents) and check that a file can be written there, leaving nothing
    behind: folders this call created are removed again when the check fails. Raises `OSError`.

    Returns:
        The folders this call created, deepest first (for `remove_empty` when a run then writes nothing).
    """
    created = []
    for parent in [folder, *folder.parents]:
        if parent.exists():
            break
        created.append(parent)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".jittercam-write-check.", dir=folder)
        os.close(handle)
        os.unlink(temporary)
    except BaseException:
        remove_empty(created)
        raise
    return created


def remove_empty(folders: Sequence[Path]) -> None:
    """Remove each of `folders` (deepest first) that is empty; leave the others."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back while the block runs, then raise `KeyboardInterrupt` after it if one
    came. Outside the main thread (where signals cannot be handled) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:  # ignored, or someone else's
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
