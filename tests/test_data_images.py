"""Image files read as a viewer displays them: EXIF orientation, high bit depths, transparency, sizes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import GOLDFISH, write_png16
from jittercam.data import MIN_SIDE, check_image, load_image
from jittercam.errors import JitterCamError


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def _scene(height: int = 48, width: int = 64) -> np.ndarray:
    """A small RGB picture with structure in every channel and the full 0..255 range."""
    y, x = np.mgrid[0:height, 0:width]
    picture = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x * y) % 256], axis=-1)
    return picture.astype(np.uint8)


def test_exif_orientation_is_applied(tmp_path):
    upright = Image.open(GOLDFISH).convert("RGB")  # 500 x 375
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 375 x 500, as a phone stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # display: rotate the stored pixels 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    stored.save(path, quality=95, exif=exif)

    decoded = np.asarray(Image.open(path).convert("RGB"))  # the stored pixels, sideways
    loaded = _pixels(load_image(path))
    assert loaded.shape == (375, 500, 3)
    np.testing.assert_array_equal(loaded, np.rot90(decoded, k=-1))
    info = check_image(path)
    assert (info.width, info.height) == (500, 375)


def test_16_bit_grey_png_is_scaled_by_its_range(tmp_path):
    grey = _scene()[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    np.testing.assert_array_equal(_pixels(load_image(tmp_path / "grey16.png")),
                                  _pixels(load_image(tmp_path / "grey8.png")))


def test_16_bit_rgb_png_matches_its_8_bit_version(tmp_path):
    scene = _scene()
    write_png16(tmp_path / "rgb16.png", scene.astype(np.uint16) * 257)
    np.testing.assert_array_equal(_pixels(load_image(tmp_path / "rgb16.png")), scene)


def test_float_tiff_in_unit_range_is_taken_as_it_is(tmp_path):
    grey = _scene()[..., 1]
    Image.fromarray(grey.astype(np.float32) / 255).save(tmp_path / "unit.tif")
    assert Image.open(tmp_path / "unit.tif").mode == "F"
    loaded = _pixels(load_image(tmp_path / "unit.tif"))
    np.testing.assert_array_equal(loaded, np.repeat(grey[..., None], 3, axis=-1))


def test_float_tiff_outside_unit_range_is_scaled_by_its_minimum_and_maximum(tmp_path):
    grey = _scene()[..., 1].astype(np.float32)
    data = grey * 10.0 - 300.0  # -300 .. 2250
    data[0, 0] = np.nan
    Image.fromarray(data).save(tmp_path / "wide.tif")
    loaded = _pixels(load_image(tmp_path / "wide.tif"))[..., 0].astype(int)
    expected = grey.astype(int)
    expected[0, 0] = 0  # NaN becomes the minimum
    assert np.abs(loaded - expected).max() <= 1
    assert loaded.max() == 255


@pytest.mark.parametrize("scale, offset", [(257, 0), (100_000, -5_000_000)])
def test_32_bit_integer_images(tmp_path, scale, offset):
    grey = _scene()[..., 0]
    Image.fromarray(grey.astype(np.int32) * scale + offset).save(tmp_path / "int.tif")
    assert Image.open(tmp_path / "int.tif").mode == "I"
    loaded = _pixels(load_image(tmp_path / "int.tif"))[..., 0].astype(int)
    # 16-bit data in a 32-bit container: by 0..65535; wider data: by its own minimum..maximum
    assert np.abs(loaded - grey.astype(int)).max() <= 1


def test_transparency_is_shown_over_white(tmp_path):
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:20, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba).save(tmp_path / "half.png")
    loaded = _pixels(load_image(tmp_path / "half.png"))
    assert tuple(loaded[5, 5]) == (200, 0, 0) and tuple(loaded[30, 5]) == (255, 255, 255)


def test_small_images_are_refused(tmp_path):
    Image.fromarray(_scene(MIN_SIDE - 1, 100)).save(tmp_path / "thin.png")
    Image.fromarray(_scene(MIN_SIDE, MIN_SIDE)).save(tmp_path / "ok.png")
    for read in (load_image, check_image):
        with pytest.raises(JitterCamError, match=r"image too small: .*thin.png is 100x31 pixels; at least 32"):
            read(tmp_path / "thin.png")
    assert load_image(tmp_path / "ok.png").size == (MIN_SIDE, MIN_SIDE)


def test_corrupt_and_truncated_files_are_found_by_the_check(tmp_path):
    (tmp_path / "noise.jpg").write_bytes(b"this is not a JPEG at all" * 20)
    whole = (tmp_path / "whole.jpg")
    Image.open(GOLDFISH).save(whole, quality=90)
    (tmp_path / "cut.jpg").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    Image.fromarray(_scene()).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:-300])
    assert (check_image(whole).width, check_image(whole).height) == (500, 375)
    with pytest.raises(JitterCamError, match=r"not an image: .*noise\.jpg"):
        check_image(tmp_path / "noise.jpg")
    for name in ("cut.jpg", "cut.png"):  # a file that ends early is called so
        with pytest.raises(JitterCamError, match=rf"truncated image: .*{name}"):
            check_image(tmp_path / name)
    with pytest.raises(JitterCamError, match="no such file"):
        check_image(tmp_path / "missing.png")
    with pytest.raises(JitterCamError, match="not a file"):
        check_image(tmp_path)
