"""`jittercam report FILE [FILE ...] --out DIR`: the paper's tables, its figures and a page to read, from one
or more results stores (`jittercam bench`; one store per rank under torchrun).

Reading and aggregating: `merge` (the stores' union, read-only; grouped by experiment, model and dataset)
and each experiment's `summarise` (the paper's definitions, by the metrics' set-level functions).

Writing, all atomically: per experiment `DIR/<experiment>.md` (the paper's layout: a row per method,
columns grouped per model; `ours (paper)` where the paper has a number for that model and dataset; items,
skips, runs and configurations listed under the tables) and `DIR/<experiment>.csv` (long form: experiment,
model, dataset, method, metric, value, n; `method[variant]` for a variant); PNG figures (Fig. 2 and Fig. 5
as sweeps, mean deletion and insertion curves); `DIR/gallery/` (each example's raw map resized bilinearly
and min–max scaled, over its input); and `DIR/index.html` with all of it (no script, nothing from the
network). `DIR/.jittercam-report.json` lists the files written: the next report into DIR deletes those it does
not write again, and nothing else.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .. import __version__, metrics
from ..data.output import atomic_write, probe_folder
from ..errors import JitterCamError
from ..maps import upsample
from ..viz import overlay
from ..words import plural
from . import paper, plots
from .experiments import Experiment, Variant, available_experiments, find_experiment
from .experiments.base import COMBINED
from .html import Figure, Gallery, Section, Table, markdown_table, page
from .merge import Group, Stores, groups_of, missing_ranks, missing_ranks_of

PANEL_TITLES = {"ad": "AD (lower is better)", "iic": "IIC (higher is better)", "deletion": "deletion (lower is better)",
                "insertion": "insertion (higher is better)", COMBINED: "deletion + (1 - insertion)"}
_COMPANIONS = ("_threshold", "_classes")  # in the CSV and the notes, not table columns
_PERCENT = {"ad", "iic", "val", "mean", "eng", "all", "difficult", "all_overall", "difficult_overall"}  # metric names
_INTEGER = {"improved", "passes", "resolving_power"}
PAPER_FORMAT = {"seconds": ".2f", "spearman": ".2f"}  # the paper's own precision where it differs from ours
CSV_COLUMNS = ("experiment", "model", "dataset", "method", "metric", "value", "n")
GALLERY_ITEMS = 6
MANIFEST = ".jittercam-report.json"  # in DIR: the files the report there wrote, for the next report to replace

def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "report", help="write tables, plots and an HTML page from results stores",
        description="Merge results stores (`jittercam bench`, one per rank under torchrun) and write, per "
        "experiment, DIR/EXPERIMENT.md (the paper's table, its numbers beside ours) and DIR/EXPERIMENT.csv "
        "(long form), PNG figures, a gallery and DIR/index.html (readable offline).",
    )
    parser.add_argument("stores", nargs="+", type=Path, metavar="FILE", help="results stores (SQLite)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the report")
    parser.add_argument("--gallery", type=int, default=GALLERY_ITEMS, metavar="N",
                        help="example items per model and dataset in the gallery (default: %(default)s; 0: none)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    return parser


# ------------------------------------------------------------------------------------------------ tables
def _experiment_of(name: str) -> type[Experiment]:
    """The registered experiment, or a bare one for a name this version does not know (its rows still show)."""
    return find_experiment(name) or type("Unknown", (Experiment,), {"name": name, "title": name, "paper": ""})


def _method_rank(experiment: str) -> dict[str, int]:
    """The paper's row order: the experiment's own table first, then every other table's methods."""
    order = paper.methods_of(_experiment_of(experiment).paper_values)
    for name in available_experiments():
        order += paper.methods_of(_experiment_of(name).paper_values)
    return {name: index for index, name in enumerate(dict.fromkeys(order))}


def _sort_keys(experiment: str, keys) -> list[tuple[str, str]]:
    rank = _method_rank(experiment)

    def order(key: tuple[str, str]):
        method, variant = key
        number = Variant.of(variant).number
        return (rank.get(paper.paper_method(method), len(rank)), method,
                (variant.partition("=")[0], number, "") if number is not None else ("", 0.0, variant))

    return sorted(keys, key=order)


