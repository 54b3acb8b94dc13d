"""Read-only means read-only (issue #16): `xfleet sql` and playbook `query`/`assert`/`when`
cannot create, attach or change files through SQL; `play --check` never creates, migrates
or writes the mirror."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, write_sim_inventory

from xfleet import mirror


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    inv = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 1, "volumes": 20}})
    assert run_cli("-i", str(inv), "sync").code == 0
    return inv


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("statement", [
    "ATTACH '{dir}/attached.db' AS a",
    "VACUUM INTO '{dir}/copy.db'",
    "VACUUM",
    "PRAGMA user_version = 99",
    "PRAGMA journal_mode = DELETE",
    "DELETE FROM datasets",
    "CREATE TABLE x (y)",
])
def test_sql_refuses_what_would_write(fleet: Path, tmp_path: Path, statement: str) -> None:
    db = tmp_path / "mirror.db"
    before = _digest(db)
    res = run_cli("-i", str(fleet), "sql", statement.format(dir=tmp_path))
    assert res.code == 2, (statement, res.code, res.err)
    assert "Traceback" not in res.err, res.err
    assert "refused" in res.err or "read-only" in res.err, res.err
    assert not (tmp_path / "attached.db").exists() and not (tmp_path / "copy.db").exists()
    assert _digest(db) == before


def test_sql_still_reads_and_shows_what_is_not_utf8(fleet: Path, tmp_path: Path) -> None:
    res = run_cli("-i", str(fleet), "sql", "SELECT count(*) AS n FROM datasets", "--json")
    assert res.code == 0 and res.json()[0]["n"] > 0
    res = run_cli("-i", str(fleet), "sql", "PRAGMA table_info(datasets)", "--json")
    assert res.code == 0 and any(r["name"] == "tenant" for r in res.json())
    conn = sqlite3.connect(tmp_path / "mirror.db")  # another tool wrote bytes that are not UTF-8
    conn.execute("UPDATE datasets SET tenant = CAST(x'6869ff' AS TEXT) WHERE rowid = "
                 "(SELECT min(rowid) FROM datasets)")
    conn.commit()
    conn.close()
    res = run_cli("-i", str(fleet), "sql", "SELECT tenant FROM datasets WHERE tenant LIKE "
                  "'hi%'", "--json")
    assert res.code == 0, res.err
    assert res.json() == [{"tenant": "hi\ufffd"}]
    big = run_cli("-i", str(fleet), "sql", "SELECT :n AS n", "--param", "n=" + "9" * 30)
    assert big.code == 2 and "out of range" in big.err and "Traceback" not in big.err


def test_a_playbook_query_cannot_attach(fleet: Path, tmp_path: Path) -> None:
    pb = tmp_path / "attach.yaml"
    pb.write_text("name: sneaky\nsteps:\n"
                  f"  - query: {{sql: \"ATTACH '{tmp_path}/p.db' AS p\"}}\n")
    for extra in ([], ["--check"]):
        res = run_cli("-i", str(fleet), "play", str(pb), *extra)
        assert res.code != 0 and "Traceback" not in res.err, res.err
        assert not (tmp_path / "p.db").exists()


def test_play_check_never_creates_or_migrates_the_mirror(tmp_path: Path) -> None:
    inv = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 1, "volumes": 20}})
    pb = ROOT / "playbooks" / "nightly-snapshot.yaml"
    res = run_cli("-i", str(inv), "play", str(pb), "--check")
    assert res.code == 1 and "does not exist yet" in res.err, res.err
    assert not (tmp_path / "mirror.db").exists()
    # an older mirror is read as it is: --check says to migrate it, and does not
    assert run_cli("-i", str(inv), "sync").code == 0
    db = tmp_path / "mirror.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {mirror.SCHEMA_VERSION - 1}")
    conn.commit()
    conn.close()
    before = _digest(db)
    res = run_cli("-i", str(inv), "play", str(pb), "--check")
    assert res.code == 1 and "schema version" in res.err, res.err
    assert _digest(db) == before
    # a current mirror: --check describes the run and writes nothing (no run journaled)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {mirror.SCHEMA_VERSION}")  # as it was
    conn.commit()
    conn.close()
    before = _digest(db)
    res = run_cli("-i", str(inv), "play", str(pb), "--check")
    assert res.code == 0, res.err
    assert _digest(db) == before  # (a reader may leave SQLite's empty -wal/-shm beside it)
    wal = tmp_path / "mirror.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
