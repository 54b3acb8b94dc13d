"""The mirror's schema (xfleet/mirror/schema.py): its version, its migrations, its docs."""

import sqlite3
from pathlib import Path

import pytest
from conftest import ROOT

from xfleet import mirror
from xfleet.core.errors import MirrorError


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