def method_label(method: str, variant: str) -> str:
    return f"{method}[{variant}]" if variant else method


def _is_sweep(variant: str) -> bool:
    return Variant.of(variant).number is not None


def _shown(experiment: str, stats) -> list[str]:
    """The metrics present in `stats` (an iterable of metric -> Stat) in the table's order, then any other
    (not the best-threshold companions)."""
    present = {metric for row in stats for metric in row}
    known = [m for m in _experiment_of(experiment).columns if m in present]
    extra = sorted(m for m in present - set(known) if not m.endswith(_COMPANIONS))
    return known + extra


def _label(experiment: str, metric: str) -> str:
    return _experiment_of(experiment).columns.get(metric, metric)


def format_value(metric: str, value: float, paper_number: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if paper_number and metric in PAPER_FORMAT:
        return format(value, PAPER_FORMAT[metric])
    if metric in _INTEGER:
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    if metric == "seconds" and abs(value) < 0.01:
        return f"{value:.2g}"  # a one-pass CAM of a small model: milliseconds, not 0.000
    return f"{value:.2f}" if metric in _PERCENT else f"{value:.3f}"


def _cell(group: Group, key: tuple[str, str], metric: str) -> tuple[str, str | None]:
    stat = group.stats.get(key, {}).get(metric)
    ours = format_value(metric, stat.value) if stat is not None else "—"
    number = None
    if not key[1] and group.paper_applies:
        number = _paper_value(group.experiment, group.model, group.dataset, key[0], metric)
    return ours, None if number is None else format_value(metric, number, paper_number=True)


def _paper_value(experiment: str, model: str, dataset: str, method: str, metric: str) -> float | None:
    return paper.lookup(_experiment_of(experiment).paper_values, model, dataset, method, metric)


def _model_order(groups: list[Group]) -> list[Group]:
    rank = {name: index for index, name in enumerate(paper.MODELS)}
    return sorted(groups, key=lambda g: (rank.get(g.model, len(rank)), g.label))



def _items_note(group: Group, keys, each: str = "method") -> str:
    """`label: n = 6 items for each of 3 methods; 2 items skipped (reason ×2)`."""
    counts = {method_label(*key): group.items.get(key, 0) for key in keys if key in group.items}
    if not counts:
        text = "no results"
    elif len(set(counts.values())) == 1:
        text = f"n = {plural(next(iter(counts.values())), 'item')} for each of {plural(len(counts), each)}"
    else:
        text = "n = " + ", ".join(f"{label} {count}" for label, count in counts.items()) + " items"
    if group.skipped:
        reasons = "; ".join(f"{reason} ×{count}" for reason, count in group.reasons.most_common(5))
        more = f"; {len(group.reasons) - 5} other reasons" if len(group.reasons) > 5 else ""
        text += f"; {plural(group.skipped, 'item')} skipped ({reasons}{more})"
    else:
        text += "; no items skipped"
    return f"{group.label}: {text}"


def _extra_notes(group: Group, keys) -> list[str]:
    labels = {method_label(*key): key for key in keys}
    notes = _experiment_of(group.experiment).notes(
        group.label, {label: group.stats.get(key, {}) for label, key in labels.items()},
        {label: group.items.get(key, 0) for label, key in labels.items()}, group.config)
    thresholds = []
    for key in keys:
        stats = group.stats.get(key, {})
        best = [f"{scheme} {format(stats[m].value, 'g')}" for scheme in _shown(group.experiment, [stats])
                if (m := f"{scheme}_threshold") in stats and not math.isnan(stats[m].value)]
        if best:
            thresholds.append(f"{method_label(*key)} " + ", ".join(best))
    if thresholds:
        notes.append(f"{group.label}: best thresholds: " + "; ".join(thresholds))
    return notes


def _main_table(experiment: str, dataset: str, groups: list[Group]) -> Table | None:
    declared = _experiment_of(experiment)
    shown = {k for g in groups for k in g.stats if not declared.sweeps or not _is_sweep(k[1])}
    keys = _sort_keys(experiment, shown)
    if not keys:
        return None
    columns, spans, per_group = [], [], []
    groups = [g for g in groups if any(k in g.stats for k in keys)]
    for group in groups:
        metrics = _shown(experiment, (group.stats[k] for k in keys if k in group.stats))
        per_group.append(metrics)
        columns += [_label(experiment, m) for m in metrics]
        spans.append((group.label, len(metrics)))
    rows = []
    for key in keys:
        cells = [_cell(g, key, m) for g, metrics in zip(groups, per_group, strict=True) for m in metrics]
        rows.append((method_label(*key), cells))
    notes = [_items_note(g, [k for k in keys if k in g.stats]) for g in groups]
    for group in groups:
        notes += _extra_notes(group, [k for k in keys if k in group.stats])
    if any(_paper_value(experiment, g.model, g.dataset, k[0], m) is not None and g.paper_applies
           for g, metrics in zip(groups, per_group, strict=True) for k in keys for m in metrics):
        notes.append("ours (paper): the paper's number in parentheses where it reports this model and dataset")
    layout = f" (the paper's {declared.table_ref})" if declared.table_ref else ""
    return Table(f"{experiment} on {dataset}{layout}", "Method", columns, rows, spans, notes)


def _sweeps(group: Group) -> dict[str, dict[str, dict[float, str]]]:
    """swept parameter (alpha, size) -> method -> value -> variant label."""
    sweeps: dict[str, dict[str, dict[float, str]]] = defaultdict(lambda: defaultdict(dict))
    for (method, variant), number in group.numbers.items():
        if number is not None:
            sweeps[number[0]][method][number[1]] = variant
    return sweeps


def _sweep_table(group: Group, sweep: str, methods: dict[str, dict[float, str]]) -> Table:
    names = _sort_keys(group.experiment, [(m, "") for m in methods])
    values = sorted({v for per in methods.values() for v in per})
    metrics = _shown(group.experiment, (group.stats[(m, v)] for m, per in methods.items() for v in per.values()))
    columns = [_label(group.experiment, m) for _ in names for m in metrics]
    rows = []
    for value in values:
        cells = []
        for method, _ in names:
            variant = methods[method].get(value)
            cells += [_cell(group, (method, variant), m) if variant else ("—", None) for m in metrics]
        rows.append((format(value, "g"), cells))
    each = f"{sweep} value" if len(methods) == 1 else f"method and {sweep} pair"
    notes = [_items_note(group, [(m, v) for m, per in methods.items() for v in per.values()], each)]
    title = f"{group.experiment} on {group.dataset}, {group.label}, by {sweep}"
    return Table(title, sweep, columns, rows, [(m, len(metrics)) for m, _ in names], notes)


# ------------------------------------------------------------------------------------------------ outputs
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


def _write(path: Path, data: bytes, written: Written) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda stream: stream.write(data))
    written.paths.add(path)


