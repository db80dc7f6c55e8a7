"""Benchmark datasets: Sample, the box/mask conventions, open_dataset, and ImageNet validation."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jittercam.data import BenchmarkDataset, Sample, load_image, open_dataset
from jittercam.data.imagenet import devkit_to_torchvision, imagenet_wnids
from jittercam.data.samples import box_mask, input_boxes, read_picture
from jittercam.errors import JitterCamError
from jittercam.models import ModelCard, imagenet_categories

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CARD = ModelCard("test", input_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
GOLDFISH = "ILSVRC2012_val_00000262"


def pixels(sample: Sample) -> np.ndarray:
    """The sample's input back in [0, 1] pixels, (S, S, 3)."""
    return (sample.image * 0.5 + 0.5).permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------ conventions
def test_input_boxes_map_edges_so_full_images_stay_full():
    # inclusive box (0, 0, 447, 447) of a 448-px frame = edges [0, 448): the whole 224 input
    assert input_boxes([[0, 0, 448, 448]], (448, 448), 224).tolist() == [[0, 0, 223, 223]]
    # edges [50, 150) x [20, 60) of a 200 x 100 frame (W x H) at S = 64
    box = input_boxes([[50, 20, 150, 60]], (100, 200), 64)
    assert torch.allclose(box, torch.tensor([[16.0, 12.8, 47.0, 37.4]]))
    assert box.dtype == torch.float32
    # clipped to the input; a sliver thinner than one input pixel keeps x1 = x0
    assert input_boxes([[-10, 0, 1000, 10]], (100, 200), 64)[0].tolist()[::2] == [0.0, 63.0]
    thin = input_boxes([[10, 10, 10.5, 11]], (100, 200), 64)[0]
    assert thin[2] == thin[0]


def test_box_mask_is_exact_slicing_at_the_frame_size_and_centres_otherwise():
    mask = box_mask([[10, 20, 40, 50], [0, 0, 2, 1]], (60, 80), (60, 80))
    expected = torch.zeros(60, 80, dtype=torch.bool)
    expected[20:50, 10:40] = True
    expected[0:1, 0:2] = True
    assert torch.equal(mask, expected)
    half = box_mask([[10, 20, 40, 50]], (60, 80), (30, 40))  # a picture at half the annotated size
    assert half.nonzero().min(0).values.tolist() == [10, 5] and half.nonzero().max(0).values.tolist() == [24, 19]


def test_boxes_follow_the_picture_through_to_input(tmp_path):
    """A white rectangle on black: after the whole-image resize, the scaled box frames it."""
    picture = np.zeros((150, 300, 3), dtype=np.uint8)
    picture[30:90, 120:240] = 255  # edges [120, 240) x [30, 90)
    folder = tmp_path / "val"
    folder.mkdir()
    Image.fromarray(picture).save(folder / "ILSVRC2012_val_00000001.JPEG", format="PNG")  # lossless
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    write_xml(boxes / "ILSVRC2012_val_00000001.xml", (300, 150), [("n01751748", (120, 30, 239, 89))])
    sample = open_dataset(str(folder), boxes=str(boxes)).load("ILSVRC2012_val_00000001", CARD)
    x0, y0, x1, y1 = sample.boxes[65][0].tolist()
    assert (x0, y0, x1, y1) == pytest.approx((25.6, 12.8, 50.2, 37.4), abs=1e-5)
    grey = pixels(sample).mean(axis=2)
    assert grey[14:37, 27:50].min() > 0.9  # inside, a pixel away from the edges
    assert grey[:11].max() < 0.1 and grey[40:].max() < 0.1 and grey[:, :24].max() < 0.1 and grey[:, 52:].max() < 0.1


def test_sample_reason_to_skip():
    box = torch.tensor([[0.0, 0.0, 3.0, 3.0]])
    sample = Sample("a", torch.zeros(3, 4, 4), labels=(1, 2), boxes={1: box}, excluded={2: "all difficult"},
                    missing={"difficult": "no flags"})
    assert sample.reason_to_skip() is None
    assert sample.reason_to_skip({"boxes"}, target=1) is None
    assert sample.reason_to_skip({"boxes"}, target=2) == "all difficult"
    assert sample.reason_to_skip({"labels"}, target=7) == "class 7 is not a ground-truth class of a"
    assert sample.reason_to_skip({"masks"}, target=1) == "no mask for class 1 in a"
    assert sample.reason_to_skip({"difficult"}) == "no flags"
    gone = Sample.skipped("b", "not an image: b.JPEG")
    assert gone.image is None and gone.reason_to_skip() == "not an image: b.JPEG"


