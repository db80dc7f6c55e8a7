"""The results store: one SQLite file per process, every write a transaction, safe to resume.

Schema 2 (`SCHEMA`, the only place it is written out; `jittercam report` reads it through `TABLES`):

* `runs` — one row per configuration and rank: what the run is (experiment, model, weights, dataset, seed,
  its whole configuration as JSON, machine, the class names its targets index). Rows of the other tables
  name their run by `config_hash` only: nothing about the run is repeated per row.
* `results` — one row per (method, variant, item, metric): `value`, and `curve` (float32 bytes) for a
  metric measured along a sweep — deletion's scores per step, weak localisation's hit per threshold — so a
  curve is one row. The variant is typed: `parameter` (`size`, `alpha`, `layer`, `fused`; '' for none) and
  `at`, its numeric value (NULL when it has none); `variant` is its label (`size=9`), part of the key.
* `skips`, `gallery` — items not evaluated and why; the report's example maps.
* `done (config_hash, method, variant, item)` — a (method, variant, sample) whose rows are all stored,
  written in the same transaction as those rows. Resuming computes exactly the pairs missing here (and
  not skipped): an experiment's metrics may be conditional (the pointing game's `difficult` exists for
  difficult pairs only), so "every metric row is there" is read from this marker, never guessed.
* `arms (config_hash, method, variant, description, options)` — each arm's options as JSON (batch size left
  out) and as the method's repr: a resumed run that builds an arm of the same name with other options is
  refused while that arm has results, since they would mix two settings under one name, unless it drops
  that method's rows first (`record_arms(drop=...)`).
* `explanations (key, ...)` — raw maps (float32) keyed by everything that determines them (model, weights,
  dataset, method and its options, sample, target, input size), so that several experiments, or a run
  resumed after its metrics were interrupted, reuse an explanation instead of computing it again.

Durability: WAL journal with `synchronous=FULL`, so a committed batch survives `kill -9` and power loss;
rows go in with `INSERT OR IGNORE` on their primary key, so a batch stored twice is stored once. A store of
another schema (jittercam 0.1 wrote schema 1) is refused with one line.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import JitterCamError
from ..words import plural

SCHEMA_VERSION = 2
# table -> column declarations; the primary key last
TABLES: dict[str, tuple[str, ...]] = {
    "runs": ("config_hash TEXT", "experiment TEXT", "model TEXT", "weights TEXT", "dataset TEXT", "seed INTEGER",
             "config TEXT", "rank INTEGER", "world_size INTEGER", "machine TEXT", "created TEXT",
             "class_names TEXT", "PRIMARY KEY (config_hash)"),
    "results": ("config_hash TEXT", "method TEXT", "variant TEXT NOT NULL DEFAULT ''", "item TEXT", "metric TEXT",
                "parameter TEXT NOT NULL DEFAULT ''", "at REAL", "target INTEGER", "value REAL", "curve BLOB",
                "seconds REAL", "PRIMARY KEY (config_hash, method, variant, item, metric)"),
    "skips": ("config_hash TEXT", "method TEXT", "item TEXT", "reason TEXT", "PRIMARY KEY (config_hash, method, item)"),
    "gallery": ("config_hash TEXT", "method TEXT", "item TEXT", "target INTEGER", "image BLOB", "map BLOB",
                "height INTEGER", "width INTEGER", "PRIMARY KEY (config_hash, method, item)"),
    "done": ("config_hash TEXT", "method TEXT", "variant TEXT NOT NULL DEFAULT ''", "item TEXT",
             "PRIMARY KEY (config_hash, method, variant, item)"),
    "arms": ("config_hash TEXT", "method TEXT", "variant TEXT NOT NULL DEFAULT ''", "description TEXT",
             "options TEXT", "PRIMARY KEY (config_hash, method, variant)"),
    "explanations": ("key TEXT", "method TEXT", "item TEXT", "target INTEGER", "height INTEGER", "width INTEGER",
                     "map BLOB", "seconds REAL", "created TEXT", "PRIMARY KEY (key)"),
}
COMPACT = ("results", "done", "skips")  # many small rows: the primary key is the table (WITHOUT ROWID)
SCHEMA = "\n".join(f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(columns)})"
                   f"{' WITHOUT ROWID' if name in COMPACT else ''};" for name, columns in TABLES.items())
ALL_METHODS = ""  # `skips.method` of an item skipped for every method (an unreadable image, no box)


def column_names(table: str) -> tuple[str, ...]:
    """The columns of one of `TABLES`, in order.

    Args:
        table: the table's name.

    Returns:
        The column names.
    """
    return tuple(c.split()[0] for c in TABLES[table] if not c.startswith("PRIMARY KEY"))


def key_columns(table: str) -> tuple[str, ...]:
    """The primary key's columns of one of `TABLES`.

    Args:
        table: the table's name.

    Returns:
        The key's column names, in order.
    """
    key = next(c for c in TABLES[table] if c.startswith("PRIMARY KEY"))
    return tuple(part.strip() for part in key[key.index("(") + 1 : key.rindex(")")].split(","))


@dataclass(frozen=True)
class Run:
    """What `runs` records about one configuration.

    Attributes:
        config_hash: the configuration's hash, which the other tables' rows name their run by.
        experiment: the experiment's name.
        model: the model's name.
        weights: the weights used.
        dataset: the dataset.
        config: the whole configuration (stored as JSON).
        rank: this process's rank.
        world_size: the number of processes.
        machine: the machine it ran on.
        seed: the run's seed.
        class_names: the names the targets index; None when unknown.
    """

    config_hash: str
    experiment: str
    model: str
    weights: str
    dataset: str
    config: dict
    rank: int
    world_size: int
    machine: str
    seed: int = 0
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Row:
    """One row of `results`.

    Attributes:
        method: the method's registry name.
        variant: the variant's label (`size=9`; "" for none).
        parameter: the variant's parameter (`size`, `alpha`, `layer`, `fused`; "" for none).
        at: the variant's numeric value; None when it has none.
        item: the stored item.
        target: the class explained.
        metric: the metric's name.
        value: the value; None when missing.
        curve: the values along a sweep, for a metric that has them.
        seconds: the time the explanation took.
    """

    method: str
    variant: str  # the label
    parameter: str
    at: float | None
    item: str
    target: int | None
    metric: str
    value: float | None
    curve: np.ndarray | None
    seconds: float | None


@dataclass(frozen=True)
class GalleryEntry:
    """One example map of the report's gallery.

    Attributes:
        method: the method's registry name.
        item: the stored item.
        target: the class explained.
        image: the input picture, PNG bytes.
        map: the raw `(h, w)` map.
    """

    method: str
    item: str
    target: int | None
    image: bytes  # PNG
    map: np.ndarray  # (h, w) raw


@dataclass
class Batch:
    """Everything one (method, batch of samples) produced: committed in one transaction.

    Attributes:
        rows: the `results` rows.
        gallery: the gallery entries.
        done: `(method, variant, item)` whose rows are all stored.
        skips: `(method, item, reason)` not evaluated.
    """

    rows: list[Row]
    gallery: list[GalleryEntry]
    done: list[tuple[str, str, str]]  # (method, variant, item)
    skips: list[tuple[str, str, str]]  # (method, item, reason)



def _difference(stored: str, now: str) -> str:
    """What differs between two arm descriptions (JSON objects): `masks 8000, now 500`."""
    try:
        before, after = json.loads(stored), json.loads(now)
    except ValueError:
        return f"{stored}, now {now}"
    if not isinstance(before, dict) or not isinstance(after, dict):
        return f"{stored}, now {now}"
    return "; ".join(f"{key} {json.dumps(before.get(key))}, now {json.dumps(after.get(key))}"
                     for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key))


def now() -> str:
    """The current UTC time.

    Returns:
        ISO 8601, to the second.
    """
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def float32_blob(values: np.ndarray | torch.Tensor) -> bytes:
    """Little-endian float32 bytes, as `results.curve`, `gallery.map` and `explanations.map` hold them.

    Args:
        values: an array or a tensor (on any device), converted to float32.

    Returns:
        The values' bytes, in C order.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def from_blob(blob: bytes, shape: Sequence[int] | None = None) -> np.ndarray:
    """The values of a `float32_blob`.

    Args:
        blob: the bytes.
        shape: the array's shape; None: 1-D.

    Returns:
        A read-only float32 view of the bytes.
    """
    values = np.frombuffer(blob, dtype="<f4")
    return values.reshape(shape) if shape is not None else values


