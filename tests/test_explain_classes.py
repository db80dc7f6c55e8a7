"""Several classes per image from the command line: `--target 281,243` and `--top K` give a map per class,
named by class, equal to one run per class; the library's `(B, K)` targets on a real model."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch

import jittercam
from jittercam.cli import main
from jittercam.data import load_image, to_input

CATDOG = "examples/images/catdog.png"
TABBY, BULL_MASTIFF = 281, 243


@pytest.fixture
def photo(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(CATDOG, folder / "catdog.png")
    return folder / "catdog.png"


def _rows(out):
    with open(out / "summary.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def test_several_targets_give_a_map_per_class_equal_to_separate_runs(photo, tmp_path, capsys):
    out = tmp_path / "maps"
    assert main(["explain", str(photo), "--methods", "gradcam,jittercam", "--option", "jittercam.size=9",
                 "--target", f"{TABBY},{BULL_MASTIFF}", "--out", str(out), "-q"]) == 0
    names = sorted(p.name for p in out.iterdir() if p.suffix == ".npy")
    assert names == [f"catdog.{m}.{c}.npy" for m in ("gradcam", "jittercam") for c in (BULL_MASTIFF, TABBY)]
    assert [(r["method"], r["class_index"], r["class_name"]) for r in _rows(out)] == [
        ("gradcam", "281", "tabby"), ("gradcam", "243", "bull mastiff"),
        ("jittercam", "281", "tabby"), ("jittercam", "243", "bull mastiff")]
    for cls in (TABBY, BULL_MASTIFF):
        alone = tmp_path / f"alone{cls}"
        assert main(["explain", str(photo), "--methods", "gradcam,jittercam", "--option", "jittercam.size=9",
                     "--target", str(cls), "--out", str(alone), "-q"]) == 0
        for method in ("gradcam", "jittercam"):
            np.testing.assert_allclose(np.load(out / f"catdog.{method}.{cls}.npy"),
                                       np.load(alone / f"catdog.{method}.npy"), rtol=1e-5, atol=1e-6)
    # the cat's map and the dog's differ: each is its own class's
    assert not np.allclose(np.load(out / f"catdog.gradcam.{TABBY}.npy"),
                           np.load(out / f"catdog.gradcam.{BULL_MASTIFF}.npy"), atol=0.05)


def test_top_k_explains_the_most_likely_classes_and_resumes(photo, tmp_path, lite0):
    out = tmp_path / "maps"
    assert main(["explain", str(photo), "--method", "gradcam", "--top", "3", "--out", str(out), "-q"]) == 0
    image = to_input(load_image(photo), jittercam.model_card(lite0))
    with torch.no_grad():
        top3 = lite0(image).topk(3).indices[0].tolist()
    assert [int(r["class_index"]) for r in _rows(out)] == top3
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"catdog.gradcam.{c}.png" for c in top3)
    (out / f"catdog.gradcam.{top3[1]}.png").unlink()
    assert main(["explain", str(photo), "--method", "gradcam", "--top", "3", "--out", str(out), "-q",
                 "--skip-existing"]) == 0
    assert [int(r["class_index"]) for r in _rows(out)][3:] == [top3[1]]


@pytest.mark.parametrize("args, message", [
    (["--target", "281,abc"], "'281,abc' is not a class index"),
    (["--target", "281,281"], "--target names class 281 twice"),
    (["--target", "281,1000"], "class index 1000 is out of range"),
    (["--top", "0"], "--top must be at least 1"),
    (["--top", "1001"], "--top 1001 is more classes than the model's 1000"),
    (["--top", "2", "--target", "5"], "not allowed with argument"),
])
def test_bad_class_choices_are_refused_in_one_line(photo, tmp_path, capsys, args, message):
    out = tmp_path / "maps"
    try:
        status = main(["explain", str(photo), "--method", "gradcam", *args, "--out", str(out)])
    except SystemExit as exit_:  # argparse's own refusals
        status = exit_.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_library_targets_per_image_on_the_real_model(lite0, photo):
    image = to_input(load_image(photo), jittercam.model_card(lite0))
    batch = torch.cat([image, image.flip(-1)])
    method = jittercam.create("gradcam++", lite0)
    maps = method(batch, [[TABBY, BULL_MASTIFF], [BULL_MASTIFF, 282]])
    assert maps.shape == (2, 2, 7, 7)
    torch.testing.assert_close(maps[:, 1], method(batch, [BULL_MASTIFF, 282]))
    torch.testing.assert_close(maps[0, 0], method(image, TABBY)[0], rtol=1e-5, atol=1e-6)


def test_a_multi_label_model_with_sigmoid_outputs_gives_a_map_per_label():
    """A multi-label classifier (independent sigmoid scores): K labels of an image from one forward, each
    map that of its own score, as K separate calls."""
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 6))
    model = torch.nn.Sequential(backbone, torch.nn.Sigmoid()).eval()
    images = torch.rand(2, 3, 32, 32)
    method = jittercam.create("gradcam", model, input_size=32)
    maps = method(images, [[0, 5], [2, 3]])
    assert maps.shape == (2, 2, 32, 32)
    torch.testing.assert_close(maps[:, 1], method(images, [5, 3]))
    assert not torch.allclose(maps[:, 0], maps[:, 1])
