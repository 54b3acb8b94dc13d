"""Copying a whole mirror between engines (xfleet/mirror/copy.py): a synced simulated fleet
from SQLite to PostgreSQL and back is the same row for row, ids go on after the copied ones,
a non-empty target is refused (or replaced when confirmed), and the same mirror is refused as
its own target."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, write_sim_inventory
from pgserver import PgServer

from xfleet import mirror
from xfleet.core.errors import MirrorError
from xfleet.mirror import copy
from xfleet.mirror.status import schema_tables


def _synced(tmp_path: Path) -> Path:
    """A simulated two-node fleet synced into SQLite, with a (failed) move journaled; returns
    the mirror's path."""
    inv = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 1, "volumes": 120},
                                                        "n2": {"seed": 2, "volumes": 80,
                                                               "data_path": "false"}})
    r = run_cli("-i", str(inv), "sync")
    assert r.code == 0, f"xfleet sync: exit {r.code}\n{r.err}"
    db = tmp_path / "mirror.db"
    conn = sqlite3.connect(db)
    volume = conn.execute("SELECT name FROM datasets WHERE node = 'n1' AND type = 'volume' "
                          "ORDER BY name DESC LIMIT 1").fetchone()[0]
    conn.close()
    r = run_cli("-i", str(inv), "move", volume, "--to", "n2")  # n2 has no data path
    assert r.code == 1 and "no data path" in r.out + r.err, f"xfleet move: exit {r.code}\n{r.err}"
    return db