@contextmanager
def read_only(path: Path) -> Iterator[str]:
    """An SQLite URI that reads the store at `path` without creating or changing anything beside it.

    `mode=ro` alone is not enough: on a WAL-mode store it creates `-wal` and `-shm` files and leaves them.
    So: without a write-ahead log beside the file (a store closed cleanly), everything committed is in the
    file and `immutable=1` reads it with no lock and no side file; with a log and its index (`-shm`: a run
    writing now, or one that was killed), `mode=ro` reads what is committed and creates nothing; a log
    without its index (files copied without it) cannot be read in place without creating the index, so
    the file and its log are copied to a private temporary folder, read there and deleted (as is a store
    with a rollback journal left by a crash, which only a writer can roll back).

    Args:
        path: the store file (it must exist).

    Yields:
        The URI, for `sqlite3.connect(uri, uri=True)` or `ATTACH DATABASE`.
    """
    def written(suffix: str) -> bool:
        side = Path(f"{path}{suffix}")
        return side.is_file() and side.stat().st_size > 0

    if written("-journal") or (written("-wal") and not Path(f"{path}-shm").exists()):
        with tempfile.TemporaryDirectory(prefix="jittercam-store-") as folder:
            copy = Path(folder) / "store.db"
            for suffix in ("", "-wal", "-journal"):
                if Path(f"{path}{suffix}").is_file():
                    shutil.copyfile(f"{path}{suffix}", f"{copy}{suffix}")
            yield copy.as_uri()
    elif written("-wal"):
        yield path.resolve().as_uri() + "?mode=ro"
    else:
        yield path.resolve().as_uri() + "?immutable=1"


