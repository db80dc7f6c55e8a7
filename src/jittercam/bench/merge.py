"""Reading results stores: their rows merged into one database, then grouped and aggregated.

Every store is opened read-only (`store.read_only`: immutable when no write-ahead log is beside it,
`mode=ro` when a run may be writing it, so reading creates no `-wal`/`-shm` files beside it; a store
still being written is read as far as it is committed) and its rows
are copied into a private temporary database in the store's own shape (`store.TABLES`): the union of all
files, where rows with the same primary key are one row, and the same key with another value (beyond a
relative 1e-6; NaN, stored by SQLite as NULL, equals NaN) is an error naming both files. Skips and gallery
rows with the same key keep the first file's.

Stores of schema 1 (jittercam 0.1: one row per threshold, run columns on every row, curves in a table of
their own) are read too, converted on the way in.

The rows are then grouped by experiment, model (with its weights) and dataset. Several configurations of
one group (another `--limit`, methods added later) are pooled, an item computed under two of them counting
once, with the value of the latest run (`runs.created`). Each experiment's `summarise` turns an arm's
per-item columns into the paper's numbers.
"""
from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..data import dataset_num_classes
from ..errors import JitterCamError
from .experiments import Column, Variant, find_experiment
from .stats import CurveMean, Stat
from .store import SCHEMA_VERSION, TABLES, column_names, key_columns, read_only

READ = ("runs", "results", "skips", "gallery", "arms")  # the tables the report reads
REQUIRED = ("runs", "results")
CURVES = ("deletion", "insertion")  # metrics whose curves the report averages point by point
_RELATIVE, _ABSOLUTE = 1e-6, 1e-12  # two stores' values of one key that differ by less are the same value


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _declarations(table: str) -> str:
    """The store's columns and key; `runs` without its key: the union holds one row per rank."""
    return ", ".join(c for c in TABLES[table] if table != "runs" or not c.startswith("PRIMARY KEY"))


