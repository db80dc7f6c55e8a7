"""Models by name from timm (`timm:NAME`) and Hugging Face (`hf:NAME`, model objects): cards, weights,
maps, and one-line errors. Random weights only: nothing is downloaded."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch
from torch import nn

import jittercam
from conftest import GOLDFISH
from jittercam.cli import main
from jittercam.data import load_image, to_input
from jittercam.errors import JitterCamError
from jittercam.models import registered_models


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """The hub libraries offline, with an empty cache: a pretrained model cannot be had."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_importing_jittercam_imports_neither_timm_nor_transformers():
    # nor, for the command line, what takes seconds of every `jittercam` command's start (`--help`, a refused
    # path): imported where a correlation, a model, an image or a figure first needs it
    slow = "{'timm', 'transformers', 'scipy.stats', 'torchvision', 'matplotlib.figure'}"
    code = f"import sys, jittercam.cli; print(sorted({slow} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_sources_are_listed_as_prefixes(capsys):
    sources = registered_models()
    assert sources["timm:NAME"].startswith("timm's classifiers") and "jittercam[hf]" in sources["hf:NAME"]
    assert main(["list"]) == 0
    assert "timm:NAME (timm's classifiers" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------- timm
def test_timm_model_by_name_has_the_card_of_its_pretrained_configuration():
    pytest.importorskip("timm")
    model = jittercam.load_model("timm:test_resnet.r160_in1k", weights="random")
    card = jittercam.model_card(model)
    assert not model.training
    assert (card.name, card.input_size, card.mean, card.std) == ("timm:test_resnet.r160_in1k", 160, (0.5,) * 3,
                                                                 (0.5,) * 3)
    assert (card.interpolation, card.crop_pct) == ("bilinear", 0.95)
    assert len(card.categories) == 1000 and card.class_name(1) == "goldfish"
    assert jittercam.find_target_layer(model).input_size == 160  # the probe feeds the card's size


def test_timm_cnn_gives_gradcam_and_jittercam_maps_of_the_right_shape():
    pytest.importorskip("timm")
    model = jittercam.load_model("timm:resnet18", weights="random")
    card = jittercam.model_card(model)
    assert (card.input_size, card.mean, card.interpolation) == (224, jittercam.models.IMAGENET_MEAN, "bicubic")
    images = torch.randn(2, 3, 128, 128)
    assert jittercam.GradCAM(model, input_size=128)(images).shape == (2, 4, 4)
    jitter = jittercam.JitterCAM(model, input_size=128)(images[:1], target=3)
    assert jitter.shape == (1, 8, 8) and torch.isfinite(jitter).all()


def test_timm_weights_from_a_state_dict_or_safetensors_file(tmp_path):
    pytest.importorskip("timm")
    safetensors = pytest.importorskip("safetensors.torch")
    source = jittercam.load_model("timm:resnet18", weights="random")
    torch.save(source.state_dict(), tmp_path / "resnet18.pt")
    safetensors.save_file(source.state_dict(), str(tmp_path / "resnet18.safetensors"))
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = source(images)
        for name in ("resnet18.pt", "resnet18.safetensors"):
            loaded = jittercam.load_model("timm:resnet18", weights=tmp_path / name)
            assert torch.equal(loaded(images), expected)
    torch.save(jittercam.load_model("timm:resnet10t", weights="random").state_dict(), tmp_path / "other.pt")
    with pytest.raises(JitterCamError, match=r"do not fit timm:resnet18"):
        jittercam.load_model("timm:resnet18", weights=tmp_path / "other.pt")


def test_a_timm_model_object_gets_its_card_and_stays_the_same_object():
    timm = pytest.importorskip("timm")
    built = timm.create_model("test_resnet.r160_in1k", pretrained=False)
    model = jittercam.load_model(built)
    assert model is built and jittercam.model_card(model).input_size == 160
    with pytest.raises(JitterCamError, match="weights is for a model name"):
        jittercam.load_model(built, weights="random")


def test_any_other_module_comes_back_as_it_is_without_a_made_up_card():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).train()
    assert jittercam.load_model(plain) is plain and not plain.training
    assert jittercam.models.attached_card(plain) is None


def test_timm_errors_are_one_line(offline):
    pytest.importorskip("timm")
    with pytest.raises(JitterCamError, match=r"unknown timm model 'resnet1'; did you mean .*resnet18"):
        jittercam.load_model("timm:resnet1", weights="random")
    with pytest.raises(JitterCamError) as error:
        jittercam.load_model("timm:resnet18")  # pretrained: not in the (empty) cache, no network
    message = str(error.value)
    assert "\n" not in message and error.value.option == "weights"
    assert "model.safetensors from https://huggingface.co/timm/resnet18.a1_in1k" in message
    assert "weights=PATH" in message and "'random'" in message


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "timm:nosuch"], "jittercam: error: unknown timm model 'nosuch'"),
    (["--model", "timm:resnet18"], "pass --weights=PATH (or 'random' for random weights)"),
    (["--model", "timm:resnet18", "--weights", "missing.pt"], "jittercam: error: weights file not found"),
    (["--model", "hf:resnet", "--weights", "missing.pt"], "jittercam: error: weights file not found"),
    (["--model", "hf:nobody/nosuch", "--weights", "missing.pt"], "jittercam: error: weights file not found"),
    (["--model", "nosuch:thing"], "or hf:NAME, timm:NAME"),
])
def test_cli_model_errors_are_one_line_exit_2_and_no_files(tmp_path, capsys, offline, args, message):
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    out = tmp_path / "out"
    assert main(["explain", str(GOLDFISH), "--method", "gradcam", *args, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not out.exists()


def test_cli_explains_with_a_timm_model(tmp_path, capsys):
    pytest.importorskip("timm")
    out = tmp_path / "out"
    assert main(["explain", str(GOLDFISH), "--model", "timm:test_resnet.r160_in1k", "--weights", "random",
                 "--method", "gradcam", "--out", str(out)]) == 0
    assert "timm:test_resnet.r160_in1k" in capsys.readouterr().out
    assert len(list(out.rglob("*.npy"))) == 1


# --------------------------------------------------------------------------------------------- Hugging Face
def _hf_resnet(labels: int = 5) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 32, 64], depths=[1, 1, 1, 1],
                                       id2label={i: f"kind {i}" for i in range(labels)})
    return transformers.ResNetForImageClassification(config).eval()


