"""`jittercam compare`: one PNG, a row per image and a column per method (plus the photo); many methods in
blocks of rows, and over `MAX_ROWS` rows in several files."""
from __future__ import annotations

import pytest
from PIL import Image

from conftest import EXAMPLES, GOLDFISH
from jittercam import compare
from jittercam.cli import main
from jittercam.compare import MAX_METHODS, MAX_ROWS, Panel, blocks, draw, figure_files, method_names
from jittercam.errors import JitterCamError
from jittercam.methods.registry import default_names

CATDOG = EXAMPLES / "images" / "catdog.png"


def _panels(path) -> tuple[int, int]:
    """Rows and columns of panels, counted from the figure's pixels: a panel is a run of non-white
    columns (rows) wider than half a panel."""
    import numpy as np

    pixels = np.asarray(Image.open(path).convert("L")) < 245

    def runs(profile):
        count, length = 0, 0
        for filled in [*profile, False]:
            if filled:
                length += 1
            else:
                count += length > 100
                length = 0
        return count

    return runs(pixels.mean(axis=0) > 0.5), runs(pixels.mean(axis=1) > 0.5)


def test_compare_writes_one_png_with_a_panel_per_image_and_method(tmp_path, capsys):
    out = tmp_path / "grid.png"
    methods = "gradcam,jittercam,upscale"
    assert main(["compare", str(GOLDFISH), str(CATDOG), "--methods", methods, "--out", str(out), "--quiet"]) == 0
    assert "2 images x 3 methods" in capsys.readouterr().out
    columns, rows = _panels(out)
    assert (rows, columns) == (2, 4)


def test_all_means_every_method_with_its_default_options():
    assert method_names("all") == default_names()
    assert {"gradcam", "jittercam", "scorecam", "rise"} <= set(method_names("all"))
    assert method_names("gradcam, jittercam,gradcam") == ["gradcam", "jittercam"]


def test_exclude_leaves_methods_out_of_all():
    assert method_names("all", exclude="polycam,rise") == [n for n in default_names() if n not in ("polycam", "rise")]
    assert method_names(["gradcam,rise"], exclude=["rise"]) == ["gradcam"]
    with pytest.raises(JitterCamError, match=r"^exclude rise: not among the methods") as caught:
        method_names("gradcam", exclude="rise")
    assert caught.value.option == "exclude"
    with pytest.raises(JitterCamError, match=r"^exclude leaves no method"):
        method_names("gradcam", exclude="gradcam")


def test_many_methods_are_cut_into_even_blocks_and_files():
    assert MAX_METHODS == 8 and MAX_ROWS == 8
    assert blocks(3) == [3] and blocks(8) == [8] and blocks(9) == [5, 4] and blocks(27) == [7, 7, 7, 6]
    out = compare.Path("grid.png")
    assert figure_files(out, 2, 8) == [out]
    assert figure_files(out, 1, 27) == [out]  # 4 blocks of one row
    assert figure_files(out, 3, 27) == [compare.Path("grid-1.png"), compare.Path("grid-2.png")]  # 2 blocks a file
    assert len(figure_files(out, 9, 2)) == 1  # one block never splits


def _rows(images: int, methods: int) -> list[list[Panel]]:
    photo = Image.new("RGB", (256, 192), (40, 90, 160))
    return [[Panel("photo", photo, f"image {i}"), *(Panel(f"m{j}", photo, f"m{j}") for j in range(methods))]
            for i in range(images)]


def test_blocks_go_one_under_the_other_with_the_photo_first_again(tmp_path):
    out = tmp_path / "grid.png"
    assert draw(_rows(1, 10), out) == [out]
    assert _panels(out) == (6, 2)  # 1 photo + 5 methods, 2 blocks
    written = draw(_rows(3, 20), tmp_path / "many.png")  # blocks 7, 7, 6; 2 blocks (6 rows) a file
    assert written == [tmp_path / "many-1.png", tmp_path / "many-2.png"]
    assert [_panels(path) for path in written] == [(8, 6), (7, 3)]
    assert not (tmp_path / "many.png").exists()


