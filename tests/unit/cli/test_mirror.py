"""`xfleet mirror init|migrate|status|copy` (xfleet/cli/mirror.py): a synced simulated fleet
copied from SQLite to PostgreSQL and back answers `ls`, `stats` and `moves list` the same on
every copy; a non-empty target is refused; status shows the schema and the counts on both
engines; an old SQLite mirror is migrated and a newer one refused, without tracebacks."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from conftest import Result, run_cli
from pgserver import PgServer

from xfleet import mirror

from .conftest import Cli

VOLUME = "tank/t0011/vol-000299"  # on n1 only, in the sim fleet of tests/conftest.py


def ok(*args: str) -> Result:
    r = run_cli(*args)
    assert r.code == 0, f"xfleet {' '.join(args)}: exit {r.code}\nstderr: {r.err}"
    assert "Traceback" not in r.err, r.err
    return r


def fails(code: int, *args: str) -> Result:
    r = run_cli(*args)
    assert r.code == code, f"xfleet {' '.join(args)}: exit {r.code}, expected {code}\n" \
        f"stdout: {r.out}\nstderr: {r.err}"
    assert "Traceback" not in r.err, r.err
    return r


def answers(inv: Path, where: str) -> dict[str, Any]:
    """What an operator reads from the mirror at `where`: ls, stats and moves list (without
    the figures that age with the clock)."""
    base = ("-i", str(inv), "-m", where)
    stats = ok(*base, "stats", "--json").json()
    for row in stats:
        row.pop("age_seconds", None)
        row.pop("fresh", None)
    return {
        "ls": ok(*base, "ls", "--limit", "0", "--json").json(),
        "ls_text": ok(*base, "ls", "--type", "volume", "--sort", "used", "--desc").out,
        "clones": ok(*base, "ls", "--type", "clone", "--json").json(),
        "stats": stats,
        "moves": ok(*base, "moves", "list", "--json").json(),
        "move": ok(*base, "moves", "show", "1", "--json").json(),
    }


def test_copy_to_postgresql_and_back_gives_the_same_answers(synced: Path, cli: Cli,
                                                             pg: PgServer) -> None:
    inv = str(synced)
    moved = ok("-i", inv, "move", VOLUME, "--to", "n2", "--json").json()
    assert moved["state"] == "done"  # journaled, and both nodes' rows changed
    sqlite_db = str(synced.parent / "mirror.db")
    before = answers(synced, sqlite_db)
    assert len(before["ls"]) > 1000 and before["moves"][0]["id"] == 1

    url = pg.database()
    r = ok("-i", inv, "mirror", "copy", "--to", url)
    assert f"to {url} (postgresql)" in r.out and "verified" in r.out
    assert answers(synced, url) == before

    back = str(synced.parent / "back.db")
    doc = ok("-i", inv, "-m", url, "mirror", "copy", "--to", back, "--json").json()
    assert doc["ok"] is True and (doc["source_engine"], doc["target_engine"]) == (
        "postgresql", "sqlite")
    tables = {t["table"]: t for t in doc["tables"]}
    assert tables["datasets"]["copied"] == tables["datasets"]["target_rows"] == len(before["ls"])
    assert all(t["ok"] for t in doc["tables"]) and tables["move_log"]["copied"] > 0
    assert answers(synced, back) == before


def test_copy_refuses_a_target_with_rows(synced: Path, cli: Cli, pg: PgServer) -> None:
    inv = str(synced)
    url = pg.database()
    ok("-i", inv, "mirror", "copy", "--to", url)
    r = fails(1, "-i", inv, "mirror", "copy", "--to", url)
    assert f"the target {url} is not empty: nodes (2)" in r.err and "--replace" in r.err
    r = fails(2, "-i", inv, "mirror", "copy", "--to", url, "--replace", "--json")
    assert "refusing to replace a mirror's rows without confirmation" in r.err
    assert r.json()["ok"] is False and r.json()["error"]["hint"] == "pass --yes"
    r = ok("-i", inv, "mirror", "copy", "--to", url, "--replace", "--yes")
    assert "replaced" in r.out and "verified" in r.out
    r = fails(1, "-i", inv, "mirror", "copy", "--to", str(synced.parent / "mirror.db"))
    assert "the same mirror" in r.err
    r = fails(1, "-i", inv, "mirror", "copy", "--to", "postgresql://u:secret@db/x")
    assert "carries a password" in r.err and "secret" not in r.err


def test_status_shows_the_version_and_counts_on_both_engines(synced: Path, cli: Cli,
                                                             mirror_at: str) -> None:
    inv = str(synced)
    if mirror_at.endswith(".db"):
        mirror_at = str(synced.parent / "mirror.db")  # the synced one
    else:
        ok("-i", inv, "mirror", "copy", "--to", mirror_at)
    doc = ok("-i", inv, "-m", mirror_at, "mirror", "status", "--json").json()
    engine = "postgresql" if "://" in mirror_at else "sqlite"
    assert (doc["engine"], doc["location"], doc["state"]) == (engine, mirror_at, "current")
    assert doc["schema_version"] == doc["xfleet_schema_version"] == mirror.SCHEMA_VERSION
    counts = {t["table"]: t for t in doc["tables"]}
    n = len(ok("-i", inv, "-m", mirror_at, "ls", "--limit", "0", "--json").json())
    assert (counts["datasets"]["rows"], counts["datasets"]["counted"]) == (
        n, "sum of nodes.datasets")
    assert counts["nodes"]["rows"] == 2 and counts["pools"]["rows"] == 2
    assert doc["open_jobs"] == {"compression_runs": 0, "moves": 0, "play_runs": 0,
                                "rollouts": 0}
    assert doc["size_bytes"] > 0 and [x["node"] for x in doc["nodes"]] == ["n1", "n2"]
    text = ok("-i", inv, "-m", mirror_at, "mirror", "status").out
    assert f"mirror:  {mirror_at}  ({engine})" in text
    assert f"version {mirror.SCHEMA_VERSION} (this xfleet: {mirror.SCHEMA_VERSION}; current)" \
        in text
    assert "sum of nodes.datasets" in text and f"{n:,}" in text


def test_init_is_idempotent_on_both_engines(tmp_path: Path, mirror_at: str) -> None:
    r = ok("-m", mirror_at, "mirror", "init")
    engine = "postgresql" if "://" in mirror_at else "sqlite"
    assert r.out.strip() == f"created the {engine} mirror {mirror_at} (schema version " \
        f"{mirror.SCHEMA_VERSION})"
    doc = ok("-m", mirror_at, "mirror", "init", "--json").json()
    assert (doc["created"], doc["before"], doc["after"]) == (
        False, mirror.SCHEMA_VERSION, mirror.SCHEMA_VERSION)
    assert "nothing to do" in ok("-m", mirror_at, "mirror", "init").out


def test_migrate_brings_an_old_sqlite_mirror_forward_and_refuses_a_newer(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)  # what xfleet of schema v2 left: migrations 1 and 2 only
    for v in (1, 2):
        for stmt in mirror.split_sql(mirror.MIGRATIONS[v]):
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {v}")
    conn.execute("INSERT INTO nodes (name, kind, datasets) VALUES ('n1', 'sim', 7)")
    conn.commit()
    conn.close()
    r = fails(1, "-m", str(old), "ls")
    assert "run 'xfleet mirror migrate'" in r.err
    st = ok("-m", str(old), "mirror", "status", "--json").json()
    assert (st["schema_version"], st["state"]) == (2, "older: run xfleet mirror migrate")

    r = ok("-m", str(old), "mirror", "migrate")
    assert r.out.strip() == f"migrated the sqlite mirror {old} from schema version 2 to " \
        f"{mirror.SCHEMA_VERSION}"
    assert ok("-m", str(old), "mirror", "status", "--json").json()["state"] == "current"
    assert ok("-m", str(old), "mirror", "migrate", "--json").json()["migrated"] is False
    assert ok("-m", str(old), "sql", "SELECT name, datasets FROM nodes", "--json").json() == [
        {"name": "n1", "datasets": 7}]

    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {mirror.SCHEMA_VERSION + 1}")
    conn.close()
    r = fails(1, "-m", str(newer), "mirror", "migrate")
    assert f"schema version {mirror.SCHEMA_VERSION + 1}, newer than this xfleet" in r.err
    assert "upgrade xfleet" in r.err
    r = fails(1, "-m", str(tmp_path / "none.db"), "mirror", "migrate", "--json")
    assert "there is no mirror at" in r.json()["error"]["message"]
    assert not (tmp_path / "none.db").exists()
