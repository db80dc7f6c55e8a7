"""`jittercam explain` as a user runs it: files written, lines printed, bad inputs refused."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES, GOLDFISH, GOLDFISH_BOX
from jittercam.cli import main


def test_explain_writes_maps_and_overlays(tmp_path, capsys):
    out = tmp_path / "out"
    catdog = EXAMPLES / "images" / "catdog.png"
    assert main(["explain", str(GOLDFISH), str(catdog), "--method", "jittercam", "jittercam:gradcam++",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ILSVRC2012_val_00000262.JPEG  jittercam  class 1 (goldfish)  p=0.88" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}.{method}.{ext}"
        for stem in ("ILSVRC2012_val_00000262", "catdog")
        for method in ("jittercam", "jittercam-gradcam++")
        for ext in ("npy", "png")
    )
    photo = Image.open(GOLDFISH)
    heat = np.load(out / "ILSVRC2012_val_00000262.jittercam.npy")
    assert heat.dtype == np.float32 and heat.shape == (photo.height, photo.width)
    assert heat.min() == 0.0 and heat.max() == 1.0
    assert Image.open(out / "ILSVRC2012_val_00000262.jittercam.png").size == photo.size
    # the Jitter-CAM maximum lies on the goldfish
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    x0, y0, x1, y1 = GOLDFISH_BOX
    assert x0 <= col <= x1 and y0 <= row <= y1


def test_explicit_target_and_size(tmp_path, capsys):
    assert main(["explain", str(GOLDFISH), "--target", "0", "--size", "9", "--method", "jittercam",
                 "--out", str(tmp_path)]) == 0
    assert "class 0 (tench)" in capsys.readouterr().out


def test_console_script_lists_names():
    done = subprocess.run([sys.executable, "-m", "jittercam.cli", "list"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "jittercam:gradcam++" in done.stdout and "resnet50" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.jpg"], "no such file: missing.jpg"),
        ([str(EXAMPLES / "labels.csv")], "not an image"),
        (["--target", "1000"], "class index 1000 is out of range"),
        (["--target", "-3"], "class index -3 is out of range"),
        (["--model", "resnet5"], "unknown model 'resnet5'"),
        (["--method", "gradcam", "nosuchcam"], "unknown method 'nosuchcam'"),
        (["--size", "6"], "size 6 is smaller than the map size m=7"),
        (["--method", "gradcam", "--size", "14"], "--size applies to jittercam and upscale methods only"),
        (["--weights", "missing.pt"], "weights file not found"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_files(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    # a good image comes first: nothing may be written for it either
    assert main(["explain", str(GOLDFISH), *args, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("jittercam: error: ") and message in error
    assert not out.exists()


def test_out_must_be_a_folder(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert main(["explain", str(GOLDFISH), "--out", str(taken)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert taken.read_text() == "a file"
