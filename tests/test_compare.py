"""`jittercam compare`: one PNG, a row per image and a column per method (plus the photo)."""
from __future__ import annotations

import pytest
from PIL import Image

from conftest import EXAMPLES, GOLDFISH
from jittercam.cli import main
from jittercam.compare import method_names
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "gradcam,nosuchcam"], "unknown method 'nosuchcam'"),
        (["--methods", ","], "names no method"),
        (["--target", "1000"], "out of range"),
        (["--out", "grid.jpg"], "must end in .png"),
        (["--out", "missing/grid.png"], "does not exist"),
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

