"""The results store: one SQLite file per process, every write a transaction, safe to resume.

The tables `runs`, `results`, `skips`, `curves` and `gallery` are the shared schema that `jittercam
report` reads (their columns are fixed). Two more tables are the runner's own:

* `done (config_hash, method, variant, item)` — a (method, variant, sample) whose rows are all stored,
  written in the same transaction as those rows. Resuming computes exactly the pairs missing here (and
  not skipped): an experiment's metrics may be conditional (the pointing game's `difficult` exists for
  difficult pairs only), so "every metric row is there" is read from this marker, never guessed.
* `arms (config_hash, method, variant, description)` — each method's options as JSON (batch size
  left out): a resumed run that builds a method of the same name with other options is refused, since
  its rows would mix two settings under one name.
* `explanations (key, ...)` — raw maps (float32) keyed by everything that determines them (model,
  weights, dataset, method and its options, sample, target, input size), so that several experiments, or
  a run resumed after its metrics were interrupted, reuse an explanation instead of computing it again.

Durability: WAL journal with `synchronous=FULL`, so a committed batch survives `kill -9` and power loss;
rows go in with `INSERT OR IGNORE` on their primary key, so a batch stored twice is stored once.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ..errors import JitterCamError

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (config_hash TEXT PRIMARY KEY, experiment TEXT, model TEXT, weights TEXT,
    dataset TEXT, config TEXT, rank INTEGER, world_size INTEGER, machine TEXT, created TEXT);
CREATE TABLE IF NOT EXISTS results (config_hash TEXT, experiment TEXT, model TEXT, weights TEXT, dataset TEXT,
    method TEXT, options TEXT, variant TEXT NOT NULL DEFAULT '', item TEXT, target INTEGER,
    metric TEXT, value REAL, seconds REAL, seed INTEGER, created TEXT,
    PRIMARY KEY (config_hash, method, variant, item, metric));
CREATE TABLE IF NOT EXISTS skips (config_hash TEXT, experiment TEXT, dataset TEXT, method TEXT, item TEXT,
    reason TEXT, PRIMARY KEY (config_hash, method, item));
CREATE TABLE IF NOT EXISTS curves (config_hash TEXT, experiment TEXT, model TEXT, dataset TEXT, method TEXT,
    variant TEXT, item TEXT, kind TEXT, scores BLOB, PRIMARY KEY (config_hash, method, variant, item, kind));
CREATE TABLE IF NOT EXISTS gallery (config_hash TEXT, model TEXT, dataset TEXT, method TEXT, item TEXT,
    target INTEGER, image BLOB, map BLOB, height INTEGER, width INTEGER,
    PRIMARY KEY (config_hash, method, item));
CREATE TABLE IF NOT EXISTS done (config_hash TEXT, method TEXT, variant TEXT NOT NULL DEFAULT '', item TEXT,
    PRIMARY KEY (config_hash, method, variant, item));
CREATE TABLE IF NOT EXISTS arms (config_hash TEXT, method TEXT, variant TEXT NOT NULL DEFAULT '',
    description TEXT, PRIMARY KEY (config_hash, method, variant));
CREATE TABLE IF NOT EXISTS explanations (key TEXT PRIMARY KEY, method TEXT, item TEXT, target INTEGER,
    height INTEGER, width INTEGER, map BLOB, seconds REAL, created TEXT);
"""
ALL_METHODS = ""  # `skips.method` of an item skipped for every method (an unreadable image, no box)


@dataclass(frozen=True)
class Run:
    """What `runs` records about one configuration."""

    config_hash: str
    experiment: str
    model: str
    weights: str
    dataset: str
    config: dict
    rank: int
    world_size: int
    machine: str


@dataclass(frozen=True)
class Row:
    """One value of `results`."""

    method: str
    options: str
    variant: str
    item: str
    target: int | None
    metric: str
    value: float
    seconds: float | None


@dataclass(frozen=True)
class Curve:
    method: str
    variant: str
    item: str
    kind: str  # 'deletion' | 'insertion'
    scores: np.ndarray


@dataclass(frozen=True)
class GalleryEntry:
    method: str
    item: str
    target: int | None
    image: bytes  # PNG
    map: np.ndarray  # (h, w) raw


