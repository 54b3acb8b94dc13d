"""The PostgreSQL mirror on real OpenZFS over real SSH (issue #18): a full and an incremental
sync of the lab nodes give the same rows as the SQLite mirror, and a real move runs to the end
with its journal, operator and reason on PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pgserver import PgServer

from xfleet import mirror

from .labkit import Lab
from .test_moves_real import DST, SRC, make_volume, sha

pytestmark = pytest.mark.lab

# what a listing says about a dataset (space figures move with every txg: not compared)
COLUMNS = "node, name, type, guid, createtxg, origin, volsize, volblocksize, compression, tenant"


def rows(where: str | Path) -> list[tuple[Any, ...]]:
    conn = mirror.connect(where, readonly=True)
    try:
        return [tuple(r) for r in conn.execute(
            f"SELECT {COLUMNS} FROM datasets ORDER BY node, name")]
    finally:
        conn.close()


def sync(lab: Lab, where: str | Path, *args: str) -> None:
    res = lab.xfleet("sync", "--json", *args, mirror=where)
    assert res.code == 0, res.explain()


def test_full_and_incremental_syncs_equal_the_sqlite_mirror(
        lab: Lab, pg: PgServer, tmp_path: Path) -> None:
    url, db = pg.database(), tmp_path / "lab.db"
    make = 'zfs create -p -s -V 8M "$0" && zfs snapshot "$0@pg"'
    lab.run(SRC, ["sh", "-c", make, "tank/pg/old vol:0"])
    try:
        sync(lab, url, "--full")
        sync(lab, db, "--full")
        assert rows(url) == rows(db)
        assert {"tank/pg/old vol:0", "tank/pg/old vol:0@pg"} <= {r[1] for r in rows(url)}
        lab.run(SRC, ["sh", "-c", make, "tank/pg/new vol:1"])
        sync(lab, url)  # incremental: from the change feed
        sync(lab, db)
        got = rows(url)
        assert got == rows(db)
        names = {r[1] for r in got}
        assert {"tank/pg/new vol:1", "tank/pg/new vol:1@pg"} <= names
        conn = mirror.connect(url, readonly=True)
        try:
            kinds = [r[0] for r in conn.execute(
                "SELECT kind FROM sync_runs WHERE node = ? ORDER BY id", (SRC,))]
        finally:
            conn.close()
        assert kinds[-1] == "incremental", kinds
    finally:
        lab.run(SRC, ["zfs", "destroy", "-r", "tank/pg"])


def test_a_real_move_with_the_postgresql_mirror(
        lab: Lab, pg: PgServer, monkeypatch: pytest.MonkeyPatch) -> None:
    url = pg.database()
    vol = "tank/m/pg"
    make_volume(lab, vol, mb=16, snapshots=1)
    sync(lab, url)
    before = sha(lab, SRC, vol)
    monkeypatch.setenv("XFLEET_OPERATOR", "alice")
    res = lab.xfleet("--reason", "INC-18 shared mirror", "move", vol, "--to", DST, "--json",
                     mirror=url)
    assert res.code == 0, res.explain()
    m = res.json()
    assert m["state"] == "done" and m["verified"], m
    assert sha(lab, DST, vol) == before
    conn = mirror.connect(url, readonly=True)
    try:
        row = conn.execute("SELECT operator, operator_reason, held_by FROM moves WHERE id = ?",
                           (m["id"],)).fetchone()
        where = {r[0]: r[1] for r in conn.execute(
            "SELECT node, name FROM datasets WHERE name IN (?, ?)", (vol, m["retired_as"]))}
        logged = {r[0] for r in conn.execute(
            "SELECT operator FROM move_log WHERE move = ?", (m["id"],))}
    finally:
        conn.close()
    assert tuple(row) == ("alice", "INC-18 shared mirror", "alice")
    assert where == {DST: vol, SRC: m["retired_as"]}, where
    assert logged == {"alice"}
    listed = lab.xfleet("moves", "list", "--json", mirror=url)
    assert listed.code == 0 and listed.json()[0]["operator"] == "alice", listed.explain()
    res = lab.xfleet("moves", "retire", str(m["id"]), "--destroy", "--yes", mirror=url)
    assert res.code == 0, res.explain()
    lab.run(DST, ["zfs", "destroy", "-r", vol])
