"""The report's tables as Markdown and HTML, and `index.html`: one self-contained page, readable offline.

The page has no script and loads nothing from the network: its style sheet is inline, its fonts are the
reader's own, and every image is a file next to it named by a relative path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { background: #eef1f5; text-align: center; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: bold; padding: 0.3em 0; white-space: nowrap; }
p.notes, ul.notes { font-size: 0.85em; color: #444; } code { font-size: 0.95em; }
figure { display: inline-block; margin: 0.6em 1em 0.6em 0; vertical-align: top; }
figure img.plot { max-width: 100%; width: 900px; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #444; max-width: 900px; }
div.wide { overflow-x: auto; max-width: 100%; margin: 0.8em 0; } div.wide > table { margin: 0; }
table.gallery td { padding: 2px; text-align: center; vertical-align: top; }
table.gallery td:first-child, table.gallery th:first-child { position: sticky; left: 0; z-index: 1; }
table.gallery td:first-child { background: #fff; }
table.gallery img { width: 160px; height: auto; display: block; }
table.gallery.compact img { width: 104px; }
nav a { margin-right: 1em; } .paper { color: #777; }
"""


Cell = tuple[str, str | None]  # (ours, the paper's number or None), both formatted


def cell_text(cell: Cell) -> str:
    """`ours (paper)`, or `ours` where the paper has no number."""
    ours, paper = cell
    return ours if paper is None else f"{ours} ({paper})"


@dataclass
class Table:
    """A table in the paper's layout: a row per method, data columns optionally grouped (per model)."""

    title: str
    corner: str  # header of the row-label column
    columns: list[str]  # labels of the data columns
    rows: list[tuple[str, list[Cell]]]  # (row label, one cell per data column)
    groups: list[tuple[str, int]] = field(default_factory=list)  # (label, columns spanned), left to right
    notes: list[str] = field(default_factory=list)


@dataclass
class Figure:
    path: str  # relative to index.html, POSIX separators
    caption: str


@dataclass
class Section:
    anchor: str
    title: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # where the numbers come from: (a line on a run, its whole configuration or None)
    runs: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass
class Gallery:
    """Example items (rows) under every method (columns): the input, then each method's map over it."""

    title: str
    methods: list[str]
    rows: list[tuple[str, str, list[str | None]]]  # (label, input image path, overlay path per method)


def _group_labels(table: Table) -> list[str]:
    labels = []
    for label, span in table.groups:
        labels += [label] * span
    return labels + [""] * (len(table.columns) - len(labels))


def markdown_table(table: Table) -> str:
    """A pipe table; a grouped column's header reads `group column` (Markdown has no column spans)."""
    groups = _group_labels(table)
    header = [table.corner] + [f"{g} {c}".strip() for g, c in zip(groups, table.columns, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [f"### {table.title}", "", line(header), "|" + "|".join([":---"] + ["---:"] * len(table.columns)) + "|"]
    lines += [line([label, *map(cell_text, cells)]) for label, cells in table.rows]
    lines += [""] + [f"- {note}" for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


def _cell(cell: Cell) -> str:
    """Ours, then the paper's number in parentheses, greyed."""
    ours, paper = cell
    return escape(ours) if paper is None else f"{escape(ours)} <span class=paper>({escape(paper)})</span>"


def table_html(table: Table) -> str:
    parts = [f"<div class=wide>\n<table>\n<caption>{escape(table.title)}</caption>\n<thead>"]
    if table.groups:
        spans = "".join(f"<th colspan={span}>{escape(label)}</th>" for label, span in table.groups)
        parts.append(f"<tr><th rowspan=2>{escape(table.corner)}</th>{spans}</tr>")
        parts.append("<tr>" + "".join(f"<th>{escape(c)}</th>" for c in table.columns) + "</tr>")
    else:
        parts.append("<tr>" + "".join(f"<th>{escape(c)}</th>" for c in [table.corner, *table.columns]) + "</tr>")
    parts.append("</thead>\n<tbody>")
    for label, cells in table.rows:
        parts.append(f"<tr><td>{escape(label)}</td>" + "".join(f"<td>{_cell(c)}</td>" for c in cells) + "</tr>")
    parts.append("</tbody>\n</table>\n</div>")  # a wide table scrolls in its own box, not the page
    if table.notes:
        parts.append("<ul class=notes>" + "".join(f"<li>{escape(n)}</li>" for n in table.notes) + "</ul>")
    return "\n".join(parts)


def _gallery_html(gallery: Gallery) -> str:
    header = "".join(f"<th>{escape(m)}</th>" for m in ["item", "input", *gallery.methods])
    rows = []
    for label, image, overlays in gallery.rows:
        cells = [f"<td>{escape(label)}</td>", f"<td><img src=\"{escape(image)}\" alt=\"{escape(label)}\"></td>"]
        for method, path in zip(gallery.methods, overlays, strict=True):
            cells.append("<td>—</td>" if path is None else
                         f"<td><img src=\"{escape(path)}\" alt=\"{escape(f'{label} {method}')}\"></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    size = " compact" if len(gallery.methods) > 8 else ""  # many methods: smaller pictures, fewer to scroll
    # a box of its own that scrolls sideways when the methods outnumber the page's width (the item stays put)
    return (f"<h3>{escape(gallery.title)}</h3>\n<div class=wide>\n<table class=\"gallery{size}\">\n"
            f"<thead><tr>{header}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>\n</div>")


def _run_html(line: str, link: str | None) -> str:
    if link is None:
        return f"<li>{escape(line)}</li>"
    return f"<li>{escape(line)}; <a href=\"{escape(link)}\">configuration</a></li>"


def page(title: str, intro: list[str], sections: list[Section], galleries: list[Gallery]) -> str:
    """The whole `index.html`."""
    anchors = [(s.anchor, s.title) for s in sections] + ([("gallery", "Gallery")] if galleries else [])
    body = [f"<h1>{escape(title)}</h1>"]
    body += [f"<p>{escape(line)}</p>" for line in intro]
    body.append("<nav>" + "".join(f"<a href=\"#{escape(a)}\">{escape(t)}</a>" for a, t in anchors) + "</nav>")
    for section in sections:
        body.append(f"<h2 id=\"{escape(section.anchor)}\">{escape(section.title)}</h2>")
        body += [table_html(table) for table in section.tables]
        if section.notes:
            body.append("<ul class=notes>" + "".join(f"<li>{escape(n)}</li>" for n in section.notes) + "</ul>")
        for figure in section.figures:
            body.append(f"<figure><img class=plot src=\"{escape(figure.path)}\" alt=\"{escape(figure.caption)}\">"
                        f"<figcaption>{escape(figure.caption)}</figcaption></figure>")
        if section.runs:
            body.append("<h3>Runs and configurations</h3>")
            lines = "".join(_run_html(line, detail) for line, detail in section.runs)
            body.append(f"<ul class=notes>{lines}</ul>")
    if galleries:
        body.append("<h2 id=\"gallery\">Gallery</h2>")
        body.append("<p class=notes>The same items under every method: each raw map resized bilinearly to the "
                    "input, min–max scaled, over the input (jet colour map, alpha 0.5).</p>")
        body += [_gallery_html(gallery) for gallery in galleries]
    return ("<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
            f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
