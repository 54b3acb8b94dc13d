"""A full sync against real OpenZFS: the mirror must equal what `zfs list -Hp` reports.

Drives xfleet as a user would: the CLI in a subprocess, then the SQLite mirror read directly.
"""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tools import scenario as sc

from .labkit import TENANT, Lab, mirror_rows

pytestmark = pytest.mark.lab

V = "tank/vols"
NODES = ("lab1", "lab2")
# lab2 gets a smaller, different set (so the two nodes' rows cannot be confused).
LAB2_STEPS: list[dict[str, Any]] = [
    {"op": "create_filesystem", "name": V, "properties": {TENANT: "beta"}},
    {"op": "create_volume", "name": f"{V}/vm disk.0", "volsize": "128M", "sparse": True,
     "properties": {"compression": "zstd", "volblocksize": "64K"}},
    {"op": "write", "name": f"{V}/vm disk.0", "source": "text", "size_mb": 8, "offset_mb": 0},
    {"op": "snapshot", "name": f"{V}/vm disk.0@t:0"},
    {"op": "clone", "snapshot": f"{V}/vm disk.0@t:0", "name": f"{V}/vm disk.0-branch_a",
     "properties": {TENANT: "beta:dev"}},
    {"op": "create_volume", "name": f"{V}/thick-8k", "volsize": "64M", "sparse": False,
     "properties": {"compression": "off", "volblocksize": "8K", TENANT: "gamma"}},
    {"op": "write", "name": f"{V}/thick-8k", "source": "urandom", "size_mb": 4, "offset_mb": 0},
]


# the fixtures' scenario with a quarter of its data: its writes were most of this module's
# time under TCG, and what the tests check (names, chains, compression, space) needs no more
BLOCK_KIB = 256


def play(lab: Lab, node: str, steps: list[dict[str, Any]]) -> None:
    lab.run(node, sc.script_argv(sc.scaled(steps, BLOCK_KIB)))  # one round trip for all
    lab.run(node, ["zpool", "sync", "tank"])


def settled(lab: Lab) -> dict[str, list[tuple[Any, ...]]]:
    """Each node's listing once it stays the same across a `zpool sync`: space accounting
    lags writes, and an async destroy frees its blocks over the next txgs."""
    last = {n: lab.zfs_list(n) for n in NODES}
    for _ in range(10):
        for n in NODES:
            lab.run(n, ["zpool", "sync", "tank"])
        time.sleep(0.5)
        now = {n: lab.zfs_list(n) for n in NODES}
        if now == last:
            return now
        last = now
    raise AssertionError("zfs list kept changing across zpool syncs: the pool never settled")


