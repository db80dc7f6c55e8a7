"""`jittercam explain` on collections: checked up front, written as it goes, nothing lost or overwritten."""
from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import GOLDFISH
from jittercam.cli import main
from jittercam.methods.gradient import GradCAM

ROOT = Path(__file__).resolve().parent.parent


def _photo(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> Path:
    """A small picture with some structure (a bright square on noise), different for each seed."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 80).astype(np.uint8)
    top, left = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
    pixels[top : top + size[1] // 3, left : left + size[0] // 3] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def _one_error_line(capsys) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("jittercam: error: "), error
    return error


@pytest.fixture
def computing_is_an_error(monkeypatch):
    """Any explanation computed fails the test: used where an error must come before computing."""

    def refuse(self, images, target):
        raise AssertionError("an explanation was computed")

    monkeypatch.setattr(GradCAM, "_explain", refuse)


def test_colliding_names_give_distinct_files_and_a_true_count(tmp_path, capsys):
    a, b = _photo(tmp_path / "a" / "x.png", 1), _photo(tmp_path / "b" / "x.png", 2)
    out = tmp_path / "out"
    # the same file twice (once through a '..' path) is explained once
    same = tmp_path / "a" / ".." / "a" / "x.png"
    assert main(["explain", str(a), str(b), str(same), "--method", "gradcam", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 4 files to" in printed and "(2 maps)" in printed
    assert "a/x.png  gradcam  class" in printed and "b/x.png  gradcam  class" in printed
    assert _files(out) == ["a/x.gradcam.npy", "a/x.gradcam.png", "b/x.gradcam.npy", "b/x.gradcam.png",
                           "summary.csv"]
    assert not np.array_equal(np.load(out / "a/x.gradcam.npy"), np.load(out / "b/x.gradcam.npy"))
    rows = _summary(out)
    assert [(row["image"], row["npy"], row["png"]) for row in rows] == [
        ("../a/x.png", "a/x.gradcam.npy", "a/x.gradcam.png"), ("../b/x.png", "b/x.gradcam.npy", "b/x.gradcam.png")
    ]


def test_summary_has_a_row_per_written_result(tmp_path, capsys):
    photos = tmp_path / "photos"
    for seed in range(3):
        _photo(photos / f"p{seed}.png", seed)
    out = tmp_path / "out"
    assert main(["explain", str(photos), "--method", "gradcam,xgradcam", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")  # --quiet: nothing on stdout, and no bar off a terminal
    rows = _summary(out)
    assert list(rows[0]) == ["image", "model", "method", "class_index", "class_name", "probability", "seconds",
                             "threads", "npy", "png"]
    assert [(Path(row["image"]).name, row["method"]) for row in rows] == [
        (f"p{seed}.png", method) for seed in range(3) for method in ("gradcam", "xgradcam")
    ]
    for row in rows:
        assert row["model"] == "efficientnet_lite0" and 0 < float(row["probability"]) <= 1
        assert float(row["seconds"]) > 0 and int(row["threads"]) >= 1
        assert (out / row["npy"]).is_file() and (out / row["png"]).is_file()
        assert row["class_name"]  # an ImageNet name
    # a second run appends its rows
    assert main(["explain", str(photos / "p0.png"), "--method", "gradcam", "--out", str(out), "--quiet"]) == 0
    assert len(_summary(out)) == 7


def test_a_folder_with_a_corrupt_file_is_refused_up_front(tmp_path, capsys, computing_is_an_error):
    photos = tmp_path / "photos"
    _photo(photos / "good.png", 1)
    (photos / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    out = tmp_path / "out"
    assert main(["explain", str(photos), "--method", "gradcam", "--out", str(out)]) == 2
    error = _one_error_line(capsys)  # a JPEG's first bytes and nothing of its picture: truncated
    assert f"truncated image: {photos / 'zz-broken.jpg'}" in error and "--skip-bad leaves it out" in error
    assert not out.exists()


@pytest.mark.parametrize("how", ["below a file", "read-only"])
def test_an_unwritable_out_is_refused_before_computing(tmp_path, capsys, monkeypatch, computing_is_an_error, how):
    image = _photo(tmp_path / "x.png", 1)
    if how == "below a file":
        (tmp_path / "taken").write_text("a file")
        out = tmp_path / "taken" / "out"
        message = "cannot be created: "
    else:  # what a read-only disk or folder does to the write check (root passes permission checks)

        def read_only(folder):
            raise PermissionError(errno.EROFS, "Read-only file system", str(folder))

        monkeypatch.setattr("jittercam.explain.probe_folder", read_only)
        out = tmp_path / "out"
        message = "is not writable: Read-only file system"
    assert main(["explain", str(image), "--method", "gradcam", "--out", str(out)]) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()


def test_out_cannot_be_an_image_folder(tmp_path, capsys, computing_is_an_error):
    _photo(tmp_path / "photos" / "x.png", 1)
    assert main(["explain", str(tmp_path / "photos"), "--method", "gradcam", "--out",
                 str(tmp_path / "photos")]) == 2
    assert "is one of the image folders" in _one_error_line(capsys)
    assert _files(tmp_path / "photos") == ["x.png"]


def test_out_above_the_images_folders_is_refused_before_a_photo_is_touched(tmp_path, capsys, computing_is_an_error):
    """An `out` above two images' folders would put each map beside its photo and write over a picture
    named like a map (the names mirror the folders: a/x.gradcam.png)."""
    x, y = _photo(tmp_path / "a" / "x.png", 1), _photo(tmp_path / "b" / "y.png", 2)
    _photo(tmp_path / "a" / "x.gradcam.png", 3)  # a user's picture, not jittercam's
    before = _files(tmp_path)
    assert main(["explain", str(x), str(y), "--method", "gradcam", "--out", str(tmp_path)]) == 2
    error = _one_error_line(capsys)
    assert f"--out {tmp_path} would put the maps of {x} in {tmp_path / 'a'}, a folder of the images given" in error
    assert _files(tmp_path) == before


def test_a_picture_jittercam_did_not_write_is_never_overwritten(tmp_path, capsys, computing_is_an_error):
    x = _photo(tmp_path / "photos" / "x.png", 1)
    theirs = _photo(tmp_path / "out" / "x.gradcam.png", 3)
    before = theirs.read_bytes()
    assert main(["explain", str(x), "--method", "gradcam", "--out", str(tmp_path / "out")]) == 2
    assert f"--out {tmp_path / 'out'} holds {theirs}, which jittercam did not write" in _one_error_line(capsys)
    assert theirs.read_bytes() == before and _files(tmp_path / "out") == ["x.gradcam.png"]
    theirs.rename(tmp_path / "out" / "x.gradcam.1.png")
    assert main(["explain", str(x), "--method", "gradcam", "--top", "2", "--out", str(tmp_path / "out")]) == 2
    assert "x.gradcam.1.png, which jittercam did not write and explaining would overwrite" in _one_error_line(capsys)


def test_out_inside_a_searched_folder_may_not_hide_photos(tmp_path, capsys, computing_is_an_error):
    """With --recursive the search leaves `out` out: a photo in it would be neither explained nor said."""
    _photo(tmp_path / "photos" / "b" / "x.png", 1)
    hidden = _photo(tmp_path / "photos" / "a" / "x.png", 2)
    assert main(["explain", str(tmp_path / "photos"), "-r", "--method", "gradcam", "--out",
                 str(tmp_path / "photos" / "a")]) == 2
    assert f"holds a photo of its own ({hidden}), which the search leaves out" in _one_error_line(capsys)
    assert _files(tmp_path / "photos") == ["a/x.png", "b/x.png"]


def test_a_full_disk_leaves_complete_files_only(tmp_path, capsys, monkeypatch):
    for seed in range(3):
        _photo(tmp_path / f"p{seed}.png", seed)
    out = tmp_path / "out"
    real_save = Image.Image.save
    saved = []

    def save(self, fp, *args, **kwargs):  # the second overlay fills the disk half-way through
        saved.append(fp)
        if len(saved) == 2:
            fp.write(b"\x89PNG\r\n\x1a\n half an image")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    paths = [str(tmp_path / f"p{seed}.png") for seed in range(3)]
    assert main(["explain", *paths, "--method", "gradcam", "--out", str(out)]) == 2
    error = _one_error_line(capsys)
    assert f"cannot write {out / 'p1.gradcam.png'}: No space left on device (1 of 3 maps written" in error
    # the first result whole; of the second, neither the map nor a piece of the overlay; no temporary file
    assert _files(out) == ["p0.gradcam.npy", "p0.gradcam.png", "summary.csv"]
    monkeypatch.undo()
    assert Image.open(out / "p0.gradcam.png").size == (64, 48)
    assert len(_summary(out)) == 1


def test_a_full_disk_under_numpys_short_write_is_said_as_a_full_disk(tmp_path, capsys, monkeypatch):
    _photo(tmp_path / "p.png", 0)
    out = tmp_path / "out"

    def save(stream, array, *args, **kwargs):  # ndarray.tofile's error when fwrite stops short
        stream.write(b"\x93NUMPY half")
        raise OSError(f"{array.nbytes} requested and 12 written")

    monkeypatch.setattr(np, "save", save)
    assert main(["explain", str(tmp_path / "p.png"), "--method", "gradcam", "--out", str(out)]) == 2
    error = _one_error_line(capsys)
    assert f"cannot write {out / 'p.gradcam.npy'}: the disk is full or over quota (12 of " in error
    assert "requested" not in error
    assert _files(out) == []


_SLOW_SECOND_EXPLANATION = """
import sys, time
from jittercam.methods.gradient import GradCAM
from jittercam.cli import main

explain, calls = GradCAM._explain, []

def slow(self, images, target):  # the first explanation as usual, the second one waits to be stopped
    calls.append(None)
    if len(calls) > 1:
        time.sleep(600)
    return explain(self, images, target)

GradCAM._explain = slow
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_keeps_complete_results_and_skip_existing_finishes_the_rest(tmp_path, capsys, monkeypatch):
    images = [str(_photo(tmp_path / "photos" / f"p{seed}.png", seed)) for seed in range(3)]
    out = tmp_path / "out"
    command = ["explain", *images, "--method", "gradcam", "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-c", _SLOW_SECOND_EXPLANATION, *command], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ((out / "summary.csv").exists() and len(_summary(out)) == 1):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the first result never came"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert stderr == (f"jittercam: interrupted: 1 of 3 maps written to {out}; run the same command with "
                      "--skip-existing to finish\n")
    assert "p0.png  gradcam  class" in stdout
    assert _files(out) == ["p0.gradcam.npy", "p0.gradcam.png", "summary.csv"]
    first = (out / "p0.gradcam.png").stat()

    computed = []
    explain = GradCAM._explain
    monkeypatch.setattr(GradCAM, "_explain", lambda self, x, t: computed.append(None) or explain(self, x, t))
    assert main([*command, "--skip-existing"]) == 0
    assert "wrote 4 files" in capsys.readouterr().out
    assert len(computed) == 2  # p1 and p2 only
    assert (out / "p0.gradcam.png").stat().st_mtime_ns == first.st_mtime_ns
    assert [Path(row["image"]).name for row in _summary(out)] == ["p0.png", "p1.png", "p2.png"]
    assert _files(out) == sorted([f"p{seed}.gradcam.{ext}" for seed in range(3) for ext in ("npy", "png")]
                                 + ["summary.csv"])


