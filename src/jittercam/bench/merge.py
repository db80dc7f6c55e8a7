"""Reading results stores: their rows merged into one database, then grouped and aggregated.

Every store is opened read-only (SQLite URI `mode=ro`; a store still being written is read as far as it
is committed) and its rows are copied into a private temporary database: the union of all files, where
rows with the same primary key are one row, and the same key with another value (beyond a relative 1e-6;
NaN, stored by SQLite as NULL, equals NaN) is an error naming both files. Skips and gallery rows with the
same key keep the first file's.

The rows are then grouped by experiment, model (with its weights) and dataset. Several configurations of
one group (another `--limit`, methods added later) are pooled, an item computed under two of them
counting once, with the value of the latest run (`runs.created`). `aggregate.summarise` turns each
method's per-item rows into the paper's numbers.
"""
from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np

from ..errors import JitterCamError
from . import aggregate
from .aggregate import Column, Stat

# the columns read from each table of a store; runs and results must be there
TABLES = {
    "runs": ("config_hash", "experiment", "model", "weights", "dataset", "config", "rank", "world_size",
             "machine", "created"),
    "results": ("config_hash", "experiment", "model", "weights", "dataset", "method", "options", "variant",
                "item", "target", "metric", "value"),
    "skips": ("config_hash", "experiment", "dataset", "method", "item", "reason"),
    "curves": ("config_hash", "experiment", "model", "dataset", "method", "variant", "item", "kind", "scores"),
    "gallery": ("config_hash", "model", "dataset", "method", "item", "target", "image", "map", "height", "width"),
}
REQUIRED = ("runs", "results")
KEYS = {"results": ("config_hash", "method", "variant", "item", "metric"),
        "skips": ("config_hash", "method", "item"),
        "curves": ("config_hash", "method", "variant", "item", "kind"),
        "gallery": ("config_hash", "method", "item")}
_RELATIVE, _ABSOLUTE = 1e-6, 1e-12  # two stores' values of one key that differ by less are the same value

KNOWN_CLASSES = {"imagenet-val": 1000, "coco-val2014": 80, "voc07-test": 20}


