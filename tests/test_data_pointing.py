"""COCO 2014 val and VOC 2007 test as TorchRay's pointing game reads them, on tiny fake datasets."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jittercam.data import open_dataset
from jittercam.data.samples import read_difficult_flags
from jittercam.data.voc import VOC_CLASSES
from jittercam.errors import JitterCamError
from jittercam.models import ModelCard

CARD = ModelCard("test", input_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
SDIST = Path("/tmp/torchray_sdist/torchray-1.0.0.2.tar.gz")


def save_picture(path: Path, width: int, height: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG")


def flags_line(name: str, ones: set[int], classes: int) -> str:
    return "\t".join([name] + ["1" if c in ones else "0" for c in range(classes)]) + "\n"


# ------------------------------------------------------------------------------------------- COCO
@pytest.fixture
def coco_root(tmp_path) -> Path:
    """Three pictures (one without annotations), categories with ids 1, 3, 18 -> classes 0, 1, 2."""
    root = tmp_path / "coco"
    sizes = {42: (80, 60), 7: (50, 40), 99: (40, 40)}  # id -> (W, H)
    for image_id, (w, h) in sizes.items():
        save_picture(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", w, h, image_id)
    crowd = np.pad(np.ones((5, 6), np.uint8), ((50, 5), (70, 4)))  # (60, 80): rows 50..54, cols 70..75
    uncompressed = {"size": [60, 80], "counts": _uncompressed_counts(crowd)}
    annotations = [
        # image 42: two persons (class 0), one of them crowd (RLE); one dog (category 18 -> class 2)
        {"id": 1, "image_id": 42, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 20, 10], "area": 200,
         "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]]},
        {"id": 2, "image_id": 42, "category_id": 1, "iscrowd": 1, "bbox": [70, 50, 6, 5], "area": 30,
         "segmentation": uncompressed},
        {"id": 3, "image_id": 42, "category_id": 18, "iscrowd": 0, "bbox": [40.5, 30.25, 10, 20], "area": 200,
         "segmentation": [[40.5, 30.25, 50.5, 30.25, 50.5, 50.25, 40.5, 50.25]]},
        # image 7: one category-3 object (class 1)
        {"id": 4, "image_id": 7, "category_id": 3, "iscrowd": 0, "bbox": [0, 0, 50, 40], "area": 2000,
         "segmentation": [[0, 0, 50, 0, 50, 40, 0, 40]]},
    ]
    document = {
        "images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": w, "height": h}
                   for i, (w, h) in sizes.items()],
        "annotations": annotations,
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(document))
    return root


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    flat, counts, value, run = mask.flatten(order="F"), [], 0, 0
    for bit in flat:
        if bit != value:
            counts.append(run)
            value, run = bit, 0
        run += 1
    return [*counts, run]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_coco_items_classes_masks_and_boxes(coco_root):
    from pycocotools.coco import COCO

    dataset = open_dataset(str(coco_root))
    assert dataset.name == "coco-val2014" and dataset.num_classes == 3
    assert dataset.categories == ("person", "car", "dog")  # category-id order
    assert dataset.has == {"labels", "boxes", "masks"}
    assert dataset.keys() == ["COCO_val2014_000000000007", "COCO_val2014_000000000042"]  # id order; 99 has none
    sample = dataset.load("COCO_val2014_000000000042", CARD)
    assert sample.labels == (0, 2) and sample.original_size == (60, 80) and sample.difficult == {}
    coco = COCO(str(coco_root / "annotations" / "instances_val2014.json"))
    union = coco.annToMask(coco.anns[1]).astype(bool) | coco.annToMask(coco.anns[2]).astype(bool)
    assert torch.equal(sample.masks[0], torch.from_numpy(union))
    assert sample.masks[0][50:55, 70:76].all() and sample.masks[0].sum() == union.sum()  # crowd included
    assert torch.equal(sample.masks[2], torch.from_numpy(coco.annToMask(coco.anns[3]).astype(bool)))
    s = 64 / 80, 64 / 60
    expected_person = [[10 * s[0], 10 * s[1], 30 * s[0] - 1, 20 * s[1] - 1],
                       [70 * s[0], 50 * s[1], 76 * s[0] - 1, 55 * s[1] - 1]]
    assert torch.allclose(sample.boxes[0], torch.tensor(expected_person), atol=1e-5)
    expected = torch.tensor([[40.5 * s[0], 30.25 * s[1], 50.5 * s[0] - 1, 50.25 * s[1] - 1]])
    assert torch.allclose(sample.boxes[2], expected)
    whole = dataset.load("COCO_val2014_000000000007", CARD)
    assert whole.labels == (1,) and whole.boxes[1].tolist() == [[0, 0, 63, 63]] and whole.masks[1].all()


def test_coco_difficult_flags_follow_torchray(coco_root, tmp_path):
    flags = tmp_path / "flags.txt"
    flags.write_text(flags_line("COCO_val2014_000000000042", {2}, 3))  # image 7 is not listed
    dataset = open_dataset(str(coco_root), difficult=str(flags))
    assert "difficult" in dataset.has
    assert dataset.load("COCO_val2014_000000000042", CARD).difficult == {0: False, 2: True}
    # an unlisted image is still evaluated in TorchRay's difficult run
    assert dataset.load("COCO_val2014_000000000007", CARD).difficult == {1: True}
    # the same file inside a torchray-like sdist
    sdist = tmp_path / "torchray-0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        data = flags.read_bytes()
        info = tarfile.TarInfo("torchray-0/torchray/benchmark/pointing_game_ebp_coco_difficult.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    assert open_dataset(str(coco_root), difficult=str(sdist)).load("COCO_val2014_000000000042", CARD).difficult[2]
    wrong = tmp_path / "voc.txt"
    wrong.write_text(flags_line("000001", set(), 20))
    with pytest.raises(JitterCamError, match="line 1: expected a name and 3 0/1 flags, got 20"):
        open_dataset(str(coco_root), difficult=str(wrong))


def test_coco_paths_annotations_option_and_bad_items(coco_root, tmp_path):
    moved = tmp_path / "elsewhere.json"
    moved.write_text((coco_root / "annotations" / "instances_val2014.json").read_text())
    (coco_root / "annotations" / "instances_val2014.json").unlink()
    with pytest.raises(JitterCamError, match="no dataset recognised"):
        open_dataset(str(coco_root))
    dataset = open_dataset(str(coco_root), annotations=str(moved))
    assert len(dataset.keys()) == 2
    with pytest.raises(JitterCamError, match="labels does not apply to COCO"):
        open_dataset(str(coco_root), annotations=str(moved), labels="x.csv")
    (coco_root / "val2014" / "COCO_val2014_000000000007.jpg").write_bytes(b"garbage")
    save_picture(coco_root / "val2014" / "COCO_val2014_000000000042.jpg", 40, 40, 0)
    assert dataset.load("COCO_val2014_000000000007", CARD).skip.startswith("not an image")
    assert "is 40x40 pixels but annotated as 80x60" in dataset.load("COCO_val2014_000000000042", CARD).skip
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(JitterCamError, match="cannot read COCO annotations"):
        open_dataset(str(coco_root), annotations=str(broken))


# -------------------------------------------------------------------------------------------- VOC
def voc_xml(width: int, height: int, objects: list[tuple[str, tuple[int, int, int, int], int]]) -> str:
    parts = [(f"<annotation><folder>VOC2007</folder><size><width>{width}</width><height>{height}</height>"
              "<depth>3</depth></size>")]
    for name, (x0, y0, x1, y1), difficult in objects:
        parts.append(f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
                     f"<difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                     f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


@pytest.fixture
def voc_root(tmp_path) -> Path:
    base = tmp_path / "data" / "VOCdevkit" / "VOC2007"
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "Annotations").mkdir()
    (base / "ImageSets" / "Main" / "test.txt").write_text("000004\n000001\n")
    save_picture(base / "JPEGImages" / "000001.jpg", 60, 50, 1)
    save_picture(base / "JPEGImages" / "000004.jpg", 48, 36, 4)
    (base / "Annotations" / "000001.xml").write_text(voc_xml(60, 50, [
        ("dog", (11, 21, 40, 50), 0),
        ("person", (1, 1, 5, 5), 1), ("person", (51, 41, 60, 50), 0),
        ("chair", (20, 2, 30, 10), 1),
    ]))
    (base / "Annotations" / "000004.xml").write_text(voc_xml(48, 36, [("cat", (1, 1, 48, 36), 0)]))
    return tmp_path / "data"


def test_voc_masks_boxes_and_torchray_skips(voc_root):
    dataset = open_dataset(str(voc_root))
    assert dataset.name == "voc07-test" and dataset.num_classes == 20 and dataset.categories == VOC_CLASSES
    assert VOC_CLASSES.index("aeroplane") == 0 and VOC_CLASSES.index("tvmonitor") == 19
    assert dataset.keys() == ["000004", "000001"]  # test.txt order
    sample = dataset.load("000001", CARD)
    dog, person, chair = (VOC_CLASSES.index(n) for n in ("dog", "person", "chair"))
    assert sample.labels == (chair, dog, person) and sample.original_size == (50, 60)
    expected = torch.zeros(50, 60, dtype=torch.bool)
    expected[20:50, 10:40] = True  # 1-based inclusive (11, 21)-(40, 50)
    assert torch.equal(sample.masks[dog], expected)
    both = torch.zeros(50, 60, dtype=torch.bool)
    both[0:5, 0:5] = True  # the difficult box is in the mask, as in TorchRay's voc_as_mask
    both[40:50, 50:60] = True
    assert torch.equal(sample.masks[person], both)
    s = 64 / 60, 64 / 50
    assert torch.allclose(sample.boxes[dog], torch.tensor([[10 * s[0], 20 * s[1], 40 * s[0] - 1, 50 * s[1] - 1]]))
    assert sample.boxes[person].shape == (2, 4)
    # every chair box is difficult: TorchRay skips the pair
    assert set(sample.excluded) == {chair} and "marked difficult" in sample.excluded[chair]
    assert sample.reason_to_skip({"masks"}, target=chair) == sample.excluded[chair]
    assert sample.reason_to_skip({"masks"}, target=dog) is None
    cat = dataset.load("000004", CARD)
    index = VOC_CLASSES.index("cat")
    assert cat.masks[index].all() and cat.boxes[index].tolist() == [[0, 0, 63, 63]]


def test_voc_layouts_flags_and_bad_items(voc_root, tmp_path):
    for path in (voc_root, voc_root / "VOCdevkit", voc_root / "VOCdevkit" / "VOC2007"):
        assert open_dataset(str(path)).keys() == ["000004", "000001"]
    flags = tmp_path / "voc.txt"
    flags.write_text(flags_line("000001", {VOC_CLASSES.index("dog")}, 20))
    dataset = open_dataset(str(voc_root), difficult=str(flags))
    difficult = dataset.load("000001", CARD).difficult
    assert difficult[VOC_CLASSES.index("dog")] is True and difficult[VOC_CLASSES.index("person")] is False
    assert dataset.load("000004", CARD).difficult == {VOC_CLASSES.index("cat"): True}  # unlisted
    base = voc_root / "VOCdevkit" / "VOC2007"
    (base / "Annotations" / "000004.xml").write_text("<annotation><size>")
    assert dataset.load("000004", CARD).skip.startswith("unreadable annotation")
    (base / "Annotations" / "000001.xml").unlink()
    assert dataset.load("000001", CARD).skip.startswith("no annotation file")


@pytest.mark.skipif(not SDIST.is_file(), reason="the torchray sdist is not on this machine")
def test_real_torchray_flag_files():
    coco = read_difficult_flags(SDIST, "pointing_game_ebp_coco_difficult.txt", 80)
    voc = read_difficult_flags(SDIST, "pointing_game_ebp_voc07_difficult.txt", 20)
    assert len(coco) == 40137 and len(voc) == 4952
    assert coco["COCO_val2014_000000262148"].nonzero()[0].tolist() == [0, 4, 7, 13, 24, 26, 36, 60]
    assert voc["000001"].nonzero()[0].tolist() == [11]
