"""The report's `index.html`: offline (no script, nothing from the network), every table and every image
shown — checked by parsing, by decoding each image, and in headless Chromium (Debian's `chromium`)."""
from __future__ import annotations

import html
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jittercam.bench.html import Gallery, Section, Table, markdown_table, page, table_html
from jittercam.cli import main
from test_bench_report import EXPERIMENTS, build_stores

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# a table per experiment but the size sweep (a table by size instead), a second dataset (resnet50 on
# imagenet-val) for two experiments, two sweeps (alpha, size), and the gallery
TABLES = len(EXPERIMENTS) - 1 + 2 + 2 + 1


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.style += data


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("html")
    ranks, _ = build_stores(folder / "stores")
    out = folder / "report"
    assert main(["report", *map(str, ranks), "--out", str(out), "--quiet"]) == 0
    return out


def test_page_is_offline_and_every_image_is_a_readable_file(report):
    parser = _Tags()
    parser.feed((report / "index.html").read_text(encoding="utf-8"))
    tags = [tag for tag, _ in parser.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags and "object" not in tags
    assert "@import" not in parser.style and "url(" not in parser.style and "@font-face" not in parser.style
    references = [attrs.get("src") or attrs.get("href") for _, attrs in parser.tags
                  if "src" in attrs or "href" in attrs]
    for reference in references:
        assert reference and not reference.startswith(("http:", "https:", "//", "file:", "data:", "/")), reference
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert len(images) == 3 + 3 * (1 + 3)  # three figures; three gallery items: the input and three methods
    for source in images:
        with Image.open(report / source) as image:
            image.load()
            assert image.width >= 64 and image.height >= 64
            assert np.asarray(image.convert("L")).std() > 5, source  # not a blank picture
    assert tags.count("table") == TABLES
    anchors = {attrs.get("id") for _, attrs in parser.tags if attrs.get("id")}
    assert set(EXPERIMENTS) | {"gallery"} <= anchors


def test_markdown_and_html_tables():
    table = Table("t <1>", "Method", ["Del", "Ins", "x"], [("a|b", [("0.1", "0.2"), ("0.3", None), ("—", None)])],
                  [("resnet50", 2), ("other", 1)], ["n = 2"])
    text = markdown_table(table)
    assert "| Method | resnet50 Del | resnet50 Ins | other x |" in text
    assert "| a\\|b | 0.1 (0.2) | 0.3 | — |" in text and "- n = 2" in text
    markup = table_html(table)
    assert "<th colspan=2>resnet50</th>" in markup and "t &lt;1&gt;" in markup
    assert "0.1 <span class=paper>(0.2)</span>" in markup
    document = page("r", ["intro"], [Section("s", "S", [table])], [Gallery("g", ["m"], [("it", "a.png", [None])])])
    assert document.startswith("<!DOCTYPE html>") and "<td>—</td>" in document and 'href="#gallery"' in document


_CHECK = """<script>
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !i.complete || i.naturalWidth === 0; })
                     .map(function (i) { return i.getAttribute('src'); });
  var tables = Array.prototype.slice.call(document.querySelectorAll('table'));
  var hidden = tables.filter(function (t) { var r = t.getBoundingClientRect(); return r.width < 10 || r.height < 10; });
  var cells = tables.map(function (t) { return t.querySelectorAll('td').length; });
  var result = document.createElement('pre');
  result.id = 'jittercam-check';
  result.textContent = JSON.stringify({images: images.length, broken: broken, tables: tables.length,
                                       hidden: hidden.length, cells: cells});
  document.body.appendChild(result);
});
</script>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_chromium_shows_every_table_and_image(report, tmp_path):
    # a copy of the page (next to it, so that its relative paths hold) with a script that reports what loaded
    checked = report / "check.html"
    checked.write_text((report / "index.html").read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>"),
                       encoding="utf-8")
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    try:
        dom = subprocess.run([*common, "--dump-dom", checked.as_uri()], capture_output=True, text=True,
                             timeout=120, check=True).stdout
    finally:
        checked.unlink()
    found = dom.split('<pre id="jittercam-check">', 1)[1].split("</pre>", 1)[0]
    result = json.loads(html.unescape(found))
    assert result["broken"] == [] and result["images"] == 3 + 3 * 4
    assert result["tables"] == TABLES and result["hidden"] == 0
    assert all(count > 0 for count in result["cells"])

    shot = tmp_path / "index.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,4000", (report / "index.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (4000, 1280)
    ink = (pixels < 200).any(axis=2)
    assert ink.mean() > 0.02  # text, tables and plots, not a blank page
    assert ink[:, :300].any(axis=1).mean() > 0.3  # something on most stretches of the left column


def _wide_page(folder: Path, methods: int = 15) -> Path:
    """A page whose gallery has `methods` + 2 columns (the ground truth's 17) of real pictures."""
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[:, None, None] * 4, (1, 64, 3))).save(folder / "p.png")
    names = [f"method-{i}[size=16]" for i in range(methods)]
    gallery = Gallery("groundtruth-w8 on groundtruth", names,
                      [(f"pair-s{s:03d}-r00 (class 0, hgrating)", "p.png", ["p.png"] * methods) for s in (16, 40, 64)])
    table = Table("wide", "Method", [str(s) for s in range(16, 66, 2)], [("jittercam[size=32]", [("100", None)] * 25)])
    path = folder / "index.html"
    path.write_text(page("r", [], [Section("s", "S", [table])], [gallery]), encoding="utf-8")
    return path


def test_wide_gallery_and_tables_sit_in_boxes_that_scroll(tmp_path):
    # issue 21.15: the ground truth's 17-column gallery must not widen the page
    text = _wide_page(tmp_path).read_text(encoding="utf-8")
    assert '<div class=wide>\n<table class="gallery compact">' in text and "<div class=wide>\n<table>" in text
    assert text.count("<div class=wide>") == text.count("<table") == 2
    assert "div.wide { overflow-x: auto; max-width: 100%;" in text


_WIDTHS = """<script>
window.addEventListener('load', function () {
  var box = document.querySelector('table.gallery').parentElement;
  var result = document.createElement('pre');
  result.id = 'jittercam-check';
  result.textContent = JSON.stringify({page: document.documentElement.scrollWidth, window: window.innerWidth,
                                       box: box.clientWidth, content: box.scrollWidth});
  document.body.appendChild(result);
});
</script>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_chromium_keeps_a_wide_gallery_inside_a_1400_px_window(tmp_path):
    path = _wide_page(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace("</body>", _WIDTHS + "</body>"), encoding="utf-8")
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
                          "--window-size=1400,900", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    found = json.loads(html.unescape(dom.split('<pre id="jittercam-check">', 1)[1].split("</pre>", 1)[0]))
    assert found["window"] == 1400 and found["page"] <= 1400  # the page does not scroll sideways
    assert found["content"] > found["box"]  # the gallery scrolls in its own box
