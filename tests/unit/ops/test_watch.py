"""`xfleet watch` (xfleet/ops/watch.py) on simulated nodes: it follows the change feed, applies
changes as they happen and survives a reboot; the CLI's sync, status and watch."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from conftest import run_cli, wait_for, write_sim_inventory

from unit.ops.sync.synckit import assert_equals_full_sync, node, sim_ops
from xfleet import mirror
from xfleet.ops.sync import sync
from xfleet.ops.watch import Watcher


def test_watch_applies_changes_and_survives_a_reboot(tmp_path: Path, mirror_at: str) -> None:
    inv, t = node(tmp_path)
    db = mirror_at
    assert sync(inv, db).ok
    w = Watcher(inv, db, refresh_interval=1.0, debounce=0.05)
    stop = threading.Event()
    th = threading.Thread(target=w.run, args=(stop,), daemon=True)
    th.start()
    try:
        conn = mirror.connect(db, readonly=True)

        def wait(pred: Any, what: str) -> None:
            wait_for(pred, f"{what} (watcher status: {w.status})")

        def has(name: str) -> bool:
            return conn.execute("SELECT 1 FROM datasets WHERE name = ?", (name,)).fetchone() \
                is not None

        wait(lambda: w.status["n1"].state == "following", "following")
        t.run(["zfs", "create", "-s", "-V", "1G", "tank/live"])
        wait(lambda: has("tank/live"), "a created volume")
        ops = sim_ops(t, 51)
        ops.run(20)
        # applied from the followed stream (the once-a-second sync may have taken the first
        # change before its batch: under load it did; 20 more cannot all go that way)
        wait(lambda: w.status["n1"].batches >= 1, "a batch from the followed stream")
        t.reboot()  # ends the followed stream: watch reconnects and judges the gap
        t.run(["zfs", "snapshot", "tank/live@after-reboot"])
        wait(lambda: has("tank/live@after-reboot"), "a change after the reboot")
        assert w.status["n1"].reconnects >= 1
        wait(lambda: conn.execute("SELECT watch_state FROM nodes").fetchone()[0] == "following",
             "the heartbeat")
        row = conn.execute("SELECT watch_pid, gaps, last_gap FROM nodes").fetchone()
        assert row[0] is not None and row[1] >= 1 and "restarted" in row[2]
    finally:
        stop.set()
        th.join(timeout=30)
    assert not th.is_alive()
    try:
        assert tuple(conn.execute("SELECT watch_pid, watch_state FROM nodes").fetchone()) == (
            None, "stopped")
    finally:
        conn.close()
    assert_equals_full_sync(inv, db, tmp_path)


def test_cli_sync_status_and_watch(tmp_path: Path) -> None:
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"volumes": 50},
                                                             "n2": {"volumes": 50}})
    res = run_cli("-i", str(inv_path), "sync", "--json")
    assert res.code == 0, res.out
    res = run_cli("-i", str(inv_path), "sync", "--json")
    modes = {n["node"]: n["mode"] for n in json.loads(res.out)["nodes"]}
    assert modes == {"n1": "incremental", "n2": "incremental"}
    res = run_cli("-i", str(inv_path), "sync")
    assert "incremental" in res.out and res.code == 0
    res = run_cli("-i", str(inv_path), "status", "--json")
    st = json.loads(res.out)["nodes"]
    assert [s["node"] for s in st] == ["n1", "n2"] and all(s["state"] == "ok" for s in st)
    assert all(s["last_eid"] is not None and s["lag_seconds"] < 60 for s in st)
    res = run_cli("-i", str(inv_path), "status")
    assert "n1" in res.out and "lag" in res.out.lower()
    res = run_cli("-i", str(inv_path), "watch", "--duration", "2", "--json-lines",
                  "--refresh-interval", "0.5")
    assert res.code == 0, res.out
    states = [json.loads(x) for x in res.out.splitlines() if x.startswith("{")]
    assert {s["node"] for s in states if s["state"] == "following"} == {"n1", "n2"}
    assert {s["node"] for s in states if s["state"] == "stopped"} == {"n1", "n2"}
    res = run_cli("-i", str(inv_path), "watch", "--refresh-interval", "0")
    assert res.code == 2 and "Traceback" not in res.err and "refresh-interval" in res.err