@dataclass
class Batch:
    """Everything one (method, batch of samples) produced: committed in one transaction."""

    rows: list[Row]
    curves: list[Curve]
    gallery: list[GalleryEntry]
    done: list[tuple[str, str, str]]  # (method, variant, item)
    skips: list[tuple[str, str, str]]  # (method, item, reason)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def float32_blob(values: np.ndarray | torch.Tensor) -> bytes:
    """Little-endian float32 bytes, as `curves.scores`, `gallery.map` and `explanations.map` hold them."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def from_blob(blob: bytes, shape: Sequence[int] | None = None) -> np.ndarray:
    values = np.frombuffer(blob, dtype="<f4")
    return values.reshape(shape) if shape is not None else values


class Store:
    """An open results store. Use as a context manager, or call `close()`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise JitterCamError(f"--db {self.path} is a folder; give a file name, e.g. {self.path / 'results.db'}")
        if not self.path.parent.is_dir():
            raise JitterCamError(f"--db {self.path}: folder {self.path.parent} does not exist")
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise JitterCamError(
                    f"{self.path} is a results store of schema {version}; this version writes {SCHEMA_VERSION}"
                )
        except sqlite3.DatabaseError as exc:
            raise JitterCamError(f"--db {self.path} is not a results store (SQLite: {exc})") from None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------------------------------ writing
    def register(self, run: Run) -> None:
        """Record the configuration (once: a resumed run leaves the first record as it was)."""
        with self._transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run.config_hash, run.experiment, run.model, run.weights, run.dataset,
                 json.dumps(run.config, sort_keys=True), run.rank, run.world_size, run.machine, now()),
            )

    def commit(self, run: Run, seed: int, batch: Batch) -> None:
        """Store one batch's rows, curves, gallery entries, skips and done markers, all or nothing."""
        created = now()
        key = run.config_hash
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(key, run.experiment, run.model, run.weights, run.dataset, r.method, r.options, r.variant, r.item,
                  r.target, r.metric, float(r.value), r.seconds, seed, created) for r in batch.rows],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO curves VALUES (?,?,?,?,?,?,?,?,?)",
                [(key, run.experiment, run.model, run.dataset, c.method, c.variant, c.item, c.kind,
                  float32_blob(c.scores)) for c in batch.curves],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO gallery VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(key, run.model, run.dataset, g.method, g.item, g.target, g.image, float32_blob(g.map),
                  int(g.map.shape[0]), int(g.map.shape[1])) for g in batch.gallery],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO skips VALUES (?,?,?,?,?,?)",
                [(key, run.experiment, run.dataset, method, item, reason) for method, item, reason in batch.skips],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO done VALUES (?,?,?,?)",
                [(key, method, variant, item) for method, variant, item in batch.done],
            )

    def forget_skips(self, config_hash: str) -> int:
        """Delete the configuration's skips, so that `--retry-skipped` computes those items again."""
        with self._transaction():
            return self.db.execute("DELETE FROM skips WHERE config_hash = ?", (config_hash,)).rowcount

    def record_arms(self, config_hash: str, arms: Sequence[tuple[str, str, str]]) -> None:
        """Record `(method, variant, description)`; a description that differs from the stored one for
        the same method and variant is refused (`JitterCamError`), before anything is written."""
        for method, variant, description in arms:
            stored = self.db.execute(
                "SELECT description FROM arms WHERE config_hash=? AND method=? AND variant=?",
                (config_hash, method, variant),
            ).fetchone()
            if stored is not None and stored[0] != description:
                label = f"{method}[{variant}]" if variant else method
                raise JitterCamError(
                    f"{self.path} holds rows of {label} built with other options ({stored[0]}); "
                    "use another --db to compare two settings of one method"
                )
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO arms VALUES (?,?,?,?)", [(config_hash, *arm) for arm in arms]
            )

    def cache_maps(self, entries: Iterable[tuple[str, str, str, int | None, np.ndarray, float]]) -> None:
        """Store raw maps `(key, method, item, target, map, seconds)` in the explanation cache."""
        created = now()
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO explanations VALUES (?,?,?,?,?,?,?,?,?)",
                [(key, method, item, target, int(m.shape[0]), int(m.shape[1]), float32_blob(m), seconds, created)
                 for key, method, item, target, m, seconds in entries],
            )

    # ------------------------------------------------------------------------------------------ reading
    def done(self, config_hash: str) -> set[tuple[str, str, str]]:
        """(method, variant, item) already stored for this configuration."""
        rows = self.db.execute("SELECT method, variant, item FROM done WHERE config_hash = ?", (config_hash,))
        return set(rows)

    def skipped(self, config_hash: str) -> set[tuple[str, str]]:
        """(method, item) skipped for this configuration; method `ALL_METHODS` for every method."""
        return set(self.db.execute("SELECT method, item FROM skips WHERE config_hash = ?", (config_hash,)))

    def cached_maps(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, float | None]]:
        """The cached `(map, seconds)` of those `keys` that are in the cache."""
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
        if table not in ("results", "skips", "curves", "gallery", "done", "arms"):
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

    def __exit__(self, kind, error, _traceback) -> bool:
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
