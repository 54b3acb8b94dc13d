"""`xfleet serve`'s process (xfleet/serve/service.py): the watch showing changes, SIGHUP
reloads, SIGTERM during a sync."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from conftest import run_cli, wait_for, write_sim_inventory

from unit.serve.servekit import select, serve, synced_fleet
from xfleet.fleet import inventory
from xfleet.serve.service import bind
from xfleet.sim import SimTransport


def test_watching_serve_shows_changes_and_reloads_on_sighup(tmp_path: Path,
                                                             mirror_at: str) -> None:
    inv_path = synced_fleet(tmp_path, mirror_at, n1=50)
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    with serve(inv_path, "--refresh-interval", "5", mirror=mirror_at) as s:
        wait_for(lambda: s.get("/readyz").status == 200, f"ready; log:\n{s.logs()}")
        before = s.metrics()[("xfleet_pool_datasets", (("node", "n1"), ("pool", "tank"),
                                                       ("type", "snapshot")))]
        t.run(["zfs", "snapshot", "tank@served"])

        def shown() -> bool:
            items = s.ok("/api/v1/datasets?name=tank@served")["items"]
            return [i["name"] for i in items] == ["tank@served"]

        wait_for(shown, f"the new snapshot in the API; log:\n{s.logs()}")
        key = ("xfleet_pool_datasets", (("node", "n1"), ("pool", "tank"),
                                        ("type", "snapshot")))
        wait_for(lambda: s.metrics()[key] == before + 1, "the snapshot count metric")
        wait_for(lambda: s.metrics()[("xfleet_node_watch_following", (("node", "n1"),))] == 1,
                 "the watch heartbeat in the mirror")
        # SIGHUP: a second node appears in the inventory and is watched
        write_sim_inventory(inv_path, {"n1": {"seed": 1, "volumes": 50},
                                       "n2": {"seed": 2, "volumes": 30}})
        s.signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in s.logs(), f"the reload; log:\n{s.logs()}")
        wait_for(lambda: any(n["node"] == "n2" and n["datasets"] > 0
                             for n in s.ok("/api/v1/nodes")["items"]),
                 f"n2 synced after the reload; log:\n{s.logs()}")
        # a broken inventory is refused and the running one kept
        inv_path.write_text("all: [\n")
        s.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in s.logs(), f"the refusal; log:\n{s.logs()}")
        assert s.get("/healthz").status == 200
        s.signal(signal.SIGTERM)
        assert s.wait() == 0, s.logs()
    assert select(mirror_at, "SELECT DISTINCT watch_state FROM nodes") == [("stopped",)]


def test_sigterm_during_a_full_sync_leaves_a_consistent_mirror(tmp_path: Path) -> None:
    db = str(tmp_path / "mirror.db")
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 3,
                                                                    "volumes": 30000}})
    with serve(inv_path, mirror=db) as s:
        wait_for(lambda: select(db, "SELECT count(*) FROM sync_runs WHERE status = 'running'")
                 == [(1,)], f"a sync running; log:\n{s.logs()}")
        s.signal(signal.SIGTERM)
        assert s.wait() == 0, s.logs()
    assert select(db, "SELECT count(*) FROM sync_runs WHERE status = 'running'") == [(0,)]
    # whatever the sync had written is whole: the summaries agree with the rows
    for node, count in select(db, "SELECT name, datasets FROM nodes"):
        assert count == select(db, "SELECT count(*) FROM datasets WHERE node = ?", (node,))[0][0]
    r = run_cli("-i", str(inv_path), "--mirror", db, "sync", "--json")
    assert r.code == 0, r.err
    assert select(db, "SELECT datasets FROM nodes") == select(db, "SELECT count(*) FROM datasets")


def test_the_listening_socket_is_tcp_so_replies_are_not_delayed() -> None:
    """A kept-alive connection's requests took ~40 ms each when the socket's protocol was 0
    (asyncio then leaves Nagle's algorithm on); measured by benchmarks/bench_serve.py."""
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
