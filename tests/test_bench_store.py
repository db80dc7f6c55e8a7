"""The results store: the shared schema, one transaction per batch, no row stored twice, clear errors."""
from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from jittercam.bench.store import ALL_METHODS, Batch, GalleryEntry, Row, Run, Store, from_blob, read_only
from jittercam.errors import JitterCamError

RUN = Run("abc", "local-accuracy", "tiny", "random", "stand-in", {"num_classes": 5}, 0, 1, "test machine", seed=7)


def _batch(values: dict[str, float], method: str = "gradcam") -> Batch:
    rows = [Row(method, "", "", None, item, 1, "deletion", value, np.array([1.0, 0.5, 0.0]), 0.5)
            for item, value in values.items()]
    gallery = [GalleryEntry(method, item, 1, b"png", np.ones((2, 3))) for item in values]
    return Batch(rows, gallery, [(method, "", item) for item in values], [])


def test_schema_is_the_shared_one(tmp_path):
    with Store(tmp_path / "r.db") as store:
        columns = {table: [row[1] for row in store.db.execute(f"PRAGMA table_info({table})")]
                   for table in ("runs", "results", "skips", "gallery", "done", "arms")}
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == 2
    # the run's description once, in `runs`; each result row typed: the swept parameter and its value, a curve
    assert columns["results"] == ["config_hash", "method", "variant", "item", "metric", "parameter", "at", "target",
                                  "value", "curve", "seconds"]
    assert columns["runs"] == ["config_hash", "experiment", "model", "weights", "dataset", "seed", "config", "rank",
                               "world_size", "machine", "created", "class_names"]
    assert columns["gallery"][-4:] == ["image", "map", "height", "width"]
    assert columns["arms"][-2:] == ["description", "options"]


