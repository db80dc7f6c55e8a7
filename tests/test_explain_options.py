"""`jittercam explain` options: threads, progress, overlays, the target layer, models the probe refuses."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import GOLDFISH
from jittercam.cli import main
from jittercam.methods.gradient import GradCAM
from jittercam.runtime import threads_for


@pytest.fixture
def seen(monkeypatch) -> list[dict]:
    """What each Grad-CAM explanation ran with: torch's threads and the target layer."""
    calls: list[dict] = []
    explain = GradCAM._explain

    def spy(self, images, target):
        calls.append({"threads": torch.get_num_threads(), "layer": self.layer.name})
        return explain(self, images, target)

    monkeypatch.setattr(GradCAM, "_explain", spy)
    return calls


def test_threads_option_is_used_and_restored(tmp_path, capsys, seen):
    before = torch.get_num_threads()
    assert main(["explain", str(GOLDFISH), "--method", "gradcam", "--threads", "3", "--out", str(tmp_path)]) == 0
    assert seen == [{"threads": 3, "layer": seen[0]["layer"]}]
    assert "efficientnet_lite0 on cpu, 3 threads ->" in capsys.readouterr().out
    assert torch.get_num_threads() == before


def test_default_threads_follow_the_idle_cores(tmp_path, capsys, seen, monkeypatch):
    monkeypatch.setattr("jittercam.runtime.usable_cpus", lambda: 2)
    monkeypatch.setattr("jittercam.runtime.busy_cpus", lambda: 1.0)
    monkeypatch.setattr("jittercam.runtime.os.cpu_count", lambda: 2)
    assert main(["explain", str(GOLDFISH), "--method", "gradcam", "--out", str(tmp_path)]) == 0
    assert seen[0]["threads"] == 1
    assert "on cpu, 1 thread, 1.0 of 2 CPUs busy elsewhere ->" in capsys.readouterr().out


def test_threads_follow_load_that_starts_during_the_run(tmp_path, capsys, seen, monkeypatch):
    # idle at the start and before the first image, busy before the second, idle again before the third
    loads = iter([0.0, 0.0, 1.5, 0.1])
    monkeypatch.setattr("jittercam.runtime.usable_cpus", lambda: 2)
    monkeypatch.setattr("jittercam.runtime.busy_cpus", lambda: next(loads))
    monkeypatch.setattr("jittercam.runtime.os.cpu_count", lambda: 2)
    monkeypatch.setattr("jittercam.runtime.ThreadGovernor.RECHECK", 0.0)
    catdog = GOLDFISH.parent / "catdog.png"
    out = tmp_path / "out"
    assert main(["explain", str(GOLDFISH), str(catdog), str(GOLDFISH.parent / "ILSVRC2012_val_00008828.JPEG"),
                 "--method", "gradcam", "--out", str(out)]) == 0
    assert [call["threads"] for call in seen] == [2, 1, 2]
    printed = capsys.readouterr().out
    assert "on cpu, 2 threads ->" in printed and "now 1 thread, 1.5 of 2 CPUs busy elsewhere\n" in printed
    assert "now 2 threads\n" in printed
    assert (out / "summary.csv").read_text().count(",gradcam,") == 3


@pytest.mark.parametrize(
    "usable, busy, cpus, threads",
    [(2, 0.05, 2, 2), (2, 0.5, 2, 1), (2, 1.0, 2, 1), (2, 7.5, 2, 1), (8, 0.1, 8, 8), (16, 3.0, 16, 13),
     (4, 0.0, 64, 4), (4, None, 4, 4)],
)
def test_threads_for(usable, busy, cpus, threads):
    assert threads_for(usable, busy, cpus) == threads


def test_progress_bar_on_a_terminal_only(tmp_path, capsys, monkeypatch):
    command = ["explain", str(GOLDFISH), "--method", "gradcam,xgradcam", "--out", str(tmp_path)]
    assert main(command) == 0
    assert capsys.readouterr().err == ""  # not a terminal: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(command) == 0
    printed = capsys.readouterr()
    assert "2/2" in printed.err and "map" in printed.err
    assert printed.out.count("  class 1 (goldfish)") == 2  # the lines still reach stdout
    assert main([*command, "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")


def test_overlay_alpha_colour_map_and_title(tmp_path, capsys):
    photo = np.asarray(Image.open(GOLDFISH).convert("RGB"))
    plain, grey, titled = tmp_path / "plain", tmp_path / "grey", tmp_path / "titled"
    assert main(["explain", str(GOLDFISH), "--method", "gradcam", "--alpha", "0", "--out", str(plain)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(plain / "ILSVRC2012_val_00000262.gradcam.png")), photo)

    assert main(["explain", str(GOLDFISH), "--method", "gradcam", "--alpha", "1", "--cmap", "gray",
                 "--out", str(grey)]) == 0
    heat = np.load(grey / "ILSVRC2012_val_00000262.gradcam.npy")
    overlay = np.asarray(Image.open(grey / "ILSVRC2012_val_00000262.gradcam.png")).astype(int)
    assert (overlay[..., 0] == overlay[..., 2]).all()
    assert np.abs(overlay[..., 0] - heat * 255).max() <= 2  # the map itself, in grey

    assert main(["explain", str(GOLDFISH), "--method", "gradcam", "--title", "--out", str(titled)]) == 0
    with_title = np.asarray(Image.open(titled / "ILSVRC2012_val_00000262.gradcam.png"))
    strip = with_title.shape[0] - photo.shape[0]
    assert with_title.shape[1] == photo.shape[1] and 12 <= strip <= 40
    assert with_title[:strip].max() == 255  # white text on black
    default = tmp_path / "default"
    assert main(["explain", str(GOLDFISH), "--method", "gradcam", "--out", str(default)]) == 0
    np.testing.assert_array_equal(
        with_title[strip:], np.asarray(Image.open(default / "ILSVRC2012_val_00000262.gradcam.png"))
    )


def test_target_layer_option(tmp_path, capsys, seen):
    assert main(["explain", str(GOLDFISH), "--model", "resnet18", "--weights", "random", "--method", "gradcam",
                 "--target-layer", "layer3", "--out", str(tmp_path)]) == 0
    assert seen[0]["layer"] == "layer3"


def test_a_vision_transformer_is_explained_at_its_token_grid(tmp_path, capsys, seen):
    """torchvision's ViT-B/32: the class token feeds the head, so the map is the 7 × 7 grid of tokens at the
    last block's attention input; Upscale-CAM, which needs another input size, is refused in one line."""
    out = tmp_path / "out"
    assert main(["explain", str(GOLDFISH), "--model", "vit_b_32", "--weights", "random", "--method", "gradcam",
                 "--out", str(out)]) == 0
    assert seen[0]["layer"] == "encoder.layers.encoder_layer_11.ln_1"
    capsys.readouterr()
    refused = tmp_path / "refused"
    assert main(["explain", str(GOLDFISH), "--model", "vit_b_32", "--weights", "random", "--method", "upscale",
                 "--out", str(refused)]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("jittercam: error: Upscale-CAM runs the model at 448x448 pixels, which it does not")
