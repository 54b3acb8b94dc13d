"""The mirror's schema, versioning and read-only access."""

import sqlite3
from pathlib import Path

import pytest
from conftest import ROOT

from xfleet import mirror
from xfleet.core.errors import MirrorError, UsageError
from xfleet.mirror.query import run_sql


def test_new_mirror_has_current_schema_and_wal(tmp_path: Path) -> None:
    conn = mirror.connect(tmp_path / "m.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == mirror.SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"nodes", "pools", "datasets", "sync_runs"} <= tables
    cols = [r[1] for r in conn.execute("PRAGMA table_info(datasets)")]
    for c in mirror.DATASET_TABLE_COLUMNS:
        assert c in cols


def test_every_table_and_column_is_documented(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "mirror.md").read_text()
    conn = mirror.connect(tmp_path / "m.db")
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        assert f"`{table}`" in doc, table
        for col in conn.execute(f"PRAGMA table_info({table})"):
            assert f"`{col[1]}`" in doc, f"{table}.{col[1]} missing from docs/mirror.md"


def test_readonly_missing_mirror_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MirrorError) as exc:
        mirror.connect(tmp_path / "nope.db", readonly=True)
    assert "xfleet sync" in str(exc.value)
    assert not (tmp_path / "nope.db").exists()


def test_readonly_connection_refuses_writes(tmp_path: Path) -> None:
    mirror.connect(tmp_path / "m.db").close()
    ro = mirror.connect(tmp_path / "m.db", readonly=True)
    with pytest.raises(UsageError) as exc:
        run_sql(ro, "DELETE FROM datasets")
    assert "read-only" in str(exc.value)
    with pytest.raises(UsageError):
        run_sql(ro, "DROP TABLE datasets")
    assert ro.execute("SELECT count(*) FROM sqlite_master WHERE name='datasets'").fetchone()[0]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "m.db"
    c = sqlite3.connect(p)
    c.execute(f"PRAGMA user_version = {mirror.SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(MirrorError) as exc:
        mirror.connect(p)
    assert "newer than this xfleet" in str(exc.value)


def test_old_schema_is_migrated_by_a_writer_only(tmp_path: Path) -> None:
    p = tmp_path / "m.db"
    sqlite3.connect(p).close()  # version 0: empty file
    with pytest.raises(MirrorError) as exc:
        mirror.connect(p, readonly=True)
    assert "migrate" in str(exc.value)
    mirror.connect(p).close()
    version = mirror.connect(p, readonly=True).execute("PRAGMA user_version").fetchone()[0]
    assert version == mirror.SCHEMA_VERSION


def test_reader_is_not_blocked_by_an_open_write_transaction(tmp_path: Path) -> None:
    p = tmp_path / "m.db"
    w = mirror.connect(p)
    w.execute("BEGIN IMMEDIATE")
    w.execute("INSERT INTO nodes (name, kind) VALUES ('n1', 'sim')")
    r = mirror.connect(p, readonly=True)
    r.execute("PRAGMA busy_timeout = 0")
    assert r.execute("SELECT count(*) FROM nodes").fetchone()[0] == 0  # sees the last commit
    w.execute("COMMIT")
    assert r.execute("SELECT count(*) FROM nodes").fetchone()[0] == 1


def test_threads_opening_a_new_mirror_together_migrate_it_once(tmp_path: Path) -> None:
    # the rollout preflight opens the mirror from one thread per node; before the fix two of
    # them could both apply migration 1 ("table nodes already exists")
    import threading

    db = tmp_path / "new.db"
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def opener() -> None:
        start.wait()
        try:
            mirror.connect(db).close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    conn = mirror.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == mirror.SCHEMA_VERSION
    conn.close()