def test_a_later_figure_removes_the_pages_an_earlier_one_left_and_nothing_else(tmp_path):
    out = tmp_path / "grid.png"
    assert draw(_rows(1, 3), out) == [out]
    photo = tmp_path / "grid-7.png"  # a user's picture with the pages' name pattern: not ours, it stays
    Image.new("RGB", (8, 8)).save(photo)
    split = draw(_rows(3, 20), out)
    assert split == [tmp_path / "grid-1.png", tmp_path / "grid-2.png"]
    assert not out.exists()  # the one-file figure of before is gone
    assert draw(_rows(1, 3), out) == [out]
    assert not any(path.exists() for path in split)  # and the pages, when one file holds the figure again
    assert photo.exists()


def test_the_slow_methods_are_named_before_any_map(tmp_path):
    class Stop(Exception):
        pass

    told = []

    def slow(methods):
        told.append(methods)
        raise Stop

    with pytest.raises(Stop):
        compare.write_figure([GOLDFISH], tmp_path / "grid.png", methods="gradcam,rise,scorecam", weights="random",
                             slow=slow)
    assert told == [[("rise", 8000), ("scorecam", 1280)]]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "gradcam,nosuchcam"], "unknown method 'nosuchcam'"),
        (["--methods", ","], "names no method"),
        (["--target", "1000"], "out of range"),
        (["--out", "grid.jpg"], "must end in .png"),
        (["--out", "missing/grid.png", "--target", "1000"], "out of range"),  # no folder made before it fails
        (["--exclude", "rise"], "--exclude rise: not among the methods (gradcam)"),
    ],
)
def test_bad_input_is_one_line_and_nothing_written(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    argv = ["compare", str(GOLDFISH), "--methods", "gradcam", "--out", "grid.png", "--quiet"]
    for flag, value in zip(args[::2], args[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert list(tmp_path.iterdir()) == []



def test_the_missing_folders_of_out_are_created(tmp_path, capsys):
    out = tmp_path / "new" / "sub" / "grid.png"
    assert main(["compare", str(GOLDFISH), "--methods", "gradcam", "--out", str(out), "--quiet"]) == 0
    assert out.is_file() and f"wrote {out} " in capsys.readouterr().out
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert main(["compare", str(GOLDFISH), "--methods", "gradcam", "--out", str(taken / "sub" / "grid.png")]) == 2
    assert f"--out {taken}/sub/grid.png cannot be written: {taken} is not a folder" in capsys.readouterr().err


def test_ctrl_c_before_the_figure_leaves_no_folder_it_made(tmp_path, capsys, monkeypatch):
    from jittercam.methods.gradient import GradCAM

    def interrupted(self, images, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(GradCAM, "_explain", interrupted)
    out = tmp_path / "new" / "sub" / "grid.png"
    assert main(["compare", str(GOLDFISH), "--methods", "gradcam", "--out", str(out), "--quiet"]) == 130
    assert not (tmp_path / "new").exists()


def test_all_leaves_out_the_methods_that_refuse_the_model_with_a_note(tmp_path, capsys):
    """`all` on a CNN: rollout and LeGrad (vision transformers only) are left out, each with its reason;
    named one by one, a refusal is the error."""
    kept = {"gradcam", "rollout", "legrad"}
    others = ",".join(name for name in default_names() if name not in kept)
    out = tmp_path / "all.png"
    assert main(["compare", str(GOLDFISH), "--methods", "all", "--exclude", others, "--model", "resnet18",
                 "--weights", "random", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "rollout left out: rollout needs a vision transformer" in err and "legrad left out" in err
    assert out.exists()
    assert main(["compare", str(GOLDFISH), "--methods", "gradcam,rollout", "--model", "resnet18",
                 "--weights", "random", "--out", str(tmp_path / "named.png"), "--quiet"]) == 2
    assert "rollout needs a vision transformer" in capsys.readouterr().err
