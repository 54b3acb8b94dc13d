"""`xfleet sync|watch|status` (xfleet/cli/sync.py): the sync report, a failed node kept
stale with its rows, and how fresh the mirror is."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .conftest import Cli


def test_sync_json_report(sim_fleet: Path, cli: Cli) -> None:
    r = cli("-i", str(sim_fleet), "sync", "--json")
    assert r.code == 0, r.err
    rep = r.json()
    assert rep["ok"] is True
    # zpool list, zpool events, zfs list, zfs get -j, zpool status -j
    assert {n["node"]: n["commands"] for n in rep["nodes"]} == {"n1": 5, "n2": 5}
    assert {n["node"]: (n["health"], n["health_error"]) for n in rep["nodes"]} == {
        "n1": (1, None), "n2": (1, None)}
    assert all(n["datasets"] > 0 for n in rep["nodes"])


def test_unreachable_node_is_stale_and_keeps_rows(synced: Path, cli: Cli, tmp_path: Path) -> None:
    db = synced.parent / "mirror.db"
    conn = sqlite3.connect(db)
    n2_before = conn.execute("SELECT * FROM datasets WHERE node='n2' ORDER BY name").fetchall()
    inv = tmp_path / "down.yaml"
    inv.write_text(
        f"all:\n  vars:\n    mirror: {db}\n    state_dir: {synced.parent / 'state'}\n"
        "  hosts:\n    n1:\n      kind: sim\n      sim: {seed: 1, volumes: 300}\n"
        "    n2:\n      kind: ssh\n      address: 127.0.0.1\n      port: 1\n"
        "      connect_timeout: 2\n      connect_retries: 1\n")
    r = cli("-i", str(inv), "sync", "--json")
    assert r.code == 1
    rep = {n["node"]: n for n in r.json()["nodes"]}
    assert rep["n1"]["ok"] and not rep["n2"]["ok"]
    assert "cannot connect" in rep["n2"]["error"]
    assert conn.execute("SELECT * FROM datasets WHERE node='n2' ORDER BY name").fetchall() == \
        n2_before
    assert conn.execute("SELECT stale FROM nodes WHERE name='n2'").fetchone()[0] == 1
    table = cli("-i", str(inv), "sync")
    assert table.code == 1 and "FAILED" in table.out and "Traceback" not in table.err
    stats = {r["node"]: r for r in cli("-m", str(db), "stats", "--json").json()}
    assert stats["n2"]["stale"] is True and stats["n1"]["stale"] is False


def test_status_says_how_fresh_each_node_is(synced: Path, cli: Cli) -> None:
    rows = {r["node"]: r for r in cli("-i", str(synced), "status", "--json").json()["nodes"]}
    assert set(rows) == {"n1", "n2"}
    assert all(r["state"] == "ok" and r["gaps"] == 0 and r["datasets"] > 0
               for r in rows.values())
    r = cli("-i", str(synced), "status", "--node", "n2")
    assert r.code == 0 and "n2" in r.out and "n1" not in r.out and "LAG" in r.out


def test_watch_follows_then_stops(synced: Path, cli: Cli) -> None:
    r = cli("-i", str(synced), "watch", "--duration", "1", "--json-lines")
    assert r.code == 0, r.err
    states = [json.loads(line) for line in r.out.splitlines()]
    assert {s["node"] for s in states} == {"n1", "n2"}
    assert {s["node"] for s in states if s["state"] == "stopped"} == {"n1", "n2"}