class Store:
    """An open results store. Use as a context manager, or call `close()`.

    A new file gets the schema; an existing store of this schema is opened as it is.

    Args:
        path: the SQLite file, created if missing; its folder must exist.

    Raises:
        JitterCamError: `path` is a folder, its folder does not exist, it is not a results store, or it
            holds another schema.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise JitterCamError(f"{self.path} is a folder; give a file name, e.g. {self.path / 'results.db'}")
        if not self.path.parent.is_dir():
            raise JitterCamError(f"{self.path}: folder {self.path.parent} does not exist")
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            tables = self.db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
            if version == 0 and tables == 0:
                self.db.executescript(SCHEMA)
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise JitterCamError(
                    f"{self.path} is a results store of schema {version or 'unknown'} (an older jittercam); this "
                    f"version writes schema {SCHEMA_VERSION}: give another store file to run again, and report "
                    "the old one with the jittercam that wrote it"
                )
        except sqlite3.DatabaseError as exc:
            raise JitterCamError(f"{self.path} is not a results store (SQLite: {exc})") from None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    # ------------------------------------------------------------------------------------------ writing
    def register(self, run: Run) -> None:
        """Record the configuration (once: a resumed run leaves the first record as it was).

        Args:
            run: the configuration.

        Raises:
            JitterCamError: the store cannot be written.
        """
        with self._transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (run.config_hash, run.experiment, run.model, run.weights, run.dataset, run.seed,
                 json.dumps(run.config, sort_keys=True), run.rank, run.world_size, run.machine, now(),
                 None if run.class_names is None else json.dumps(list(run.class_names))),
            )

    def commit(self, run: Run, batch: Batch) -> None:
        """Store one batch's rows, gallery entries, skips and done markers, all or nothing.

        Args:
            run: the configuration they belong to.
            batch: what the batch produced.

        Raises:
            JitterCamError: the store cannot be written (nothing of the batch is).
        """
        key = run.config_hash
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(key, r.method, r.variant, r.item, r.metric, r.parameter, r.at, r.target,
                  None if r.value is None else float(r.value), None if r.curve is None else float32_blob(r.curve),
                  r.seconds) for r in batch.rows],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO gallery VALUES (?,?,?,?,?,?,?,?)",
                [(key, g.method, g.item, g.target, g.image, float32_blob(g.map),
                  int(g.map.shape[0]), int(g.map.shape[1])) for g in batch.gallery],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO skips VALUES (?,?,?,?)",
                [(key, method, item, reason) for method, item, reason in batch.skips],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO done VALUES (?,?,?,?)",
                [(key, method, variant, item) for method, variant, item in batch.done],
            )

    def forget_skips(self, config_hash: str) -> int:
        """Delete the configuration's skips, so that `--retry-skipped` computes those items again.

        Args:
            config_hash: the configuration.

        Returns:
            The number of skips deleted.

        Raises:
            JitterCamError: the store cannot be written.
        """
        with self._transaction():
            return self.db.execute("DELETE FROM skips WHERE config_hash = ?", (config_hash,)).rowcount

    def record_arms(self, config_hash: str, arms: Sequence[tuple[str, str, str, str]],
                    drop: Iterable[str] = ()) -> dict[str, int]:
        """Record `(method, variant, description, repr)`, first deleting what the configuration stored for the
        methods in `drop` (see `drop_method`), all in one transaction. An arm stored with another description
        is refused while it has results, since they would mix two settings under one name; one without
        results (a run stopped before that arm's first batch) takes the new description.

        Args:
            config_hash: the configuration.
            arms: `(method, variant, description, repr)` per arm.
            drop: methods whose stored rows of this configuration are deleted first.

        Returns:
            The result rows deleted, per method in `drop`.

        Raises:
            JitterCamError: (option `drop`, before anything is written or deleted) an arm of a method not in
                `drop` has results built with other options; the message says how many and the two ways out:
                drop that method's rows, or use another store file.
        """
        drop = list(dict.fromkeys(drop))
        for method, variant, description, _ in arms:
            if method in drop:
                continue
            stored = self.db.execute(
                "SELECT description FROM arms WHERE config_hash=? AND method=? AND variant=?",
                (config_hash, method, variant),
            ).fetchone()
            if stored is None or stored[0] == description:
                continue
            finished = self.db.execute("SELECT count(*) FROM done WHERE config_hash=? AND method=? AND variant=?",
                                       (config_hash, method, variant)).fetchone()[0]
            if finished:
                rows = self.db.execute("SELECT count(*) FROM results WHERE config_hash=? AND method=? AND variant=?",
                                       (config_hash, method, variant)).fetchone()[0]
                label = f"{method}[{variant}]" if variant else method
                # the method's name before the store's path: the CLI turns the first "drop" into its flag
                raise JitterCamError(
                    f"{label} was computed with other options ({_difference(stored[0], description)}) for "
                    f"{plural(finished, 'item')} ({plural(rows, 'result row')}) of this configuration: "
                    f"drop {method} deletes {method}'s rows so that it is computed again with the new options, "
                    f"or another store file than {self.path} keeps both",
                    option="drop",
                )
        with self._transaction():
            dropped = {method: self._delete_method(config_hash, method) for method in drop}
            self.db.executemany(
                "INSERT OR REPLACE INTO arms VALUES (?,?,?,?,?)", [(config_hash, *arm) for arm in arms]
            )
        return dropped

    def drop_method(self, config_hash: str, method: str) -> int:
        """Delete everything this configuration stored for `method` (every variant): result rows, done
        markers, skips, gallery entries and its recorded options, in one transaction, so that a run computes
        it again (with other options, say). Cached explanations stay: they are keyed by the options.

        Returns:
            The number of result rows deleted.
        """
        with self._transaction():
            return self._delete_method(config_hash, method)

    def _delete_method(self, config_hash: str, method: str) -> int:
        rows = self.db.execute("DELETE FROM results WHERE config_hash=? AND method=?", (config_hash, method)).rowcount
        for table in ("done", "arms"):
            self.db.execute(f"DELETE FROM {table} WHERE config_hash=? AND method=?", (config_hash, method))
        # skips and gallery name an arm by its label: the method, or `method[variant]`
        prefix = f"{method}["
        for table in ("skips", "gallery"):
            self.db.execute(f"DELETE FROM {table} WHERE config_hash=? AND (method=? OR substr(method, 1, ?)=?)",
                            (config_hash, method, len(prefix), prefix))
        return rows

    def cache_maps(self, entries: Iterable[tuple[str, str, str, int | None, np.ndarray, float]]) -> None:
        """Store raw maps in the explanation cache (a key already there keeps its map).

        Args:
            entries: `(key, method, item, target, map, seconds)`, each map `(h, w)`.

        Raises:
            JitterCamError: the store cannot be written.
        """
        created = now()
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO explanations VALUES (?,?,?,?,?,?,?,?,?)",
                [(key, method, item, target, int(m.shape[0]), int(m.shape[1]), float32_blob(m), seconds, created)
                 for key, method, item, target, m, seconds in entries],
            )

    # ------------------------------------------------------------------------------------------ reading
    def done(self, config_hash: str) -> set[tuple[str, str, str]]:
        """What is already stored for this configuration.

        Args:
            config_hash: the configuration.

        Returns:
            `(method, variant, item)` whose rows are all stored.
        """
        rows = self.db.execute("SELECT method, variant, item FROM done WHERE config_hash = ?", (config_hash,))
        return set(rows)

    def skipped(self, config_hash: str) -> set[tuple[str, str]]:
        """What was skipped for this configuration.

        Args:
            config_hash: the configuration.

        Returns:
            `(method, item)` skipped; method `ALL_METHODS` for every method.
        """
        return set(self.db.execute("SELECT method, item FROM skips WHERE config_hash = ?", (config_hash,)))

    def cached_maps(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, float | None]]:
        """The cached maps of those `keys` that are in the cache.

        Args:
            keys: explanation keys.

        Returns:
            key -> `(map, seconds)`, the map `(h, w)` float32.
        """
        found: dict[str, tuple[np.ndarray, float | None]] = {}
        for start in range(0, len(keys), 500):  # SQLite's limit on bound parameters
            part = list(keys[start : start + 500])
            marks = ",".join("?" * len(part))
            for key, height, width, blob, seconds in self.db.execute(
                f"SELECT key, height, width, map, seconds FROM explanations WHERE key IN ({marks})", part
            ):
                found[key] = (from_blob(blob, (height, width)).copy(), seconds)
        return found

    def count(self, table: str, config_hash: str) -> int:
        """The number of a configuration's rows in a table.

        Args:
            table: "results", "skips", "gallery", "done" or "arms".
            config_hash: the configuration.

        Returns:
            The count.

        Raises:
            ValueError: another table.
        """
        if table not in ("results", "skips", "gallery", "done", "arms"):
            raise ValueError(table)
        return self.db.execute(f"SELECT COUNT(*) FROM {table} WHERE config_hash = ?", (config_hash,)).fetchone()[0]

    # ---------------------------------------------------------------------------------------- internals
    def _transaction(self):
        return _Transaction(self.db, self.path)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; SQLite errors become one line."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db, self.path = db, path

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JitterCamError(f"cannot write to {self.path}: {exc}") from None

    def __exit__(self, kind, error, _traceback) -> Literal[False]:
        if kind is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.Error as exc:
                self.db.execute("ROLLBACK")
                raise JitterCamError(f"cannot write to {self.path}: {exc}") from None
        self.db.execute("ROLLBACK")
        if issubclass(kind, sqlite3.Error):
            raise JitterCamError(f"cannot write to {self.path}: {error}") from None
        return False