# ------------------------------------------------------------------------------------------------ merging
def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Stores:
    """The union of the stores' rows, in a private temporary SQLite database (deleted when closed)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.db = sqlite3.connect("", uri=True, isolation_level=None)  # "": private temporary database
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        for table, columns in TABLES.items():
            key = f", PRIMARY KEY ({', '.join(KEYS[table])})" if table in KEYS else ""
            rowid = " WITHOUT ROWID" if table == "results" else ""  # small rows: the key is the table
            self.db.execute(f"CREATE TABLE {table} (source INTEGER, {', '.join(columns)}{key}){rowid}")
        self.counts: list[int] = []  # result rows in each file
        for index, path in enumerate(paths):
            self._add(index, path)
        self._check_runs()
        self.db.execute("CREATE TABLE configs AS SELECT config_hash, max(coalesce(created, '')) AS created "
                        "FROM runs GROUP BY config_hash")

    def close(self) -> None:
        self.db.close()

    def _add(self, index: int, path: Path) -> None:
        if not path.exists():
            raise JitterCamError(f"{path}: no such file")
        if path.is_dir():
            raise JitterCamError(f"{path} is a folder, not a results store")
        try:
            self.db.execute("ATTACH DATABASE ? AS src", (path.resolve().as_uri() + "?mode=ro",))
        except sqlite3.Error as exc:
            raise JitterCamError(f"{path} is not a readable SQLite file ({exc})") from None
        try:
            tables = {name for (name,) in self.db.execute("SELECT name FROM src.sqlite_master WHERE type='table'")}
            for table in REQUIRED:
                if table not in tables:
                    raise JitterCamError(f"{path} is not a jittercam results store (it has no table {table!r}; "
                                         "`jittercam bench ... --db FILE` writes one)")
            self.counts.append(self.db.execute("SELECT count(*) FROM src.results").fetchone()[0])
            for table, columns in TABLES.items():
                if table in tables:
                    self._copy(index, path, table, columns)
        except sqlite3.Error as exc:
            raise JitterCamError(f"cannot read {path}: {exc}") from None
        finally:
            self.db.execute("DETACH DATABASE src")

    def _copy(self, index: int, path: Path, table: str, columns: tuple[str, ...]) -> None:
        have = {row[1] for row in self.db.execute(f"PRAGMA src.table_info({_quote(table)})")}
        lacking = [column for column in columns if column not in have]
        if lacking:
            raise JitterCamError(f"{path}: table {table!r} has no column {lacking[0]!r} (a store from another "
                                 "version of jittercam?)")
        if table in ("results", "curves"):
            self._check_conflicts(index, path, table)
        select = ", ".join(f"coalesce({c}, '')" if c in ("variant", "weights") else c for c in columns)
        self.db.execute(f"INSERT OR IGNORE INTO {table} (source, {', '.join(columns)}) "
                        f"SELECT ?, {select} FROM src.{_quote(table)}", (index,))

    def _check_conflicts(self, index: int, path: Path, table: str) -> None:
        """The same key in an earlier file with a value that is not the same: an error naming both."""
        keys = KEYS[table]
        join = " AND ".join(f"m.{k} = coalesce(r.{k}, '')" if k == "variant" else f"m.{k} = r.{k}" for k in keys)
        if table == "results":
            differ = (f"NOT (m.value IS r.value OR (m.value IS NOT NULL AND r.value IS NOT NULL AND "
                      f"abs(m.value - r.value) <= {_RELATIVE} * max(abs(m.value), abs(r.value)) + {_ABSOLUTE}))")
            fields = "m.value, r.value"
        else:
            differ, fields = "m.scores IS NOT r.scores", "m.scores, r.scores"
        query = (f"SELECT m.source, {', '.join('r.' + k for k in keys)}, {fields} "
                 f"FROM src.{table} r JOIN main.{table} m ON {join} WHERE {differ}")
        for source, *key, first, second in self.db.execute(query):
            if table == "curves" and _same_curve(first, second):
                continue
            what = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key, strict=True) if k != "config_hash")
            if table == "results":
                values = f"{first!r} vs {second!r}"
            else:
                values = "different scores"
            raise JitterCamError(f"{self.paths[source]} and {path} disagree on {table} row {what} of configuration "
                                 f"{str(key[0])[:12]}: {values} (not parts of one run; report them separately)")

    def _check_runs(self) -> None:
        query = ("SELECT config_hash, group_concat(DISTINCT source) FROM runs GROUP BY config_hash HAVING "
                 "count(DISTINCT experiment) > 1 OR count(DISTINCT model) > 1 OR count(DISTINCT dataset) > 1 "
                 "OR count(DISTINCT weights) > 1")
        row = self.db.execute(query).fetchone()
        if row is not None:
            files = [str(self.paths[int(s)]) for s in str(row[1]).split(",")]
            raise JitterCamError(f"{' and '.join(files)} name configuration {str(row[0])[:12]} for different "
                                 "experiments, models, weights or datasets")


def _same_curve(first: bytes | None, second: bytes | None) -> bool:
    if first is None or second is None:
        return first is second
    a, b = np.frombuffer(first, "<f4"), np.frombuffer(second, "<f4")
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=_RELATIVE, atol=_ABSOLUTE, equal_nan=True))


# ------------------------------------------------------------------------------------------------ groups
@dataclass
class Run:
    config_hash: str
    config: dict
    machines: list[str]
    ranks: list[int]
    world_size: int | None
    created: str


@dataclass
class Group:
    """One experiment on one model (with its weights) and one dataset: its numbers and where they come from."""

    experiment: str
    model: str
    weights: str
    dataset: str
    label: str = ""  # the model as the tables name it
    hashes: list[str] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    stats: dict[tuple[str, str], dict[str, Stat]] = field(default_factory=dict)  # (method, variant) -> metric
    items: dict[tuple[str, str], int] = field(default_factory=dict)
    options: dict[str, list[str]] = field(default_factory=dict)  # method[variant] -> the option sets it ran with
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    num_classes: tuple[int, str] | None = None  # pointing: the count and where it came from
    curves: dict[str, dict[tuple[str, str], aggregate.CurveMean]] = field(default_factory=dict)
    series: dict[tuple[str, str], dict[float, Stat]] = field(default_factory=dict)  # ground truth: resolved share

    @property
    def paper_applies(self) -> bool:
        return self.weights != "random"


def groups_of(stores: Stores) -> list[Group]:
    db = stores.db
    rows = db.execute(
        "SELECT DISTINCT experiment, model, weights, dataset FROM results UNION "
        "SELECT DISTINCT experiment, model, weights, dataset FROM runs ORDER BY 1, 2, 3, 4").fetchall()
    weights_per_model = Counter((e, m, d) for e, m, _, d in rows)
    groups = []
    for experiment, model, weights, dataset in rows:
        label = model if weights_per_model[experiment, model, dataset] == 1 else f"{model} ({weights or 'default'})"
        group = Group(str(experiment), str(model), str(weights or ""), str(dataset), label)
        _fill(db, group)
        groups.append(group)
    return groups


def _fill(db: sqlite3.Connection, group: Group) -> None:
    where = (group.experiment, group.model, group.weights, group.dataset)
    match = "experiment = ? AND model = ? AND weights = ? AND dataset = ?"
    db.execute("DROP TABLE IF EXISTS temp.ghash")
    db.execute("CREATE TEMP TABLE ghash (config_hash PRIMARY KEY)")
    db.execute(f"INSERT OR IGNORE INTO ghash SELECT DISTINCT config_hash FROM results WHERE {match} "
               f"UNION SELECT config_hash FROM runs WHERE {match}", where * 2)
    group.hashes = [h for (h,) in db.execute("SELECT config_hash FROM ghash ORDER BY 1")]
    group.runs = _runs(db)
    _current(db, "results", ("method", "variant", "item", "metric"), ("value", "target", "options"))
    if group.experiment == "pointing":
        group.num_classes = _num_classes(db, group)
    classes = group.num_classes[0] if group.num_classes else None
    for method, variant in db.execute("SELECT DISTINCT method, variant FROM current ORDER BY 1, 2").fetchall():
        key = (method, variant)
        values: dict[str, list] = defaultdict(list)
        targets: dict[str, list] = defaultdict(list)
        for metric, value, target in db.execute(
                "SELECT metric, value, target FROM current WHERE method = ? AND variant = ?", key):
            values[metric].append(value)
            targets[metric].append(target)
        columns = {metric: Column.of(values[metric], targets[metric]) for metric in sorted(values)}
        for first, second in aggregate.PAIRED:  # Y and O, separation and resolved: paired by item
            if first in columns and second in columns:
                pairs = db.execute(
                    "SELECT a.value, b.value FROM current a JOIN current b ON b.method = a.method AND "
                    "b.variant = a.variant AND b.item = a.item AND b.metric = ? WHERE a.method = ? "
                    "AND a.variant = ? AND a.metric = ?", (second, *key, first)).fetchall()
                a, b = zip(*pairs, strict=True) if pairs else ((), ())
                columns[first], columns[second] = Column.of(a), Column.of(b)
        if all(name in columns for name in aggregate.RESOLUTION_PAIR):
            group.series[key] = aggregate.resolution_curve(columns["separation"].values, columns["resolved"].values)
        group.stats[key] = aggregate.summarise(group.experiment, columns, classes)
        group.items[key] = db.execute("SELECT count(DISTINCT item) FROM current WHERE method = ? AND variant = ?",
                                      key).fetchone()[0]
        for (options,) in db.execute("SELECT DISTINCT options FROM current WHERE method = ? AND variant = ?", key):
            label = f"{method}[{variant}]" if variant else method  # variants differ in options by design
            if str(options) not in group.options.setdefault(label, []):
                group.options[label].append(str(options))
    group.skipped = db.execute("SELECT count(DISTINCT item) FROM skips WHERE config_hash IN ghash").fetchone()[0]
    group.reasons = Counter(dict(db.execute(
        "SELECT reason, count(DISTINCT item) FROM skips WHERE config_hash IN ghash GROUP BY reason")))
    _current(db, "curves", ("method", "variant", "item", "kind"), ("scores",))
    for method, variant, kind, scores in db.execute("SELECT method, variant, kind, scores FROM current"):
        if scores:
            group.curves.setdefault(kind, {}).setdefault((method, variant), aggregate.CurveMean()).add(
                np.frombuffer(scores, "<f4"))
    _current(db, None)


def _current(db: sqlite3.Connection, table: str | None, key: tuple[str, ...] = (),
             columns: tuple[str, ...] = ()) -> None:
    """`temp.current`: the group's rows of `table`, one per key (the key without the configuration). One
    configuration: a view on the table (its primary key serves the look-ups); several: a table filled from
    the oldest run to the latest, so that a key stored under two configurations keeps the latest value.
    `table=None` drops it."""
    for kind in ("view", "table"):
        if db.execute("SELECT 1 FROM temp.sqlite_master WHERE name = 'current' AND type = ?", (kind,)).fetchone():
            db.execute(f"DROP {kind.upper()} temp.current")
    if table is None:
        return
    names = ", ".join(key + columns)
    hashes = [h for (h,) in db.execute("SELECT g.config_hash FROM ghash g LEFT JOIN configs c USING (config_hash) "
                                       "ORDER BY coalesce(c.created, ''), g.config_hash")]
    if len(hashes) <= 1:
        db.execute(f"CREATE TEMP VIEW current AS SELECT {names} FROM {table} WHERE config_hash IN ghash")
        return
    db.execute(f"CREATE TEMP TABLE current ({names}, PRIMARY KEY ({', '.join(key)}))")
    for config_hash in hashes:
        db.execute(f"INSERT OR REPLACE INTO current SELECT {names} FROM {table} WHERE config_hash = ?", (config_hash,))


def _runs(db: sqlite3.Connection) -> list[Run]:
    runs = []
    rows = db.execute("SELECT config_hash, config, machine, rank, world_size, created FROM runs "
                      "WHERE config_hash IN ghash ORDER BY config_hash, rank").fetchall()
    for config_hash, entries in groupby(rows, key=lambda row: row[0]):
        entries = list(entries)
        try:
            config = json.loads(entries[0][1] or "{}")
        except json.JSONDecodeError:
            config = {"config": entries[0][1]}
        runs.append(Run(
            config_hash, config if isinstance(config, dict) else {"config": config},
            list(dict.fromkeys(str(e[2]) for e in entries if e[2])),
            sorted({int(e[3]) for e in entries if e[3] is not None}),
            max((int(e[4]) for e in entries if e[4] is not None), default=None),
            min(str(e[5]) for e in entries if e[5]) if any(e[5] for e in entries) else "",
        ))
    return runs


def _num_classes(db: sqlite3.Connection, group: Group) -> tuple[int, str]:
    """TorchRay averages over every class of the dataset: the runs' `num_classes`, else the dataset's
    known count, else the classes seen."""
    counts = {int(run.config["num_classes"]) for run in group.runs if "num_classes" in run.config}
    if len(counts) > 1:
        raise JitterCamError(f"pointing on {group.model}/{group.dataset}: the runs disagree on num_classes "
                             f"({sorted(counts)})")
    if counts:
        return counts.pop(), "the run's configuration"
    if group.dataset in KNOWN_CLASSES:
        return KNOWN_CLASSES[group.dataset], f"{group.dataset}'s class count (not in the run's configuration)"
    seen = db.execute("SELECT max(target) FROM current").fetchone()[0]
    return int(seen or 0) + 1, "the largest class index seen + 1 (not in the run's configuration)"


def missing_ranks_of(run: Run) -> list[int]:
    return sorted(set(range(run.world_size or 1)) - set(run.ranks)) if run.ranks else []


def missing_ranks(groups: list[Group]) -> list[str]:
    """One warning per configuration run under torchrun whose rank stores were not all given."""
    warnings = []
    for group in groups:
        for run in group.runs:
            if missing_ranks_of(run):
                warnings.append(f"{group.experiment} on {group.label}/{group.dataset} ran on {run.world_size} ranks "
                                f"but the stores of ranks {', '.join(map(str, missing_ranks_of(run)))} were not given: "
                                "its numbers rest on part of the items")
    return warnings
