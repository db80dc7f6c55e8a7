"""Files and folders to a list of images, each once, with unique output names."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from jittercam.data import Source, find_images, output_names
from jittercam.errors import JitterCamError


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")  # contents do not matter here: only names are looked at


def _relative(sources, root: Path) -> list[str]:
    return [Path(os.path.relpath(source.path, root)).as_posix() for source in sources]


def test_folders_files_recursion_and_what_is_skipped(tmp_path):
    _touch(tmp_path, "photos/b.JPG", "photos/a.png", "photos/notes.txt", "photos/.hidden.jpg",
           "photos/._a.jpg", "photos/sub/c.tif", "photos/sub/.cache/d.png", "photos/.git/e.png", "single.webp")
    flat = find_images([tmp_path / "photos", tmp_path / "single.webp"])
    assert _relative(flat, tmp_path) == ["photos/a.png", "photos/b.JPG", "single.webp"]
    deep = find_images([tmp_path / "photos"], recursive=True)
    assert _relative(deep, tmp_path) == ["photos/a.png", "photos/b.JPG", "photos/sub/c.tif"]


def test_each_file_is_taken_once(tmp_path):
    _touch(tmp_path, "photos/a.png", "photos/b.png")
    os.symlink(tmp_path / "photos" / "a.png", tmp_path / "link.png")
    a = tmp_path / "photos" / "a.png"
    sources = find_images([a, tmp_path / "photos", str(a), tmp_path / "photos" / ".." / "photos" / "a.png",
                           tmp_path / "link.png"])
    assert _relative(sources, tmp_path) == ["photos/a.png", "photos/b.png"]


def test_the_output_folder_is_not_searched(tmp_path):
    _touch(tmp_path, "photos/a.png", "photos/maps/a.gradcam.png")
    sources = find_images([tmp_path / "photos"], recursive=True, exclude=[tmp_path / "photos" / "maps"])
    assert _relative(sources, tmp_path) == ["photos/a.png"]


def test_missing_paths_and_empty_folders_are_errors(tmp_path):
    _touch(tmp_path, "empty/notes.txt", "nested/deeper/a.png")
    with pytest.raises(JitterCamError, match=r"no such file: .*missing.png"):
        find_images([tmp_path / "missing.png"])
    with pytest.raises(JitterCamError, match=r"no images in folder .*empty; image files end in .*\.jpg"):
        find_images([tmp_path / "empty"])
    with pytest.raises(JitterCamError, match=r"\(recursive searches its subfolders too\)") as caught:
        find_images([tmp_path / "nested"])
    assert caught.value.option == "recursive"  # the CLI says --recursive
    assert len(find_images([tmp_path / "nested"], recursive=True)) == 1


def _names(tmp_path: Path, *relative: str) -> list[str]:
    return output_names([Source(tmp_path / name) for name in relative])


def test_output_names_are_flat_for_one_folder(tmp_path):
    assert _names(tmp_path, "photos/a.jpg", "photos/b.png") == ["a", "b"]
    assert _names(tmp_path, "photos/a.jpg") == ["a"]


def test_output_names_keep_folders_when_images_come_from_several(tmp_path):
    assert _names(tmp_path, "a/x.png", "b/x.png") == ["a/x", "b/x"]
    assert _names(tmp_path, "trip/day1/x.jpg", "trip/day2/y.jpg", "trip/z.jpg") == ["day1/x", "day2/y", "z"]


def test_output_names_keep_the_extension_when_only_it_differs(tmp_path):
    assert _names(tmp_path, "p/x.jpg", "p/x.png", "p/y.png") == ["x.jpg", "x.png", "y"]


def test_output_names_differing_only_in_case_are_numbered(tmp_path):
    assert _names(tmp_path, "p/X.png", "p/x.png") == ["X.png", "x.png~2"]
    # the same set in another order gives the same names
    assert _names(tmp_path, "p/x.png", "p/X.png") == ["x.png~2", "X.png"]