# -------------------------------------------------------------------------------- open_dataset
def test_open_dataset_refuses_unknown_specs_in_one_line(tmp_path):
    with pytest.raises(JitterCamError, match=r"no such dataset: nowhere .*expected 'offline'"):
        open_dataset("nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(JitterCamError, match="not a folder"):
        open_dataset(str(tmp_path / "file.txt"))
    (tmp_path / "holiday.jpg").write_bytes(b"")
    with pytest.raises(JitterCamError, match=r"no dataset recognised in .*ILSVRC2012_val_"):
        open_dataset(str(tmp_path))
    with pytest.raises(JitterCamError, match="boxes does not apply to the offline dataset"):
        open_dataset("offline", boxes=str(tmp_path))
    with pytest.raises(JitterCamError) as error:
        open_dataset(str(tmp_path))
    assert "\n" not in str(error.value)


@pytest.fixture
def val_folder(tmp_path) -> Path:
    folder = tmp_path / "val"
    folder.mkdir()
    for path in sorted((EXAMPLES / "images").glob("ILSVRC2012_val_*.JPEG")):
        shutil.copyfile(path, folder / path.name)
    shutil.copyfile(EXAMPLES / "images" / "catdog.png", folder / "catdog.png")  # not an ImageNet file
    return folder


def test_imagenet_labels_come_from_the_official_ground_truth(val_folder, example_labels):
    dataset = open_dataset(str(val_folder))
    assert isinstance(dataset, BenchmarkDataset)
    assert dataset.name == "imagenet-val" and dataset.num_classes == 1000 and dataset.has == {"labels"}
    assert dataset.categories == imagenet_categories()
    assert dataset.keys() == sorted(Path(f).stem for f in example_labels)
    for file, label in example_labels.items():
        sample = dataset.load(Path(file).stem, CARD)
        assert sample.labels == (label,) and sample.skip is None and not sample.missing
        assert sample.image.shape == (3, 64, 64) and sample.image.dtype == torch.float32
    goldfish = dataset.load(GOLDFISH, CARD)
    assert goldfish.original_size == (375, 500) and goldfish.boxes == {} and goldfish.difficult == {}
    with pytest.raises(JitterCamError, match="no item"):
        dataset.load("catdog", CARD)


def test_imagenet_class_order_is_torchvision(example_labels):
    wnids = imagenet_wnids()
    assert wnids[0] == "n01440764" and wnids[1] == "n01443537" and list(wnids) == sorted(wnids)
    categories = imagenet_categories()
    assert categories[1] == "goldfish" and categories[example_labels[f"{GOLDFISH}.JPEG"]] == "goldfish"


def test_imagenet_labels_file_csv(val_folder, tmp_path):
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("file,class_index,class_name\nILSVRC2012_val_00000262.JPEG,7,cock\nILSVRC2012_val_00000259,3,x\n")
    dataset = open_dataset(str(val_folder), labels=str(csv_file))
    assert dataset.load(GOLDFISH, CARD).labels == (7,)
    assert dataset.load("ILSVRC2012_val_00000259", CARD).labels == (3,)
    unlabelled = dataset.load("ILSVRC2012_val_00000760", CARD)
    assert unlabelled.labels == () and "no label for ILSVRC2012_val_00000760" in unlabelled.missing["labels"]
    assert unlabelled.reason_to_skip({"labels"}) == unlabelled.missing["labels"]
    bare = tmp_path / "bare.csv"  # no header
    bare.write_text("ILSVRC2012_val_00000262.JPEG,5\n")
    assert open_dataset(str(val_folder), labels=str(bare)).load(GOLDFISH, CARD).labels == (5,)
    for text, message in (("ILSVRC2012_val_00000262.JPEG,1000\n", "outside 0..999"),
                          ("file,class_index\nILSVRC2012_val_00000262.JPEG,fish\n", "line 2: class index 'fish'")):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(JitterCamError, match=message):
            open_dataset(str(val_folder), labels=str(bad))


def write_meta(path: Path, leaves: list[tuple[int, str]]) -> None:
    """A devkit meta.mat with `leaves` (ILSVRC2012_ID, WNID) and one non-leaf synset."""
    from scipy.io import savemat

    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    rows = [(i, w, w, "", 0) for i, w in leaves] + [(1001, "n00001740", "entity", "", 3)]
    synsets = np.array(rows, dtype=dtype).reshape(-1, 1)
    savemat(path, {"synsets": synsets})


def test_imagenet_devkit_ground_truth_needs_meta_mat(val_folder, tmp_path):
    devkit = tmp_path / "devkit" / "data"
    devkit.mkdir(parents=True)
    truth = devkit / "ILSVRC2012_validation_ground_truth.txt"
    ids = [1000 - (i % 1000) for i in range(262)]  # image 262 -> ILSVRC2012_ID 1000 - 261 = 739
    truth.write_text("\n".join(map(str, ids)) + "\n")
    with pytest.raises(JitterCamError, match=r"ILSVRC2012_ID, not torchvision's order: put the devkit's meta.mat"):
        open_dataset(str(val_folder), labels=str(truth))
    # the devkit numbers synsets in its own order: here ID k is the (1000 - k)-th WordNet id (0-based)
    wnids = imagenet_wnids()
    write_meta(devkit / "meta.mat", [(k, wnids[1000 - k]) for k in range(1, 1001)])
    assert devkit_to_torchvision(devkit / "meta.mat")[739] == 261
    dataset = open_dataset(str(val_folder), labels=str(truth))
    assert dataset.load(GOLDFISH, CARD).labels == (261,)
    assert dataset.load("ILSVRC2012_val_00000259", CARD).labels == (258,)


def write_xml(path: Path, size: tuple[int, int], objects: list[tuple[str, tuple[int, int, int, int]]]) -> None:
    parts = [(f"<annotation><filename>{path.stem}</filename><size><width>{size[0]}</width>"
              f"<height>{size[1]}</height><depth>3</depth></size>")]
    for name, (x0, y0, x1, y1) in objects:
        parts.append(f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                     f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    path.write_text("".join(parts) + "</annotation>")


def test_imagenet_boxes_from_xml(val_folder, tmp_path):
    boxes = tmp_path / "bbox_val"
    boxes.mkdir()
    # the goldfish photo is 500 x 375; two goldfish boxes and one of another class
    write_xml(boxes / f"{GOLDFISH}.xml", (500, 375), [("n01443537", (226, 180, 323, 270)),
                                                    ("n01443537", (310, 50, 352, 142)),
                                                    ("n01440764", (0, 0, 499, 374)),
                                                    ("n99999999", (1, 1, 2, 2))])
    write_xml(boxes / "ILSVRC2012_val_00000259.xml", (375, 500), [("n01440764", (10, 10, 20, 20))])
    (boxes / "ILSVRC2012_val_00000760.xml").write_text("<annotation><size>")
    dataset = open_dataset(str(val_folder), boxes=str(boxes))
    assert dataset.has == {"labels", "boxes", "masks"}
    sample = dataset.load(GOLDFISH, CARD)
    assert sample.labels == (1,) and not sample.missing and set(sample.boxes) == {0, 1}
    s = 64 / 500, 64 / 375
    expected = [[226 * s[0], 180 * s[1], 324 * s[0] - 1, 271 * s[1] - 1],
                [310 * s[0], 50 * s[1], 353 * s[0] - 1, 143 * s[1] - 1]]
    assert torch.allclose(sample.boxes[1], torch.tensor(expected), atol=1e-5)
    assert sample.boxes[0].tolist() == [[0.0, 0.0, 63.0, 63.0]]
    mask = torch.zeros(375, 500, dtype=torch.bool)
    mask[180:271, 226:324] = True
    mask[50:143, 310:353] = True
    assert torch.equal(sample.masks[1], mask) and sample.masks[1].shape == sample.original_size
    # no box for the label, unreadable XML, missing XML: the picture stays usable
    other = dataset.load("ILSVRC2012_val_00000259", CARD)
    assert other.image is not None and "no box for class 644 (n03729826)" in other.missing["boxes"]
    assert other.reason_to_skip({"boxes"}) == other.missing["boxes"]
    assert "unreadable box file" in dataset.load("ILSVRC2012_val_00000760", CARD).missing["boxes"]
    gone = dataset.load("ILSVRC2012_val_00001659", CARD)
    assert gone.missing["boxes"].startswith("no box file ILSVRC2012_val_00001659.xml") and gone.image is not None
    assert gone.reason_to_skip() is None and gone.reason_to_skip({"masks"}) == gone.missing["masks"]
    with pytest.raises(JitterCamError, match="no such box folder"):
        open_dataset(str(val_folder), boxes=str(tmp_path / "missing"))


def test_unreadable_pictures_are_skipped_with_their_reason(val_folder):
    (val_folder / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"this is not a jpeg")
    whole = (val_folder / f"{GOLDFISH}.JPEG").read_bytes()
    (val_folder / "ILSVRC2012_val_00000002.JPEG").write_bytes(whole[: len(whole) // 3])
    dataset = open_dataset(str(val_folder))
    for key, reason in (("ILSVRC2012_val_00000001", "not an image:"), ("ILSVRC2012_val_00000002", "truncated image:")):
        sample = dataset.load(key, CARD)
        assert sample.image is None and sample.skip.startswith(reason) and key in sample.skip
        assert "\n" not in sample.skip and sample.reason_to_skip() == sample.skip


def test_annotated_datasets_read_the_stored_layout(tmp_path):
    """EXIF orientation 6 (rotate 90): `explain` shows it upright; annotations refer to the stored pixels."""
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (120, 80), (200, 10, 10)).save(path, exif=exif)
    assert load_image(path).size == (80, 120)
    assert read_picture(path).size == (120, 80)
    assert read_picture(path, stored_layout=False).size == (80, 120)