def test_skip_existing_with_everything_there_computes_nothing(tmp_path, capsys, monkeypatch):
    image = _photo(tmp_path / "x.png", 1)
    out = tmp_path / "out"
    assert main(["explain", str(image), "--method", "gradcam", "--out", str(out)]) == 0
    monkeypatch.setattr(GradCAM, "_explain", lambda *a: pytest.fail("recomputed"))
    capsys.readouterr()
    assert main(["explain", str(image), "--method", "gradcam", "--out", str(out), "--skip-existing"]) == 0
    assert "wrote 0 files" in capsys.readouterr().out and len(_summary(out)) == 1


def test_ctrl_c_while_files_are_committed_waits_for_them():
    from jittercam.data.output import deferred_interrupt

    done = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        done.append("all files written")
    assert done == ["all files written"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_failed_csv_append_is_cut_off(tmp_path, monkeypatch):
    from jittercam.data import output

    log = output.CsvLog(tmp_path / "log.csv", ["a", "b"])
    log.append([1, 2])
    real_write = os.write

    def half(descriptor, data):
        real_write(descriptor, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output.os, "write", half)
    with pytest.raises(OSError):
        log.append([3, "a longer value, with a comma"])
    assert (tmp_path / "log.csv").read_text() == "a,b\n1,2\n"


def test_the_real_photo_explained_through_a_folder_matches_the_file(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "goldfish.jpg").write_bytes(GOLDFISH.read_bytes())
    out = tmp_path / "out"
    assert main(["explain", str(photos), str(photos / "goldfish.jpg"), "--method", "gradcam",
                 "--out", str(out)]) == 0
    assert "goldfish.jpg  gradcam  class 1 (goldfish)  p=0.884" in capsys.readouterr().out
    assert _files(out) == ["goldfish.gradcam.npy", "goldfish.gradcam.png", "summary.csv"]


def test_a_run_stopped_before_its_first_result_leaves_no_folder_it_made(tmp_path, capsys, monkeypatch):
    x = _photo(tmp_path / "photos" / "x.png", 1)

    def interrupted(self, images, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(GradCAM, "_explain", interrupted)
    assert main(["explain", str(x), "--method", "gradcam", "--out", str(tmp_path / "new" / "maps")]) == 130
    assert "interrupted: 0 of 1 map written" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    assert main(["explain", str(x), "--method", "gradcam", "--out", str(tmp_path / "kept")]) == 130
    assert (tmp_path / "kept").is_dir()  # a folder the run did not make stays
