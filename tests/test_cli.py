"""`jittercam explain` as a user runs it: files written, lines printed, bad inputs refused."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import jittercam
from conftest import EXAMPLES, GOLDFISH, GOLDFISH_BOX
from jittercam import runtime
from jittercam.cli import main


def test_explain_writes_maps_and_overlays(tmp_path, capsys):
    out = tmp_path / "out"
    catdog = EXAMPLES / "images" / "catdog.png"
    assert main(["explain", str(GOLDFISH), str(catdog), "--method", "gradcam,jittercam:gradcam++",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ILSVRC2012_val_00000262.JPEG  gradcam  class 1 (goldfish)  p=0.88" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            f"{stem}.{method}.{ext}"
            for stem in ("ILSVRC2012_val_00000262", "catdog")
            for method in ("gradcam", "jittercam-gradcam++")
            for ext in ("npy", "png")
        ]
        + ["summary.csv"]
    )
    photo = Image.open(GOLDFISH)
    heat = np.load(out / "ILSVRC2012_val_00000262.jittercam-gradcam++.npy")
    assert heat.dtype == np.float32 and heat.shape == (photo.height, photo.width)
    assert heat.min() == 0.0 and heat.max() == 1.0
    assert Image.open(out / "ILSVRC2012_val_00000262.jittercam-gradcam++.png").size == photo.size
    # the Jitter-CAM maximum lies on the goldfish
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    x0, y0, x1, y1 = GOLDFISH_BOX
    assert x0 <= col <= x1 and y0 <= row <= y1


def test_explicit_target_and_size(tmp_path, capsys):
    assert main(["explain", str(GOLDFISH), "--target", "0", "--size", "9", "--method", "jittercam",
                 "--out", str(tmp_path)]) == 0
    assert "class 0 (tench)" in capsys.readouterr().out


def test_reduced_precision_is_close_to_fp32(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "fma"}))  # no bf16 instructions
    for precision in ("fp32", "bf16"):
        assert main(["explain", str(GOLDFISH), "--method", "gradcam", "--precision", precision, "--quiet",
                     "--out", str(tmp_path / precision)]) == 0
        said = capsys.readouterr().err
        assert ("jittercam: warning: this CPU has no bf16 instructions (avx512_bf16 or amx_bf16): bf16 is emulated "
                "and runs several times slower than fp32 here" in said) == (precision == "bf16"), said
    name = "ILSVRC2012_val_00000262.gradcam.npy"
    full, half = np.load(tmp_path / "fp32" / name), np.load(tmp_path / "bf16" / name)
    assert 0 < np.abs(full - half).max() < 0.1  # bf16 rounds, the map stays the same map


@pytest.mark.parametrize(("device", "precision", "flags", "noted"), [
    ("cpu", "bf16", {"avx2"}, True),
    ("cpu", "bf16", {"avx2", "avx512_bf16"}, False),
    ("cpu", "bf16", {"amx_bf16"}, False),
    ("cpu", "bf16", {"asimd", "bf16"}, False),  # Arm's name for it
    ("cpu", "fp16", {"avx512_bf16"}, True),
    ("cpu", "fp16", {"avx512_fp16"}, False),
    ("cpu", "fp32", {"avx2"}, False),
    ("cpu", "bf16", None, False),  # flags unknown: nothing said
    ("cuda", "bf16", {"avx2"}, False),
])
def test_a_reduced_precision_the_cpu_only_emulates_is_said(monkeypatch, device, precision, flags, noted):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: None if flags is None else frozenset(flags))
    note = runtime.slow_precision_note(torch.device(device), precision)
    assert (note is not None) == noted
    assert note is None or note.startswith(f"this CPU has no {precision} instructions")


def test_console_script_lists_names():
    done = subprocess.run([sys.executable, "-m", "jittercam.cli", "list"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "jittercam:gradcam++" in done.stdout and "resnet50" in done.stdout


def test_python_m_jittercam_and_version():
    done = subprocess.run([sys.executable, "-m", "jittercam", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip() == f"jittercam {jittercam.__version__}"


def test_method_before_the_images_and_methods_by_comma_or_repeated(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", "--method", "gradcam", str(GOLDFISH), "--out", str(out)]) == 0
    assert main(["explain", str(GOLDFISH), "--method", "gradcam, xgradcam", "--method", "gradcam++",
                 "--method", "gradcam", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert [line.split("  ")[1] for line in printed.splitlines() if "  class " in line] == [
        "gradcam", "gradcam", "xgradcam", "gradcam++"
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.jpg"], "no such file: missing.jpg"),
        ([str(EXAMPLES / "labels.csv")], "not an image"),
        (["--target", "1000"], "class index 1000 is out of range"),
        (["--target", "-3"], "class index -3 is out of range"),
        (["--model", "resnet5"], "unknown model 'resnet5'"),
        (["--model", "resnet5"], "(`jittercam list` or jittercam.available_models() lists them)"),
        (["--method", "gradcam,nosuchcam"], "unknown method 'nosuchcam'"),
        (["--method", ","], "--methods names no method"),
        (["--size", "6"], "--size 6 is smaller than the map size m=7"),
        (["--size", "224"], "--size 224 is more than 8 times the map size m=7 of target layer '_swish': the map's "
                            "side counts the layer's cells (m + d; 2m = 14 by default), not pixels"),
        (["--method", "gradcam", "--size", "14"], "--size applies to jittercam and upscale methods only"),
        (["--weights", "missing.pt"], "weights file not found"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--npy-max", "4"], "--npy-max must be at least 8"),
        (["--alpha", "1.5"], "--alpha must be between 0 and 1"),
        (["--cmap", "nosuchmap"], "unknown colour map 'nosuchmap'"),
        (["--device", "nosuchdevice"], "--device 'nosuchdevice' is not a torch device"),
        (["--target-layer", "nosuch"], "the model has no module named 'nosuch'"),
        (["--method", "rise", "--target-layer", "layer4"], "--target-layer applies to methods that take"),
        (["--method", "rise", "--precision", "bf16"], "--precision bf16: rise computes in fp32 only; "),
        (["--nosuchoption"], "unrecognized arguments: --nosuchoption"),
        (["--threads", "two"], "argument --threads: invalid int value: 'two'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_files(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    # a good image comes first: nothing may be written for it either
    assert main(["explain", str(GOLDFISH), *args, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("jittercam: error: ") and message in error
    assert not out.exists()


def test_missing_out_is_one_usage_line(capsys):
    assert main(["explain", str(GOLDFISH)]) == 2
    error = capsys.readouterr().err
    assert error == ("jittercam: error: the following arguments are required: --out "
                     "(`jittercam explain --help` shows the usage)\n")


def test_too_small_image_is_refused(tmp_path, capsys):
    Image.new("RGB", (20, 200), "gray").save(tmp_path / "strip.png")
    assert main(["explain", str(GOLDFISH), str(tmp_path / "strip.png"), "--out", str(tmp_path / "out")]) == 2
    assert "image too small: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_empty_file_is_said_to_be_empty(tmp_path, capsys):
    empty = tmp_path / "empty.jpg"
    empty.touch()
    assert main(["explain", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"jittercam: error: empty file: {empty} (0 bytes); --skip-bad leaves it out\n"
    (tmp_path / "noise.jpg").write_bytes(b"not a JPEG" * 20)
    assert main(["explain", str(empty), str(tmp_path / "noise.jpg"), "--out", str(tmp_path / "out")]) == 2
    assert f"{empty}: an empty file (0 bytes); {tmp_path / 'noise.jpg'}: not an image" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_folder_of_subfolders_names_the_recursive_flag(tmp_path, capsys):
    (tmp_path / "photos" / "trip").mkdir(parents=True)
    (tmp_path / "photos" / "trip" / "goldfish.jpg").write_bytes(GOLDFISH.read_bytes())
    assert main(["explain", str(tmp_path / "photos"), "--out", str(tmp_path / "out")]) == 2
    assert "(--recursive searches its subfolders too); image files end in" in capsys.readouterr().err


def test_out_must_be_a_folder(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert main(["explain", str(GOLDFISH), "--out", str(taken)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert taken.read_text() == "a file"


def test_a_name_the_terminal_cannot_show_is_escaped(tmp_path, monkeypatch):
    """A stdout in ASCII (LC_ALL=C with PYTHONIOENCODING=ascii) gets `\\xe9` for é, not a traceback after the
    files are written."""
    image = tmp_path / "chat é.png"
    image.write_bytes(GOLDFISH.read_bytes())
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["explain", str(image), "--method", "gradcam", "--out", str(tmp_path / "out")]) == 0
    stdout.flush()
    assert b"chat \\xe9.png  gradcam  class" in stdout.buffer.getvalue()