class Stores:
    """The union of the stores' rows, in a private temporary SQLite database (deleted when closed)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.db = sqlite3.connect("", uri=True, isolation_level=None)  # "": private temporary database
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        for table in READ:
            self.db.execute(f"CREATE TABLE {table} (source INTEGER, {_declarations(table)})")
            self.db.execute(f"CREATE TEMP TABLE incoming_{table} ({_declarations(table)})")
        self.counts: list[int] = []  # result rows in each file (a schema-1 file's rows as it stored them)
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
        with read_only(path) as uri:
            try:
                self.db.execute("ATTACH DATABASE ? AS src", (uri,))
            except sqlite3.Error as exc:
                raise JitterCamError(f"{path} is not a readable SQLite file ({exc})") from None
            try:
                self._copy(index, path)
            except sqlite3.Error as exc:
                raise JitterCamError(f"cannot read {path}: {exc}") from None
            finally:
                for table in READ:
                    self.db.execute(f"DELETE FROM incoming_{table}")
                self.db.execute("DETACH DATABASE src")

    def _copy(self, index: int, path: Path) -> None:
        """Copy the attached store `src` into the union."""
        tables = {name for (name,) in self.db.execute("SELECT name FROM src.sqlite_master WHERE type='table'")}
        for table in REQUIRED:
            if table not in tables:
                raise JitterCamError(f"{path} is not a jittercam results store (it has no table {table!r}; "
                                     "`jittercam bench` writes one)")
        self.counts.append(self.db.execute("SELECT count(*) FROM src.results").fetchone()[0])
        version = self.db.execute("PRAGMA src.user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            for table in READ:
                if table in tables:
                    self._check_columns(path, table, column_names(table))
                    names = ", ".join(column_names(table))
                    self.db.execute(f"INSERT OR IGNORE INTO incoming_{table} ({names}) "
                                    f"SELECT {names} FROM src.{_quote(table)}")
        elif version in (0, 1):
            _LegacyReader(self, path, tables).copy()
        else:
            raise JitterCamError(f"{path} is a results store of schema {version}, newer than this jittercam "
                                 f"reads ({SCHEMA_VERSION}): report it with the jittercam that wrote it")
        self._take(index, path)

    def _check_columns(self, path: Path, table: str, columns: tuple[str, ...]) -> None:
        have = {row[1] for row in self.db.execute(f"PRAGMA src.table_info({_quote(table)})")}
        lacking = [column for column in columns if column not in have]
        if lacking:
            raise JitterCamError(f"{path}: table {table!r} has no column {lacking[0]!r} (a store from another "
                                 "version of jittercam?)")

    def _take(self, index: int, path: Path) -> None:
        """Move the incoming rows into the union, after checking them against what is there."""
        self._check_conflicts(path)
        for table in READ:
            names = ", ".join(column_names(table))
            self.db.execute(f"INSERT OR IGNORE INTO {table} (source, {names}) SELECT ?, {names} FROM incoming_{table}",
                            (index,))

    def _check_conflicts(self, path: Path) -> None:
        """The same key in an earlier file with a value that is not the same: an error naming both."""
        keys = key_columns("results")
        join = " AND ".join(f"m.{k} = r.{k}" for k in keys)
        differ = (f"NOT (m.value IS r.value OR (m.value IS NOT NULL AND r.value IS NOT NULL AND "
                  f"abs(m.value - r.value) <= {_RELATIVE} * max(abs(m.value), abs(r.value)) + {_ABSOLUTE})) "
                  "OR m.curve IS NOT r.curve")
        query = (f"SELECT m.source, {', '.join('r.' + k for k in keys)}, m.value, r.value, m.curve, r.curve "
                 f"FROM incoming_results r JOIN main.results m ON {join} WHERE {differ}")
        for source, *rest in self.db.execute(query):
            key, (first, second, first_curve, second_curve) = rest[: len(keys)], rest[len(keys) :]
            same_value = first == second or (first is not None and second is not None and math.isclose(
                first, second, rel_tol=_RELATIVE, abs_tol=_ABSOLUTE))
            if same_value and _same_curve(first_curve, second_curve):
                continue
            what = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key, strict=True) if k != "config_hash")
            values = f"{first!r} vs {second!r}" if not same_value else "different curves"
            raise JitterCamError(f"{self.paths[source]} and {path} disagree on results row {what} of configuration "
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


class _LegacyReader:
    """A schema-1 store into the incoming tables: `scheme@threshold` rows become one curve row per scheme,
    the `curves` table's deletion/insertion scores the curve of their row, the run columns of result rows
    a `runs` row where the store has none."""

    SCHEMES: ClassVar[dict[str, str]] = {"energy": "eng"}  # schema 1 wrote either name

    def __init__(self, stores: Stores, path: Path, tables: set[str]) -> None:
        self.db, self.path, self.tables = stores.db, path, tables
        self.stores = stores

    def copy(self) -> None:
        db = self.db
        self.stores._check_columns(self.path, "runs", ("config_hash", "experiment", "model", "weights", "dataset",
                                                       "config", "rank", "world_size", "machine", "created"))
        self.stores._check_columns(self.path, "results", ("config_hash", "experiment", "model", "weights", "dataset",
                                                          "method", "options", "variant", "item", "target",
                                                          "metric", "value"))
        db.execute("INSERT OR IGNORE INTO incoming_runs (config_hash, experiment, model, weights, dataset, config, "
                   "rank, world_size, machine, created) SELECT config_hash, experiment, model, coalesce(weights, ''), "
                   "dataset, config, rank, world_size, machine, created FROM src.runs")
        db.execute("INSERT OR IGNORE INTO incoming_runs (config_hash, experiment, model, weights, dataset) "
                   "SELECT DISTINCT config_hash, experiment, model, coalesce(weights, ''), dataset FROM src.results")
        db.execute("INSERT OR IGNORE INTO incoming_arms (config_hash, method, variant, options) SELECT config_hash, "
                   "method, coalesce(variant, ''), min(options) FROM src.results GROUP BY 1, 2, 3")
        curves = {}
        if "curves" in self.tables:
            for *key, blob in db.execute("SELECT config_hash, method, coalesce(variant, ''), item, kind, scores "
                                         "FROM src.curves"):
                curves[tuple(key)] = blob
        hits: dict[tuple, list[tuple[float, float | None]]] = defaultdict(list)
        targets: dict[tuple, int | None] = {}
        rows = []
        for config_hash, method, variant, item, target, metric, value in db.execute(
                "SELECT config_hash, method, coalesce(variant, ''), item, target, metric, value FROM src.results"):
            scheme, at, threshold = metric.partition("@")
            if at:
                key = (config_hash, method, variant, item, self.SCHEMES.get(scheme, scheme))
                hits[key].append((float(threshold), value))
                targets[key] = target
                continue
            typed = Variant.of(variant)
            rows.append((config_hash, method, variant, item, metric, typed.parameter, typed.number, target, value,
                         curves.get((config_hash, method, variant, item, metric))))
        for key, found in hits.items():
            found.sort()
            curve = np.array([np.nan if v is None else v for _, v in found], dtype="<f4").tobytes()
            config_hash, method, variant, item, scheme = key
            typed = Variant.of(variant)
            rows.append((config_hash, method, variant, item, scheme, typed.parameter, typed.number, targets[key],
                         None, curve))
        db.executemany("INSERT OR IGNORE INTO incoming_results (config_hash, method, variant, item, metric, parameter, "
                       "at, target, value, curve) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        if "skips" in self.tables:
            db.execute("INSERT OR IGNORE INTO incoming_skips SELECT config_hash, method, item, reason FROM src.skips")
        if "gallery" in self.tables:
            db.execute("INSERT OR IGNORE INTO incoming_gallery SELECT config_hash, method, item, target, image, map, "
                       "height, width FROM src.gallery")


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
    config: dict[str, Any] = field(default_factory=dict)  # what the statistics need of the runs' configuration
    stats: dict[tuple[str, str], dict[str, Stat]] = field(default_factory=dict)  # (method, variant) -> metric
    items: dict[tuple[str, str], int] = field(default_factory=dict)
    numbers: dict[tuple[str, str], tuple[str, float] | None] = field(default_factory=dict)  # swept parameter, value
    options: dict[str, list[str]] = field(default_factory=dict)  # method[variant] -> the option sets it ran with
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    curves: dict[str, dict[tuple[str, str], CurveMean]] = field(default_factory=dict)
    series: dict[tuple[str, str], dict[float, Stat]] = field(default_factory=dict)
    # (method, variant) -> metric -> its per-item column: for a report that compares arms item by item
    columns: dict[tuple[str, str], dict[str, Column]] = field(default_factory=dict)

    @property
    def paper_applies(self) -> bool:
        return self.weights != "random"


def groups_of(stores: Stores) -> list[Group]:
    db = stores.db
    rows = db.execute("SELECT DISTINCT experiment, model, coalesce(weights, ''), dataset FROM runs "
                      "ORDER BY 1, 2, 3, 4").fetchall()
    weights_per_model = Counter((e, m, d) for e, m, _, d in rows)
    groups = []
    for experiment, model, weights, dataset in rows:
        label = model if weights_per_model[experiment, model, dataset] == 1 else f"{model} ({weights or 'default'})"
        group = Group(str(experiment), str(model), str(weights or ""), str(dataset), label)
        _fill(stores, group)
        groups.append(group)
    return groups


def _fill(stores: Stores, group: Group) -> None:
    db = stores.db
    where = (group.experiment, group.model, group.weights, group.dataset)
    db.execute("DROP TABLE IF EXISTS temp.ghash")
    db.execute("CREATE TEMP TABLE ghash (config_hash PRIMARY KEY)")
    db.execute("INSERT OR IGNORE INTO ghash SELECT config_hash FROM runs WHERE experiment = ? AND model = ? "
               "AND coalesce(weights, '') = ? AND dataset = ?", where)
    group.hashes = [h for (h,) in db.execute("SELECT config_hash FROM ghash ORDER BY 1")]
    group.runs = _runs(db)
    group.config = _config(db, group)
    experiment = find_experiment(group.experiment)
    _current(db, "results", ("method", "variant", "item", "metric"), ("parameter", "at", "value", "target", "curve"))
    for method, variant in db.execute("SELECT DISTINCT method, variant FROM current ORDER BY 1, 2").fetchall():
        key = (method, variant)
        columns = _columns(db, key, experiment.paired if experiment else ())
        group.columns[key] = columns
        group.stats[key] = (experiment.summarise(columns, group.config) if experiment
                            else {name: _mean(column) for name, column in columns.items()})
        if experiment is not None:
            series = experiment.series(columns)
            if series:
                group.series[key] = series
        group.items[key] = db.execute("SELECT count(DISTINCT item) FROM current WHERE method = ? AND variant = ?",
                                      key).fetchone()[0]
        swept = db.execute("SELECT parameter, at FROM current WHERE method = ? AND variant = ? LIMIT 1",
                           key).fetchone()
        group.numbers[key] = (str(swept[0]), float(swept[1])) if swept and swept[1] is not None else None
        for metric in CURVES:
            for (blob,) in db.execute("SELECT curve FROM current WHERE method = ? AND variant = ? AND metric = ? "
                                      "AND curve IS NOT NULL", (*key, metric)):
                group.curves.setdefault(metric, {}).setdefault(key, CurveMean()).add(np.frombuffer(blob, "<f4"))
    for method, variant, options in db.execute(
            "SELECT method, variant, options FROM arms WHERE config_hash IN ghash AND options IS NOT NULL "
            "ORDER BY method, variant, config_hash"):
        label = f"{method}[{variant}]" if variant else method
        if (method, variant) in group.stats and str(options) not in group.options.setdefault(label, []):
            group.options[label].append(str(options))
    group.options = {label: options for label, options in group.options.items() if options}
    group.skipped = db.execute("SELECT count(DISTINCT item) FROM skips WHERE config_hash IN ghash").fetchone()[0]
    group.reasons = Counter(dict(db.execute(
        "SELECT reason, count(DISTINCT item) FROM skips WHERE config_hash IN ghash GROUP BY reason")))
    _current(db, None)


def _mean(column: Column) -> Stat:
    from .stats import mean

    return mean(column.values)


def _columns(db: sqlite3.Connection, key: tuple[str, str], paired: tuple[tuple[str, str], ...]) -> dict[str, Column]:
    """The arm's per-item columns; metrics in `paired` are read item by item together (items that have
    both only)."""
    rows: dict[str, list] = defaultdict(list)
    for metric, item, value, target, curve in db.execute(
            "SELECT metric, item, value, target, curve FROM current WHERE method = ? AND variant = ? "
            "ORDER BY metric, item", key):
        rows[metric].append((item, value, target, curve))
    for first, second in paired:
        if first in rows and second in rows:
            both = {item for item, *_ in rows[first]} & {item for item, *_ in rows[second]}
            rows[first] = [row for row in rows[first] if row[0] in both]
            rows[second] = [row for row in rows[second] if row[0] in both]
    columns = {}
    for metric, found in rows.items():
        values = np.array([math.nan if v is None else v for _, v, _, _ in found], dtype=np.float64)
        targets = np.array([-1 if t is None else t for _, _, t, _ in found], dtype=np.int64)
        curves = None
        if any(c is not None for *_, c in found):
            blobs = [np.frombuffer(c, "<f4") if c is not None else None for *_, c in found]
            length = max(len(b) for b in blobs if b is not None)
            curves = np.stack([b.astype(np.float64) if b is not None and len(b) == length
                               else np.full(length, np.nan) for b in blobs])
        columns[metric] = Column(values, targets, curves, tuple(item for item, *_ in found))
    return columns


def _current(db: sqlite3.Connection, table: str | None, key: tuple[str, ...] = (),
             columns: tuple[str, ...] = ()) -> None:
    """`temp.current`: the group's rows of `table`, one per key (the key without the configuration). One
    configuration: a view on the table; several: a table filled from the oldest run to the latest, so that
    a key stored under two configurations keeps the latest value. `table=None` drops it."""
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
    for config_hash, group in groupby(rows, key=lambda row: row[0]):
        entries = list(group)
        text = next((e[1] for e in entries if e[1]), None)
        if text is None and not any(e[2] for e in entries):
            continue  # a schema-1 store's results without a `runs` row: nothing is known of the run
        try:
            config = json.loads(text) if text else {}
        except json.JSONDecodeError:
            config = {"config": text}
        if isinstance(config, dict):
            config.pop("class_names", None)  # schema 1 kept them here; they are not the run's configuration
        runs.append(Run(
            config_hash, config if isinstance(config, dict) else {"config": config},
            list(dict.fromkeys(str(e[2]) for e in entries if e[2])),
            sorted({int(e[3]) for e in entries if e[3] is not None}),
            max((int(e[4]) for e in entries if e[4] is not None), default=None),
            min(str(e[5]) for e in entries if e[5]) if any(e[5] for e in entries) else "",
        ))
    return runs


def _config(db: sqlite3.Connection, group: Group) -> dict[str, Any]:
    """What the statistics read of the configuration: the experiment's options (the latest run's), and
    `num_classes` — the runs' (they must agree), else the dataset's known count, else the classes seen."""
    latest = max(group.runs, key=lambda run: run.created, default=None)
    config: dict[str, Any] = {"options": dict(latest.config.get("options", {})) if latest else {}}
    counts = {int(run.config["num_classes"]) for run in group.runs if "num_classes" in run.config}
    if len(counts) > 1:
        raise JitterCamError(f"{group.experiment} on {group.model}/{group.dataset}: the runs disagree on "
                             f"num_classes ({sorted(counts)})")
    if counts:
        config["num_classes"] = counts.pop()
    elif (known := dataset_num_classes(group.dataset)) is not None:
        config["num_classes"] = known
        config["num_classes_source"] = f"{group.dataset}'s class count (not in the run's configuration)"
    else:
        seen = db.execute("SELECT max(target) FROM results WHERE config_hash IN ghash").fetchone()[0]
        config["num_classes"] = int(seen or 0) + 1
        config["num_classes_source"] = "the largest class index seen + 1 (not in the run's configuration)"
    return config


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
