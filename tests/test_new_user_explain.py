"""What a new user hit with `explain` and `compare` (issue 21): outputs read back as photos, method options and
flag spellings, random weights, several bad files, a closed stdout, summary paths, plurals."""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES, GOLDFISH
from jittercam.cli import main, parser
from jittercam.data.collection import find_images, is_output
from jittercam.data.images import check_image
from jittercam.methods.gradient import GradCAM
from jittercam.methods.rise import RISE

ROOT = Path(__file__).resolve().parent.parent
CATDOG = EXAMPLES / "images" / "catdog.png"


def _photo(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(path)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _one_error_line(capsys) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("jittercam: error: "), error
    return error


@pytest.fixture
def explained(monkeypatch) -> list[str]:
    """The methods' `_explain` calls, by class name (Grad-CAM and RISE)."""
    calls: list[str] = []
    for cls in (GradCAM, RISE):
        real = cls._explain

        def spy(self, images, target, real=real):
            calls.append(f"{type(self).__name__}:{getattr(self, 'masks', '')}")
            return real(self, images, target)

        monkeypatch.setattr(cls, "_explain", spy)
    return calls


# item 1: outputs are never read back as inputs


def test_out_cannot_be_the_folder_of_an_image_file(tmp_path, capsys):
    photo = _photo(tmp_path / "photos" / "x.png", 1)
    assert main(["explain", str(photo), "--methods", "gradcam", "--out", str(photo.parent)]) == 2
    assert f"--out {photo.parent} is the folder of the image {photo}: maps and photos would mix" in \
        _one_error_line(capsys)
    assert _files(photo.parent) == ["x.png"]


def test_what_explain_and_compare_wrote_is_skipped_in_folders_and_refused_by_name(tmp_path, capsys, explained):
    photos = tmp_path / "photos"
    _photo(photos / "a" / "x.png", 1)
    _photo(photos / "y.png", 2)
    assert main(["explain", str(photos), "-r", "--methods", "gradcam", "--out", str(photos / "maps")]) == 0
    assert main(["compare", str(photos / "y.png"), "--methods", "gradcam", "--out", str(photos / "figure.png"),
                 "--quiet"]) == 0
    for picture in (photos / "maps" / "a" / "x.gradcam.png", photos / "figure.png"):
        assert Image.open(picture).info["Software"] == "jittercam" and is_output(picture)
    capsys.readouterr()
    explained.clear()

    out = tmp_path / "elsewhere"
    assert main(["explain", str(photos), "-r", "--methods", "gradcam", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "left out 3 pictures that jittercam wrote (maps, figures) in the image folders"
    assert "2 images x 1 method" in printed and len(explained) == 2
    assert _files(out) == ["a/x.gradcam.npy", "a/x.gradcam.png", "summary.csv", "y.gradcam.npy", "y.gradcam.png"]

    assert main(["explain", str(photos / "figure.png"), "--methods", "gradcam", "--out", str(out)]) == 2
    assert f"{photos / 'figure.png'} was written by jittercam" in _one_error_line(capsys)
    assert main(["compare", str(photos / "maps" / "y.gradcam.png"), "--out", str(tmp_path / "f.png")]) == 2
    assert "was written by jittercam" in _one_error_line(capsys)


def test_overlays_written_before_the_mark_are_known_by_their_map_beside_them(tmp_path):
    photos = tmp_path / "photos"
    _photo(photos / "x.png", 1)
    _photo(photos / "x.gradcam.png", 2)  # an old overlay: no mark, but its map is beside it
    np.save(photos / "x.gradcam.npy", np.zeros((4, 4), np.float32))
    _photo(photos / "depth.png", 3)  # a photo with an array of the same name that is no method's
    np.save(photos / "depth.npy", np.zeros((4, 4), np.float32))
    _photo(photos / "z.gradcam.png", 4)  # a method's name, but no map beside it
    outputs: list[Path] = []
    found = find_images([photos], outputs=outputs)
    assert [source.path.name for source in found] == ["depth.png", "x.png", "z.gradcam.png"]
    assert outputs == [photos / "x.gradcam.png"]


# items 5 and 6: method options, and --method / --methods everywhere


def test_method_options_reach_the_methods_of_explain_and_compare(tmp_path, capsys, explained):
    assert main(["explain", str(GOLDFISH), "--method", "rise", "--methods", "gradcam", "--option", "rise.masks=8",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert explained == ["RISE:8", "GradCAM:"]
    explained.clear()
    assert main(["compare", str(GOLDFISH), "--method", "rise", "--method", "gradcam", "--option", "*.masks=6",
                 "--out", str(tmp_path / "grid.png"), "--quiet"]) == 0
    assert explained == ["RISE:6", "GradCAM:"]
    assert "(1 image x 2 methods)" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["explain", "compare"])
@pytest.mark.parametrize("option, message", [
    ("rise.mask=3", "--option rise.mask: method 'rise' has no option 'mask'"),
    ("scorecam.variant=x", "--option scorecam.variant: scorecam is not among the methods run (rise)"),
    ("masks", "--option 'masks' is not METHOD.NAME=VALUE"),
    ("rise.masks=0", "masks must be"),
])
def test_bad_method_options_are_one_line_and_nothing_written(tmp_path, capsys, command, option, message):
    out = tmp_path / ("out" if command == "explain" else "grid.png")
    assert main([command, str(GOLDFISH), "--methods", "rise", "--option", option, "--out", str(out)]) == 2
    assert message in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_bench_takes_method_and_methods_too():
    for flag in ("--method", "--methods"):
        args = parser().parse_args(["bench", "local-accuracy", "--db", "r.db", flag, "gradcam", flag, "rise"])
        assert args.methods == ["gradcam", "rise"]


def test_a_name_error_names_the_documented_flag(tmp_path, capsys):
    assert main(["explain", str(GOLDFISH), "--method", "rise:gradcam", "--out", str(tmp_path / "out")]) == 2
    assert "rise takes no base; only the wrappers do (guided:BASE, jittercam:BASE" in _one_error_line(capsys)
    assert main(["explain", str(GOLDFISH), "--method", ",", "--out", str(tmp_path / "out")]) == 2
    assert "--methods names no method" in _one_error_line(capsys)


# item 8: random weights


@pytest.mark.parametrize("quiet", [[], ["--quiet"]])
def test_random_weights_are_said_on_the_first_line(tmp_path, capsys, quiet):
    assert main(["explain", str(GOLDFISH), "--methods", "gradcam", "--weights", "random", *quiet,
                 "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr()
    assert printed.err.splitlines()[0] == (
        "jittercam: warning: --weights random: the network is untrained, so its classes and maps are "
        "meaningless (for trying shapes and speed only)")
    if quiet:
        assert printed.out == "" and printed.err.count("\n") == 1
    else:
        assert printed.out.startswith("1 image x 1 method")
    assert main(["compare", str(GOLDFISH), "--methods", "gradcam", "--weights", "random", "--quiet",
                 "--out", str(tmp_path / "grid.png")]) == 0
    assert capsys.readouterr().err.startswith("jittercam: warning: --weights random: the network is untrained")


# item 9: every bad file at once, --skip-bad, truncated


def _bad_folder(folder: Path) -> Path:
    _photo(folder / "good.png", 1)
    whole = GOLDFISH.read_bytes()
    (folder / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.png").write_bytes(b"not a picture at all")
    Image.new("RGB", (20, 200), "gray").save(folder / "thin.png")
    return folder


def test_a_truncated_file_is_called_truncated(tmp_path):
    folder = _bad_folder(tmp_path / "photos")
    with pytest.raises(Exception, match=r"^truncated image: .*cut.jpg \(the file ends before the picture does\)$"):
        check_image(folder / "cut.jpg")


def test_every_bad_file_is_named_in_one_line_and_nothing_is_written(tmp_path, capsys, explained):
    folder = _bad_folder(tmp_path / "photos")
    out = tmp_path / "out"
    assert main(["explain", str(folder), "--methods", "gradcam", "--out", str(out)]) == 2
    assert _one_error_line(capsys) == (
        f"jittercam: error: 3 images cannot be explained (--skip-bad leaves them out): {folder / 'cut.jpg'}: "
        f"truncated; {folder / 'notes.png'}: not an image (cannot identify image file); {folder / 'thin.png'}: "
        "too small (20x200 pixels, under 32 on a side)\n")
    assert not out.exists() and explained == []


def test_skip_bad_leaves_them_out_with_a_line_each_and_a_count(tmp_path, capsys):
    folder = _bad_folder(tmp_path / "photos")
    out = tmp_path / "out"
    assert main(["explain", str(folder), "--methods", "gradcam", "--skip-bad", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.err.splitlines() == [
        f"jittercam: warning: skipped {folder / 'cut.jpg'}: truncated",
        f"jittercam: warning: skipped {folder / 'notes.png'}: not an image (cannot identify image file)",
        f"jittercam: warning: skipped {folder / 'thin.png'}: too small (20x200 pixels, under 32 on a side)",
    ]
    assert printed.out.splitlines()[-1].startswith(f"wrote 2 files to {out} (1 map, 3 bad images skipped) in ")
    assert [Path(row["image"]).name for row in _summary(out)] == ["good.png"]
    (folder / "good.png").unlink()
    assert main(["explain", str(folder), "--methods", "gradcam", "--skip-bad", "--out", str(tmp_path / "o2")]) == 2
    assert _one_error_line(capsys).endswith("; no image left to explain\n")


def test_compare_names_every_bad_file(tmp_path, capsys):
    folder = _bad_folder(tmp_path / "photos")
    assert main(["compare", str(GOLDFISH), str(folder / "cut.jpg"), str(folder / "notes.png"), "--methods",
                 "gradcam", "--out", str(tmp_path / "grid.png")]) == 2
    error = _one_error_line(capsys)
    assert "2 images cannot be explained: " in error and "cut.jpg: truncated; " in error
    assert not (tmp_path / "grid.png").exists()


# item 10: a closed stdout


class _ClosingReader(io.StringIO):
    """A stdout whose reader leaves after the first line (`| head -1`)."""

    def __init__(self, descriptor: int) -> None:
        super().__init__()
        self.descriptor = descriptor

    def write(self, text: str) -> int:
        if "\n" in self.getvalue():
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)

    def fileno(self) -> int:
        return self.descriptor


def test_a_reader_that_leaves_stops_explain_quietly(tmp_path, capsys, monkeypatch):
    photos = [str(_photo(tmp_path / f"p{seed}.png", seed)) for seed in range(3)]
    out = tmp_path / "out"
    with open(tmp_path / "stdout", "w") as real:
        closing = _ClosingReader(real.fileno())
        monkeypatch.setattr(sys, "stdout", closing)
        status = main(["explain", *photos, "--methods", "gradcam", "--out", str(out)])
        monkeypatch.undo()
    assert status == 141 and capsys.readouterr().err == ""
    assert closing.getvalue().startswith("3 images x 1 method")
    assert _files(out) == ["p0.gradcam.npy", "p0.gradcam.png", "summary.csv"]  # complete results only


def test_a_closed_pipe_is_exit_141_and_silence(tmp_path):
    photo = tmp_path / "x.png"
    shutil.copy(CATDOG, photo)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        done = subprocess.run([sys.executable, "-m", "jittercam", "explain", str(photo), "--methods", "gradcam",
                               "--out", str(tmp_path / "out")], cwd=ROOT, stdout=write, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


# item 11: summary.csv's paths all lead somewhere from DIR


def test_summary_paths_are_all_relative_to_out(tmp_path, monkeypatch, capsys):
    photos, work = tmp_path / "photos", tmp_path / "work"
    _photo(photos / "x.png", 1)
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["explain", "../photos/x.png", "--methods", "gradcam", "--out", "results/maps", "--quiet"]) == 0
    out = work / "results" / "maps"
    [row] = _summary(out)
    assert (row["image"], row["npy"], row["png"]) == ("../../../photos/x.png", "x.gradcam.npy", "x.gradcam.png")
    monkeypatch.chdir(tmp_path)
    for column in ("image", "npy", "png"):
        assert (out / row[column]).is_file()
    assert (out / row["image"]).resolve() == (photos / "x.png").resolve()


# item 15: one map, one image, one method


def test_counts_of_one_are_singular(tmp_path, capsys):
    assert main(["explain", str(GOLDFISH), "--methods", "gradcam", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "1 image x 1 method," in printed and f"wrote 2 files to {tmp_path / 'out'} (1 map) in " in printed
    assert main(["explain", str(GOLDFISH), "--methods", "gradcam", "--skip-existing",
                 "--out", str(tmp_path / "out")]) == 0
    assert f"wrote 0 files to {tmp_path / 'out'} (0 maps, 1 already there) in " in capsys.readouterr().out
    assert main(["compare", str(GOLDFISH), "--methods", "gradcam", "--out", str(tmp_path / "grid.png"),
                 "--quiet"]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'grid.png'} (1 image x 1 method)\n"
