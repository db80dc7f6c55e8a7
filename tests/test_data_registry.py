"""Datasets and model sources as registered files: what each declares, and the typed model card."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

import jittercam
from jittercam.card import ModelCard, model_card
from jittercam.data import registry
from jittercam.data.registry import (
    available_datasets,
    dataset_needs_model,
    dataset_num_classes,
    dataset_source,
    open_dataset,
    register_dataset,
)
from jittercam.errors import JitterCamError
from jittercam.models import registered_models


class _Toy:
    name = "toy-set"
    num_classes = 3
    categories = ("a", "b", "c")
    has = frozenset({"labels"})

    def __init__(self, root: Path, colour: str | None) -> None:
        self.root, self.colour = root, colour

    def keys(self) -> list[str]:
        return []

    def load(self, key, card):
        raise KeyError(key)

    def config(self) -> dict:
        return {"dataset": self.name}


@pytest.fixture
def toy():
    """A folder dataset registered for one test: a folder holding toy.txt."""

    @register_dataset(_Toy.name, title="the toy set", folder="a folder with toy.txt", num_classes=_Toy.num_classes,
                      recognises=lambda root, options: (root / "toy.txt").is_file())
    def _open(root: Path, seed: int, model, *, colour: str | None = None) -> _Toy:
        return _Toy(root, colour)

    yield _Toy.name
    registry._SOURCES.pop(_Toy.name)


def test_every_dataset_declares_its_name_options_and_classes():
    assert available_datasets()[:4] == ["offline", "coco-val2014", "voc07-test", "imagenet-val"]
    assert "groundtruth" in available_datasets()
    assert [dataset_num_classes(n) for n in ("offline", "coco-val2014", "voc07-test", "imagenet-val")] == [
        1000, 80, 20, 1000]
    assert dataset_num_classes("groundtruth") is None and dataset_num_classes("groundtruth-45deg") is None
    assert dataset_source("imagenet-val").options == ("labels", "boxes")
    assert dataset_source("coco-val2014").options == ("annotations", "difficult")
    assert dataset_source("offline").options == ()
    with pytest.raises(JitterCamError, match="unknown dataset 'nope'; choose from: offline, "):
        dataset_source("nope")


def test_only_a_dataset_drawn_from_its_model_needs_the_model(tmp_path):
    assert dataset_needs_model("groundtruth")
    assert not any(dataset_needs_model(spec) for spec in ("offline", "nowhere", str(tmp_path), tmp_path,
                                                          Path("groundtruth")))
    with pytest.raises(JitterCamError, match=r"drawn from its model: pass model$"):
        open_dataset("groundtruth")
    model = jittercam.load_model("groundtruth", weights="random")
    data = open_dataset("groundtruth", model=model, singles=2, replicates=1, separations=[20], angle=None)
    assert data.name == "groundtruth" and data.keys() == ["single-0000", "pair-s020-r00", "single-0001"]  # interleaved


def test_a_registered_folder_dataset_is_recognised_listed_and_checked(tmp_path, toy):
    (tmp_path / "toy.txt").write_text("")
    data = open_dataset(str(tmp_path), colour="red", boxes=None)
    assert isinstance(data, _Toy) and data.root == tmp_path and data.colour == "red"
    assert dataset_num_classes(toy) == 3 and not dataset_needs_model(str(tmp_path))
    with pytest.raises(JitterCamError, match="labels does not apply to the toy set"):
        open_dataset(str(tmp_path), labels="x.csv")
    with pytest.raises(JitterCamError, match=r"expected 'offline', .*, or a folder with toy.txt\)$"):
        open_dataset(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="taken"):
        register_dataset(toy, title="again")(lambda spec, seed, model: None)


def test_a_folder_dataset_must_say_what_its_folder_holds():
    with pytest.raises(ValueError, match="folder="):
        register_dataset("no-folder", title="x", recognises=lambda root, options: False)(
            lambda spec, seed, model: None)
    assert "no-folder" not in available_datasets()


def test_model_sources_register_where_they_are_defined():
    sources = registered_models()
    assert list(sources) == sorted(sources) and {"efficientnet_lite0", "groundtruth"} <= set(sources)
    assert all(sources[name] for name in ("efficientnet_lite0", "groundtruth"))


def test_what_the_ground_truth_model_carries_is_on_its_card(quick_groundtruth):
    trained = quick_groundtruth.model
    card = model_card(trained)
    assert card.fusion_layers == ("layer1", "layer2", "layer3") and card.heldout["size"] == 64
    assert card.weights_file is None  # trained here, not read from a file
    loaded = jittercam.load_model("groundtruth", weights=str(quick_groundtruth.path))
    card = model_card(loaded)
    assert card.weights_file == str(quick_groundtruth.path) and card.heldout == model_card(trained).heldout
    assert not hasattr(loaded, "heldout") and not hasattr(loaded, "weights_file")  # the card carries them
    copy = pickle.loads(pickle.dumps(loaded))
    assert model_card(copy) == card and hash(card) == hash(model_card(copy))


def test_a_plain_card_carries_nothing_more():
    card = ModelCard("mine")
    assert card.weights_file is None and card.heldout is None and card.fusion_layers == ()
    with pytest.raises(JitterCamError, match="use model groundtruth, not Conv2d: "):
        jittercam.groundtruth.for_model(torch.nn.Conv2d(3, 1, 1))