def test_a_batch_is_stored_once_and_read_back(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.register(RUN)
        store.register(RUN)  # a resumed run: the first record stays
        store.commit(RUN, _batch({"a": 0.25, "b": 0.5}))
        store.commit(RUN, _batch({"a": 0.99}))  # the same key again: ignored, not replaced
        assert store.count("results", "abc") == 2
        assert store.done("abc") == {("gradcam", "", "a"), ("gradcam", "", "b")}
        (value, scores), = store.db.execute("SELECT value, curve FROM results WHERE item='a'")
        (seed,), = store.db.execute("SELECT seed FROM runs")
        blob, height, width = store.db.execute("SELECT map, height, width FROM gallery WHERE item='a'").fetchone()
        assert store.db.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    assert (value, seed) == (0.25, 7)
    assert from_blob(blob, (height, width)).tolist() == [[1.0] * 3] * 2
    assert from_blob(scores).tolist() == [1.0, 0.5, 0.0]


def test_a_failed_batch_leaves_nothing(tmp_path):
    with Store(tmp_path / "r.db") as store:
        bad = _batch({"a": 0.25})
        bad.rows.append(Row("gradcam", "", "", None, "b", 1, "deletion", "not a number", None, None))  # float() fails
        with pytest.raises(ValueError):
            store.commit(RUN, bad)
        assert store.count("results", "abc") == 0 and store.count("done", "abc") == 0
        assert store.count("gallery", "abc") == 0


def test_an_older_store_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE runs (config_hash TEXT)")
        old.execute("PRAGMA user_version=1")
    with pytest.raises(JitterCamError, match=r"schema 1 .*another store file"):
        Store(path)


def test_skips_and_retry(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.commit(RUN, Batch([], [], [], [(ALL_METHODS, "x", "not an image: x.jpg"), ("rise", "y", "odd")]))
        assert store.skipped("abc") == {("", "x"), ("rise", "y")}
        assert store.forget_skips("abc") == 2
        assert store.skipped("abc") == set()


def test_explanation_cache(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.cache_maps([("k1", "gradcam", "a", 3, np.arange(6, dtype=np.float32).reshape(2, 3), 0.1)])
        found = store.cached_maps(["k1", "k2"])
    assert list(found) == ["k1"]
    assert found["k1"][0].tolist() == [[0, 1, 2], [3, 4, 5]] and found["k1"][1] == pytest.approx(0.1)


def test_a_method_with_other_options_is_refused_once_it_has_results(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.record_arms("abc", [("rise", "", '{"masks": 100}', "RISE(masks=100)")])
        store.record_arms("abc", [("rise", "", '{"masks": 100}', "RISE(masks=100)"),
                                  ("gradcam", "", "{}", "GradCAM()")])
        # no result yet (a run stopped before its first batch): the new options are taken
        store.record_arms("abc", [("gradcam", "", "{}", "GradCAM()"),
                                  ("rise", "", '{"masks": 500}', "RISE(masks=500)")])
        store.commit(RUN, _batch({"a": 0.5, "b": 0.25}, method="rise"))
        with pytest.raises(JitterCamError) as refused:
            store.record_arms("abc", [("gradcam", "", "{}", ""), ("rise", "", '{"masks": 8000}', "")])
        # how many, what differs, and both ways out: drop the method's rows, or another store file
        assert str(refused.value).startswith("rise was computed with other options (masks 500, now 8000) for 2 items "
                                             "(2 result rows) of this configuration: drop rise deletes")
        assert refused.value.option == "drop" and f"another store file than {store.path}" in str(refused.value)
        store.record_arms("other-config", [("rise", "", '{"masks": 8000}', "")])  # another configuration: fine
        assert store.count("arms", "abc") == 2
        assert store.db.execute("SELECT description FROM arms WHERE method='rise' AND config_hash='abc'").fetchone() \
            == ('{"masks": 500}',)


@pytest.mark.parametrize("content", [b"this is no database" * 100, None])
def test_not_a_store(tmp_path, content):
    path = tmp_path / "r.db"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(JitterCamError) as error:
        Store(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_missing_folder(tmp_path):
    with pytest.raises(JitterCamError, match="does not exist"):
        Store(tmp_path / "nowhere" / "r.db")
    assert not (tmp_path / "nowhere").exists()


def test_other_readers_see_only_committed_batches(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.commit(RUN, _batch({"a": 0.25}))
        reader = sqlite3.connect(f"file:{tmp_path / 'r.db'}?mode=ro", uri=True)
        assert reader.execute("SELECT count(*) FROM results").fetchone()[0] == 1
        reader.close()


def test_dropping_a_method_deletes_its_rows_and_takes_the_new_options(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.record_arms("abc", [("gradcam", "", "{}", ""), ("rise", "", '{"masks": 500}', "")])
        store.commit(RUN, _batch({"a": 0.5, "b": 0.25}, method="rise"))
        store.commit(RUN, _batch({"a": 0.75}, method="gradcam"))
        store.commit(RUN, Batch([], [], [], [("rise", "c", "refused"), (ALL_METHODS, "d", "unreadable")]))
        assert store.record_arms("abc", [("gradcam", "", "{}", ""), ("rise", "", '{"masks": 8000}', "")],
                                 drop=["rise"]) == {"rise": 2}
        assert store.done("abc") == {("gradcam", "", "a")}  # gradcam's rows stay
        assert store.count("results", "abc") == 1 and store.count("gallery", "abc") == 1
        assert store.skipped("abc") == {(ALL_METHODS, "d")}  # an unreadable item stays skipped for every method
        assert store.db.execute("SELECT description FROM arms WHERE method='rise'").fetchone() == ('{"masks": 8000}',)


def test_a_refusal_deletes_nothing_even_with_drop(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.record_arms("abc", [("gradcam", "", "{}", ""), ("rise", "", '{"masks": 500}', "")])
        store.commit(RUN, _batch({"a": 0.5}, method="rise"))
        store.commit(RUN, _batch({"a": 0.75}, method="gradcam"))
        with pytest.raises(JitterCamError, match=r"^gradcam was computed with other options"):
            store.record_arms("abc", [("gradcam", "", '{"layer": 1}', ""), ("rise", "", '{"masks": 8000}', "")],
                              drop=["rise"])
        assert store.count("results", "abc") == 2


def _side_files(folder):
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(("-wal", "-shm", "-journal")))


def _read(path) -> int:
    with read_only(path) as uri:
        connection = sqlite3.connect(uri, uri=True)
        try:
            return connection.execute("SELECT count(*) FROM results").fetchone()[0]
        finally:
            connection.close()


def test_reading_a_closed_store_creates_nothing_beside_it(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.commit(RUN, _batch({"a": 0.5, "b": 0.25}))
    assert _side_files(tmp_path) == []
    assert _read(tmp_path / "r.db") == 2
    assert _side_files(tmp_path) == []
    # what SQLite's `mode=ro` alone does to the same file: it leaves its log and index behind
    sqlite3.connect(f"file:{tmp_path / 'r.db'}?mode=ro", uri=True).execute("SELECT 1 FROM results").fetchall()
    assert _side_files(tmp_path) == ["r.db-shm", "r.db-wal"]


def test_reading_a_store_being_written_sees_its_commits_and_creates_nothing(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.commit(RUN, _batch({"a": 0.5, "b": 0.25}))  # committed to the log, not yet to the file
        side = _side_files(tmp_path)
        assert _read(tmp_path / "r.db") == 2
        assert _side_files(tmp_path) == side


def test_reading_a_log_copied_without_its_index_creates_no_index(tmp_path):
    """A store copied with its `-wal` but not its `-shm` (a run killed, its files copied elsewhere): the
    rows in the log are read, and no `-shm` appears beside the copy."""
    with Store(tmp_path / "r.db") as store:
        store.db.execute("PRAGMA wal_autocheckpoint=0")
        store.commit(RUN, _batch({"a": 0.5, "b": 0.25}))
        copy = tmp_path / "copy"
        copy.mkdir()
        for suffix in ("", "-wal"):
            shutil.copyfile(f"{store.path}{suffix}", copy / f"r.db{suffix}")
    file_alone = sqlite3.connect(f"{(copy / 'r.db').as_uri()}?immutable=1", uri=True)
    try:
        assert file_alone.execute("SELECT count(*) FROM sqlite_master WHERE name='results'").fetchone() == (0,)
    finally:
        file_alone.close()
    assert _read(copy / "r.db") == 2
    assert _side_files(copy) == ["r.db-wal"]
