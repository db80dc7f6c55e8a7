"""The ground-truth model: the CAM family applies, and a tiny version trains in seconds and uses the evidence."""
from __future__ import annotations

import argparse

import pytest
import torch

import jittercam
from jittercam.cli import main
from jittercam.errors import JitterCamError
from jittercam.groundtruth import MEAN, STD, GroundTruthDataset, build, default_path, load, train
from jittercam.groundtruth import cli as gt_cli
from jittercam.models import attached_card

TINY = {key: value for key, value in gt_cli.QUICK.items() if key != "steps"}  # `train --quick`


@pytest.fixture(scope="module")
def trained(quick_groundtruth):
    return quick_groundtruth


@pytest.mark.parametrize("size,m", [(128, 16), (64, 8)])
def test_cam_methods_find_the_last_block(size, m):
    model = build(classes=4, width=8, size=size)
    card = attached_card(model)
    assert card.input_size == size and card.mean == MEAN and card.std == STD and len(card.categories) == 4
    cam = jittercam.methods.create("gradcam", model)
    assert cam.layer.name == "layer3" and cam.layer.map_size == m and cam.layer.stride == 8
    images, _, _ = GroundTruthDataset(size=size, count=2).batch([0, 1])
    assert cam.attribute(images, torch.tensor([0, 1])).shape == (2, m, m)


def test_tiny_model_learns_and_uses_the_evidence(trained):
    m = trained.metrics
    assert not trained.cached and trained.path.exists()
    assert m["accuracy"] >= 0.85, m
    # without its evidence a 2-class model can only be right by chance: about half the decisions flip
    assert m["flip_evidence"] >= 0.3 and m["flip_elsewhere"] <= 0.05, m
    assert m["drop_evidence"] >= m["drop_elsewhere"] + 0.2, m


def test_the_file_is_a_cache(trained):
    again = train(0, 250, trained.path, **TINY)
    assert again.cached and again.metrics == trained.metrics
    for a, b in zip(again.model.state_dict().values(), trained.model.state_dict().values()):
        assert torch.equal(a, b)
    loaded = load(trained.path)
    assert attached_card(loaded).input_size == 64 and not loaded.training


def test_training_is_reproducible_from_the_seed():
    first, second = (train(1, 4, save=False, **{**TINY, "heldout": 4}) for _ in range(2))
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    other = train(2, 4, save=False, **{**TINY, "heldout": 4})
    assert not torch.equal(other.model.fc.weight, first.model.fc.weight)


def test_default_path_respects_the_cache_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("JITTERCAM_CACHE_DIR", str(tmp_path))
    assert default_path(0, 600, 128, 4, 16).parent == tmp_path / "groundtruth"
    monkeypatch.setenv("JITTERCAM_CACHE_DIR", "off")
    with pytest.raises(JitterCamError, match="output path"):
        default_path(0, 600, 128, 4, 16)
    with pytest.raises(JitterCamError, match="no such ground-truth model file"):
        load(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a model")
    with pytest.raises(JitterCamError, match="not a ground-truth model file"):
        load(tmp_path / "text.pt")


def test_registered_model_reads_the_cache_or_says_how_to_train(monkeypatch, tmp_path, trained):
    monkeypatch.setenv("JITTERCAM_CACHE_DIR", str(tmp_path))
    with pytest.raises(JitterCamError, match="jittercam groundtruth train"):
        jittercam.load_model("groundtruth")
    model = jittercam.load_model("groundtruth", weights=str(trained.path))
    heldout = jittercam.model_card(model).heldout
    assert heldout == jittercam.model_card(trained.model).heldout and heldout["size"] == 64
    for a, b in zip(model.state_dict().values(), trained.model.state_dict().values()):
        assert torch.equal(a, b)


def test_command_prints_both_rates(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    gt_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["groundtruth", "train", "--quick", "--steps", "3", "--out", str(tmp_path / "m.pt")])
    assert gt_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and "occluding the evidence" in out and "elsewhere" in out
    assert (tmp_path / "m.pt").exists()
    assert gt_cli.run(args) == 0 and "loaded from" in capsys.readouterr().out


def test_rates_and_drops_read_as_numbers(trained, tmp_path, capsys):
    # issue 21.15: "changes it in 0.8% (drop -0.000)": no negative zero, a rise said as a rise
    assert gt_cli.change(-0.00004) == "the true-class probability moves by less than 0.001 on average"
    assert gt_cli.change(0.361) == "the true-class probability drops by 0.361 on average"
    assert gt_cli.change(-0.012) == "the true-class probability rises by 0.012 on average"
    assert gt_cli.percent(0.0078125) == "0.8 %"
    copy = tmp_path / "quick.pt"
    copy.write_bytes(trained.path.read_bytes())
    assert main(["groundtruth", "train", "--quick", "--out", str(copy)]) == 0
    out = capsys.readouterr().out
    m = trained.metrics
    assert f"held-out accuracy: {100 * m['accuracy']:.1f} % of 128 images" in out
    assert f"changes the decision in {100 * m['flip_evidence']:.1f} % of them" in out
    assert "-0.0" not in out and "drop " not in out and "(drop" not in out
    assert f"benchmark it: jittercam bench groundtruth --weights {copy} --db gt.db" in out


def test_the_transformer_has_the_cnns_grid_and_its_file_reloads(tmp_path):
    """`arch="vit"`: patch 8 gives the CNN's 16 x 16 grid at 128 px; the probe reads the class-token ViT at
    its last block's attention input; a saved file comes back as the transformer."""
    model = build(classes=4, width=8, size=128, arch="vit")
    cam = jittercam.methods.create("gradcam", model)
    assert (cam.layer.name, cam.layer.layout, cam.layer.prefix, cam.layer.grid) == ("blocks.3.norm1", "tokens", 1,
                                                                                     (16, 16))
    images, _, _ = GroundTruthDataset(size=128, count=2).batch([0, 1])
    assert cam.attribute(images, torch.tensor([0, 1])).shape == (2, 16, 16)
    assert jittercam.methods.create("upscale", model, size=20)(images[:1], 0).shape == (1, 20, 20)  # any size
    result = train(0, 2, tmp_path / "vit.pt", arch="vit", **{**TINY, "heldout": 4})
    again = load(tmp_path / "vit.pt")
    assert type(again).__name__ == "GroundTruthViT" and not result.cached
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), result.model.state_dict().values()))
    with pytest.raises(JitterCamError, match="arch must be one of cnn, vit"):
        train(0, 2, save=False, arch="mlp", **TINY)