def test_a_hugging_face_classifier_is_wrapped_to_give_logits_and_gradcam_maps():
    hf = _hf_resnet()
    model = jittercam.load_model(hf)
    assert model is not hf and model.model is hf  # held, not copied: its modules are the wrapper's model.*
    assert all(a is b for a, b in zip(model.parameters(), hf.parameters()))
    card = jittercam.model_card(model)
    assert card.categories == tuple(f"kind {i}" for i in range(5)) and card.class_name(2) == "kind 2"
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(images), hf(pixel_values=images).logits)
    layer = jittercam.find_target_layer(model, input_size=96)
    assert layer.name == "model.resnet.encoder.stages.3" and layer.num_classes == 5
    assert jittercam.GradCAM(model, input_size=96)(images, target=[1, 4]).shape == (2, 3, 3)
    by_module = jittercam.GradCAM(model, hf.resnet.encoder.stages[3], input_size=96)(images, target=[1, 4])
    assert torch.allclose(by_module, jittercam.GradCAM(model, input_size=96)(images, target=[1, 4]))
    assert jittercam.JitterCAM(model, input_size=96)(images[:1]).shape == (1, 6, 6)


def test_hf_by_name_from_a_saved_folder_with_its_own_image_processor(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = _hf_resnet()
    hf.save_pretrained(tmp_path / "saved")
    transformers.ConvNextImageProcessor(size={"shortest_edge": 128}, image_mean=[0.4, 0.5, 0.6],
                                        image_std=[0.2, 0.3, 0.4], crop_pct=1.0).save_pretrained(tmp_path / "saved")
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = hf(pixel_values=images).logits
        for model in (jittercam.load_model(f"hf:{tmp_path / 'saved'}"),
                      jittercam.load_model("hf:resnet", weights=tmp_path / "saved")):
            assert torch.allclose(model(images), expected)
    card = jittercam.model_card(jittercam.load_model(f"hf:{tmp_path / 'saved'}"))
    assert (card.input_size, card.mean, card.std, card.crop_pct) == (128, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4), 1.0)
    assert card.categories[0] == "kind 0"


def test_a_multi_label_hf_model_reports_each_labels_sigmoid(tmp_path):
    hf = _hf_resnet()
    hf.config.problem_type = "multi_label_classification"
    hf.save_pretrained(tmp_path / "saved")
    model = jittercam.load_model(f"hf:{tmp_path / 'saved'}")
    card = jittercam.model_card(model)
    assert card.multi_label and not jittercam.model_card(jittercam.load_model(_hf_resnet())).multi_label
    out = tmp_path / "out"
    assert main(["explain", str(GOLDFISH), "--model", f"hf:{tmp_path / 'saved'}", "--method", "gradcam",
                 "--top", "2", "--out", str(out), "--quiet"]) == 0
    with torch.no_grad():
        logits = model(to_input(load_image(GOLDFISH), card))[0]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [int(row["class_index"]) for row in rows] == logits.topk(2).indices.tolist()
    for row in rows:  # independent labels: each its own sigmoid, not a share of one softmax
        assert float(row["probability"]) == pytest.approx(torch.sigmoid(logits[int(row["class_index"])]).item(),
                                                          abs=1e-6)


def test_hf_random_weights_from_a_model_type_and_a_state_dict_file(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = jittercam.load_model("hf:convnext", weights="random")
    card = jittercam.model_card(model)
    assert isinstance(model.model, transformers.ConvNextForImageClassification)
    assert card.name == "hf:convnext" and card.input_size == 224  # the configuration's image_size
    torch.save(model.model.state_dict(), tmp_path / "convnext.pt")
    loaded = jittercam.load_model("hf:convnext", weights=tmp_path / "convnext.pt")
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_hf_errors_are_one_line(offline):
    pytest.importorskip("transformers")
    with pytest.raises(JitterCamError) as error:
        jittercam.load_model("hf:nobody/nosuch-model")
    assert "\n" not in str(error.value) and "save_pretrained(FOLDER)" in str(error.value)
    with pytest.raises(JitterCamError, match="cannot get the configuration of hf:nobody/nosuch-model"):
        jittercam.load_model("hf:nobody/nosuch-model", weights="random")


def test_a_hugging_face_backbone_without_logits_is_refused_in_one_line():
    transformers = pytest.importorskip("transformers")
    backbone = transformers.ResNetModel(_hf_resnet().config).eval()
    with pytest.raises(JitterCamError, match="ResNetModel gives no logits: explain an image classifier"):
        jittercam.GradCAM(jittercam.load_model(backbone), input_size=64)


def test_a_saved_backbone_is_not_given_a_random_head(tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.ResNetModel(_hf_resnet().config).save_pretrained(tmp_path / "backbone")
    with pytest.raises(JitterCamError, match=r"not a complete image classifier: \d+ of its weights are missing"):
        jittercam.load_model(f"hf:{tmp_path / 'backbone'}")