def _csv_rows(group: Group) -> list[list[str]]:
    rows = []
    for key in _sort_keys(group.experiment, group.stats):
        stats = group.stats[key]
        order = _shown(group.experiment, [stats]) + sorted(m for m in stats if m.endswith(_COMPANIONS))
        for metric in order:
            stat = stats[metric]
            value = "nan" if math.isnan(stat.value) else format(stat.value, ".10g")
            rows.append([group.experiment, group.label, group.dataset, method_label(*key), metric, value, str(stat.n)])
    return rows


def _csv_bytes(rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def _sweep_figure(group: Group, sweep: str, methods: dict[str, dict[float, str]]) -> bytes:
    declared = _experiment_of(group.experiment)
    metrics = declared.sweep_panels or _shown(
        group.experiment, (group.stats[(m, v)] for m, per in methods.items() for v in per.values()))
    panels = {}
    for metric in metrics:
        lines = {}
        for method, _ in _sort_keys(group.experiment, [(m, "") for m in methods]):
            stats = sorted((value, group.stats[(method, variant)].get(metric))
                           for value, variant in methods[method].items())
            points = [(x, stat.value) for x, stat in stats if stat is not None]
            if points:
                lines[method] = ([x for x, _ in points], [y for _, y in points])
        panels[PANEL_TITLES.get(metric, metric)] = lines
    references = {}
    if declared.sweep_reference is not None:
        plain = next((stats for (m, v), stats in group.stats.items()
                      if paper.paper_method(m) == declared.sweep_reference and not v), None)
        for metric in metrics:
            if plain and metric in plain:
                references[PANEL_TITLES.get(metric, metric)] = (f"{declared.sweep_reference} (not expanded)",
                                                                 plain[metric].value)
    name = declared.sweep_caption or f"{group.experiment} against {sweep}"
    title = f"{name}: {group.label} on {group.dataset}"
    return plots.sweep_figure(title, sweep, panels, references)


def _curves_figure(group: Group) -> bytes:
    curves, aucs = {}, {}
    for kind, per_key in group.curves.items():
        keys = _sort_keys(group.experiment, per_key)
        curves[kind] = {method_label(*k): per_key[k].result() for k in keys}
        aucs[kind] = {label: float(metrics.auc(torch.from_numpy(curve))) for label, curve in curves[kind].items()}
    return plots.curves_figure(f"{group.experiment}: {group.label} on {group.dataset} "
                               f"(mean over items; AUC of the mean curve)", curves, aucs)


class SectionWriter:
    """What an experiment's `extra_report` may add to its section: tables and figures, named after the group."""

    def __init__(self, out: Path, group: Group, section: Section, written: Written) -> None:
        self.out, self.group, self.section, self.written = out, group, section, written
        self.stem = f"{group.experiment}-{_slug(group.label)}-{_slug(group.dataset)}"

    def sorted_keys(self, keys) -> list[tuple[str, str]]:
        return _sort_keys(self.group.experiment, keys)

    @staticmethod
    def label(key: tuple[str, str]) -> str:
        return method_label(*key)

    def table(self, title: str, corner: str, columns: list[str], rows, notes: list[str]) -> None:
        self.section.tables.append(Table(title, corner, columns, rows, [], notes))

    def sweep_figure(self, suffix: str, title: str, xlabel: str, panels, caption: str) -> None:
        self._figure(suffix, plots.sweep_figure(title, xlabel, panels), caption)

    def verdict_figure(self, suffix: str, title: str, xlabel: str, lines, verdicts, threshold: float,
                       caption: str) -> None:
        self._figure(suffix, plots.verdict_figure(title, xlabel, lines, verdicts, threshold), caption)

    def cost_figure(self, suffix: str, title: str, xlabel: str, ylabel: str, methods, caption: str) -> None:
        self._figure(suffix, plots.cost_figure(title, xlabel, ylabel, methods), caption)

    def _figure(self, suffix: str, data: bytes, caption: str) -> None:
        name = f"{self.stem}-{suffix}.png"
        _write(self.out / name, data, self.written)
        self.section.figures.append(Figure(name, caption))


def _runs_notes(out: Path, groups: list[Group], written: Written) -> list[tuple[str, str | None]]:
    """A line per run (its machine, ranks, start) linking its whole configuration, written as JSON to
    `runs/<configuration>.json` beside the tables, and a line per method with its options as they ran."""
    notes: list[tuple[str, str | None]] = []
    for group in groups:
        for run in group.runs:
            machine = "; ".join(run.machines) or "machine not recorded"
            ranks = f", {run.world_size} ranks" if run.world_size and run.world_size > 1 else ""
            if missing_ranks_of(run):
                ranks += f" (MISSING the stores of ranks {', '.join(map(str, missing_ranks_of(run)))})"
            weights = group.weights or "default weights"
            path = f"runs/{run.config_hash[:16]}.json"
            _write(out / path, (json.dumps(run.config, sort_keys=True, indent=1) + "\n").encode("utf-8"), written)
            line = (f"{group.label} on {group.dataset}: configuration {run.config_hash[:12]}, weights {weights}, "
                    f"{machine}{ranks}, started {run.created or '?'}")
            notes.append((line, path))
        if not group.runs:
            line = (f"{group.label} on {group.dataset}: configurations {', '.join(h[:12] for h in group.hashes)} "
                    "have no `runs` row (machine and configuration unknown)")
            notes.append((line, None))
        for label, options in sorted(group.options.items()):
            pooled = f" (several option sets pooled for {label})" if len(options) > 1 else ""
            notes.append((f"{group.label} on {group.dataset}: {label} ran as " + " · ".join(options) + pooled, None))
    return notes


@dataclass
class Written:
    files: int = 0  # stores read
    rows: int = 0  # result rows in them
    merged: int = 0  # result rows after merging
    tables: int = 0
    plots: int = 0
    gallery: int = 0
    warnings: list[str] = field(default_factory=list)
    paths: set[Path] = field(default_factory=set)  # the files written


def _experiment(out: Path, experiment: str, groups: list[Group], written: Written) -> Section:
    declared = _experiment_of(experiment)
    section = Section(_slug(experiment), declared.title)
    by_dataset: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        by_dataset[group.dataset].append(group)
    csv_rows = []
    for dataset, members in sorted(by_dataset.items()):
        members = _model_order(members)
        table = _main_table(experiment, dataset, members)
        if table is not None:
            section.tables.append(table)
        for group in members:
            csv_rows += _csv_rows(group)
            if not group.stats:
                reasons = "; ".join(f"{r} ×{c}" for r, c in group.reasons.most_common(5))
                section.notes.append(f"{group.label} on {dataset}: no results; "
                                     f"{plural(group.skipped, 'item')} skipped ({reasons})")
            declared.extra_report(group, SectionWriter(out, group, section, written))
            for sweep, methods in sorted(_sweeps(group).items() if declared.sweeps else ()):
                section.tables.append(_sweep_table(group, sweep, methods))
                name = f"{experiment}-{_slug(group.label)}-{_slug(dataset)}-{_slug(sweep)}.png"
                _write(out / name, _sweep_figure(group, sweep, methods), written)
                caption = declared.sweep_caption or f"{experiment} against {sweep}"
                section.figures.append(Figure(name, f"{caption}: {group.label} on {dataset}"))
            if group.curves:
                name = f"{experiment}-{_slug(group.label)}-{_slug(dataset)}-curves.png"
                _write(out / name, _curves_figure(group), written)
                section.figures.append(Figure(name, f"Mean deletion and insertion curves: {group.label} on {dataset}"))
    if declared.paper_note:
        section.notes.append(declared.paper_note)
    section.runs = _runs_notes(out, groups, written)
    written.tables += len(section.tables)
    written.plots += len(section.figures)
    _write(out / f"{experiment}.csv", _csv_bytes(csv_rows), written)
    _write(out / f"{experiment}.md", _markdown(section).encode("utf-8"), written)
    return section


def _markdown(section: Section) -> str:
    parts = [f"# {section.title}", ""]
    parts += [markdown_table(table) for table in section.tables]
    if section.figures:
        parts += ["## Figures", ""] + [f"![{f.caption}]({f.path})" for f in section.figures] + [""]
    if section.notes:
        parts += ["## Notes", ""] + [f"- {note}" for note in section.notes] + [""]
    if section.runs:
        parts += ["## Runs and configurations", ""]
        parts += [f"- {line}" + (f"; [configuration]({detail})" if detail else "") for line, detail in section.runs]
    return "\n".join(parts).rstrip() + "\n"


# ------------------------------------------------------------------------------------------------ gallery
def _galleries(stores: Stores, out: Path, limit: int, written: Written) -> list[Gallery]:
    if limit <= 0:
        return []
    db = stores.db
    galleries = []
    db.execute("CREATE TEMP VIEW IF NOT EXISTS shown AS SELECT g.*, r.model, r.dataset FROM gallery g JOIN "
               "(SELECT DISTINCT config_hash, model, dataset FROM runs) r USING (config_hash)")
    for model, dataset in db.execute("SELECT DISTINCT model, dataset FROM shown ORDER BY 1, 2").fetchall():
        rows = db.execute(
            "SELECT method, item, target, config_hash, image, map, height, width FROM (SELECT g.*, row_number() OVER "
            "(PARTITION BY method, item ORDER BY coalesce(c.created, '') DESC, g.config_hash DESC) AS k "
            "FROM shown g LEFT JOIN configs c ON c.config_hash = g.config_hash WHERE model = ? AND dataset = ?) "
            "WHERE k = 1", (model, dataset)).fetchall()
        entries = {(method, item): rest for method, item, *rest in rows}
        methods = [m for m, _ in _sort_keys("", {(m, "") for m, _ in entries})]
        coverage = Counter(item for _, item in entries)
        items: list[str] = []
        seen: set[tuple[str, int | None]] = set()
        for item in sorted(coverage, key=lambda item: (-coverage[item], item)):
            # `key` and `key#class` (a per-class experiment) explaining the same class are one example
            target = next(entries[(m, item)][0] for m in methods if (m, item) in entries)
            if (item.split("#")[0], target) not in seen and len(items) < limit:
                seen.add((item.split("#")[0], target))
                items.append(item)
        folder = Path("gallery") / f"{_slug(model)}-{_slug(dataset)}"
        gallery_rows: list[tuple[str, str, list[str | None]]] = []
        names: dict[str, list[str]] = {}
        for item in items:
            first = next(entries[(m, item)] for m in methods if (m, item) in entries)
            image = _decode_png(first[2], f"gallery image of {item}")
            if image is None:
                continue
            base = folder / _slug(item)
            _write(out / f"{base}.input.png", _png_bytes(image), written)
            overlays: list[str | None] = []
            for method in methods:
                entry = entries.get((method, item))
                picture = None if entry is None else _overlay(image, *entry[3:])
                if picture is None:
                    overlays.append(None)
                    continue
                path = f"{base}.{_slug(method)}.png"
                _write(out / path, _png_bytes(picture), written)
                overlays.append(Path(path).as_posix())
                written.gallery += 1
            label = _item_label(item, first[0], _class_names(db, first[1], names))
            gallery_rows.append((label, Path(f"{base}.input.png").as_posix(), overlays))
        galleries.append(Gallery(f"{model} on {dataset}", methods, gallery_rows))
    return galleries


def _class_names(db, config_hash: str, known: dict[str, list[str]]) -> list[str]:
    """The class names a run recorded for its targets (none in a store older than them); `known` caches."""
    if config_hash not in known:
        row = db.execute("SELECT class_names, config FROM runs WHERE config_hash = ? LIMIT 1",
                         (config_hash,)).fetchone()
        try:  # schema 1 kept them in the configuration
            names = json.loads(row[0]) if row and row[0] else json.loads(row[1]).get("class_names") if row else None
        except (TypeError, ValueError, AttributeError):
            names = None
        known[config_hash] = [str(name) for name in names] if isinstance(names, list) else []
    return known[config_hash]


def _item_label(item: str, target: int | None, names: list[str]) -> str:
    if target is None:
        return item
    named = 0 <= target < len(names)
    if item.endswith(f"#{target}"):  # a per-class item already says its class
        return f"{item} ({names[target]})" if named else item
    return f"{item} (class {target}, {names[target]})" if named else f"{item} (class {target})"


def _decode_png(data: bytes | None, what: str) -> Image.Image | None:
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError):
        print(f"jittercam: warning: {what} is not a readable image; left out", file=sys.stderr)
        return None


