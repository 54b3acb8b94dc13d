"""A mirror's status and its schema (xfleet/mirror/status.py): figures on both engines, an
older mirror seen as it is and then migrated, a newer one refused, init idempotent."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from xfleet import mirror
from xfleet.core.errors import MirrorError
from xfleet.mirror import jobs, status


def old_sqlite_mirror(path: Path, version: int) -> Path:
    """An SQLite mirror as an older xfleet left it: migrations 1..version only, and a node."""
    conn = sqlite3.connect(path)
    for v in range(1, version + 1):
        for stmt in mirror.split_sql(mirror.MIGRATIONS[v]):
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {v}")
    conn.execute("INSERT INTO nodes (name, kind, datasets) VALUES ('n1', 'sim', 12)")
    conn.commit()
    conn.close()
    return path


def test_schema_tables_are_every_table_of_a_new_mirror(tmp_path: Path) -> None:
    conn = mirror.connect(tmp_path / "m.db")
    made = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert set(status.schema_tables()) == made
    assert status.schema_tables()[:3] == ("nodes", "pools", "datasets")


def test_status_figures_on_both_engines(mirror_at: str) -> None:
    kind = jobs.JobKind("moves", "move", "xfleet moves list", frozenset({"failed", "base"}))
    conn = mirror.connect(mirror_at)
    with mirror.transaction(conn, "test rows"):
        conn.execute("INSERT INTO nodes (name, kind, datasets, last_success, last_attempt) "
                     "VALUES ('n1', 'sim', 1000000, 10.0, 11.0), ('n2', 'sim', 5, NULL, 12.0)")
        conn.execute("INSERT INTO datasets (node, pool, name, type, synced_at, sync_run) "
                     "VALUES ('n1', 'tank', 'tank/a', 'volume', 1.0, 1)")
        for i, state in enumerate(("failed", "done", "base")):
            conn.execute("INSERT INTO moves (volume, source_node, target_node, target_volume, "
                         "state, created_at, updated_at) VALUES (?, 'n1', 'n2', ?, ?, 1, 1)",
                         (f"tank/v{i}", f"tank/v{i}", state))
    conn.close()
    st = status.gather(mirror_at, [kind])
    assert st.engine == ("sqlite" if "://" not in mirror_at else "postgresql")
    assert st.location == mirror_at and st.state == "current"
    assert st.schema_version == st.xfleet_schema_version == mirror.SCHEMA_VERSION
    counts = {t.table: (t.rows, t.counted) for t in st.tables}
    assert counts["datasets"] == (1000005, status.NODE_SUMS)  # the syncs' figures, no scan
    assert counts["nodes"] == (2, status.EXACT) and counts["moves"] == (3, status.EXACT)
    assert counts["rollout_log"] == (0, status.EXACT)
    assert st.open_jobs == {"moves": 2}
    assert st.size_bytes is not None and st.size_bytes > 0
    assert [(n["node"], n["last_success"], n["datasets"]) for n in st.nodes] == [
        ("n1", 10.0, 1000000), ("n2", None, 5)]
    doc = st.to_dict()
    assert doc["state"] == "current" and doc["tables"][2]["table"] == "datasets"


def test_an_older_mirror_is_shown_as_it_is_then_migrated(tmp_path: Path) -> None:
    db = old_sqlite_mirror(tmp_path / "old.db", 3)
    st = status.gather(db)
    assert (st.schema_version, st.state) == (3, "older: run xfleet mirror migrate")
    counts = {t.table: t.rows for t in st.tables}
    assert counts["moves"] == 0 and counts["rollouts"] is None  # v7's table: not there yet
    assert status.version_at(db) == 3  # looking did not migrate it

    done = status.prepare(db, create=False)
    assert (done.before, done.after, done.migrated, done.created) == (
        3, mirror.SCHEMA_VERSION, True, False)
    conn = mirror.connect(db, readonly=True)
    assert [tuple(r) for r in conn.execute("SELECT name, datasets FROM nodes")] == [("n1", 12)]
    conn.close()
    again = status.prepare(db, create=False)
    assert (again.before, again.after, again.migrated) == (mirror.SCHEMA_VERSION,) * 2 + (False,)


def test_newer_and_missing_mirrors_are_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    c = sqlite3.connect(newer)
    c.execute(f"PRAGMA user_version = {mirror.SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(MirrorError) as exc:
        status.prepare(newer, create=True)
    assert "newer than this xfleet" in exc.value.message and "upgrade xfleet" in str(exc.value)
    assert status.gather(newer).state == "newer than this xfleet: upgrade xfleet"

    missing = tmp_path / "missing.db"
    with pytest.raises(MirrorError) as exc:
        status.prepare(missing, create=False)
    assert "no mirror at" in exc.value.message and "mirror init" in (exc.value.hint or "")
    with pytest.raises(MirrorError):
        status.gather(missing)
    assert not missing.exists()


def test_init_creates_once_on_both_engines(mirror_at: str) -> None:
    first = status.prepare(mirror_at, create=True)
    assert first.created and first.after == mirror.SCHEMA_VERSION
    second = status.prepare(mirror_at, create=True)
    assert (second.created, second.migrated, second.before) == (
        False, False, mirror.SCHEMA_VERSION)