def settled_sync(lab: Lab, db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Sync a settled fleet; the listing just before and just after must be the same, or
    the mirror could hold a figure from between the two. An incremental sync re-fetches
    only what the change feed names, so a retry asks for the space refresh as well (the
    figures of untouched rows, such as the pool root's after a destroy, are otherwise
    refreshed on the inventory's schedule)."""
    for attempt in range(4):
        before = settled(lab)
        res = lab.xfleet("sync", "--json", *(["--refresh"] if attempt else []), mirror=db)
        assert res.code == 0, res.explain()
        report = res.json()
        assert report["ok"] is True
        assert {n["node"]: n["ok"] for n in report["nodes"]} == {"lab1": True, "lab2": True}
        after = {n: lab.zfs_list(n) for n in NODES}
        if before == after:
            return after
    raise AssertionError("zfs list kept changing across syncs: the pool never settled")


@pytest.fixture(scope="module")
def synced(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    with ThreadPoolExecutor(2) as pool:  # two VMs: both at once
        for f in [pool.submit(play, lab, "lab1", sc.default_scenario("tank")),
                  pool.submit(play, lab, "lab2", LAB2_STEPS)]:
            f.result()
    db = tmp_path_factory.mktemp("mirror") / "lab.db"
    listing = settled_sync(lab, db)
    return db, listing


def test_mirror_equals_zfs_list_on_every_node(synced: tuple[Path, dict[str, Any]]) -> None:
    db, listing = synced
    for node in ("lab1", "lab2"):
        expected = listing[node]
        got = mirror_rows(db, node)
        assert [r[0] for r in got] == [r[0] for r in expected], f"{node}: names differ"
        for e, g in zip(expected, got, strict=True):
            assert tuple(g) == tuple(e), f"{node}: {e[0]!r}: mirror {g!r} != zfs {e!r}"


def test_node_and_pool_columns(synced: tuple[Path, dict[str, Any]]) -> None:
    db, listing = synced
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT node, pool, name FROM datasets").fetchall()
    conn.close()
    assert len(rows) == sum(len(v) for v in listing.values())
    for node, pool, name in rows:
        assert node in ("lab1", "lab2")
        assert pool == "tank" and name.split("/")[0].split("@")[0].split("#")[0] == pool


def test_odd_names_guids_origins_and_tenants(synced: tuple[Path, dict[str, Any]]) -> None:
    db, _ = synced
    conn = sqlite3.connect(db)
    q = "SELECT type, guid, origin, tenant, compression FROM datasets WHERE node=? AND name=?"
    db1 = conn.execute(q, ("lab1", f"{V}/db 1")).fetchone()
    assert db1[0] == "volume" and db1[3] == "globex corp" and db1[4] == "gzip-9"
    odd = conn.execute(q, ("lab1", f"{V}/a:b.c-d_e@x:y.z-w_v")).fetchone()
    assert odd[0] == "snapshot" and odd[1].isdigit() and int(odd[1]) < 2**64
    # clone of a clone, and the promoted pair (the origin moved to the promoted clone)
    assert conn.execute(q, ("lab1", f"{V}/branch-1.1")).fetchone()[2] == f"{V}/branch-1@s1"
    assert conn.execute(q, ("lab1", f"{V}/pg-main")).fetchone()[2] == f"{V}/pg-main-next@s2"
    assert conn.execute(q, ("lab1", f"{V}/pg-main-next")).fetchone()[2] is None
    assert conn.execute(q, ("lab1", f"{V}/pg-thin#daily.1")).fetchone()[0] == "bookmark"
    assert conn.execute(q, ("lab1", f"{V}/renamed-vol")).fetchone() is not None
    assert conn.execute(q, ("lab1", f"{V}/old-name")).fetchone() is None
    assert conn.execute(q, ("lab2", f"{V}/vm disk.0-branch_a")).fetchone()[2:4] == (
        f"{V}/vm disk.0@t:0", "beta:dev")
    conn.close()


def test_compression_and_space_are_real(synced: tuple[Path, dict[str, Any]]) -> None:
    db, _ = synced
    conn = sqlite3.connect(db)
    row = conn.execute(
        "SELECT compressratio, logicalreferenced, referenced FROM datasets "
        "WHERE node='lab1' AND name=?", (f"{V}/pg-thin",)).fetchone()
    assert row[0] > 1.3 and row[1] > row[2]  # zstd on text data
    zeros = conn.execute(
        "SELECT referenced FROM datasets WHERE node='lab1' AND name=?", (f"{V}/zeros",)
    ).fetchone()[0]
    assert zeros < 1024 * 1024  # 8 MiB of zeros with lz4 on: holes
    thick = conn.execute(
        "SELECT refreservation, usedbyrefreservation FROM datasets WHERE node='lab1' AND name=?",
        (f"{V}/zeros-uncompressed",)).fetchone()
    assert thick[0] > 0 and thick[1] > 0
    conn.close()


def test_ls_json_reads_the_mirror(lab: Lab, synced: tuple[Path, dict[str, Any]]) -> None:
    db, listing = synced
    res = lab.xfleet("ls", "--json", mirror=db)
    assert res.code == 0, res.explain()
    rows = res.json()
    names = {(r["node"], r["name"]) for r in rows}
    assert names == {(n, e[0]) for n, v in listing.items() for e in v}
    clones = lab.xfleet("ls", "--origin", f"{V}/tmpl@gold", "--json", mirror=db)
    assert clones.code == 0, clones.explain()
    assert {r["name"] for r in clones.json()} == {f"{V}/branch-1", f"{V}/branch 2"}


def test_resync_sees_destroy_rename_and_create(
    lab: Lab, synced: tuple[Path, dict[str, Any]]
) -> None:
    db, _ = synced
    lab.run("lab2", ["zfs", "destroy", f"{V}/vm disk.0-branch_a"])
    lab.run("lab2", ["zfs", "rename", f"{V}/thick-8k", f"{V}/thick 8k.renamed"])
    lab.run("lab2", ["zfs", "create", "-s", "-V", "32M", "-o", f"{TENANT}=delta",
                     f"{V}/new:vol"])
    listing = settled_sync(lab, db)
    assert mirror_rows(db, "lab2") == listing["lab2"]
    names = {r[0] for r in listing["lab2"]}
    assert f"{V}/thick 8k.renamed" in names and f"{V}/new:vol" in names
    assert f"{V}/vm disk.0-branch_a" not in names
