"""`jittercam explain` sees a photo as a viewer shows it, and big photos stay cheap."""
from __future__ import annotations

import csv
import tracemalloc

import numpy as np
from PIL import Image

from conftest import GOLDFISH, write_png16
from jittercam.cli import main
from jittercam.viz import overlay


def _rows(out) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return {row["npy"]: row for row in csv.DictReader(handle)}


def test_rotated_and_16_bit_photos_give_the_class_and_map_of_their_upright_8_bit_versions(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    # a phone photo: pixels stored sideways, EXIF orientation 6 (rotate 90 degrees clockwise to display)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(GOLDFISH).transpose(Image.Transpose.ROTATE_90).save(photos / "phone.jpg", quality=95, exif=exif)
    stored = np.asarray(Image.open(photos / "phone.jpg").convert("RGB"))
    upright = np.ascontiguousarray(np.rot90(stored, k=-1))  # what a viewer shows, 500 x 375
    Image.fromarray(upright).save(photos / "upright.png")
    write_png16(photos / "deep.png", upright.astype(np.uint16) * 257)
    grey = np.asarray(Image.fromarray(upright).convert("L"))
    Image.fromarray(grey).save(photos / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(photos / "grey16.png")
    Image.fromarray(grey.astype(np.float32) / 255).save(photos / "grey.tif")

    out = tmp_path / "out"
    assert main(["explain", str(photos), "--method", "gradcam", "--out", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 6

    def same(a: str, b: str) -> None:
        row_a, row_b = rows[f"{a}.gradcam.npy"], rows[f"{b}.gradcam.npy"]
        assert (row_a["class_index"], row_a["probability"]) == (row_b["class_index"], row_b["probability"])
        np.testing.assert_array_equal(np.load(out / f"{a}.gradcam.npy"), np.load(out / f"{b}.gradcam.npy"))

    same("phone", "upright")
    same("deep", "upright")
    same("grey16", "grey8")
    same("grey", "grey8")
    assert rows["upright.gradcam.npy"]["class_name"] == "goldfish"
    assert np.load(out / "phone.gradcam.npy").shape == (375, 500)
    assert Image.open(out / "phone.gradcam.png").size == (500, 375)


def test_a_big_photo_stores_a_capped_map_and_a_full_size_overlay(tmp_path, capsys):
    width, height = 1200, 800
    y, x = np.mgrid[0:height, 0:width]
    Image.fromarray(np.stack([x % 256, y % 256, (x // 12) % 256], axis=-1).astype(np.uint8)).save(
        tmp_path / "big.jpg", quality=80
    )
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "big.jpg"), "--method", "gradcam", "--out", str(out)]) == 0
    heat = np.load(out / "big.gradcam.npy")
    assert heat.shape == (683, 1024) and heat.dtype == np.float32 and heat.max() == 1.0
    assert Image.open(out / "big.gradcam.png").size == (width, height)
    assert main(["explain", str(tmp_path / "big.jpg"), "--method", "gradcam", "--npy-max", "300",
                 "--out", str(out)]) == 0
    assert np.load(out / "big.gradcam.npy").shape == (200, 300)


def test_overlay_memory_stays_near_the_photos_size():
    width, height = 4000, 3000  # 12 megapixels: 36 MB of RGB
    photo = Image.new("RGB", (width, height), (90, 120, 150))
    heat = np.linspace(0, 1, 768 * 1024, dtype=np.float32).reshape(768, 1024)
    tracemalloc.start()
    try:
        picture = overlay(photo, heat)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert picture.size == (width, height)
    # numpy work happens a stripe of rows at a time; a whole-image float pipeline would need > 400 MB
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_overlay_of_a_smaller_map_matches_the_resized_map():
    import torch

    from jittercam import resize

    heat = np.random.default_rng(0).random((7, 9)).astype(np.float32)
    photo = Image.new("RGB", (45, 35), (0, 0, 0))
    big = resize(torch.from_numpy(heat)[None], (35, 45))[0].numpy()
    np.testing.assert_array_equal(np.asarray(overlay(photo, heat, alpha=1.0)),
                                  np.asarray(overlay(photo, big, alpha=1.0)))