def _overlay(image: Image.Image, blob: bytes | None, height: int | None, width: int | None) -> Image.Image | None:
    """The raw map resized bilinearly to the image and min–max scaled (`jittercam.upsample`), over it."""
    if not blob or not height or not width or len(blob) != 4 * height * width:
        return None
    raw = np.nan_to_num(np.frombuffer(blob, "<f4").reshape(1, height, width).astype(np.float32))
    heat = upsample(torch.from_numpy(raw), (image.height, image.width))[0].numpy()
    return overlay(image, heat)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ manifest
def _listed(out: Path) -> set[str]:
    """The files `out/MANIFEST` lists (relative POSIX paths); none when it is missing or unreadable."""
    try:
        files = json.loads((out / MANIFEST).read_text("utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {name for name in files if isinstance(name, str)} if isinstance(files, list) else set()


def _list(out: Path, files: set[str]) -> None:
    text = json.dumps({"jittercam": __version__, "files": sorted(files)}, indent=1) + "\n"
    atomic_write(out / MANIFEST, lambda stream: stream.write(text.encode("utf-8")))


def _remove(out: Path, files: set[str]) -> None:
    """Delete `files` (relative to `out`) and the folders that leaves empty."""
    for name in sorted(files):
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:  # an edited manifest: nothing outside `out`
            continue
        with contextlib.suppress(OSError):  # already gone, or not removable: not worth failing the report
            (out / relative).unlink()
        for folder in relative.parents[:-1]:  # `gallery/m-d`, then `gallery`; never `out`
            try:
                (out / folder).rmdir()
            except OSError:  # not empty (this report's files, or the user's), or gone
                break


@contextlib.contextmanager
def _replacing(out: Path, written: Written) -> Iterator[None]:
    """Around writing a report into `out`: afterwards, the files the report there before wrote (listed in
    `out/MANIFEST`) that this one did not write again are deleted and the manifest lists this report's, so that
    the folder never mixes two reports; a file jittercam did not write is never touched. A report that fails
    lists both reports' files, for the next one to remove."""
    previous = _listed(out)
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            _list(out, previous | {path.relative_to(out).as_posix() for path in written.paths})
        raise
    current = {path.relative_to(out).as_posix() for path in written.paths}
    _list(out, current)
    _remove(out, previous - current)


# ------------------------------------------------------------------------------------------------ command
def write_report(paths: list[Path], out: Path, gallery: int = GALLERY_ITEMS) -> Written:
    """Read, merge and aggregate `paths`; write everything under `out`, replacing the report written there
    before (`MANIFEST`); say what was read and written."""
    if out.exists() and not out.is_dir():
        raise JitterCamError(f"out {out} exists and is not a folder", option="out")
    stores = Stores(paths)
    try:
        total = sum(stores.counts)
        if total == 0:
            skipped = stores.db.execute("SELECT count(*) FROM skips").fetchone()[0]
            listed = ", ".join(str(p) for p in paths)
            raise JitterCamError(f"no results in {listed} ({skipped} skipped items): nothing to report yet; "
                                 "run `jittercam bench ... --db FILE` first")
        try:
            probe_folder(out)
        except OSError as exc:
            raise JitterCamError(f"out {out} is not writable: {exc.strerror or exc}", option="out") from None
        groups = groups_of(stores)
        merged = stores.db.execute("SELECT count(*) FROM results").fetchone()[0]
        written = Written(len(paths), total, merged, warnings=missing_ranks(groups))
        with _replacing(out, written):
            sections = []
            known = available_experiments()
            names = known + sorted({g.experiment for g in groups} - set(known))
            for experiment in names:
                members = [g for g in groups if g.experiment == experiment]
                if members:
                    sections.append(_experiment(out, experiment, members, written))
            galleries = _galleries(stores, out, gallery, written)
            skipped = stores.db.execute("SELECT count(DISTINCT config_hash || ':' || item) FROM skips").fetchone()[0]
            sources = ", ".join(f"{p.name} ({plural(n, 'result row')})"
                                for p, n in zip(paths, stores.counts, strict=True))
            intro = [(f"From {plural(len(paths), 'store')}: {sources}; {plural(merged, 'row')} after merging, "
                      f"{plural(skipped, 'skipped item')}. Written by jittercam {__version__}."),
                     ("Each experiment's table is also in EXPERIMENT.md and, in long form, EXPERIMENT.csv. "
                      "Greyed numbers in parentheses are the paper's, where it reports the same model and dataset."),
                     *(f"Warning: {warning}." for warning in written.warnings)]
            html = page("Jitter-CAM benchmark report", intro, sections, galleries)
            _write(out / "index.html", html.encode("utf-8"), written)
        return written
    finally:
        stores.close()


def run(args: argparse.Namespace) -> int:
    if args.gallery < 0:
        raise JitterCamError("gallery must be at least 0", option="gallery")
    written = write_report(list(args.stores), args.out, args.gallery)
    for warning in written.warnings:
        print(f"jittercam: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        print(f"{plural(written.files, 'store')}, {plural(written.merged, 'result row')} after merging -> "
              f"{args.out}: {plural(written.tables, 'table')}, {plural(written.plots, 'plot')}, "
              f"{plural(written.gallery, 'gallery image')}; open {args.out / 'index.html'}")
    return 0