def _dump(where: str | Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted (by their text: NULLs sort alike on both engines)."""
    conn = mirror.connect(where, readonly=True)
    try:
        out = {}
        for t in schema_tables():
            cols = [d[0] for d in conn.execute(f"SELECT * FROM {t} LIMIT 0").description]
            out[t] = sorted((tuple(r) for r in conn.execute(
                f"SELECT {', '.join(sorted(cols))} FROM {t}")), key=repr)
        return out
    finally:
        conn.close()


def test_sqlite_to_postgresql_and_back_is_the_same_row_for_row(tmp_path: Path,
                                                               pg: PgServer) -> None:
    src = _synced(tmp_path)
    before = _dump(src)
    assert len(before["datasets"]) > 500 and before["moves"] and before["move_log"]
    url = pg.database()
    seen: dict[str, list[tuple[int, int]]] = {}
    report = copy.copy_mirror(src, url, batch=300,
                              progress=lambda t, done, total: seen.setdefault(t, []).append(
                                  (done, total)))
    assert report.ok and report.target_engine == "postgresql"
    assert [t.table for t in report.tables] == list(schema_tables())
    assert {t.table: t.copied for t in report.tables} == {t: len(r) for t, r in before.items()}
    assert _dump(url) == before
    # the datasets went in batches of 300, each reported, up to the table's count
    n = len(before["datasets"])
    assert seen["datasets"][-1] == (n, n) and len(seen["datasets"]) == -(-n // 300)
    assert [d for d, _ in seen["datasets"]] == sorted(d for d, _ in seen["datasets"])

    back = tmp_path / "back.db"
    again = copy.copy_mirror(url, back, batch=500)
    assert again.ok and again.source_engine == "postgresql" and again.target_engine == "sqlite"
    assert _dump(back) == before


def test_logs_keep_their_order_and_ids_go_on_after_the_copied_ones(
        tmp_path: Path, mirror_at: str) -> None:
    src = tmp_path / "src.db"
    conn = mirror.connect(src)
    with mirror.transaction(conn, "test rows"):
        for i in (3, 7, 42):
            conn.execute("INSERT INTO sync_runs (id, node, kind, started_at, status) "
                         "VALUES (?, 'n1', 'full', 1.0, 'ok')", (i,))
        for msg in ("b", "a", "c"):  # same `at`: only the insertion order tells them apart
            conn.execute("INSERT INTO move_log (move, at, state, message) "
                         "VALUES (1, 5.0, 'base', ?)", (msg,))
    conn.close()
    copy.copy_mirror(src, mirror_at)
    dst = mirror.connect(mirror_at)
    try:
        assert [r[0] for r in dst.execute(
            "SELECT message FROM move_log WHERE move = 1 ORDER BY at, rowid")] == ["b", "a", "c"]
        with mirror.transaction(dst, "a later run"):
            new = mirror.inserted_id(dst.execute(
                "INSERT INTO sync_runs (node, kind, started_at, status) "
                "VALUES ('n1', 'full', 2.0, 'running') RETURNING id"))
        assert new == 43
    finally:
        dst.close()


def test_a_target_with_rows_is_refused_unless_replaced(tmp_path: Path, mirror_at: str) -> None:
    src = tmp_path / "src.db"
    conn = mirror.connect(src)
    with mirror.transaction(conn, "test rows"):
        conn.execute("INSERT INTO nodes (name, kind) VALUES ('fresh', 'sim')")
    conn.close()
    dst = mirror.connect(mirror_at)
    with mirror.transaction(dst, "test rows"):
        dst.execute("INSERT INTO nodes (name, kind) VALUES ('old1', 'sim'), ('old2', 'sim')")
        dst.execute("INSERT INTO sync_runs (id, node, kind, started_at, status) "
                    "VALUES (99, 'old1', 'full', 1.0, 'ok')")
    dst.close()

    def nodes() -> list[str]:
        c = mirror.connect(mirror_at, readonly=True)
        try:
            return [r[0] for r in c.execute("SELECT name FROM nodes ORDER BY name")]
        finally:
            c.close()

    with pytest.raises(MirrorError) as exc:
        copy.copy_mirror(src, mirror_at)
    assert "is not empty: nodes (2), sync_runs (1)" in exc.value.message
    assert "--replace" in (exc.value.hint or "")
    assert nodes() == ["old1", "old2"]

    asked: list[dict[str, int]] = []

    def refuse(present: dict[str, int]) -> None:
        asked.append(present)
        raise MirrorError("no")

    with pytest.raises(MirrorError):
        copy.copy_mirror(src, mirror_at, replace=True, confirm_replace=refuse)
    assert asked == [{"nodes": 2, "sync_runs": 1}] and nodes() == ["old1", "old2"]

    report = copy.copy_mirror(src, mirror_at, replace=True, confirm_replace=asked.append)
    assert report.ok and report.replaced == {"nodes": 2, "sync_runs": 1}
    assert nodes() == ["fresh"]
    c = mirror.connect(mirror_at)
    try:
        assert c.execute("SELECT count(*) FROM sync_runs").fetchone()[0] == 0
    finally:
        c.close()


def test_the_source_itself_is_refused_as_its_target(tmp_path: Path, pg: PgServer) -> None:
    src = tmp_path / "m.db"
    mirror.connect(src).close()
    (tmp_path / "link.db").symlink_to(src)
    with pytest.raises(MirrorError) as exc:
        copy.copy_mirror(src, tmp_path / "link.db", replace=True)
    assert "the same mirror" in exc.value.message
    url = pg.database()
    mirror.connect(url).close()
    with pytest.raises(MirrorError) as exc:
        copy.copy_mirror(url, url + "&application_name=other", replace=True)
    assert "the same mirror" in exc.value.message


def test_an_older_target_with_rows_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    source = tmp_path / "new.db"
    mirror.connect(source).close()
    target = tmp_path / "old.db"
    conn = sqlite3.connect(target)
    for v in (1, 2, 3):  # a mirror of an older xfleet, with a node in it
        for stmt in mirror.split_sql(mirror.MIGRATIONS[v]):
            conn.execute(stmt)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO nodes (name, kind) VALUES ('n1', 'sim')")
    conn.commit()
    conn.close()
    with pytest.raises(MirrorError) as exc:
        copy.copy_mirror(source, target)
    assert "is not empty: nodes (1)" in str(exc.value)
    conn = sqlite3.connect(target)
    try:  # refused as it was: not migrated first
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    finally:
        conn.close()
